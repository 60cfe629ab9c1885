"""The live microphone's callback (ui/live.py) fed a real recording in 1 s chunks, as the page streams it."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr

from tests.ui_helpers import DEFAULT, TINY, checkpoints, recording
from ui import callbacks, live, uploads
from ui.model_store import ModelStore

RATE = 48_000  # what Chromium records at


@pytest.fixture(scope="module")
def store(request) -> ModelStore:
    return ModelStore(checkpoints(request))


@pytest.fixture(scope="module")
def speech48k() -> np.ndarray:
    """About 9 s of real speech (four EmoDB utterances of three speakers) as 48 kHz int16."""
    from data_process import load_audio

    audio = np.concatenate([load_audio(recording(name)) for name in ("03a01Wa.wav", "03a04Ta.wav", "08a01Ab.wav",
                                                                      "16b10Lb.wav")])
    return (np.clip(soxr.resample(audio, 16_000, RATE), -1, 1) * 32767).astype(np.int16)


def chunk_files(samples: np.ndarray, folder) -> list[str]:
    """Write `samples` as the page streams them: one WAV of 1 s each, in folders of their own."""
    paths = []
    for i in range(0, len(samples), RATE):
        (folder / f"chunk{i}").mkdir()
        paths.append(str(folder / f"chunk{i}" / "audio.wav"))
        sf.write(paths[-1], samples[i:i + RATE], RATE, subtype="PCM_16")
    return paths


def test_live_updates_follow_the_last_four_seconds(store, speech48k, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    state, *results = live.started()
    assert results[1] is None and not results[3]["visible"]
    labels = store.get(DEFAULT).labels
    for n, path in enumerate(chunk_files(speech48k, tmp_path), start=1):
        state, note, label, bars, timeline, table = live.update(path, DEFAULT, state, None, store)
        assert sorted(label) == sorted(labels) and abs(sum(label.values()) - 1) < 1e-4
        assert list(bars["emotion"]) == list(label)  # highest first, as the bars show them
        assert timeline["visible"] and not table["visible"]
        assert len(timeline["value"]) == n * len(labels)  # one point per update: every chunk holds speech
        assert note.startswith("Live · ") and f"`{DEFAULT}`" in note
    assert not list(tmp_path.rglob("*.wav"))  # every chunk deleted once read
    assert state.heard == pytest.approx(len(speech48k) / RATE)
    times = sorted(set(timeline["value"]["time (s)"]))
    assert len(times) == n and times[-1] == pytest.approx(state.heard - live.LIVE_WINDOW_S / 2, abs=0.01)
    # the last update scored exactly the last 4 s, as the file path scores a 4 s clip
    last = callbacks.analyse((RATE, speech48k[-int(live.LIVE_WINDOW_S * RATE):]), DEFAULT, store).probabilities
    assert max(abs(label[k] - last[k]) for k in last) < 1e-5


def test_silence_is_not_scored_and_a_model_switch_starts_over(store, speech48k):
    state = None
    for i in range(3):
        state, note, *rest = live.update((RATE, speech48k[i * RATE:(i + 1) * RATE]), DEFAULT, state, None, store)
    assert len(state.windows) == 3
    for _ in range(5):  # 5 s of silence: the 4 s window holds no speech any more
        state, note, label, *_ = live.update((RATE, np.zeros(RATE, np.int16)), DEFAULT, state, None, store)
    assert "listening: no speech in the last 4 s" in note and "8 s heard" in note
    assert isinstance(label, type(callbacks.gr.skip())) and len(state.windows) < 8
    other = next(name for name in TINY if name != DEFAULT)
    state, note, label, *_ = live.update((RATE, speech48k[:RATE]), other, state, None, store)
    assert state.model == other and len(state.windows) == 1 and state.heard == 1.0
    assert sorted(label) == sorted(store.get(other).labels)


def test_unreadable_chunks_get_a_message(store, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    (tmp_path / "x").mkdir()
    bad = tmp_path / "x" / "audio.wav"
    bad.write_bytes(b"RIFF not really")
    with pytest.raises(callbacks.gr.Error, match="microphone sent audio that could not be read"):
        live.update(str(bad), DEFAULT, None, None, store)
    assert not bad.exists()
    with pytest.raises(callbacks.gr.Error, match="NaN"):
        live.update((RATE, np.full(RATE, np.nan, np.float32)), DEFAULT, None, None, store)
    assert uploads.is_upload(tmp_path / "y" / "z.wav") and not uploads.is_upload(tmp_path.parent / "z.wav")
