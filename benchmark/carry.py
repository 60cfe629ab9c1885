"""Finished folds of unfinished cells, kept in the record so that a cell longer than one sitting goes on elsewhere.

    python -m benchmark.carry                    # before the machine goes away: keep every finished fold
    python -m benchmark.run --systems ...        # on a fresh checkout: restores them and trains the other folds

A run folder (runs/bench/SYSTEM/PROTOCOL) stays out of git, so a cell stopped half-way on a machine that is then
wiped starts again from its first fold. What a cell's summary needs of a finished fold is small: metrics.json (its
test report), predictions.csv (figures per corpus, the LOCO label-set table) and test_logits.npz (the calibration
over folds). This command copies them into RECORD/carried/SYSTEM/PROTOCOL/fold_NN/ with the cell's bench.json, and
writes the cell's record with the folds it has (the document shows "3/5 folds, interrupted") unless a complete
record is there already. benchmark.run copies them back when it starts the cell with the same train.py command;
train.py keeps a fold whose metrics.json exists, so only the missing folds train. The finished cell's record notes
which folds were carried and the commit that trained them; its carried folder is then removed. A cell resumed on the
machine that ran it keeps its finished folds in place, and its record names their commit the same way.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from benchmark.common import read_json, write_json
from benchmark.record import arguments, cell_path, export_cell

FILES = ("metrics.json", "predictions.csv", "test_logits.npz")  # what train.py reads of a finished fold
CARRIED = "carried.json"  # in a run folder: which folds came from elsewhere, and from which commit


def carried_folder(record: Path, system: str, protocol: str) -> Path:
    return Path(record) / "carried" / system / protocol


def finished_folds(cell: Path) -> list[Path]:
    return sorted(d for d in Path(cell).glob("fold_*") if (d / "metrics.json").exists())


def save(results: Path, record: Path) -> list[Path]:
    """Copy the finished folds of every unfinished cell under `results` into `record`; return the folders written."""
    written = []
    for bench_file in sorted(Path(results).glob("*/*/bench.json")):
        cell, bench = bench_file.parent, read_json(bench_file)
        folds = finished_folds(cell)
        if bench.get("status") in ("done", "failed", "skipped") or not folds or "command" not in bench:
            continue
        system, protocol = cell.parent.name, cell.name
        target = carried_folder(record, system, protocol)
        shutil.rmtree(target, ignore_errors=True)
        for fold in folds:
            (target / fold.name).mkdir(parents=True)
            for name in FILES:
                if (fold / name).exists():
                    shutil.copy2(fold / name, target / fold.name / name)
        trained = read_json(cell / CARRIED).get("trained", {})  # folds this cell restored keep their own commit
        trained.update({f.name: {"commit": bench.get("commit"), "started": bench.get("started")}
                        for f in folds if f.name not in trained})
        write_json(target / "bench.json", {"command": bench["command"], "n_folds": bench.get("n_folds"),
                                           "trained": {f.name: trained[f.name] for f in folds}})
        if read_json(cell_path(record, system, protocol)).get("status") != "done":
            export_cell(cell, record, read_json(Path(record) / "runs.json").get("runs", []), partial=True)
        written.append(target)
    return written


def restore(cell: Path, record: Path, command: str) -> list[str]:
    """Copy the carried folds of `cell` (results/SYSTEM/PROTOCOL) back into it when they were trained by the same
    train.py `command` and are not there already; return the fold names restored."""
    cell = Path(cell)
    source = carried_folder(record, cell.parent.name, cell.name)
    info = read_json(source / "bench.json")
    if not info:
        return []
    if info.get("command") != command:
        print(f"{source}: carried folds of another command, not used (delete the folder once it is of no use)")
        return []
    restored = []
    for fold in sorted(source.glob("fold_*")):
        if not (cell / fold.name / "metrics.json").exists():
            shutil.rmtree(cell / fold.name, ignore_errors=True)  # a fold stopped half-way here: the carried one is whole
            shutil.copytree(fold, cell / fold.name)
            restored.append(fold.name)
    if restored:
        trained = read_json(cell / CARRIED).get("trained", {})
        write_json(cell / CARRIED, {"trained": {**trained, **{f: info["trained"][f] for f in restored}}})
        print(f"{cell}: restored {', '.join(restored)} from {source}")
    return restored


def remember(cell: Path) -> None:
    """Before a new run of `cell` overwrites its bench.json: note the folds that the earlier run there finished (on
    this machine, not carried), with that run's commit, so that the record does not credit them to the new one."""
    cell = Path(cell)
    earlier = read_json(cell / "bench.json")
    trained = read_json(cell / CARRIED).get("trained", {})
    kept = {f.name: {"commit": earlier.get("commit"), "started": earlier.get("started")}
            for f in finished_folds(cell) if f.name not in trained}
    if kept and earlier.get("commit"):
        write_json(cell / CARRIED, {"trained": {**trained, **kept}})


def note(cell: Path) -> str:
    """Return what the record of `cell` says of folds trained elsewhere ('' when none were)."""
    by_run = {}
    for fold, run in sorted(read_json(Path(cell) / CARRIED).get("trained", {}).items()):
        by_run.setdefault((run.get("commit"), run.get("started")), []).append(str(int(fold.removeprefix("fold_"))))
    parts = [f"fold(s) {', '.join(folds)} trained at commit {commit} (started {started})"
             for (commit, started), folds in by_run.items()]
    return ("; ".join(parts) + ", by an earlier run (kept on this machine or carried by benchmark.carry); "
            "the other folds at the cell's commit" if parts else "")


def drop(record: Path, system: str, protocol: str) -> None:
    """Remove a finished cell's carried folds: its record holds their figures now."""
    shutil.rmtree(carried_folder(record, system, protocol), ignore_errors=True)
    parent = Path(record) / "carried" / system
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()


def main(argv: list[str] | None = None) -> list[Path]:
    args = arguments("python -m benchmark.carry", __doc__, argv)
    written = save(Path(args.results), Path(args.record))
    for folder in written:
        print(f"kept {len(list(folder.glob('fold_*')))} finished fold(s) in {folder}")
    if not written:
        print(f"no unfinished cell with a finished fold under {args.results}")
    from benchmark.common import DOC
    from benchmark.report import write_report

    print(f"wrote {write_report(Path(args.record), Path(args.doc) if args.doc else DOC)}")
    return written


if __name__ == "__main__":
    main()
