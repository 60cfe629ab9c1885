"""The benchmark's committed record: one small JSON per finished cell, from which benchmark.report writes the document.

    python -m benchmark.record --results runs/bench      # (re-)export every finished cell of a results folder

A cell's run folder (runs/bench/SYSTEM/PROTOCOL: checkpoints, predictions, figures) is large and stays out of git;
what the document reports goes into RECORD/cells/SYSTEM__PROTOCOL.json (default RECORD: benchmark/results), a few
kilobytes: the command, the commit, when and on what machine load it ran, and per fold the test speakers, UA, WA,
macro-F1, per-class recall and confusion matrix. benchmark.run writes it as each cell finishes; this command
re-exports cells trained by hand with the cell's own train.py command, or after `python -m benchmark.users` added
users.json to a LOCO cell. RECORD/runs.json logs the benchmark.run invocations, RECORD/speed.json the speed figures.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from benchmark.common import ROOT, read_json

RECORD = ROOT / "benchmark" / "results"  # the committed record
QUICK_RECORD = "record"  # a quick run's record: inside its results folder, never the committed one
DIGITS = 6  # figures are rounded to this many decimals: enough for any table, and the files stay small
FOLD_KEYS = ("test_speakers", "test_corpora", "n", "ua", "wa", "macro_f1", "recall", "confusion", "normalization",
             "normalize_test")
MACHINE_KEYS = ("cpu", "cores", "usable_cores", "memory_gib", "torch", "torch_threads", "transformers", "python", "gpu")


def cell_path(record: Path, system: str, protocol: str) -> Path:
    return Path(record) / "cells" / f"{system}__{protocol}.json"


def read_cells(record: Path) -> dict[tuple[str, str], dict]:
    """Return {(system, protocol): cell} of every committed cell under `record`."""
    cells = {}
    for path in sorted((Path(record) / "cells").glob("*__*.json")):
        cell = read_json(path)
        if cell:
            cells[cell["system"], cell["protocol"]] = cell
    return cells


def rounded(value):
    """Return `value` with every float rounded to DIGITS decimals (recursively)."""
    if isinstance(value, float):
        return round(value, DIGITS)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def dumps(data) -> str:
    """Return `data` as indented JSON with every list of plain values (a confusion row, speakers) on one line."""
    text = json.dumps(rounded(data), indent=1, ensure_ascii=False)
    flat = re.compile(r"\[\n\s*((?:(?:-?[\d.e+-]+|\"[^\"\n]*\"|true|false|null),\n\s*)*(?:-?[\d.e+-]+|\"[^\"\n]*\"|true|false|null))\n\s*\]")
    while True:
        new = flat.sub(lambda m: "[" + re.sub(r",\n\s*", ", ", m.group(1)) + "]", text)
        if new == text:
            return text + "\n"
        text = new


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (a reader, or a `git add`, never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def machine_summary(machine: dict) -> dict:
    return {k: machine[k] for k in MACHINE_KEYS if k in machine}


def run_of(runs: list[dict], finished: str | None, system: str = "", protocol: str = "") -> dict:
    """Return the benchmark.run invocation of the log that was running when a cell finished (else the last one): the
    last one started before then whose systems and protocols include the cell's (two runs may share the machine)."""
    mine = [r for r in runs if (not system or system in r.get("systems", [system]))
            and (not protocol or protocol in r.get("protocols", [protocol]))]
    before = [r for r in mine if finished and r.get("started", "") <= finished]
    return (before or mine or runs or [{}])[-1]


def fold_metrics(cell: Path) -> list[dict]:
    """Return the fold_NN/metrics.json files of a train.py run folder (a single-fold run: the folder's own)."""
    folds = [read_json(f) for f in sorted(cell.glob("fold_*/metrics.json"))]
    return folds or ([read_json(cell / "metrics.json")] if (cell / "metrics.json").exists() else [])


def label_set(results: Path, system: str) -> dict | None:
    """Return UA per left-out corpus with calm merged into neutral (loco) and left out (loco_six), on the clips both
    tested (every clip but RAVDESS calm), from the two run folders' predictions; None unless both have them."""
    from sklearn.metrics import recall_score

    from benchmark.loco import LOCO_CORPORA, predictions

    folders = [Path(results) / system / p for p in ("loco", "loco_six")]
    if not all(read_json(f / "metrics.json").get("summary") for f in folders):
        return None
    found = [predictions(f) for f in folders]
    if not all(found):
        return None
    common = found[0].keys() & found[1].keys()
    out = {}
    for name, clips_of in zip(("merged into neutral", "left out"), found):
        values = {}
        for corpus in LOCO_CORPORA:
            clips = [clips_of[c] for c in sorted(common) if clips_of[c][0] == corpus]
            if clips:
                truth = [c[1] for c in clips]
                values[corpus] = float(recall_score(truth, [c[2] for c in clips], labels=sorted(set(truth)),
                                                    average="macro", zero_division=0))
        out[name] = values
    return out


def export_cell(cell: Path, record: Path, runs: list[dict] | None = None, partial: bool = False) -> Path | None:
    """Write the committed JSON of a finished (or failed) run folder `cell` (results/SYSTEM/PROTOCOL) into `record`;
    return its path, or None when the cell has not finished. partial: also a cell stopped after some folds (status
    "interrupted"; benchmark.carry)."""
    from benchmark.carry import note as carried_note

    cell = Path(cell)
    bench = read_json(cell / "bench.json")
    metrics = read_json(cell / "metrics.json")
    status = bench.get("status", "done" if metrics.get("summary") else None)
    if partial and status not in ("done", "failed"):
        status = "interrupted"
    elif status not in ("done", "failed"):
        return None
    system, protocol = cell.parent.name, cell.name  # where the folder is says what it is (bench.json may be a copy's)
    folds = fold_metrics(cell)
    reports = metrics.get("folds") if metrics.get("summary") else [m["test"] for m in folds if m.get("test")]
    run = run_of(runs or [], bench.get("finished"), cell.parent.name, cell.name)
    machine = bench.get("machine") or run.get("machine", {})
    out = {"system": system, "protocol": protocol, "status": status,
           "command": bench.get("command") or run.get("command", ""),
           "run": bench.get("run") or run.get("command", ""),
           "commit": bench.get("commit") or run.get("commit", "unknown"),
           "started": bench.get("started") or run.get("started"), "finished": bench.get("finished"),
           "seconds": bench.get("seconds") or metrics.get("wall_seconds"), "cpu_seconds": bench.get("cpu_seconds"),
           "train_seconds": sum(m.get("train_seconds") or 0 for m in folds) or None,
           "machine": machine_summary(machine),
           "load_average": {"start": bench.get("load_start") or machine.get("load_average"),
                            "end": bench.get("load_end")},
           "quick": bench.get("quick", False)}
    if status == "failed":
        out["reason"] = bench.get("reason", "")
    if bench.get("trained_outside_bench"):
        out["trained_outside_bench"] = True
    notes = [bench.get("note"), carried_note(cell)]  # benchmark.run's SER_BENCH_NOTE; folds trained elsewhere
    if any(notes):  # shown under the tables
        out["note"] = "; ".join(n for n in notes if n)
    out["n_folds"] = bench.get("n_folds", len(reports or []))
    out["fold_test_speakers"] = bench.get("fold_test_speakers")
    out["fold_sizes"] = bench.get("fold_sizes")
    if reports:
        out["labels"] = reports[0]["labels"]
        seconds = [m.get("train_seconds") for m in folds] if len(folds) == len(reports) else [None] * len(reports)
        out["folds"] = [{**{k: r[k] for k in FOLD_KEYS if k in r}, "train_seconds": s} for r, s in zip(reports, seconds)]
        from metrics import summarize_folds

        summary = summarize_folds(reports)
        out["summary"] = {**{k: {"mean": summary[k]["mean"], "std": summary[k]["std"]} for k in ("ua", "wa", "macro_f1")},
                          "pooled_ua": summary["pooled"]["ua"], "pooled_wa": summary["pooled"]["wa"]}
    if metrics.get("calibration"):
        cal = metrics["calibration"]
        out["calibration"] = {"temperature": cal["temperature"], "ece_before": cal["ece_before"],
                              "ece_after": cal["ece_after"],
                              "folds": {k: {x: f[x] for x in ("name", "n", "ece_before", "ece_after") if x in f}
                                        for k, f in cal["folds"].items()}}
    users = read_json(cell / "users.json")
    if users:
        out["users"] = {k: users[k] for k in ("calm_clips", "seed", "by_corpus", "mean") if k in users}
    if protocol in ("loco", "loco_six") and (pair := label_set(cell.parent.parent, system)):
        out["label_set"] = pair
    path = cell_path(record, system, protocol)
    write_text(path, dumps(out))
    if protocol == "loco" and cell_path(record, system, "loco_six").exists():  # the pair's table lives in loco_six
        six = cell.parent / "loco_six"
        if read_json(six / "bench.json").get("status", "done") in ("done", "failed") and read_json(six / "metrics.json"):
            export_cell(six, record, runs)
    return path


def export_all(results: Path, record: Path) -> list[Path]:
    """Export every finished cell under `results` (SYSTEM/PROTOCOL folders) into `record`; return the files written."""
    runs = read_json(Path(record) / "runs.json").get("runs", []) or read_json(Path(results) / "runs.json").get("runs", [])
    written = []
    for cell in sorted(p.parent for p in Path(results).glob("*/*/metrics.json")):
        path = export_cell(cell, record, runs)
        if path:
            written.append(path)
    return written


def arguments(prog: str, doc: str, argv: list[str] | None) -> argparse.Namespace:
    """Parse the flags of a command that reads a results folder and writes the record and the document."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0], epilog=doc.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="runs/bench", help="results folder of benchmark.run (default runs/bench)")
    parser.add_argument("--record", default=str(RECORD), help="record folder (default benchmark/results)")
    parser.add_argument("--doc", help="document to rewrite afterwards (default docs/benchmarks.md)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    args = arguments("python -m benchmark.record", __doc__, argv)
    written = export_all(Path(args.results), Path(args.record))
    print(f"exported {len(written)} cell(s) into {args.record}/cells")
    from benchmark.common import DOC
    from benchmark.report import write_report

    print(f"wrote {write_report(Path(args.record), Path(args.doc) if args.doc else DOC)}")
    return written


if __name__ == "__main__":
    main()
