"""The benchmark of issue 4: runs our models and the baselines on the same speaker-independent folds.

    python -m benchmark.run                  # every default system x every protocol, then speed; writes docs/benchmarks.md
    python -m benchmark.run --quick          # a few files per protocol, 1 epoch: checks the machinery in a few minutes
    python -m benchmark.run --systems egemaps_svm whisper_cat_mean --protocols emodb_loso
    python -m benchmark.report               # only regenerate docs/benchmarks.md from the committed record

Each system x protocol cell is a train.py run folder (or, for a baseline, a folder with the same
metrics.json layout) under --results (default runs/bench/SYSTEM/PROTOCOL), so an interrupted
benchmark continues where it stopped when started again with the same command: finished cells and
finished folds are kept (on a fresh machine too, once `python -m benchmark.carry` has put them in the
record). Delete a cell's folder to run it again. Run folders are not committed: as each cell finishes,
its figures go into the record (--record, default benchmark/results/cells/
SYSTEM__PROTOCOL.json, committed; benchmark/record.py) and the document is rewritten from the record
(benchmark.report); cells without a record say why.
"""
from __future__ import annotations

import datetime
import gc
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from benchmark import carry
from benchmark.common import (HUB_ENCODERS, PROTOCOLS, ROOT, SYSTEMS, WHISPER_BASE, Protocol, System, all_systems,
                              fold_speakers, machine, now, paths, prepare, read_json, write_json)
from benchmark.record import QUICK_RECORD, RECORD, cell_path, export_cell
from benchmark.report import write_report

# --quick: tiny training that still goes through every step, on one system of each kind.
QUICK_SYSTEMS = ("egemaps_svm", "mfcc_mlp", "whisper_cat_mean", "cnn1d_light")
QUICK_FLAGS = ("--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--crop_seconds", "1.5")


@dataclass
class RunArguments:
    systems: list[str] | None = field(default=None, metadata={
        "help": f"Systems to run (default: every default one: {', '.join(s for s in SYSTEMS if SYSTEMS[s].default)}). "
                f"Also: {', '.join(s for s in SYSTEMS if not SYSTEMS[s].default)} and any other key of "
                "models.BACKBONES (logmel_cnn, mfcc_lstm, ...). 'all' runs every one."})
    protocols: list[str] | None = field(default=None, metadata={
        "help": f"Protocols to run (default: all): {', '.join(PROTOCOLS)}."})
    results: str | None = field(default=None, metadata={
        "help": "Results folder, one sub-folder per system and protocol (default runs/bench; runs/bench-quick with --quick)."})
    record: str | None = field(default=None, metadata={
        "help": "Record folder: each finished cell's JSON goes to RECORD/cells/, the run log to RECORD/runs.json "
                "(default benchmark/results, committed; RESULTS/record with --quick)."})
    doc: str | None = field(default=None, metadata={
        "help": "Markdown document to write; its bar chart goes beside it (default docs/benchmarks.md; "
                "RESULTS/benchmarks.md with --quick, so a quick run never overwrites the real document)."})
    report_only: bool = field(default=False, metadata={
        "help": "Only regenerate the document from existing results (the same as python -m benchmark.report)."})
    quick: bool = field(default=False, metadata={
        "help": "A few files per protocol, 1 epoch, the first 2 folds, and (unless --systems says otherwise) one "
                f"system of each kind: {', '.join(QUICK_SYSTEMS)}. Checks that everything runs; the numbers mean nothing."})
    quick_files: int = field(default=12, metadata={"help": "Files per protocol with --quick (train.py --max_files)."})
    speed: str = field(default="auto", metadata={
        "help": "Measure speed and scale (python -m benchmark.speed) after the accuracy runs: yes, no, or auto "
                "(yes, except with --quick; --quick --speed yes measures a tiny version)."})
    encoder: str = field(default=str(WHISPER_BASE), metadata={"help": "The Whisper-base encoder (folder or hub id)."})
    encoder_path: list[str] | None = field(default=None, metadata={
        "help": "Encoders of other backbones as KEY=PATH, e.g. wavlm=/models/wavlm-base-plus (default: hub ids)."})
    train_args: str = field(default="", metadata={
        "help": "Extra train.py flags appended to every model run, e.g. \"--num_train_epochs 5\" (a cheaper, "
                "non-standard benchmark: the document shows them)."})
    cache_dir: str | None = field(default=None, metadata={
        "help": "Encoder-output and baseline-feature cache (default $SER_CACHE or ~/.cache/ser)."})
    seed: int = field(default=0, metadata={"help": "Seed of the folds and of training (every system uses the same)."})
    stop_at: str = field(default="", metadata={
        "help": "Start no new cell after this time, HH:MM (its next occurrence) or YYYY-MM-DDTHH:MM (a cell running "
                "then finishes), for a run that has to end by a deadline; started again later, it goes on where it "
                "stopped."})


# ---------------------------------------------------------------------------------------------
# Running one cell
# ---------------------------------------------------------------------------------------------
def train_argv(system: System, data_flags: list[str], cell: Path, args: RunArguments, run_folds: str) -> list[str]:
    """Return the train.py argument list of one cell."""
    encoders = dict(item.split("=", 1) for item in args.encoder_path or [])
    flags = []
    for flag in system.flags:
        if flag == "{encoder}":
            flag = args.encoder
        elif flag.startswith("{encoder:"):
            key = flag[len("{encoder:"):-1]
            flag = encoders.get(key, HUB_ENCODERS[key])
        flags.append(flag)
    argv = [*flags, *data_flags, "--run_folds", run_folds, "--output_dir", str(cell), "--disable_tqdm", "true",
            "--log_level", "warning"]
    if args.cache_dir:
        argv += ["--cache_dir", args.cache_dir]
    if args.quick:
        argv += list(QUICK_FLAGS)
    return argv + shlex.split(args.train_args)


def cell_done(cell: Path, n_folds: int) -> bool:
    """Return whether the cell's metrics.json holds a summary over all `n_folds` folds."""
    metrics = read_json(cell / "metrics.json")
    return len(metrics.get("summary", {}).get("ua", {}).get("folds", [])) == n_folds


def run_baseline(name: str, rows, folds, chosen: list[int], cell: Path, args: RunArguments) -> dict:
    """Evaluate baseline `name` on the chosen folds and write metrics.json in train.py's layout; return it."""
    from benchmark import baselines
    from metrics import summarize_folds

    start = time.time()
    reports = baselines.evaluate(name, rows, [folds[i] for i in chosen], cache_dir=args.cache_dir, seed=args.seed,
                                 progress=False)
    for i, report in zip(chosen, reports):
        report["test_speakers"] = sorted({rows[j].speaker for j in folds[i]["test"]})
    result = {"labels": reports[0]["labels"], "n_utterances": len(rows), "folds": reports,
              "summary": summarize_folds(reports), "wall_seconds": time.time() - start}
    (cell / "metrics.json").write_text(json.dumps(result, indent=1))
    return result


def run_cell(system: System, protocol: Protocol, prepared, args: RunArguments, results: Path, record: Path,
             run: str = "") -> str:
    """Run one system on one protocol unless its results are complete, and write its figures into the record; return
    done, kept, failed or skipped. `run` is the benchmark.run command that runs it, kept with the cell."""
    import torch

    rows, folds, data_flags = prepared
    cell = results / system.name / protocol.name
    chosen = list(range(min(2, len(folds)))) if args.quick else list(range(len(folds)))
    run_folds = "all" if len(chosen) == len(folds) else ",".join(map(str, chosen))
    info = {"system": system.name, "protocol": protocol.name, "quick": args.quick, "n_folds": len(chosen),
              "fold_test_speakers": [fold_speakers(rows, folds)[i] for i in chosen],
              "fold_sizes": [int(len(folds[i]["test"])) for i in chosen], **({"run": run} if run else {})}
    if os.environ.get("SER_BENCH_NOTE"):  # how this run differs from the others (scripts/gpu/run.sh: re-encoded audio)
        info["note"] = os.environ["SER_BENCH_NOTE"]
    if system.family == "baseline":
        info["command"] = (f"# {system.name}: benchmark.run calls benchmark.baselines.evaluate('{system.name}', rows, folds) with "
                             f"the rows and folds of: python train.py {shlex.join(data_flags)}")
    else:
        argv = train_argv(system, data_flags, cell, args, run_folds)
        info["command"] = "python train.py " + shlex.join(argv)
    if system.needs_gpu and not torch.cuda.is_available():
        cell.mkdir(parents=True, exist_ok=True)
        write_json(cell / "bench.json", {**info, "status": "skipped", "reason": "needs a GPU (none was lent to this task)"})
        return "skipped"
    if system.family != "baseline":
        carry.restore(cell, record, info["command"])  # folds finished on another machine (benchmark.carry)
    if cell_done(cell, len(chosen)):
        print(f"== {system.name} x {protocol.name}: done before, kept")
        if not (cell / "bench.json").exists():  # trained by the cell's own train.py command, outside benchmark.run
            write_json(cell / "bench.json", {**info, "status": "done", "trained_outside_bench": True,
                                              "seconds": read_json(cell / "metrics.json").get("wall_seconds"),
                                              "registered": now()})
        if not cell_path(record, system.name, protocol.name).exists():
            export_cell(cell, record, read_json(record / "runs.json").get("runs", []))
            return "registered"
        return "kept"
    cell.mkdir(parents=True, exist_ok=True)
    carry.remember(cell)  # folds an earlier run finished here keep their own commit in the record
    info.update({"commit": git_commit(), "started": now(), "load_start": list(os.getloadavg()), "machine": machine()})
    write_json(cell / "bench.json", {**info, "status": "running"})
    print(f"== {system.name} x {protocol.name}: {info['command'][:300]}", flush=True)
    start, cpu = time.time(), time.process_time()
    try:
        if system.family == "baseline":
            run_baseline(system.name, rows, folds, chosen, cell, args)
        else:
            import train

            train.main(argv)
            gc.collect()  # the next cell loads its own encoder outputs
    except KeyboardInterrupt:
        write_json(cell / "bench.json", {**info, "status": "interrupted", "seconds": time.time() - start})
        raise
    except Exception as err:  # one broken cell must not stop the benchmark; the document says why
        traceback.print_exc()
        write_json(cell / "bench.json", {**info, "status": "failed", "reason": f"{type(err).__name__}: {err}",
                                          "seconds": time.time() - start, "cpu_seconds": time.process_time() - cpu,
                                          "finished": now(), "load_end": list(os.getloadavg())})
        export_cell(cell, record, read_json(record / "runs.json").get("runs", []))
        return "failed"
    write_json(cell / "bench.json", {**info, "status": "done", "seconds": time.time() - start,
                                      "cpu_seconds": time.process_time() - cpu, "finished": now(),
                                      "load_end": list(os.getloadavg())})
    export_cell(cell, record, read_json(record / "runs.json").get("runs", []))
    carry.drop(record, system.name, protocol.name)
    return "done"


def git_commit() -> str:
    """Return the short commit of the code, marked when tracked files other than the record and docs/ differ from it
    (the runner rewrites those as it goes). SER_COMMIT, where set, names it for a copy without git (a GPU machine's)."""
    if os.environ.get("SER_COMMIT"):
        return os.environ["SER_COMMIT"]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmark/results", ":(exclude)docs"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def choose(names: list[str] | None, known: dict, default: list[str], what: str) -> list[str]:
    """Return the chosen names in `known`'s order; ValueError naming the unknown ones."""
    if not names:
        return default
    if names == ["all"]:
        return list(known)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; one of {', '.join(known)}")
    return [name for name in known if name in names]


def run_speed(argv: list[str]) -> None:
    """Run `python -m benchmark.speed ARGV` in a fresh process (from the working directory, so relative paths hold)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    subprocess.run([sys.executable, "-m", "benchmark.speed", *argv], env={**os.environ, "PYTHONPATH": path}, check=True)


def deadline(stop_at: str, start: datetime.datetime | None = None) -> datetime.datetime | None:
    """Return the moment --stop_at names: a full date and time as given, or HH:MM at its next occurrence after
    `start` (now), so 01:00 said at 23:00 means tomorrow's 01:00, not a moment already past."""
    if not stop_at:
        return None
    if "T" in stop_at:
        return datetime.datetime.fromisoformat(stop_at)
    start = start or datetime.datetime.now()
    moment = datetime.datetime.combine(start.date(), datetime.time.fromisoformat(stop_at))
    return moment if moment > start else moment + datetime.timedelta(days=1)


def main(argv: list[str] | None = None) -> Path:
    """Run the chosen cells (unless --report_only), then the speed part in its own process, and write the document
    (benchmark.report); return its path."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(RunArguments, prog="python -m benchmark.run", description=__doc__.split("\n\n")[0],
                              epilog=__doc__.split("\n\n", 1)[1],
                              formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    (args,) = parser.parse_args_into_dataclasses(sys.argv[1:] if argv is None else argv)
    results, doc = paths(args.results, args.doc, args.quick)
    record = Path(args.record) if args.record else (results / QUICK_RECORD if args.quick else RECORD)
    systems = all_systems()
    if args.speed not in ("yes", "no", "auto"):
        raise ValueError(f"--speed {args.speed!r}: one of yes, no, auto")
    default_systems = list(QUICK_SYSTEMS) if args.quick else [s for s in systems if systems[s].default]
    chosen_systems = choose(args.systems, systems, default_systems, "systems")
    chosen_protocols = choose(args.protocols, PROTOCOLS, list(PROTOCOLS), "protocols")
    results.mkdir(parents=True, exist_ok=True)
    (record / "cells").mkdir(parents=True, exist_ok=True)

    if not args.report_only:
        log = read_json(record / "runs.json").get("runs", [])
        log.append({"command": "python -m benchmark.run " + shlex.join(sys.argv[1:] if argv is None else argv),
                    "started": now(), "commit": git_commit(), "quick": args.quick, "machine": machine(),
                    "systems": chosen_systems, "protocols": chosen_protocols})
        write_json(record / "runs.json", {"runs": log})
        prepared = {}
        for name in chosen_protocols:  # the folds are the same for every system: built once per protocol
            prepared[name] = prepare(PROTOCOLS[name], args.seed, args.quick_files if args.quick else None)
            rows, folds, _ = prepared[name]
            print(f"{name}: {len(rows)} utterances, {len({r.speaker for r in rows})} speakers, {len(folds)} folds")
        stop = deadline(args.stop_at)
        for system, name in ((s, p) for s in chosen_systems for p in chosen_protocols):
            if stop and datetime.datetime.now() >= stop:
                print(f"--stop_at {args.stop_at}: no new cell started")
                break
            if run_cell(systems[system], PROTOCOLS[name], prepared[name], args, results, record,
                        log[-1]["command"]) != "kept":
                write_report(record, doc)
        entry = {**log[-1], "finished": now()}  # re-read: another benchmark.run may have logged its run meanwhile
        log = [r for r in read_json(record / "runs.json").get("runs", []) if r["started"] != entry["started"]]
        write_json(record / "runs.json", {"runs": log + [entry]})
        if args.speed == "yes" or (args.speed == "auto" and not args.quick):
            run_speed(["--results", str(results), "--record", str(record), "--doc", str(doc),
                       *(["--quick"] if args.quick else []),
                       *(["--cache_dir", args.cache_dir] if args.cache_dir else []), "--encoder", args.encoder])
    path = write_report(record, doc)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
