"""docs/serving.md from the committed serving results: one request's stages, and the app under load.

    python -m benchmark.request_profile report      # writes docs/serving.md

Imported by benchmark/request_profile.py (which writes request_profile.json) and scripts/load_clients.py
(`scripts/load_test.py clients`, which writes load_test.json, and load_test_NAME.json with --output for
other settings); every figure in the document comes from those files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmark" / "results"
PROFILE = RESULTS / "request_profile.json"
EARLIER = RESULTS / "request_profile_fp32_loaded.json"  # an earlier profile (float32, a loaded machine), kept for spinning
LOAD = RESULTS / "load_test.json"  # the app as served; load_test_*.json: other settings, shown after it
DOC = ROOT / "docs" / "serving.md"
MODEL_STAGE = "model (log-mel + encoder + head)"
AIMS = "issue 18: a 5 s clip <= 60 ms median end to end and <= 0.08 CPU-s a request; 50 clients p95 <= 3 s; " \
       "200 clients all answered"


def rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def _load(values) -> str:
    return " ".join(f"{x:.1f}" for x in values) if values else "?"


def profile_table(results: dict) -> str:
    """Return the stages of one request as a Markdown table (wall and CPU ms, share of the end to end)."""
    stages, total = results["stages"], results["end_to_end"]
    lines = ["| stage | wall ms (median) | CPU ms (median) | share of end to end (wall) |", "|---|---:|---:|---:|"]
    for name, t in stages.items():
        share = ("in the model's time" if name.startswith("log-mel") else "once a session" if name.startswith("new page")
                 else f"{t['wall_ms'] / total['wall_ms']:.0%}")
        lines.append(f"| {name} | {t['wall_ms']:.1f} | {t['cpu_ms']:.1f} | {share} |")
    summed = sum(t["wall_ms"] for name, t in stages.items() if not name.startswith(("log-mel", "new page")))
    lines.append(f"| **end to end** (`Blocks.process_api` on /predict) | **{total['wall_ms']:.1f}** | "
                 f"**{total['cpu_ms']:.1f}** | 100% (stages add up to {summed:.0f} ms) |")
    settings = results.get("onnxruntime_settings")
    if settings:
        lines += ["", "The model call alone under onnxruntime's settings (same clip, same process, interleaved):", "",
                  "| onnxruntime | wall ms a clip | CPU ms a clip |", "|---|---:|---:|"]
        lines += [f"| {name} | {t['wall_ms']:.1f} | {t['cpu_ms']:.1f} |" for name, t in settings.items()]
    long = results.get("long")
    if long:
        lines += ["", f"{long['seconds']:g} s of speech ({long['windows']} windows of the timeline): the model "
                      f"{long['model']['wall_ms']:.0f} ms wall ({long['model']['cpu_ms']:.0f} ms CPU); the timeline and "
                      f"the per-window table (frames and Gradio's postprocessing) "
                      f"{long['timeline and table']['wall_ms']:.1f} ms wall ({long['timeline and table']['cpu_ms']:.1f} "
                      f"ms CPU)."]
    return "\n".join(lines)


def load_table(results: dict) -> str:
    """Return the load test's rows as a Markdown table."""
    lines = ["| clients at once | answered | right (as alone) | p50 s | p95 s | max s | CPU-s a request (app) | "
             "cores the app got | CPU-s a request (clients) | app peak memory MB | load average before |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in results["rows"]:
        cores = row["cpu_s_per_request"] * row["requests"] / row["all_answered_after_s"]
        lines.append(f"| {row['clients']} | {row['answered']}/{row['requests']} | {row.get('right', '?')}/{row['answered']} | "
                     f"{row['p50_s']:.2f} | {row['p95_s']:.2f} | {row['max_s']:.2f} | {row['cpu_s_per_request']:.3f} | "
                     f"{cores:.2f} | {row['client_cpu_s_per_request']:.3f} | {row['peak_rss_mb']:.0f} | "
                     f"{_load(row.get('load_average_before'))} |")
    return "\n".join(lines)


def _findings(profile: dict) -> list[str]:
    """Return the paragraphs that read the profile: what was cut, what is left, against the aims."""
    stages, total = profile["stages"], profile["end_to_end"]
    model = stages[MODEL_STAGE]
    ours = {k: v for k, v in stages.items() if not k.startswith(("log-mel", "new page")) and k != MODEL_STAGE}
    lines = [f"The model is {model['wall_ms'] / total['wall_ms']:.0%} of the request's wall time and "
             f"{model['cpu_ms'] / total['cpu_ms']:.0%} of its CPU time. The steps around it (upload, decode, resample, "
             f"checks, voice activity, hand-off, calibration, outputs) take {sum(v['wall_ms'] for v in ours.values()):.1f} "
             f"ms together; the rest of the end-to-end time is Gradio's own event processing. "
             f"End to end: {total['wall_ms']:.0f} ms median and {total['cpu_ms'] / 1000:.3f} CPU-s a request, against "
             f"the aims of 60 ms and 0.08 CPU-s: the model alone ({profile.get('runtime', 'onnx fp32')}) costs "
             f"{model['cpu_ms'] / 1000:.3f} CPU-s, so " + (
                 "the aims need a cheaper model (the int8 recipe of issue 18's item 2), not a cheaper request."
                 if "int8" not in profile.get("runtime", "") else
                 "even with the int8 recipe that holds the drift bound (issue 18's item 2) the aims need a still cheaper "
                 "model call (fewer or smaller encoder layers), not a cheaper request.")]
    settings = profile.get("onnxruntime_settings") or {}
    names = list(settings)
    if len(names) >= 5:
        spin, every, single, batch, side = (settings[n] for n in names[:5])
        lines.append(
            f"**Cut**: onnxruntime's threads spin while they wait for work, by default, which burns CPU where the cores "
            f"are shared{_spinning_elsewhere()}. In this run (load "
            f"{_load(profile['load_average_before'])}): {spin['cpu_ms']:.0f} ms CPU a clip spinning, "
            f"{every['cpu_ms']:.0f} ms not ({1 - every['cpu_ms'] / spin['cpu_ms']:.0%} less), and {single['cpu_ms']:.0f} "
            "ms with one thread a call. "
            f"The app now runs one thread a call and one call per core side by side (ui/scheduler.py). In this run two "
            f"calls side by side took {side['wall_ms']:.0f} ms of wall time a clip against {every['wall_ms']:.0f} ms for "
            f"one call on every core, and {side['cpu_ms']:.0f} against {every['cpu_ms']:.0f} ms CPU; which is faster in "
            "wall time depends on what else the machine runs (the load tests below compare the two settings in the app), "
            f"the CPU saved does not. A lone request pays for it when the other core is free: {single['wall_ms']:.0f} ms "
            f"on one thread against {every['wall_ms']:.0f} ms on every core.")
        lines.append(
            f"**Batching** in onnxruntime saves nothing here: a batch of 4 equal clips costs {batch['cpu_ms']:.0f} ms CPU "
            f"a clip against {single['cpu_ms']:.0f} ms alone (Whisper-base on a 5 s clip is already large matrix "
            "products), and the graph has no padding mask, so only clips of equal length could share a call. The "
            "scheduler batches waiting requests into one call only where that pays and the padding is masked: "
            "PyTorch (`--runtime torch` and the models other than the default), checked once per model "
            "(ui/scheduler.py `pads_exactly`), and tested to give the answers of single calls "
            "(tests/test_serving_load.py).")
    opus = profile.get("opus_upload_preprocess")
    if opus:
        page, converted = opus.values()
        lines.append(f"**Not there, and kept out**: an Audio component with `format=\"wav\"` converts every other "
                     f"upload (mp3, ogg, webm) to WAV before the app decodes it: {converted['wall_ms']:.0f} ms for a 5 s "
                     f"Opus file, against {page['wall_ms']:.1f} ms as the page takes it (`format=None`, the default).")
    long = profile.get("long")
    if long:
        lines.append(f"**Plots**: the timeline and the per-window table of {long['seconds']:g} s of speech cost "
                     f"{long['timeline and table']['wall_ms']:.1f} ms against {long['model']['wall_ms']:.0f} ms for its "
                     f"model ({long['timeline and table']['wall_ms'] / long['model']['wall_ms']:.1%}); the bars and the "
                     f"session history of a 5 s clip {stages['outputs (note, bars, history)']['wall_ms']:.1f} ms.")
    return lines


def _spinning_elsewhere() -> str:
    """Return what spinning cost in the earlier profile on a loaded machine (EARLIER), as a parenthesis, or ""."""
    earlier = read_json(EARLIER) or {}
    settings = list((earlier.get("onnxruntime_settings") or {}).values())
    if len(settings) < 2:
        return ""
    spin, still = settings[0]["cpu_ms"], settings[1]["cpu_ms"]
    return (f" (`{rel(EARLIER)}`, {earlier.get('runtime')} at load {_load(earlier.get('load_average_before'))}: "
            f"{spin:.0f} ms CPU a clip spinning against {still:.0f} ms not, {spin / still - 1:.0%} more)")


def _comparison(loads: list[dict]) -> list[str]:
    """Return a line comparing the served setting with each other one, level by level."""
    lines = []
    served = {row["clients"]: row for row in loads[0]["rows"]}
    for load in loads:  # a pair run one after the other: the fairer comparison on a shared machine
        pair = next((o for o in loads if load.get("compare_with") and o.get("file") == load["compare_with"]), None)
        if pair:
            rows = {row["clients"]: row for row in pair["rows"]}
            lines.append(f"**Cut**: Gradio's queue sends each waiting page its place in the line after every finished "
                         "request (`status_update_rate=\"auto\"`): with N waiting, N messages a request. "
                         f"{pair['setting']} against {load['setting']}, run one after the other: " + "; ".join(
                f"{r['clients']} clients p95 {rows[r['clients']]['p95_s']:.1f} s against {r['p95_s']:.1f} s, CPU a "
                f"request {rows[r['clients']]['cpu_s_per_request']:.3f} against {r['cpu_s_per_request']:.3f} s"
                for r in load["rows"] if r["clients"] in rows) + ".")
    for other in loads[1:]:
        if other.get("compare_with") or any(o.get("compare_with") == other.get("file") for o in loads):
            continue
        pairs = [(served[row["clients"]], row) for row in other["rows"] if row["clients"] in served and row["clients"] > 1]
        if pairs:
            lines.append(f"Served against {other['setting']} (separate runs: compare their load averages): " + "; ".join(
                f"{a['clients']} clients p95 {a['p95_s']:.1f} s against {b['p95_s']:.1f} s, CPU a request "
                f"{a['cpu_s_per_request']:.3f} against {b['cpu_s_per_request']:.3f} s" for a, b in pairs) + ".")
    return lines


def write_doc(path: Path = DOC) -> None:
    profile = read_json(PROFILE)
    loads = [dict(read_json(p) or {}, file=p.name) for p in [LOAD, *sorted(RESULTS.glob("load_test_*.json"))]]
    loads = [load for load in loads if load.get("rows")]
    for load in loads:  # runs before the int8 recipe held served float32 and did not say so
        load["setting"] += f", {load.get('precision', 'fp32')}" if load["setting"].startswith("app.py --runtime auto") else ""
    parts = ["# Serving: where a request's time goes, and the app under load",
             "",
             f"Generated by `python -m benchmark.request_profile report` from `{rel(PROFILE)}` and "
             f"`{rel(LOAD)}` (and `load_test_*.json` beside it); edit those scripts, not this page. Aims ({AIMS}) are "
             "benchmark figures, not timed tests. The machine's 2 CPUs are shared with other jobs (training, tests): "
             "each run records the load average, and comparisons are made in one process or one run where possible.",
             ""]
    if profile:
        parts += ["## One request, stage by stage", "",
                  f"`{profile['command']}` (commit {profile['commit']}, {profile['date']}): {profile['clip']}, "
                  f"checkpoint `{profile['checkpoint']}` in {profile['runtime']} (what `app.py` serves by default), "
                  f"{profile['repeats']} runs a stage after a warm-up. {profile['machine']['cores']} CPUs shared with "
                  f"other jobs: load average {_load(profile['load_average_before'])} before, "
                  f"{_load(profile['load_average_after'])} after; this process at nice {profile['niceness']}.", "",
                  profile_table(profile), ""]
        for line in _findings(profile):
            parts += [line, ""]
    if loads:
        parts += ["## Many clients at once", "", loads[0]["how"], ""]
    for load in loads:
        parts += [f"### {load['setting']}", "",
                  f"`{load['command']}` (commit {load['commit']}, {load['date']}), model `{load['model']}`: "
                  f"{load['clips']}." + (f" {load['notes']}" if load.get("notes") else ""), "", load_table(load), ""]
    for line in _comparison(loads):
        parts += [line, ""]
    alone = next((r for r in loads[0]["rows"] if r["clients"] == 1), None) if loads else None
    if alone and profile:
        http = alone["cpu_s_per_request"] - profile["end_to_end"]["cpu_ms"] / 1000
        parts += [f"Over HTTP a request costs the app {alone['cpu_s_per_request']:.3f} CPU-s (1 client, a new session "
                  f"each), {http * 1000:.0f} ms more than the same event in-process ({profile['end_to_end']['cpu_ms']:.0f} "
                  "ms, above): Gradio's upload route, queue, server-sent messages and a session's state, which this "
                  "project does not change beyond how often the queue messages waiting pages.", ""]
    if loads:
        row = next((r for r in loads[0]["rows"] if r["clients"] == 50), None)
        if row:
            need = row["cpu_s_per_request"] * row["requests"]
            parts += [f"\"Cores the app got\" is its CPU time over the level divided by the time until the last answer: "
                      f"the other jobs on the machine (load average in the last column) and the clients themselves took "
                      f"the rest. 50 clients ask for {need:.1f} CPU-s of the app; on 2 cores of its own the last answer "
                      f"could come after about {need / 2:.1f} s, so the aim of a 3 s p95 needs both a quiet machine and "
                      "a cheaper model call (int8, item 2), besides what this page measures.", ""]
    path.write_text("\n".join(parts))
