#!/usr/bin/env python3
"""PNG plots of one benchmark run (matplotlib: the plotting library everyone
reads; the figures are plain bar charts).

    bench/plot.py bench/results/RUN.json    # writes bench/plots/*.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLOURS = {
    "ceiling": "#7f7f7f",
    "fastcapa": "#1f77b4",
    "fastcapa q1": "#1f77b4",
    "fastcapa q2": "#17becf",
    "fastcapa q2 w1": "#9467bd",
    "fastcapa-before": "#aec7e8",
    "fastcapa-before q1": "#aec7e8",
    "fastcapa-before q2": "#9edae5",
    "fastcapa-before q2 w1": "#c5b0d5",
    "pycapa": "#d62728",
    "tcpdump": "#2ca02c",
}


def _bars(ax, groups: dict[str, dict[str, float]], title: str, unit: str) -> None:
    labels = list(groups)
    tools = list(next(iter(groups.values())))
    width = 0.8 / len(tools)
    for i, tool in enumerate(tools):
        xs = [g + i * width for g in range(len(labels))]
        values = [groups[label].get(tool, 0) for label in labels]
        bars = ax.bar(xs, values, width, label=tool, color=COLOURS.get(tool))
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks([g + width * (len(tools) - 1) / 2 for g in range(len(labels))], labels)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(tools))


def _save(fig, note: str, path: Path) -> Path:
    """Titles the figure with the run's note, writes it to `path` and closes it."""
    fig.suptitle(note, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot(result: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    from report import machine_text

    note = f"{result['started']}, {machine_text(result)}"
    if "replay" in result:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
        replay = result["replay"]
        _bars(
            axes[0],
            {k: {t: r["msgs_per_s"] / 1e3 for t, r in v.items()} for k, v in replay.items()},
            f"Replay of {result['frames']:,} frames: throughput",
            "thousand messages / s",
        )
        _bars(
            axes[1],
            {k: {t: r["net_cpu_s_per_mframe"] for t, r in v.items()} for k, v in replay.items()},
            "CPU per packet (net of start-up)",
            "µs / frame  (= CPU s per million)",
        )
        written.append(_save(fig, note, out / "replay.png"))
    if "live" in result:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
        live = result["live"]
        _bars(
            axes[0],
            {
                k: {t: 100 * (1 - r["lost"] / r["frames_sent"]) for t, r in v.items()}
                for k, v in live.items()
            },
            f"Live capture ({result['live_frames']:,} frames): delivered",
            "% of frames sent (tcpdump: captured)",
        )
        _bars(
            axes[1],
            {k: {t: r["cpu_us_per_packet"] for t, r in v.items()} for k, v in live.items()},
            "CPU per packet",
            "µs / packet",
        )
        written.append(_save(fig, note, out / "live.png"))
    if "scaling" in result:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
        scaling = result["scaling"]["64B"]
        configs = list(scaling)
        colours = [COLOURS["ceiling"] if c == "ceiling" else "#1f77b4" for c in configs]
        axes[0].bar(configs, [scaling[c]["msgs_per_s"] / 1e3 for c in configs], color=colours)
        axes[0].set_title("Replay 64 B: throughput by queues x tx workers", fontsize=10)
        axes[0].set_ylabel("thousand messages / s")
        axes[1].bar(configs, [scaling[c]["net_cpu_s_per_mframe"] for c in configs], color=colours)
        axes[1].set_title("CPU per packet (net of start-up)", fontsize=10)
        axes[1].set_ylabel("µs / frame")
        for ax in axes:
            for container in ax.containers:
                ax.bar_label(container, fmt="%.3g", fontsize=7)
        written.append(_save(fig, note, out / "scaling.png"))
    return written


if __name__ == "__main__":
    for path in plot(json.loads(Path(sys.argv[1]).read_text()), Path(__file__).with_name("plots")):
        print(path)
