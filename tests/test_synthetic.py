"""Bona-fide vs synthetic speech: the CSV task labels, scripts/make_synthetic.py (espeak-ng), a model trained on it."""
import csv
import os
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf

import train
from conftest import ROOT, require
from data.corpora import corpora_root, read_corpora, read_corpus

sys.path.insert(0, str(ROOT / "scripts"))  # scripts/ holds scripts, not a package
import make_synthetic  # noqa: E402


def test_csv_task_labels(tmp_path, tone):
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, tone(0.2), 16000)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,speaker\na.wav,bonafide,emodb:03\nb.wav,Synthetic,espeak:de+m3\n")
    rows = read_corpus(f"csv={manifest}:task=spoof")
    assert [(r.label, r.speaker) for r in rows] == [("bonafide", "csv:emodb:03"), ("synthetic", "csv:espeak:de+m3")]
    assert [r.label for r in read_corpora([f"csv={manifest}:task=spoof"], keep=["synthetic"])] == ["synthetic"]
    assert [r.label for r in read_corpus(f"csv={manifest}")] == ["bonafide", "Synthetic"]  # labels as written
    with pytest.raises(ValueError, match="line 2: unknown label 'bonafide'"):
        read_corpus(f"csv={manifest}:task=emotion")  # these are not emotions
    (tmp_path / "angry.csv").write_text("path,label\na.wav,angry\n")
    with pytest.raises(ValueError, match="line 2: unknown label 'angry'"):
        read_corpus(f"csv={tmp_path / 'angry.csv'}:task=spoof")
    with pytest.raises(ValueError, match="unknown task 'deepfake'"):
        read_corpus(f"csv={manifest}:task=deepfake")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small bona-fide/synthetic corpus: 1 real clip per shared-corpus speaker, 8 espeak-ng voices x 6 sentences."""
    require(corpora_root() / "emodb", "the shared corpora")
    if shutil.which("espeak-ng") is None:
        reason = "espeak-ng is not installed (apt-get install -y espeak-ng)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("spoof")
    summary = make_synthetic.build(out, per_speaker=1, voices=8, per_voice=6, seed=0)
    return out, summary


def test_build_writes_both_labels_with_speakers(corpus):
    out, summary = corpus
    assert summary["synthetic"] == {"files": 48, "speakers": 8}
    assert summary["bonafide"]["files"] == summary["bonafide"]["speakers"] >= 50  # every real speaker once
    rows = read_corpus(f"csv={out / 'manifest.csv'}:task=spoof")
    assert len(rows) == summary["bonafide"]["files"] + 48
    by_label = {label: {r.speaker for r in rows if r.label == label} for label in ("bonafide", "synthetic")}
    assert not by_label["bonafide"] & by_label["synthetic"]
    assert all(s.startswith("csv:espeak:") for s in by_label["synthetic"])
    with open(out / "manifest.csv") as handle:
        paths = [row["path"] for row in csv.DictReader(handle)]
    assert all(p.split("/")[0] in ("bonafide", "synthetic") for p in paths)  # folder per label
    audio, sr = sf.read(out / paths[-1])
    assert sr == 16000 and audio.ndim == 1 and 0.8 < len(audio) / sr < 8 and np.abs(audio).max() > 0.05


def test_refuses_to_write_inside_the_repository():
    with pytest.raises(SystemExit, match="inside the repository"):
        make_synthetic.main(["--out", str(ROOT / "runs" / "spoof")])


def test_mfcc_lstm_tells_synthetic_from_real_voices_it_never_heard(corpus, tmp_path):
    out, _ = corpus
    result = train.main([
        "--corpus", f"csv={out / 'manifest.csv'}:task=spoof", "--backbone", "mfcc_lstm", "--lstm_layers", "2",
        "--lstm_hidden", "32", "--pooling", "mean", "--protocol", "speaker_kfold", "--folds", "4", "--run_folds", "0",
        "--val_speakers", "0",  # one clip per real speaker: too few for early stopping, so train every epoch
        "--num_train_epochs", "6", "--per_device_train_batch_size", "16", "--crop_seconds", "2",
        "--learning_rate", "3e-3", "--output_dir", str(tmp_path / "run"), "--disable_tqdm", "true"])
    report = result["folds"][0]
    assert set(report["recall"]) == {"bonafide", "synthetic"}  # speaker folds put both kinds in the test fold
    assert report["ua"] > 0.8, report  # chance is 0.5
