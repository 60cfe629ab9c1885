"""infer.py: the CSV it writes, windows on long audio, errors that do not stop the run."""
import csv
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import train
from infer import Recognizer

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, emodb_rows):
    out = tmp_path_factory.mktemp("ck") / "cnn"
    train.main(["--corpus", "emodb", "--labels", "angry", "neutral", "sad", "--protocol", "fixed", "--test_speakers",
                "emodb:03", "--max_files", "40", "--num_train_epochs", "1", "--backbone", "cnn1d",
                "--cnn_first_stride", "4", "--output_dir", str(out), "--disable_tqdm", "true"])
    return out


def test_csv_has_path_label_probabilities_and_errors(tmp_path, checkpoint, emodb_rows, tone):
    folder = tmp_path / "in" / "nested"
    folder.mkdir(parents=True)
    sf.write(folder / "long.wav", np.tile(tone(1.0, 48000), 25), 48000)  # 25 s at 48 kHz
    (folder / "broken.wav").write_bytes(b"RIFF not really")
    real = emodb_rows[0].path
    out = tmp_path / "out.csv"
    subprocess.run([sys.executable, "infer.py", "--checkpoint", str(checkpoint), "--output", str(out), "--segments",
                    real, str(tmp_path / "in")], cwd=ROOT, check=True, capture_output=True)
    rows = list(csv.DictReader(open(out)))
    header = list(rows[0].keys())
    assert header[:5] == ["path", "label", "angry", "neutral", "sad"] and "error" in header
    whole = [r for r in rows if r["segment"] in ("all", "")]
    assert [r["path"] for r in whole] == [real, str(folder / "broken.wav"), str(folder / "long.wav")]
    assert "broken.wav" in whole[1]["error"] and whole[1]["label"] == ""
    for r in (whole[0], whole[2]):
        probs = [float(r[k]) for k in ("angry", "neutral", "sad")]
        assert abs(sum(probs) - 1) < 1e-3 and r["label"] == ("angry", "neutral", "sad")[int(np.argmax(probs))]
    windows = [r for r in rows if r["path"].endswith("long.wav") and r["segment"] not in ("all", "")]
    assert len(windows) == 4 and windows[-1]["end_s"] == "25.00"  # 10 s windows, 5 s hop, last one flush


def test_long_audio_is_the_mean_of_its_windows(checkpoint, tone):
    recognizer = Recognizer(checkpoint)
    audio = np.concatenate([tone(7.0), tone(7.0, freq=440.0)])
    probs, windows = recognizer.predict(audio)
    assert [(w.start, w.end) for w in windows] == [(0.0, 10.0), (4.0, 14.0)]
    assert np.allclose(list(probs.values()), np.mean([w.probs for w in windows], axis=0), atol=1e-6)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        Recognizer(tmp_path)
