"""The page's calibration to its user (ui/voice.py) and the unsure note, with the committed default model on real
EmoDB recordings of one speaker, through the app's callbacks."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from tests.ui_helpers import ROOT, recording
from ui import callbacks, voice as my_voice
from ui.model_store import ModelStore
from ui.voice import Voice

CLIPS = ["03a01Wa.wav", "03a01Nc.wav", "03a02Ta.wav"]  # speaker 03: angry, neutral, sad


@pytest.fixture(scope="module")
def store() -> ModelStore:
    from infer import load_scorer

    return ModelStore(ROOT / "checkpoints", loader=partial(load_scorer, precision="fp32", device="cpu"))


def probs(analysis) -> np.ndarray:
    return np.array([analysis.probabilities[label] for label in sorted(analysis.probabilities)])


def test_the_default_model_adapts(store):
    recognizer = store.get(store.default)
    assert my_voice.adapts(recognizer), "the shipped default should standardise its embeddings (--embedding_norm)"
    assert store.info(store.default).config["unsure_below"] > 1 / len(recognizer.labels)


def test_each_recording_is_judged_with_the_ones_before_it(store):
    from normalization import shrunk_statistics

    name, voice = store.default, Voice()
    recognizer = store.get(name)
    alone = [callbacks.analyse(str(recording(c)), name, store) for c in CLIPS]
    first = callbacks.analyse(str(recording(CLIPS[0])), name, store, voice=voice)
    assert np.allclose(probs(first), probs(alone[0]), atol=1e-5)  # nothing known yet: the model's statistics
    again = callbacks.analyse(str(recording(CLIPS[0])), name, store, voice=voice)  # analysed again: counted once
    assert np.allclose(probs(again), probs(alone[0]), atol=1e-5) and len(voice.seen[name]) == 1
    second = callbacks.analyse(str(recording(CLIPS[1])), name, store, voice=voice)
    assert not np.allclose(probs(second), probs(alone[1]), atol=1e-3)
    # exactly the statistics of the first recording, drawn towards the model's
    first_embedding = recognizer.embed(str(recording(CLIPS[0])))
    expected = recognizer.classify(recognizer.embed(str(recording(CLIPS[1])))[None],
                                   *shrunk_statistics(first_embedding[None], *recognizer.model_statistics(),
                                                      my_voice.SESSION_PRIOR))[0]
    assert np.allclose([second.probabilities[label] for label in recognizer.labels], expected, atol=1e-4)
    assert "2 recordings" in callbacks.voice_note(store, name, voice)


def test_reset_and_off_judge_alone(store):
    name, voice = store.default, Voice()
    for clip in CLIPS[:2]:
        callbacks.analyse(str(recording(clip)), name, store, voice=voice)
    alone = callbacks.analyse(str(recording(CLIPS[2])), name, store)
    voice, note = callbacks.set_adapting(False, name, voice, store)
    off = callbacks.analyse(str(recording(CLIPS[2])), name, store, voice=voice)
    assert np.allclose(probs(off), probs(alone), atol=1e-5) and "judged alone" in note
    assert len(voice.seen[name]) == 2  # not learnt from while off
    voice, _ = callbacks.set_adapting(True, name, voice, store)
    voice, note = callbacks.reset_voice(name, voice, store)
    assert voice.adapt and not voice.seen and "next recording" in note
    after_reset = callbacks.analyse(str(recording(CLIPS[2])), name, store, voice=voice)
    assert np.allclose(probs(after_reset), probs(alone), atol=1e-5)


def test_the_page_endpoint_returns_the_voice(store):
    predict = callbacks.predict_endpoint(store)
    out = predict(str(recording(CLIPS[0])), store.default, None, progress=lambda *a, **k: None)
    note, label, bars, timeline, table, voice, voice_note = out
    assert isinstance(voice, Voice) and len(voice.seen[store.default]) == 1 and "1 recording" in voice_note


def test_unsure_note():
    analysis = callbacks.Analysis("m", {"sad": 0.4, "angry": 0.35, "happy": 0.25}, [], 2.0, 0.1, unsure_below=0.5)
    assert "**unsure**" in callbacks.summary(analysis)
    sure = callbacks.Analysis("m", {"sad": 0.8, "angry": 0.2}, [], 2.0, 0.1, unsure_below=0.5)
    assert "unsure" not in callbacks.summary(sure)
