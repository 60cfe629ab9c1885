"""The benchmark end to end on a few real files (benchmark.run --quick), and the speed part's measuring and rendering."""
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmark import carry, common, record, report, run, speed
from conftest import require
from data.corpora import corpora_root

PROTOCOLS = ["emodb_loso", "cross_corpus"]
CELL = re.compile(r"^(\d\.\d{3})(?: ± (\d\.\d{3}))?(?: \((?:1 fold|\d+/\d+ folds, [\w ]+)\))?$")


@pytest.fixture(scope="module")
def corpora():
    for name in ("emodb", "ravdess", "urdu"):
        require(corpora_root() / name, f"the {name} corpus")


@pytest.fixture(scope="module")
def quick(tmp_path_factory, corpora, whisper_path):
    """Run `python -m benchmark.run --quick` once: one system of each kind, 12 files per protocol (the default), on a multi-fold protocol and the
    single-fold cross-corpus one (test_folds_match_train_py checks the other two protocols' folds without training)."""
    out = tmp_path_factory.mktemp("bench")
    argv = ["--quick", "--protocols", *PROTOCOLS, "--results", str(out / "results"),
            "--doc", str(out / "docs" / "benchmarks.md"), "--cache_dir", str(out / "cache"), "--encoder", whisper_path]
    return out, argv, run.main(argv)


def table(text: str, title: str) -> dict[str, list[str]]:
    """Return {system: cells} of the Markdown table under the heading `title`."""
    part = next(p for p in text.split(f"### {title}", 1)[1].split("\n\n") if p.startswith("|"))  # after any caption
    return {row.split("|")[1].strip(" `"): [c.strip() for c in row.split("|")[2:-1]] for row in part.splitlines()[2:]}


def test_quick_bench_writes_the_document(quick):
    out, _, doc = quick
    text = doc.read_text()
    assert (out / "docs" / "benchmarks_ua.png").stat().st_size > 1000
    for section in ("## How to reproduce", "## Machine", "## Protocols", "## Accuracy", "## Aims of issues 4 and 12",
                    "## Speed and scale", "## GPU"):
        assert section in text, section
    assert "Quick run" in text and "torch" in text and "python -m benchmark.run --quick" in text
    for title in ("UA (unweighted", "WA (accuracy)", "macro-F1"):
        rows = table(text, title)
        assert len(rows["egemaps_svm"]) == len(common.PROTOCOLS)
        ran = [i for i, p in enumerate(common.PROTOCOLS) if p in PROTOCOLS]
        for system in run.QUICK_SYSTEMS:  # every protocol run has a number in [0, 1] for every system
            for cell in [rows[system][i] for i in ran]:
                match = CELL.match(cell)
                assert match, (system, cell)
                assert all(0 <= float(x) <= 1 for x in match.groups() if x is not None), (system, cell)
        assert rows["whisper_ft_top2"][0].startswith("not run")  # a default system the quick run left out says so
        assert rows["whisper_ft_full"][0].startswith("not run: needs a GPU")
        assert rows["egemaps_svm"][list(common.PROTOCOLS).index("urdu_5fold")] == "not run yet"
    assert text.count("identical test speakers and test-set sizes in all 4 systems") == len(PROTOCOLS)
    times = table(text, "Time per cell")  # wall / CPU, and the training summed over folds for what train.py ran
    for i in ran:
        assert re.fullmatch(r"\d+ / \d+", times["egemaps_svm"][i]), times["egemaps_svm"]
        assert re.fullmatch(r"\d+ / \d+ / \d+", times["whisper_cat_mean"][i]), times["whisper_cat_mean"]


def test_every_cell_is_a_resumable_run_folder(quick):
    out, argv, doc = quick
    results = out / "results"
    cell = results / "whisper_cat_mean" / "emodb_loso"
    bench = json.loads((cell / "bench.json").read_text())
    assert bench["status"] == "done" and bench["command"].startswith("python train.py --backbone whisper")
    assert (cell / "fold_00" / "model.safetensors").exists() and (cell / "settings.json").exists()
    baseline = json.loads((results / "egemaps_svm" / "emodb_loso" / "metrics.json").read_text())
    ours = json.loads((cell / "metrics.json").read_text())
    # the baseline was tested on exactly the speakers and clips our model was tested on
    assert [f["test_speakers"] for f in baseline["folds"]] == [f["test_speakers"] for f in ours["folds"]]
    assert [f["n"] for f in baseline["folds"]] == [f["n"] for f in ours["folds"]]
    # the cell's record: what the document is written from
    kept = json.loads(record.cell_path(results / "record", "whisper_cat_mean", "emodb_loso").read_text())
    assert [f["ua"] for f in kept["folds"]] == [round(f["ua"], record.DIGITS) for f in ours["folds"]]
    assert kept["command"] == bench["command"] and kept["commit"] and kept["load_average"]["start"]
    assert kept["run"] == bench["run"] == "python -m benchmark.run " + shlex.join(argv)  # the run that trained it
    assert kept["train_seconds"] > 0 and kept["machine"]["torch_threads"] >= 1

    stamps = {p: p.stat().st_mtime for p in results.glob("*/*/metrics.json")}
    (cell / "bench.json").unlink()  # as if the cell's train.py command had been run by hand
    run.main(argv)  # the same command again: every cell is complete, nothing is trained again
    assert stamps == {p: p.stat().st_mtime for p in results.glob("*/*/metrics.json")}
    again = json.loads((cell / "bench.json").read_text())  # the hand-run cell is registered with its command
    assert again["status"] == "done" and again["trained_outside_bench"] and again["command"] == bench["command"]
    doc.unlink()
    report.main(["--record", str(results / "record"), "--doc", str(doc)])  # the document alone, from the record
    assert "| `cnn1d_light` |" in doc.read_text()
    assert "| `whisper_lw_max` |" not in doc.read_text()  # a system that is not run by default shows once it has results
    shutil.copytree(cell, results / "whisper_lw_max" / "emodb_loso")  # a run folder made outside benchmark.run
    record.main(["--results", str(results), "--record", str(results / "record"), "--doc", str(doc)])
    assert "| `whisper_lw_max` |" in doc.read_text()
    run.main([*argv, "--report_only"])  # the same, through benchmark.run
    assert "| `whisper_lw_max` |" in doc.read_text()
    shutil.rmtree(results / "whisper_lw_max")
    record.cell_path(results / "record", "whisper_lw_max", "emodb_loso").unlink()


def test_report_rebuilds_from_the_committed_record():
    """docs/benchmarks.md is exactly what `python -m benchmark.report` writes from the committed record alone (no
    training, no corpora, nothing read from the machine): rebuilt, it is the same byte for byte."""
    assert report.render(record.RECORD, common.DOC) == common.DOC.read_text()
    cells = record.read_cells(record.RECORD)
    assert all(c["status"] in ("done", "failed", "interrupted") and c["command"] and c["commit"] for c in cells.values())
    for (system, protocol), cell in cells.items():  # a cell stopped half-way has its finished folds in the record
        carried = carry.carried_folder(record.RECORD, system, protocol)
        assert (cell["status"] == "interrupted") == carried.exists(), (system, protocol)
        assert cell["status"] != "interrupted" or len(list(carried.glob("fold_*/metrics.json"))) == len(cell["folds"])
    assert all(record.cell_path(record.RECORD, *key).stat().st_size < 64_000 for key in cells)  # small files


def test_report_and_charts_are_byte_identical_when_rebuilt(tmp_path):
    doc = tmp_path / "docs" / "benchmarks.md"
    first = report.write_report(record.RECORD, doc).read_bytes()
    charts = {p.name: p.read_bytes() for p in doc.parent.glob("*.png")}
    assert first.decode() == report.render(record.RECORD, doc)
    report.write_report(record.RECORD, doc)
    assert doc.read_bytes() == first and {p.name: p.read_bytes() for p in doc.parent.glob("*.png")} == charts


def test_a_cell_record_round_trips_into_the_tables(tmp_path):
    """benchmark/record.py keeps what the tables need from a run folder: per-fold figures, confusions, timings."""
    cell = tmp_path / "results" / "egemaps_svm" / "emodb_loso"
    cell.mkdir(parents=True)
    folds = [{"ua": ua, "wa": ua + 0.01, "macro_f1": ua - 0.01, "n": 10, "labels": ["a", "b"], "recall": {"a": ua},
              "confusion": [[5, 0], [1, 4]], "test_speakers": [f"emodb:{i}"]} for i, ua in enumerate((0.5, 0.7))]
    (cell / "metrics.json").write_text(json.dumps({"folds": folds, "summary": {"ua": {}}, "wall_seconds": 3.0}))
    (cell / "bench.json").write_text(json.dumps({"status": "done", "command": "# egemaps_svm", "commit": "abc",
                                                 "n_folds": 2, "seconds": 3.0, "cpu_seconds": 2.0,
                                                 "load_start": [1.0, 1.0, 1.0], "finished": "2026-01-01T00:00:00",
                                                 "note": "on re-encoded audio"}))
    path = record.export_cell(cell, tmp_path / "record")
    assert path == tmp_path / "record" / "cells" / "egemaps_svm__emodb_loso.json"
    assert "[5, 0]" in path.read_text()  # a confusion row on one line
    state = report.read_cell(record.read_cells(tmp_path / "record")["egemaps_svm", "emodb_loso"])
    assert report.fmt_cell(state, "ua") == "0.600 ± 0.100" and report.time_cell(state) == "3 / 2"
    assert report.summarize(state["reports"])["pooled"]["ua"] == pytest.approx(0.9)
    assert record.export_cell(tmp_path / "results" / "egemaps_svm" / "loco", tmp_path / "record") is None  # not run
    assert "- `egemaps_svm` on EmoDB LOSO: on re-encoded audio" in report.render(tmp_path / "record", tmp_path / "d.md")


def test_a_cell_stopped_half_way_goes_on_from_the_record_on_a_fresh_machine(tmp_path, corpora):
    """benchmark.carry keeps the finished folds of an unfinished cell in the record; on a machine without the run
    folder, benchmark.run restores them, trains only the missing fold, and the record says which fold came from where
    (also when the cell goes on where it stopped, with its folds in place)."""
    results = tmp_path / "results"
    argv = ["--quick", "--systems", "cnn1d_light", "--protocols", "emodb_loso", "--results", str(results),
            "--doc", str(tmp_path / "benchmarks.md"), "--cache_dir", str(tmp_path / "cache"), "--speed", "no"]
    run.main(argv)
    cell, kept = results / "cnn1d_light" / "emodb_loso", results / run.QUICK_RECORD
    full = json.loads(record.cell_path(kept, "cnn1d_light", "emodb_loso").read_text())
    bench = json.loads((cell / "bench.json").read_text())

    def stop_in_second_fold():
        (cell / "bench.json").write_text(json.dumps({**bench, "status": "running", "commit": "0ldc0de"}))
        shutil.rmtree(cell / "fold_01")
        (cell / "metrics.json").unlink()
        record.cell_path(kept, "cnn1d_light", "emodb_loso").unlink()

    stop_in_second_fold()
    run.main(argv)  # the same machine: fold 0 stays in place, and the record says which run trained it
    resumed = json.loads(record.cell_path(kept, "cnn1d_light", "emodb_loso").read_text())
    assert resumed["folds"][0] == full["folds"][0] and resumed["note"].startswith("fold(s) 0 trained at commit 0ldc0de")

    stop_in_second_fold()
    carry.main(["--results", str(results), "--record", str(kept), "--doc", str(tmp_path / "benchmarks.md")])
    carried = carry.carried_folder(kept, "cnn1d_light", "emodb_loso")
    assert sorted(p.name for p in (carried / "fold_00").iterdir()) == sorted(carry.FILES)  # no checkpoint: small
    partial = json.loads(record.cell_path(kept, "cnn1d_light", "emodb_loso").read_text())
    assert partial["status"] == "interrupted" and partial["folds"] == full["folds"][:1]
    assert "(1/2 folds, interrupted)" in (tmp_path / "benchmarks.md").read_text()

    shutil.rmtree(results / "cnn1d_light")  # a fresh machine: the record only
    run.main(argv)
    assert not (cell / "fold_00" / "model.safetensors").exists()  # restored, not trained again
    assert (cell / "fold_01" / "model.safetensors").exists()
    done = json.loads(record.cell_path(kept, "cnn1d_light", "emodb_loso").read_text())
    assert done["status"] == "done" and done["folds"][0] == full["folds"][0] and len(done["folds"]) == 2
    assert done["note"].startswith("fold(s) 0 trained at commit 0ldc0de")
    assert done["commit"] != "0ldc0de" and not carried.exists()  # the record holds them now
    (cell / "bench.json").write_text(json.dumps({**bench, "command": "python train.py --other"}))
    assert carry.restore(cell, kept, bench["command"]) == []  # nothing carried is left to restore


def test_folds_match_train_py(corpora):
    """common.prepare gives train.py's rows and flags; the cross-corpus fold tests every URDU speaker and only them."""
    rows, folds, flags = common.prepare(common.PROTOCOLS["cross_corpus"], seed=0)
    assert {r.label for r in rows} == set(common.SHARED_CLASSES)
    tested = {rows[i].corpus for i in folds[0]["test"]}
    trained = {rows[i].corpus for i in np.concatenate([folds[0]["train"], folds[0]["val"]])}
    assert tested == {"urdu"} and trained == {"ravdess", "emodb"} and len(folds) == 1
    assert flags[flags.index("--merge") + 1] == "calm:neutral"
    rows, folds, _ = common.prepare(common.PROTOCOLS["ravdess_5fold"], seed=0)
    assert [len(s) for s in common.fold_speakers(rows, folds)] == [4, 4, 4, 4, 4]


PEAK_PROBE = """
import json, numpy as np, torch, benchmark.speed as speed
runs = [speed.peak_memory(lambda: np.ones(50_000_000, dtype=np.float32).sum()),  # 200 MB
        speed.peak_memory(lambda: torch.ones(50_000_000).sum())]
print(json.dumps([[seconds, peak] for _, seconds, peak in runs]))
"""


def test_running_and_measuring_do_not_import_each_other():
    """benchmark.run and benchmark.speed share benchmark.common; only benchmark.report writes the document."""
    import subprocess
    import sys

    code = ("import sys, importlib; importlib.import_module(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.startswith('benchmark.')))")
    for module, other in (("benchmark.run", "benchmark.speed"), ("benchmark.speed", "benchmark.run")):
        done = subprocess.run([sys.executable, "-c", code, module], cwd=common.ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert other not in done.stdout and "benchmark.common" in done.stdout, (module, done.stdout)
    assert common.ROOT == Path(__file__).resolve().parents[1] and (common.ROOT / "train.py").is_file()


def test_report_alone_needs_a_record(tmp_path):
    with pytest.raises(SystemExit, match="no record folder"):
        report.main(["--record", str(tmp_path / "none"), "--doc", str(tmp_path / "doc.md")])
    assert not (tmp_path / "doc.md").exists()


def test_a_cell_names_the_run_that_ran_it_when_two_share_the_machine():
    heads = {"command": "heads", "started": "2026-12-05T23:00:56", "systems": ["whisper_mean"], "protocols": ["loco"]}
    scratch = {"command": "scratch", "started": "2026-12-05T23:01:56", "systems": ["cnn1d_light"],
               "protocols": ["loco", "loco_six"]}
    runs = [heads, scratch]
    assert record.run_of(runs, "2026-12-05T23:17:50", "whisper_mean", "loco") is heads  # not the newer run beside it
    assert record.run_of(runs, "2026-12-05T23:40:00", "cnn1d_light", "loco_six") is scratch
    assert record.run_of(runs, "2026-12-05T23:40:00") is scratch  # nothing known of the cell: the last one started


def test_the_document_lists_the_runs_that_produced_cells():
    worked = {"command": "python -m benchmark.run --systems a", "started": "2026-12-05T10:00", "finished": "2026-12-05T11:00"}
    idle = {**worked, "started": "2026-12-05T12:00", "finished": "2026-12-05T12:01"}  # restarted, every cell kept
    cells = [{"run": worked["command"], "finished": "2026-12-05T10:30"}]
    assert report.producing([worked, idle], cells) == [worked]
    assert report.producing([worked, idle], [{"finished": "2026-12-05T10:30"}]) == [worked, idle]  # cells name no run


def test_stop_at_means_the_next_such_time():
    import datetime as dt

    evening = dt.datetime(2026, 12, 5, 23, 0)
    assert run.deadline("01:00", evening) == dt.datetime(2026, 12, 6, 1, 0)  # said at 23:00: tomorrow, not past
    assert run.deadline("23:30", evening) == dt.datetime(2026, 12, 5, 23, 30)
    assert run.deadline("2026-12-05T22:00", evening) == dt.datetime(2026, 12, 5, 22, 0)  # a full date is taken as is
    assert run.deadline("", evening) is None


def test_peak_memory_sees_numpy_and_torch_allocations():
    # In a fresh process, as benchmark.speed measures: inside this suite, memory freed by earlier tests can stay with
    # the allocator and take the 200 MB without raising the resident set (one CI run read 0.0 MiB that way).
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", PEAK_PROBE], cwd=common.ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (seconds, numpy_peak), (_, torch_peak) = json.loads(done.stdout.splitlines()[-1])
    if numpy_peak is None:
        pytest.skip("no /proc/self/clear_refs: peak memory is not measured on this system")
    assert numpy_peak > 150 and seconds > 0
    assert torch_peak > 150


def test_window_count_matches_the_recognizer():
    assert [speed.n_windows(s, 10.0) for s in (1, 10, 12, 20, 600)] == [1, 1, 2, 3, 119]


def test_baseline_rtf_end_to_end(tmp_path, corpora):
    model = speed.BaselineModel("egemaps_svm", str(tmp_path / "cache"))
    files = [speed.write_48k(speed.long_audio(2.0, [r]), tmp_path / f"{i}.wav")
             for i, r in enumerate(speed.real_clips(3))]
    result = speed.measure_rtf("egemaps_svm", model, files, reps=1)
    assert 0 < result["single"] < 1 and 0 < result["batched"] < 1  # far faster than real time
    assert abs(result["audio_s"] - 6.0) < 0.01 and 0 < result["decode_share"] < 1


def test_speed_section_renders_ratios():
    figures = {"measured_at": "now", "command": "python -m benchmark.speed", "threads": 2, "reps": 3, "quick": False,
             "machine": {"load_average": [0.5, 0.5, 0.5], "usable_cores": 2}, "load_after": [0.6, 0.6, 0.6],
             "checkpoints": {"whisper-base-mean": {"stand_in": False, "default": True, "parameters": 21e6,
                                                        "load_s": 1.5}},
             "rtf": [{"system": "whisper-base-mean", "clips": 6, "audio_s": 20.0, "single": 0.04, "batched": 0.02,
                      "single_cpu": 0.03, "decode_share": 0.1, "default": True},
                     {"system": "egemaps_svm", "clips": 6, "audio_s": 20.0, "single": 0.01, "batched": 0.01,
                      "decode_share": 0.3, "default": False}],
             "latency_5s": [{"system": "whisper-base-mean", "median_s": 0.2, "max_s": 0.3, "reps": 5, "cpu_s": 0.15},
                            {"system": "egemaps_svm", "median_s": 0.05, "max_s": 0.06, "reps": 5}],
             "lengths": [{"system": s, "seconds": 60, "time_s": t, "peak_mib": 100.0, "reps": 1, "windows": 11}
                         for s, t in (("whisper-base-mean", 3.0), ("egemaps_svm", 0.6))],
             "training": [{"files": 20, "audio_s": 50, "epochs": 2, "whisper_cold_s": 20.0, "whisper_warm_s": 5.0,
                           "cnn_cold_s": 8.0, "egemaps_svm_s": 2.0}],
             "finetune": {"samples": 32, "seconds": 16.0, "samples_per_s": 2.0, "crop_seconds": 4.0,
                          "precision": "float32 (CPU)"}, "gpu": None}
    text = "\n".join(report.speed_lines(figures))
    assert "| 0.0400 | 0.0300 | 0.0200 | – | 10 % | 4.00× | 2.00× |" in text  # RTF and its ratios to eGeMAPS + SVM
    assert "| 200 ms | 300 ms | 150 ms | 4.00× | 1.5 s |" in text
    assert "| 4.0× |" in text and "10.00×" in text  # cache speed-up, Whisper cold vs eGeMAPS + SVM training
    assert "2.00 training samples/s" in text and "No GPU has run this record" in text
