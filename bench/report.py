"""The report: ratios between the tools of one run, pooled summaries over
several runs' files, and the Markdown table of either."""

from __future__ import annotations

import json
from pathlib import Path

from scenarios import FASTCAPA_LIVE, summarize_live, summarize_replay

# Sections `pool` carries over from one run, and their key in the ratios.
CARRIED = {"wayback": "wayback", "dpdk": "dpdk net_null 64B"}


def pool(paths: list[Path]) -> dict:
    """One result from several runs' files: every repeat of every file,
    summarized again (medians over all of them). One run of `--repeat 3`
    can still swing a ratio by a third on two shared cores."""
    results = [json.loads(path.read_text()) for path in paths]
    first = results[0]
    pooled: dict = {
        "started": " + ".join(r["started"] for r in results),
        # What each run was measured on (older files hold only the machine).
        "commit": " + ".join(sorted({r.get("commit", "?") for r in results})),
        "before": first.get("before"),
        "producer_settings": first.get("producer_settings"),
        "librdkafka": first.get("librdkafka"),
        "machine": first["machine"],
        "frames": first["frames"],
        "live_frames": first["live_frames"],
        "repeat": sum(r["repeat"] for r in results),
        "pooled": [path.name for path in paths],
    }
    for section in ("replay", "live", "scaling"):
        if not all(section in r for r in results):
            continue
        pooled[section] = {}
        for label, tools in first[section].items():
            pooled[section][label] = {}
            for tool in tools:
                entries = [r[section][label][tool] for r in results]
                runs = [run for entry in entries for run in entry["runs"]]
                if section == "live":
                    pooled[section][label][tool] = summarize_live(runs)
                    continue
                one = entries[0]  # the payload in bytes, from its rate and MB/s
                payload = one["mb_per_s"] * 1e6 * first["frames"] / one["msgs_per_s"]
                startup = [entry["startup_cpu_s"] for entry in entries]
                pooled[section][label][tool] = summarize_replay(
                    runs, startup, first["frames"], round(payload)
                )
    pooled["ratios"] = ratios(pooled)
    # The way back and net_null are measured once per run, not pooled: taken
    # as they stand from the last file that holds them (named), with that
    # run's own ratios (a ratio means something only within one run).
    for section, key in CARRIED.items():
        held = [(path, r) for path, r in zip(paths, results, strict=True) if section in r]
        if held:
            path, r = held[-1]
            pooled[section] = r[section]
            pooled[f"{section}_from"] = path.name
            if key in r.get("ratios", {}):
                pooled["ratios"][key] = r["ratios"][key]
    return pooled


# --- report -----------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def ratios(result: dict) -> dict:
    out: dict = {}
    for label, tools in result.get("replay", {}).items():
        ceiling, fast, py = tools["ceiling"], tools["fastcapa"], tools["pycapa"]
        out[f"replay {label}"] = {
            "msgs_vs_ceiling": ratio(fast["msgs_per_s"], ceiling["msgs_per_s"]),
            "cpu_vs_ceiling": ratio(fast["cpu_s_per_mframe"], ceiling["cpu_s_per_mframe"]),
            "net_cpu_vs_ceiling": ratio(
                fast["net_cpu_s_per_mframe"], ceiling["net_cpu_s_per_mframe"]
            ),
            "cpu_vs_pycapa": ratio(fast["cpu_s_per_mframe"], py["cpu_s_per_mframe"]),
            "msgs_vs_pycapa": ratio(fast["msgs_per_s"], py["msgs_per_s"]),
        }
        for tool in tools:
            if tool.startswith("fastcapa ") or tool == "fastcapa-before":
                # A variant of this build, or another build: this build's
                # default against it (below 1: the default is cheaper).
                out[f"replay {label}"][f"cpu_vs_{tool.replace(' ', '_')}"] = ratio(
                    fast["net_cpu_s_per_mframe"], tools[tool]["net_cpu_s_per_mframe"]
                )
                out[f"replay {label}"][f"msgs_vs_{tool.replace(' ', '_')}"] = ratio(
                    fast["msgs_per_s"], tools[tool]["msgs_per_s"]
                )
    if "wayback" in result:
        back = result["wayback"]
        out["wayback"] = {
            "dump_vs_replay": back["dump_vs_replay"],
            "window_vs_dump": back["window_vs_dump"],
            "dump_peak_rss_mb": back["dump_peak_rss_mb"],
        }
        if back.get("index"):  # the topic's index, with it and without (--no-index)
            m, imix = back["index"]["medians"], back["index"].get("imix") or {}
            out["wayback"] |= {
                "needle_index_vs_scan": m["needle_index_vs_scan"],
                "window_index_vs_scan": m["window_index_vs_scan"],
                "window_index_vs_dump": m["window_index_vs_dump"],
                "window_scan_vs_dump": m["window_scan_vs_dump"],
                "outputs_identical": back["index"]["identical"],
                "index_vs_replay_fps": m["index_vs_replay"],
                "index_vs_topic_disk_64B": m["index_vs_topic_disk"],
                "index_bytes_vs_read_bytes_64B": m["index_bytes_vs_read_bytes"],
                "index_vs_topic_disk_IMIX": imix.get("index_vs_topic_disk"),
                "index_bytes_vs_read_bytes_IMIX": imix.get("index_bytes_vs_read_bytes"),
            }
    if "dpdk" in result:
        # Frames/s and CPU per frame of the pipeline fed by net_null, beside
        # the 64-byte replay and the ceiling of the same run.
        dpdk, replay64 = result["dpdk"], result.get("replay", {}).get("64B", {})
        entry = {}
        for tool in ("fastcapa", "ceiling"):
            if tool in replay64:
                entry[f"fps_vs_replay_{tool}"] = ratio(dpdk["fps"], replay64[tool]["msgs_per_s"])
                entry[f"cpu_vs_replay_{tool}"] = ratio(
                    dpdk["cpu_ns_per_frame"] / 1000, replay64[tool]["net_cpu_s_per_mframe"]
                )
        out["dpdk net_null 64B"] = entry
    replay_ceiling = result.get("replay", {})
    for label, tools in result.get("live", {}).items():
        tcpdump = tools["tcpdump"]["cpu_us_per_packet"]
        ceiling = replay_ceiling.get(label, {}).get("ceiling", {}).get("net_cpu_s_per_mframe")
        for tool in FASTCAPA_LIVE:
            entry = {"cpu_vs_tcpdump": ratio(tools[tool]["cpu_us_per_packet"], tcpdump)}
            if ceiling:
                budget = ceiling + 1.5 * tcpdump
                entry["cpu_budget_us"] = round(budget, 3)
                entry["cpu_vs_budget"] = ratio(tools[tool]["cpu_us_per_packet"], budget)
            entry["cpu_vs_pycapa"] = ratio(
                tools[tool]["cpu_us_per_packet"], tools["pycapa"]["cpu_us_per_packet"]
            )
            entry["lost"] = tools[tool]["lost"]
            before = tools.get(tool.replace("fastcapa", "fastcapa-before"))
            if before:
                entry["cpu_vs_before"] = ratio(
                    tools[tool]["cpu_us_per_packet"], before["cpu_us_per_packet"]
                )
                entry["lost_before"] = before["lost"]
            out[f"live {label} {tool}"] = entry
    return out


def markdown(result: dict) -> str:
    lines = [
        f"Run {result['started']} ({machine_text(result)})",
        "",
        f"Commit {result.get('commit', '?')}"
        + (f", beside {result['before']}" if result.get("before") else "")
        + f"; librdkafka {result.get('librdkafka', '?')};"
        f" producer settings {json.dumps(result.get('producer_settings'))}",
        "",
    ]
    if "replay" in result:
        lines += [
            f"Replay of {result['frames']:,} frames into 8 partitions"
            f" (median of {result['repeat']}):",
            "",
            "| input | tool | msgs/s | MB/s | CPU s / M frames | net of start-up"
            " | broker CPU s / M | all delivered |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for label, tools in result["replay"].items():
            for tool, r in tools.items():
                lines.append(
                    f"| {label} | {tool} | {r['msgs_per_s']:,} | {r['mb_per_s']} | "
                    f"{r['cpu_s_per_mframe']} | {r['net_cpu_s_per_mframe']} | "
                    f"{r['broker_cpu_s_per_mframe']} | {'yes' if r['all_delivered'] else 'NO'} |"
                )
        lines.append("")
    if "live" in result:
        lines += [
            f"Live capture, {result['live_frames']:,} frames"
            " by tcpreplay --topspeed into a 2-queue veth:",
            "",
            "| input | tool | sender pps | taken | delivered | lost | CPU µs / packet"
            " | of which rx / tx / librdkafka / control |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for label, tools in result["live"].items():
            for tool, r in tools.items():
                delivered = "—" if r["delivered"] is None else f"{r['delivered']:,}"
                parts = r.get("cpu_us_by_part") or {}
                by_part = " / ".join(
                    str(parts.get(p, 0)) for p in ("rx", "tx", "librdkafka", "control")
                )
                lines.append(
                    f"| {label} | {tool} | {r['sender_pps']:,} | {r['taken']:,} | {delivered} | "
                    f"{r['lost']:,} | {r['cpu_us_per_packet']} | {by_part if parts else '—'} |"
                )
        lines.append("")
    if "scaling" in result:
        lines += [
            "Scaling (replay, 64 B):",
            "",
            "| queues x tx workers | msgs/s | CPU s / M frames | net | msgs/s vs ceiling |",
            "|---|---|---|---|---|",
        ]
        scaling = result["scaling"]["64B"]
        for config, r in scaling.items():
            versus = ratio(r["msgs_per_s"], scaling.get("ceiling", {}).get("msgs_per_s"))
            lines.append(
                f"| {config} | {r['msgs_per_s']:,} | {r['cpu_s_per_mframe']} | "
                f"{r['net_cpu_s_per_mframe']} | {versus} |"
            )
        lines.append("")
    if "wayback" in result:
        import wayback

        lines += carried(result, "wayback") + wayback.markdown(result["wayback"])
    if "dpdk" in result:
        import dpdk_null

        lines += carried(result, "dpdk") + dpdk_null.markdown(result["dpdk"])
    lines += ["Ratios:", "", "```", json.dumps(result["ratios"], indent=1), "```", ""]
    return "\n".join(lines)


def carried(result: dict, section: str) -> list[str]:
    """The line naming the one run a pooled result took `section` from."""
    run = result.get(f"{section}_from")
    return [f"From {run} alone (not pooled):", ""] if run else []


def machine_text(result: dict) -> str:
    machine = result["machine"]
    if isinstance(machine, str):  # files written before the metadata was a dict
        return machine
    return (
        f"{machine['host']}, {machine['cores']} cores, {machine['cpu']},"
        f" {machine['memory_gib']} GiB, Linux {machine['kernel']}"
    )
