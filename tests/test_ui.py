"""The app's callbacks and model store as plain functions, on real recordings from ../shared (no browser)."""
from __future__ import annotations

import json
import shutil
import subprocess
import time

import gradio as gr
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr

from tests.ui_helpers import DEFAULT, TINY, checkpoints, long_speech, recording, require
from ui import callbacks
from ui.model_store import ModelStore, default_checkpoint, held_out_ua, list_checkpoints


@pytest.fixture(scope="module")
def store(request) -> ModelStore:
    return ModelStore(checkpoints(request))


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    from data_process import load_audio

    return load_audio(recording())


def probs_of(label_value) -> dict:
    return dict(label_value)


# --- metrics reader, listing, default -------------------------------------------------------
def test_held_out_ua_prefers_cross_validation_then_test():
    cv = {"cross_validation": {"summary": {"ua": {"mean": 0.71, "std": 0.05}}}, "test": None}
    assert held_out_ua(cv) == pytest.approx(0.71)
    assert held_out_ua({"test": {"ua": 0.42}}) == pytest.approx(0.42)
    both = {"cross_validation": {"summary": {"ua": {"mean": 0.6}}}, "test": {"ua": 0.9}}
    assert held_out_ua(both) == pytest.approx(0.6)
    assert held_out_ua({"protocol": "all", "test": None}) is None
    assert held_out_ua({}) is None


def _fake_checkpoint(folder, ua=None, cv=False):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"backbone": "cnn1d", "pooling": "max",
                                                    "id2label": {"0": "angry", "1": "sad"}}))
    metrics = {"cross_validation": {"summary": {"ua": {"mean": ua, "std": 0.0}}}} if cv else {"test": {"ua": ua}}
    (folder / "metrics.json").write_text(json.dumps(metrics if ua is not None else {"protocol": "all"}))


def test_listing_labels_and_default(tmp_path):
    _fake_checkpoint(tmp_path / "b-test", ua=0.55)
    _fake_checkpoint(tmp_path / "a-cv", ua=0.61, cv=True)
    _fake_checkpoint(tmp_path / "c-none")
    (tmp_path / "not-a-checkpoint").mkdir()
    (tmp_path / "stray.txt").write_text("x")
    found = list_checkpoints(tmp_path)
    assert [c.name for c in found] == ["a-cv", "b-test", "c-none"]
    assert [c.choice_label for c in found] == [
        "a-cv — UA 0.610 on its own corpora' new speakers (no unseen-corpus test)",
        "b-test — UA 0.550 on its own corpora' new speakers (no unseen-corpus test)", "c-none — UA n/a"]
    assert default_checkpoint(tmp_path, found) == "a-cv"  # highest held-out UA
    (tmp_path / "default.txt").write_text("b-test\n")
    assert default_checkpoint(tmp_path, found) == "b-test"  # the pointer wins
    (tmp_path / "default.txt").write_text("../elsewhere\n")
    assert default_checkpoint(tmp_path, found) == "a-cv"  # a pointer to anything unlisted is ignored
    assert default_checkpoint(tmp_path / "missing", []) is None


def test_only_checkpoints_inside_the_folder_can_be_loaded(store, tmp_path):
    _fake_checkpoint(tmp_path / "outside", ua=0.9)
    for name in (str(tmp_path / "outside"), "../outside", "/etc", "", None):
        with pytest.raises(gr.Error):
            callbacks.load_model(store, name)
    with pytest.raises(KeyError):
        store.get(str(tmp_path / "outside"))


# --- scoring real recordings --------------------------------------------------------------
def test_every_emotion_highest_first(store):
    note, label, bars, timeline, table = callbacks.predict(str(recording()), DEFAULT, store)
    labels = store.get(DEFAULT).labels
    probs = probs_of(label)
    assert sorted(probs) == sorted(labels) and len(labels) == 3
    values = list(probs.values())
    assert values == sorted(values, reverse=True) and sum(values) == pytest.approx(1, abs=1e-4)
    assert isinstance(bars, pd.DataFrame) and list(bars["emotion"]) == list(probs)
    assert timeline["visible"] is False and table["visible"] is False  # short clip: no timeline
    assert DEFAULT in note and next(iter(probs)) in note


def test_every_model_answers_real_speech(store, speech):
    for name in TINY:
        analysis = callbacks.analyse((16_000, speech), name, store)
        assert sorted(analysis.probabilities) == sorted(store.get(name).labels)
        assert analysis.elapsed < 5


def test_48k_and_16k_give_the_same_top_emotion(store, speech, tmp_path):
    """A browser hands over 48 kHz (or 44.1 kHz) audio: resampled, it must score as the 16 kHz original."""
    high = soxr.resample(speech, 16_000, 48_000)
    sf.write(tmp_path / "48k.wav", high, 48_000, subtype="PCM_16")
    stereo_int16 = (np.stack([high, high], axis=1) * 32767).astype(np.int16)  # what type="numpy" would give
    for name in TINY:
        base = callbacks.analyse(str(recording()), name, store).probabilities
        cd_rate = (44_100, soxr.resample(speech, 16_000, 44_100))
        for value in (str(tmp_path / "48k.wav"), (48_000, stereo_int16), cd_rate):
            other = callbacks.analyse(value, name, store).probabilities
            assert next(iter(other)) == next(iter(base)), (name, base, other)
            assert max(abs(other[k] - base[k]) for k in base) < 0.02


def test_long_audio_gets_timeline_and_window_table(store, tmp_path):
    path = long_speech(tmp_path / "long.wav", seconds=12)
    note, label, bars, timeline, table = callbacks.predict(str(path), DEFAULT, store)
    labels = store.get(DEFAULT).labels
    assert timeline["visible"] and table["visible"]
    windows = table["value"]
    assert list(windows.columns) == ["start (s)", "end (s)", "top emotion", *labels]
    assert len(windows) >= 5 and windows["start (s)"].iloc[0] == 0
    assert windows["end (s)"].iloc[-1] == pytest.approx(sf.info(str(path)).duration, abs=0.01)
    assert np.allclose(windows[labels].sum(axis=1), 1, atol=0.01)
    assert set(timeline["value"]["emotion"]) == set(labels) and len(timeline["value"]) == len(windows) * len(labels)
    mean = windows[labels].mean()  # the whole clip's answer is the mean of its windows
    assert max(abs(mean[k] - v) for k, v in probs_of(label).items()) < 0.01


@pytest.mark.parametrize("fmt", ["flac", "ogg", "mp3", "webm"])
def test_browser_and_common_formats(store, speech, tmp_path, fmt):
    path = tmp_path / f"speech.{fmt}"
    if fmt == "webm":  # what Chromium's MediaRecorder writes (Opus in WebM): needs ffmpeg
        require(shutil.which("ffmpeg") is not None, "ffmpeg is not installed (apt-get install ffmpeg)")
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(recording()), "-ar", "48000", "-c:a", "libopus",
                        str(path)], check=True)
    else:
        sf.write(path, soxr.resample(speech, 16_000, 44_100), 44_100, format=fmt.upper())
    base = callbacks.analyse(str(recording()), DEFAULT, store).probabilities
    other = callbacks.analyse(str(path), DEFAULT, store).probabilities
    assert next(iter(other)) == next(iter(base))
    assert max(abs(other[k] - base[k]) for k in base) < 0.05


# --- clear messages --------------------------------------------------------------------------
def _error(value, store, **kwargs) -> str:
    with pytest.raises(gr.Error) as caught:
        callbacks.predict(value, DEFAULT, store, **kwargs)
    return caught.value.message


def test_no_audio(store):
    assert "No audio" in _error(None, store)


def test_silence_and_no_speech(store, speech, tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(3 * 16_000) / 16_000
    assert "silent" in _error((16_000, np.zeros(3 * 16_000, np.float32)), store)
    assert "silent" in _error((48_000, rng.normal(0, 1e-4, 3 * 48_000).astype(np.float32)), store)  # faint hiss
    assert "No speech" in _error((16_000, (0.05 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)), store)  # mains hum
    assert "No speech" in _error((16_000, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)), store)
    assert "0.10 s" in _error((16_000, speech[:1600]), store)
    quiet = speech * 10 ** (-30 / 20)  # real speech 30 dB quieter is still speech
    callbacks.predict((16_000, quiet), DEFAULT, store)


def test_too_long(store, speech, tmp_path):
    path = long_speech(tmp_path / "long.wav", seconds=12)
    message = _error(str(path), store, max_seconds=10)
    assert "limit" in message and "shorter" in message
    assert "limit" in _error((16_000, np.tile(speech, 8)), store, max_seconds=10)
    callbacks.predict(str(path), DEFAULT, store, max_seconds=600)


def test_not_audio_or_corrupt(store, tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not a recording\n" * 50)
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(recording().read_bytes()[:40])  # a header and nothing else
    for path in (text, empty, truncated):
        message = _error(str(path), store)
        assert path.name in message and str(tmp_path) not in message  # the name the user knows, not the server path


# --- models: switching, cache, panel, a checkpoint that fails to load --------------------------
def test_switching_models_keeps_them_loaded(store, speech):
    other = next(name for name in TINY if name != DEFAULT)
    out = callbacks.select_model(other, DEFAULT, (16_000, speech), None, store)
    assert out[:2] == (other, other)
    assert "### " + other in out[2] and "cnn1d" in out[2] and out[3] is not None
    assert sorted(probs_of(out[6])) == sorted(store.get(other).labels)  # the audio was scored again by `other`
    start = time.perf_counter()
    back = callbacks.select_model(DEFAULT, other, None, None, store)
    assert time.perf_counter() - start < 0.5 and store.is_loaded(DEFAULT) and store.is_loaded(other)
    assert back[:2] == (DEFAULT, DEFAULT) and back[5] == "" and back[6] is None  # no audio: empty results
    assert store.get(DEFAULT) is store.get(DEFAULT)


def test_model_panel_shows_what_the_model_is(store):
    text, image, card = callbacks.model_panel(store, DEFAULT)
    for expected in ("cnn1d", "`mean`", "angry, neutral, sad", "emodb", "UA", "chance level"):
        assert expected in text
    assert image.size[0] > 100 and "Held-out performance" in card and not card.startswith("---")


def test_confusion_drawn_from_cross_validation_metrics(store, tmp_path):
    source = store.info(DEFAULT).path
    shutil.copytree(source, tmp_path / "trained-on-all")
    (tmp_path / "trained-on-all" / "confusion.png").unlink()
    cv = {"protocol": "speaker_kfold", "folds": [{}] * 5, "summary": {
        "ua": {"mean": 0.7, "std": 0.04}, "wa": {"mean": 0.72, "std": 0.03}, "macro_f1": {"mean": 0.69, "std": 0.04},
        "pooled": {"ua": 0.7, "labels": ["angry", "neutral", "sad"], "confusion": [[8, 1, 1], [1, 7, 2], [0, 2, 8]]}}}
    (tmp_path / "trained-on-all" / "metrics.json").write_text(json.dumps(
        {"protocol": "all", "corpora": ["emodb"], "labels": ["angry", "neutral", "sad"], "test": None,
         "cross_validation": cv}))
    other = ModelStore(tmp_path)
    assert other.choices() == [("trained-on-all — UA 0.700 on its own corpora' new speakers (no unseen-corpus test)",
                                "trained-on-all")]
    text, image, _ = callbacks.model_panel(other, "trained-on-all")
    assert "0.700" in text and "cross-validated" in text and "5 folds" in text
    assert image is not None and image.size[0] > 100


def test_failed_load_keeps_the_previous_model(store, speech, tmp_path):
    shutil.copytree(store.info(DEFAULT).path, tmp_path / "good")
    shutil.copytree(store.info(DEFAULT).path, tmp_path / "broken-weights")
    (tmp_path / "broken-weights" / "model.safetensors").write_bytes(b"\0" * 100)
    shutil.copytree(store.info(DEFAULT).path, tmp_path / "broken-config")
    (tmp_path / "broken-config" / "config.json").write_text('{"model_type": "speech-emotion", "backbone": "nope"}')
    local = ModelStore(tmp_path)
    local.get("good")
    for broken in ("broken-weights", "broken-config"):
        with pytest.warns(UserWarning, match=f"'{broken}' could not be loaded.*Still using 'good'"):
            out = callbacks.select_model(broken, "good", (16_000, speech), None, local)
        assert out[:2] == ("good", "good")  # dropdown back to, and still using, the previous model
        assert all(isinstance(v, type(gr.skip())) for v in out[2:])  # panel and results untouched
        assert not local.is_loaded(broken)
        with pytest.raises(gr.Error, match="could not be loaded"):
            callbacks.predict((16_000, speech), broken, local)
    note, *_ = callbacks.predict((16_000, speech), "good", local)
    assert "good" in note


def test_no_checkpoints_says_how_to_get_one(tmp_path, speech):
    empty = ModelStore(tmp_path)
    assert empty.default is None and empty.preload() == []
    text, image, _ = callbacks.model_panel(empty, None)
    assert "No checkpoints found" in text and "train.py" in text and image is None
    with pytest.raises(gr.Error, match="No checkpoints found"):
        callbacks.predict((16_000, speech), None, empty)


def test_default_falls_back_when_it_does_not_load(store, tmp_path):
    shutil.copytree(store.info(DEFAULT).path, tmp_path / "works")
    shutil.copytree(store.info(DEFAULT).path, tmp_path / "best-but-broken")
    (tmp_path / "best-but-broken" / "model.safetensors").write_bytes(b"junk")
    (tmp_path / "default.txt").write_text("best-but-broken")
    local = ModelStore(tmp_path)
    assert local.default == "best-but-broken"
    errors = local.preload()
    assert local.default == "works" and len(errors) == 1 and "best-but-broken" in errors[0]


# --- Whisper heads and the committed default checkpoints ----------------------------------------
@pytest.fixture(scope="module")
def whisper_store(tmp_path_factory) -> ModelStore:
    """An untrained head on the real Whisper-base encoder (../shared/models), saved as train.py saves a checkpoint."""
    import models
    from tests.ui_helpers import ROOT
    from train import ModelArguments, build_model

    encoder = ROOT.parent / "shared" / "models" / "whisper-base-encoder"
    require(encoder.is_dir(), f"the Whisper-base encoder is not at {encoder}")
    folder = tmp_path_factory.mktemp("whisper") / "whisper-head"
    labels = ["angry", "neutral", "sad"]
    margs = ModelArguments(backbone="whisper", encoder=str(encoder), pooling="attention")
    model, extractor = build_model(margs, labels, models.BACKBONES["whisper"].load_encoder(str(encoder)))
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    (folder / "metrics.json").write_text(json.dumps({"labels": labels, "corpora": ["emodb"], "test": None}))
    return ModelStore(folder.parent), model.eval(), extractor


def test_whisper_checkpoint_serves_real_speech(whisper_store, speech):
    """A Whisper checkpoint reloaded from disk must compute what the model computed before saving.

    This fails while WhisperBackbone keeps its log-mel filters and window in non-persistent
    buffers: `from_pretrained` builds the model on the meta device and leaves them uninitialised.
    """
    import torch

    store, model, extractor = whisper_store
    assert store.preload() == []  # loads and passes the smoke test
    inputs = extractor(speech, sampling_rate=16_000, return_tensors="pt", return_attention_mask=True)
    with torch.no_grad():
        before = torch.softmax(model(**inputs).logits, dim=-1)[0].numpy()  # the model as saved
    labels = store.get("whisper-head").labels
    for rate, tolerance in ((16_000, 1e-4), (48_000, 1e-2)):  # reloaded; and after a 48 kHz round trip
        probs = callbacks.analyse((rate, soxr.resample(speech, 16_000, rate)), "whisper-head", store).probabilities
        np.testing.assert_allclose([probs[label] for label in labels], before, atol=tolerance)
    assert "whisper" in callbacks.model_panel(store, "whisper-head")[0]


def test_committed_checkpoints_load_and_answer(speech):
    """Every checkpoint committed under checkpoints/ loads, answers real speech and describes itself."""
    from tests.ui_helpers import ROOT

    store = ModelStore(ROOT / "checkpoints")
    if not store.checkpoints:
        pytest.skip("no checkpoints committed under checkpoints/ yet")
    assert store.preload() == [], "a committed checkpoint fails to load"
    for name, info in store.checkpoints.items():
        assert info.unseen is not None, f"{name}: no leave-one-corpus-out figure in metrics.json"
        assert f"UA {info.unseen['ua']:.3f} on unseen corpora" in info.choice_label and info.purpose
        assert (info.path / "README.md").is_file(), f"{name}: no model card"
        analysis = callbacks.analyse((16_000, speech), name, store)
        assert sorted(analysis.probabilities) == sorted(info.labels)
