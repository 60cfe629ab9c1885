"""infer.py --engine ray (serving/ray_engine.py): the local engine's rows, refusals and resume, from Ray Data actors.

On a local 2-CPU Ray instance, the committed default checkpoint, real EmoDB clips and a text file named .wav.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

try:
    import ray
except ImportError:  # pragma: no cover - ray is in requirements.txt; CI must have it
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("ray is not importable (it is in requirements.txt)", pytrace=False)
    pytest.skip("ray is not importable: pip install 'ray[data]'", allow_module_level=True)

import infer
from serving.recognizer import default_checkpoint, load_scorer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, emodb_rows) -> Path:
    """Seven real EmoDB clips (speakers 03 and 08, several emotions) and one text file named .wav."""
    folder = tmp_path_factory.mktemp("archive")
    chosen = ([r for r in emodb_rows if r.speaker == "emodb:03"][:4]
              + [r for r in emodb_rows if r.speaker == "emodb:08"][:3])
    for row in chosen:
        (folder / Path(row.path).name).symlink_to(Path(row.path).resolve())
    (folder / "not_audio.wav").write_text("this is a text file, not a recording\n")
    return folder


@pytest.fixture(scope="module")
def scorer():
    checkpoint = default_checkpoint()
    assert checkpoint, "checkpoints/default.txt names no committed checkpoint"
    return load_scorer(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance with 2 CPUs for the module (the engine uses a running instance as it is)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def run(scorer, output: Path, folder: Path, engine: str, capsys, **options) -> str:
    failed = infer.run(default_checkpoint(), str(output), [str(folder)], device="cpu", scorer=scorer,
                       engine=engine, ray_options={"actors": 1, "cpus_per_actor": 1} if engine == "ray" else None,
                       **options)
    assert failed == 1  # the text file, and only it
    return capsys.readouterr().err


def csv_rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def assert_same_csv(ray_rows: list[dict], local_rows: list[dict], labels: list[str]) -> None:
    assert [r["path"] for r in ray_rows] == [r["path"] for r in local_rows]
    for got, want in zip(ray_rows, local_rows):
        assert (got["label"], got["error"], got["reason"]) == (want["label"], want["error"], want["reason"])
        if not want["error"]:
            assert np.allclose([float(got[k]) for k in labels], [float(want[k]) for k in labels], atol=1e-5)


def test_ray_rows_equal_the_local_engines_and_a_rerun_scores_only_the_rest(tmp_path, folder, scorer, local_ray,
                                                                          capsys):
    local, scored = tmp_path / "local.csv", tmp_path / "ray.csv"
    run(scorer, local, folder, "local", capsys)
    err = run(scorer, scored, folder, "ray", capsys)
    assert "wrote 7 scored and 1 failed" in err
    local_rows, ray_rows = csv_rows(local), csv_rows(scored)
    assert len(ray_rows) == 8 and scored.read_text().splitlines()[0] == local.read_text().splitlines()[0]
    assert_same_csv(ray_rows, local_rows, scorer.labels)
    refused = [r for r in ray_rows if r["path"].endswith("not_audio.wav")]
    assert len(refused) == 1 and refused[0]["reason"] == "unreadable" and refused[0]["label"] == ""
    assert sum(bool(r["error"]) for r in ray_rows) == 1

    # resumed: an output holding the first 3 files (one of them altered, so a rescore would show) and half a row
    lines = local.read_text().splitlines(keepends=True)
    kept = lines[:4]
    kept[1] = kept[1].replace(local_rows[0]["label"] + ",", "kept_as_it_was,", 1)
    resumed = tmp_path / "resumed.csv"
    resumed.write_text("".join(kept) + lines[4][:20])
    err = run(scorer, resumed, folder, "ray", capsys)
    assert "3 of 8 files are in it already" in err and "wrote 4 scored and 1 failed" in err
    rows = csv_rows(resumed)
    assert rows[0]["label"] == "kept_as_it_was"  # not scored again
    assert_same_csv(rows[1:], local_rows[1:], scorer.labels)

    # nothing left: Ray is not even asked
    infer.run(default_checkpoint(), str(resumed), [str(folder)], device="cpu", scorer=scorer, engine="ray")
    assert "wrote 0 scored and 0 failed" in capsys.readouterr().err


def test_ray_jsonl_with_top_k_and_segments_equals_local(tmp_path, folder, scorer, local_ray, capsys):
    local, scored = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    options = {"top_k": 3, "segments": True}
    run(scorer, local, folder, "local", capsys, **options)
    run(scorer, scored, folder, "ray", capsys, **options)
    want = [json.loads(line) for line in local.read_text().splitlines()]
    got = [json.loads(line) for line in scored.read_text().splitlines()]
    assert [g["path"] for g in got] == [w["path"] for w in want]
    for g, w in zip(got, want):
        assert (g["label"], g["error"], g["reason"]) == (w["label"], w["error"], w["reason"])
        assert list(g) == list(w)
        if w["probabilities"]:
            assert list(g["probabilities"]) == list(w["probabilities"])
            assert np.allclose(list(g["probabilities"].values()), list(w["probabilities"].values()), atol=1e-5)
            spans = [[(x["start_s"], x["end_s"]) for x in item["windows"]] for item in (g, w)]
            assert spans[0] == spans[1]


def test_cli_documents_the_ray_flags_and_refuses_normalize(tmp_path, folder, scorer, capsys):
    with pytest.raises(SystemExit):
        infer.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--engine", "--ray_actors", "--ray_cpus_per_actor", "--ray_gpus_per_actor", "RAY_ADDRESS"):
        assert flag in text
    with pytest.raises(SystemExit, match="not with --engine ray"):
        infer.run(default_checkpoint(), str(tmp_path / "out.csv"), [str(folder)], scorer=scorer, engine="ray",
                  normalize="folder")


def test_actors_and_the_checkpoint_as_the_workers_see_it(local_ray, tmp_path):
    from serving import ray_engine

    assert ray_engine.default_actors(1.0, 0.0) == 1  # 2 CPUs: one actor, one CPU left for Ray's own work
    with pytest.raises(SystemExit, match="no GPU"):
        ray_engine.default_actors(1.0, 1.0)
    inside = ray_engine._checkpoint_for_workers(default_checkpoint())
    assert inside == (str(Path(default_checkpoint()).relative_to(ROOT)), True)  # found in each node's copy
    assert ray_engine._checkpoint_for_workers(str(tmp_path)) == (str(tmp_path.resolve()), False)
    assert ray_engine._checkpoint_for_workers("owner/model") == ("owner/model", False)  # a Hub id
