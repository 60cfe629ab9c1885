"""Windows of long audio without speech are neither scored nor averaged, in infer.py, the app, the Python API and
`pipeline`: a minute of digital silence before one angry sentence must not outvote it (issue 18)."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audio import checks as audio_checks
from data_process import load_audio
from models import waveform
from models.waveform import speech_parts
from tests.ui_helpers import recording

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = "whisper-base-std-linear"  # the shipped model, the one the user heard say "46 % fearful"
SILENCE_S = 60


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A real EmoDB angry sentence alone, and after 60 s of digital silence (16 kHz WAV)."""
    folder = tmp_path_factory.mktemp("speech_windows")
    clip = load_audio(recording("03a01Wa.wav"))
    sf.write(folder / "alone.wav", clip, 16_000, subtype="FLOAT")
    sf.write(folder / "padded.wav", np.concatenate([np.zeros(SILENCE_S * 16_000, np.float32), clip]), 16_000,
             subtype="FLOAT")
    return {"alone": folder / "alone.wav", "padded": folder / "padded.wav"}


@pytest.fixture(scope="module")
def recognizer():
    from serving.recognizer import Recognizer

    return Recognizer(ROOT / "checkpoints" / DEFAULT)


def close(a: dict, b: dict, tolerance: float = 0.01) -> bool:
    return a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) < tolerance


def test_silent_windows_are_marked_and_left_out_of_the_answer(files, recognizer):
    alone, padded = recognizer.predict(str(files["alone"])), recognizer.predict(str(files["padded"]))
    assert alone.label == padded.label == "angry"
    assert close(padded.probabilities, alone.probabilities), (padded.top(3), alone.top(3))
    silent = [w for w in padded.windows if not w.speech]
    assert len(silent) == len(padded.windows) - 1 >= 11 and all(w.end <= SILENCE_S for w in silent)
    assert padded.windows[-1].speech and padded.windows[-1].end == pytest.approx(SILENCE_S + 1.88, abs=0.01)
    assert recognizer.embed(str(files["padded"])).shape == (recognizer.embedding_dim,)  # the speech window's


def test_infer_rows_mark_windows_without_speech(files, tmp_path):
    import infer

    out = tmp_path / "scores.jsonl"
    infer.main(["--checkpoint", str(ROOT / "checkpoints" / DEFAULT), "--segments", "--output", str(out),
                str(files["alone"]), str(files["padded"])])
    rows = {Path(item["path"]).name: item for item in map(json.loads, out.read_text().splitlines())}
    assert rows["padded.wav"]["label"] == rows["alone.wav"]["label"] == "angry"
    assert close(rows["padded.wav"]["probabilities"], rows["alone.wav"]["probabilities"])
    windows = rows["padded.wav"]["windows"]
    assert [w["reason"] for w in windows] == ["no_speech"] * (len(windows) - 1) + [None]
    assert all(w["probabilities"] is None and w["label"] is None for w in windows[:-1])
    csv_out = tmp_path / "scores.csv"
    infer.main(["--checkpoint", str(ROOT / "checkpoints" / DEFAULT), "--segments", "--output", str(csv_out),
                str(files["padded"])])
    import csv

    segments = [row for row in csv.DictReader(csv_out.open()) if row["segment"] not in ("all", "")]
    assert [row["reason"] for row in segments] == ["no_speech"] * (len(segments) - 1) + [""]
    assert segments[0]["label"] == segments[0]["angry"] == "" and segments[-1]["label"] == "angry"


def test_the_app_marks_windows_without_speech(files):
    from ui import callbacks
    from ui.model_store import ModelStore

    store = ModelStore(ROOT / "checkpoints")
    alone = callbacks.analyse(str(files["alone"]), DEFAULT, store)
    note, label, bars, timeline, table = callbacks.predict(str(files["padded"]), DEFAULT, store)
    assert close(label, alone.probabilities) and next(iter(label)) == "angry"
    rows = table["value"]
    no_speech = rows[rows["top emotion"] == callbacks.NO_SPEECH]
    assert len(no_speech) == len(rows) - 1 and no_speech["angry"].isna().all()  # no probabilities for them
    assert (timeline["value"]["time (s)"] > SILENCE_S - 2).all()  # the timeline's points: the speech only
    assert f"{len(rows) - 1} of {len(rows)} windows without speech left out" in note


def test_pipeline_leaves_out_windows_without_speech(files, recognizer):
    from transformers import pipeline

    classify = pipeline("audio-classification", model=str(ROOT / "checkpoints" / DEFAULT), trust_remote_code=True)
    got = {s["label"]: s["score"] for s in classify(str(files["padded"]), top_k=None)}
    assert close(got, recognizer.predict(str(files["alone"])).probabilities)


def test_audio_without_any_speech_keeps_its_refusal():
    silence = np.zeros(SILENCE_S * 16_000, np.float32)
    with pytest.raises(audio_checks.Rejected) as refused:
        audio_checks.check(silence)
    assert refused.value.reason == "silent"
    spans = [(s, s + 160_000) for s in range(0, len(silence) - 160_000, 80_000)]
    assert speech_parts(silence, spans) == spans  # scored anyway on request (--allow_nonspeech): every window
    assert (audio_checks.MIN_SPEECH_S, audio_checks.VAD_FRAME_S) == (waveform.MIN_SPEECH_S, waveform.VAD_FRAME_S)
