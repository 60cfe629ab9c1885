"""infer.py and the Python API: CSV / JSON lines / stdout, embeddings, resume, interruption, devices, Hub ids.

Runs the committed 1-D CNN checkpoint (fast) on real EmoDB recordings.
"""
import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from serving.recognizer import Recognizer

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "tests" / "checkpoints" / "cnn1d-light"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


class Run(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def infer(*args: str, check: bool = True) -> Run:
    """Run infer.py's main() here (a subprocess would pay torch's import each time) and return what it printed."""
    import contextlib

    import infer as cli

    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main(["--checkpoint", str(CHECKPOINT), *args])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
            if not isinstance(exit_.code, int) and exit_.code is not None:
                print(exit_.code, file=err)
    if check and code != 0:
        raise AssertionError(f"infer.py failed ({code}):\n{err.getvalue()[-3000:]}")
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer.from_pretrained(CHECKPOINT, device="cpu")


@pytest.fixture(scope="module")
def clips(emodb_rows) -> list[str]:
    """Four real EmoDB recordings of speaker 03."""
    return [r.path for r in emodb_rows if r.speaker == "emodb:03"][:4]


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory, emodb_rows) -> Path:
    """25 s of real speech (EmoDB utterances one after another) at 48 kHz."""
    from data_process import load_audio

    audio, pieces = 0, []
    for row in emodb_rows:
        pieces.append(load_audio(row.path))
        audio += len(pieces[-1])
        if audio >= 25 * 16_000:
            break
    path = tmp_path_factory.mktemp("long") / "long.wav"
    sf.write(path, soxr.resample(np.concatenate(pieces)[:25 * 16_000], 16_000, 48_000), 48_000)
    return path


def test_csv_rows_in_input_order_with_windows_and_errors(tmp_path, clips, long_speech, recognizer):
    folder = tmp_path / "in" / "nested"
    folder.mkdir(parents=True)
    shutil.copy(long_speech, folder / "long.wav")
    (folder / "broken.wav").write_bytes(b"RIFF not really")
    (folder / "x.wav").mkdir()  # a folder named like audio, inside a folder given: it gets a row, not silence
    (tmp_path / "no_audio").mkdir()
    out = tmp_path / "out.csv"
    done = infer("--output", str(out), "--segments", clips[0], str(tmp_path / "in"), str(tmp_path / "no_audio"))
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0])[:2] == ["path", "label"] and list(rows[0])[2:2 + len(recognizer.labels)] == recognizer.labels
    whole = [r for r in rows if r["segment"] == "all"]
    assert [r["path"] for r in whole] == [clips[0], str(folder / "broken.wav"), str(folder / "long.wav"),
                                          str(folder / "x.wav"), str(tmp_path / "no_audio")]
    assert [r["reason"] for r in whole] == ["", "unreadable", "", "directory", "directory"]
    assert "'broken.wav' could not be read as audio" in whole[1]["error"] and whole[1]["label"] == ""
    assert "'x.wav' is a folder" in whole[3]["error"]
    for r in (whole[0], whole[2]):
        probs = [float(r[k]) for k in recognizer.labels]
        assert abs(sum(probs) - 1) < 1e-3 and r["label"] == recognizer.labels[int(np.argmax(probs))]
    windows = [r for r in rows if r["path"].endswith("long.wav") and r["segment"] != "all"]
    assert len(windows) == 4 and windows[-1]["end_s"] == "25.00"  # 10 s windows, 5 s hop, the last one flush
    expected = recognizer.predict(str(folder / "long.wav")).probabilities
    assert max(abs(float(whole[2][k]) - p) for k, p in expected.items()) < 1e-5
    assert "infer: scoring 5/5 files (100%)" in done.stderr  # progress as plain lines when stderr is not a terminal


def test_jsonl_on_stdout_with_top_k(clips, recognizer):
    done = infer("--format", "jsonl", "--output", "-", "--top_k", "3", "--batch_size", "2", *clips)
    items = [json.loads(line) for line in done.stdout.splitlines()]
    assert [item["path"] for item in items] == clips and all(item["error"] is None for item in items)
    for item, path in zip(items, clips):
        expected = recognizer.predict(path).top(3)
        assert list(item["probabilities"]) == [label for label, _ in expected] and item["label"] == expected[0][0]
        assert np.allclose(list(item["probabilities"].values()), [p for _, p in expected], atol=1e-4)
    assert "wrote 4 scored" in done.stderr and not (ROOT / "-").exists()


def test_csv_top_k_columns(clips):
    rows = list(csv.DictReader(io.StringIO(infer("--top_k", "2", clips[0]).stdout)))
    assert list(rows[0]) == ["path", "label", "label_1", "prob_1", "label_2", "prob_2", "error", "reason"]
    assert rows[0]["label_1"] == rows[0]["label"] and float(rows[0]["prob_1"]) >= float(rows[0]["prob_2"])


def test_embeddings_are_what_the_classifier_reads(tmp_path, clips, recognizer):
    out, npy = tmp_path / "out.jsonl", tmp_path / "emb.npy"
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    infer("--output", str(out), "--embeddings", str(npy), clips[0], str(tmp_path / "broken.wav"), clips[1])
    items = [json.loads(line) for line in open(out)]
    vectors = np.load(npy)
    assert vectors.shape == (3, recognizer.embedding_dim) and np.isnan(vectors[1]).all()  # rows in output order
    for row, item in zip(vectors[[0, 2]], [items[0], items[2]]):
        with torch.no_grad():  # the pooled vector through the classifier gives the file's probabilities
            probs = torch.softmax(recognizer.model.classifier(torch.from_numpy(row)[None]), -1)[0].numpy()
        assert np.allclose([probs[recognizer.labels.index(k)] for k in item["probabilities"]],
                           list(item["probabilities"].values()), atol=1e-5)
    assert np.allclose(recognizer.embed(clips[0]), vectors[0], atol=1e-5)


def test_rerun_resumes_and_overwrite_starts_over(tmp_path, clips):
    out, npy = tmp_path / "out.csv", tmp_path / "emb.npy"
    infer("--output", str(out), "--embeddings", str(npy), *clips[:2])
    with open(out, "a") as handle:
        handle.write(f"{clips[2]},angr")  # a row half-written by a killed run: cut, and that file scored again
    done = infer("--output", str(out), "--embeddings", str(npy), *clips)
    assert "resuming" in done.stderr and "wrote 2 scored" in done.stderr
    rows = list(csv.DictReader(open(out)))
    assert [r["path"] for r in rows] == clips and np.load(npy).shape[0] == 4
    assert "wrote 0 scored" in infer("--output", str(out), "--embeddings", str(npy), *clips).stderr
    other = infer("--output", str(out), "--top_k", "2", *clips, check=False)  # other columns: refused, not mixed
    assert other.returncode != 0 and "--overwrite" in other.stderr
    assert "wrote 1 scored" in infer("--output", str(out), "--top_k", "2", "--overwrite", clips[0]).stderr
    assert len(list(csv.DictReader(open(out)))) == 1


def test_sigterm_leaves_valid_files_and_the_run_resumes(tmp_path):
    from tests.ui_helpers import corpora

    folder = corpora() / "emodb" / "wav"  # 535 real clips: far more than are scored before the signal
    out, npy = tmp_path / "out.csv", tmp_path / "emb.npy"
    command = [sys.executable, "infer.py", "--checkpoint", str(CHECKPOINT), "--output", str(out), "--embeddings",
               str(npy), "--batch_size", "4", str(folder)]
    proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and (not out.exists() or out.read_text().count("\n") < 3):
        time.sleep(0.02)
    assert proc.poll() is None, "infer.py finished (or failed) before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "interrupted" in stderr and "resumes" in stderr
    rows = list(csv.DictReader(open(out)))
    assert 2 <= len(rows) < 535 and all(r["label"] and r["error"] == "" for r in rows)  # whole rows only
    assert np.load(npy).shape[0] == len(rows)
    resumed = infer("--output", str(out), "--embeddings", str(npy), "--batch_size", "4",
                    *[str(folder / name) for name in sorted(os.listdir(folder))[:len(rows) + 2]])
    assert "wrote 2 scored" in resumed.stderr
    assert len(list(csv.DictReader(open(out)))) == len(rows) + 2 == np.load(npy).shape[0]


def test_a_signal_waits_for_the_whole_row():
    """Ctrl-C or SIGTERM between a file's row and its embedding would leave them out of step: it waits."""
    import infer as cli

    previous = cli.SIGNALS.install()
    try:
        done = []
        with pytest.raises(cli.Interrupted) as caught:
            with cli.SIGNALS.held():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                done.append("row and embedding")
        assert done == ["row and embedding"] and caught.value.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
    finally:
        cli.SIGNALS.restore(previous)


def test_devices_and_checkpoint_errors(tmp_path, clips):
    assert "wrote 1 scored" in infer("--device", "cpu", clips[0]).stderr
    if not torch.cuda.is_available():
        failed = infer("--device", "cuda", clips[0], check=False)
        assert failed.returncode != 0 and "no CUDA GPU" in failed.stderr
    import infer as cli

    with pytest.raises(SystemExit, match="no such checkpoint folder"):
        cli.main(["--checkpoint", str(tmp_path / "nothing"), clips[0]])
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        Recognizer(tmp_path)


def test_hub_id_loads_from_the_hub_cache(tmp_path, clips, recognizer):
    """A Hub id resolves through huggingface_hub: here an offline cache laid out as a download leaves it."""
    snapshot = tmp_path / "hub" / "models--someone--ser-cnn" / "snapshots" / ("0" * 40)
    shutil.copytree(CHECKPOINT, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    code = ("import sys; sys.path.insert(0, '.'); from serving.recognizer import Recognizer\n"
            f"print(Recognizer.from_pretrained('someone/ser-cnn', device='cpu').predict({clips[0]!r}).label)\n"
            "try: Recognizer.from_pretrained('someone/absent')\n"
            "except FileNotFoundError as err: print(err)")
    env = {**ENV, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    label, refusal = done.stdout.splitlines()[:2]
    assert label == recognizer.predict(clips[0]).label
    assert "someone/absent" in refusal and "Hugging Face Hub" in refusal


# --- the Python API ------------------------------------------------------------------------------
def test_predict_takes_a_path_an_array_or_a_rate_and_samples(recognizer, clips):
    from data_process import load_audio

    audio = load_audio(clips[0])
    by_path = recognizer.predict(clips[0])
    probs, windows = recognizer.predict(audio)  # unpacks as earlier versions did
    resampled = recognizer.predict((48_000, soxr.resample(audio, 16_000, 48_000)))
    assert probs == by_path.probabilities and len(windows) == 1
    assert resampled.label == by_path.label and by_path.top(1)[0][0] == by_path.label
    batch = recognizer.predict_batch(clips)
    for path, one in zip(clips, batch):
        alone = recognizer.predict(path)
        assert one.label == alone.label
        assert max(abs(one.probabilities[k] - v) for k, v in alone.probabilities.items()) < 1e-4
    assert recognizer.probabilities([audio]).shape == (1, len(recognizer.labels))


def test_long_audio_is_the_mean_of_its_windows(recognizer, tone):
    audio = np.concatenate([tone(7.0), tone(7.0, freq=440.0)])
    probs, windows = recognizer.predict(audio)
    assert [(w.start, w.end) for w in windows] == [(0.0, 10.0), (4.0, 14.0)]
    assert np.allclose(list(probs.values()), np.mean([w.probs for w in windows], axis=0), atol=1e-6)
    assert recognizer.embed(audio).shape == (recognizer.embedding_dim,)


def test_readme_example_runs(capsys):
    """The Python API example of the README, run as written (in this process: torch is imported already)."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```python\nfrom serving.recognizer import Recognizer")
    code = readme[start + len("```python\n"): readme.index("```", start + 10)]
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 5 and re.fullmatch(r"\(\d+,\)", printed[2])  # (D,)
    assert printed[3] in printed[1] and 0 < float(printed[4]) < 1  # adapted to a speaker: a label, its unsure bound
