"""What fastcapa's tests, benchmarks and demo share; not part of the package.

- `kafka_cluster`: a throwaway Apache Kafka (KRaft) on loopback, 1 or 3 nodes.
- `fixtures`: pytest fixtures over it (`kafka`, `new_topic`, `kafka_cluster3`).
- `kafka_read`: an independent consumer of what a topic holds.
- `netns`, `sender`, `steady`: network namespaces with veth pairs, and
  senders that run inside them.
- `pcapref`: libpcap through ctypes, the reference reader and writer.
- `capgen`: generated captures of mixed traffic.
- `frames`: Ethernet/IPv4/UDP frames built by hand (`udp_frame`).
- `counters`: the workers' counters built by hand, for tests without workers.
- `runner`: the CLI as an operator runs it (`run_fastcapa`, `start_fastcapa`,
  `Probe` for a live probe in the background), and the checks on its outcome.
- `processes`: background processes, each killed when its test ends.
- `corpus`: where the real capture files are (`FASTCAPA_CORPUS`).
- `procfs`: per-thread CPU time from /proc.

pytest finds it through `pythonpath` in pyproject.toml; the Makefile puts
`support/` on PYTHONPATH for the tools and benchmarks.
"""

from pathlib import Path

# The folder that holds this package: what a child Python needs on its path.
ROOT = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    """The environment for a child Python that imports this package."""
    import os

    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
