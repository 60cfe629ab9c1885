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
    from serving.recognizer import load_scorer

    return ModelStore(ROOT / "checkpoints", loader=partial(load_scorer, precision="fp32", device="cpu"))


def probs(analysis) -> np.ndarray:
    return np.array([analysis.probabilities[label] for label in sorted(analysis.probabilities)])


def test_the_default_model_adapts(store):
    recognizer = store.get(store.default)
    assert my_voice.adapts(recognizer), "the shipped default should standardise its embeddings (--embedding_norm)"
    assert store.info(store.default).config["unsure_below"] > 1 / len(recognizer.labels)


def test_each_recording_is_judged_with_the_ones_before_it(store):
    from adaptation.normalization import shrunk_statistics

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
    voice, note, _ = callbacks.set_adapting(False, name, voice, store)
    off = callbacks.analyse(str(recording(CLIPS[2])), name, store, voice=voice)
    assert np.allclose(probs(off), probs(alone), atol=1e-5) and "judged alone" in note
    assert len(voice.seen[name]) == 2  # not learnt from while off
    voice, *_ = callbacks.set_adapting(True, name, voice, store)
    voice, note, history = callbacks.reset_voice(name, voice, store)
    assert history["visible"] is False
    assert voice.adapt and not voice.seen and "next recording" in note
    after_reset = callbacks.analyse(str(recording(CLIPS[2])), name, store, voice=voice)
    assert np.allclose(probs(after_reset), probs(alone), atol=1e-5)


def test_the_page_endpoint_returns_the_voice(store):
    predict = callbacks.predict_endpoint(store)
    out = predict(str(recording(CLIPS[0])), store.default, None, progress=lambda *a, **k: None)
    note, label, bars, timeline, table, voice, voice_note, history = out
    assert isinstance(voice, Voice) and len(voice.seen[store.default]) == 1 and "1 recording" in voice_note
    assert history["visible"] and list(history["value"]["recording"]) == [CLIPS[0]]


def test_the_history_rejudges_earlier_recordings_with_the_others(store):
    from adaptation.normalization import shrunk_statistics

    name, voice = store.default, Voice()
    recognizer = store.get(name)
    analyses = [callbacks.analyse(str(recording(c)), name, store, voice=voice) for c in CLIPS]
    assert [a.adapted for a in analyses] == [False, True, True]  # the first alone, the next with the ones before
    assert "judged alone" in callbacks.summary(analyses[0]) and "adapted to your voice" in callbacks.summary(analyses[1])
    rows = voice.history(recognizer, name)
    assert [r["recording"] for r in rows] == CLIPS and [r["judged then"] for r in rows] == ["alone", "adapted", "adapted"]
    assert all(r["judged now"] == "adapted (2 others)" for r in rows)
    first = analyses[0]
    assert rows[0]["first answer"] == f"{first.top} {first.probabilities[first.top]:.0%}"
    # the first recording now: its embedding with the statistics of the other two, never its own
    embeddings = [recognizer.embed(str(recording(c))) for c in CLIPS]
    now = recognizer.classify(embeddings[0][None], *shrunk_statistics(np.stack(embeddings[1:]),
                                                                      *recognizer.model_statistics(),
                                                                      my_voice.SESSION_PRIOR))[0]
    top = int(np.argmax(now))
    assert rows[0]["answer now"] == f"{recognizer.labels[top]} {now[top]:.0%}"


def test_unsure_follows_the_mode(store):
    from adaptation.calibration import unsure_below

    config = store.info(store.default).config
    name, voice = store.default, Voice()
    first, second = (callbacks.analyse(str(recording(c)), name, store, voice=voice) for c in CLIPS[:2])
    assert first.unsure_below == unsure_below(config, adapted=False)
    assert second.unsure_below == unsure_below(config, adapted=True)


def test_unsure_note():
    analysis = callbacks.Analysis("m", {"sad": 0.4, "angry": 0.35, "happy": 0.25}, [], 2.0, 0.1, unsure_below=0.5)
    assert "**unsure**" in callbacks.summary(analysis)
    sure = callbacks.Analysis("m", {"sad": 0.8, "angry": 0.2}, [], 2.0, 0.1, unsure_below=0.5)
    assert "unsure" not in callbacks.summary(sure)
