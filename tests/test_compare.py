"""Compare on my recording (issue 19, item 3): every shipped model scores one real recording, the heads that share the
Whisper encoder in one encoder pass, each giving the answer the main view gives (ui/compare.py, no browser)."""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from tests.ui_helpers import long_speech, recording, require
from ui import callbacks, compare
from ui.model_store import ModelStore
from ui.voice import Voice

CHECKPOINTS = ROOT / "checkpoints"
CLIPS = ["03a01Wa.wav", "03a01Nc.wav", "03a02Ta.wav"]  # speaker 03: angry, neutral, sad


def app_loader(default: str):
    """The app's loader on --runtime auto (app.py): the default in onnxruntime, the other heads in PyTorch."""
    from serving.recognizer import load_scorer

    def load(folder: Path):
        config = json.loads((Path(folder) / "config.json").read_text())
        adapts = config.get("embedding_norm", "none") not in ("none", None)
        runtime = "auto" if Path(folder).name == default else "torch"
        return load_scorer(folder, runtime=runtime, precision="auto", device="cpu", embeddings=adapts)

    return load


@pytest.fixture(scope="module")
def store() -> ModelStore:
    """The shipped models as the app serves them."""
    default = (CHECKPOINTS / "default.txt").read_text().strip()
    shipped = ModelStore(CHECKPOINTS, loader=app_loader(default))
    require(len(shipped.checkpoints) >= 2, "fewer than two checkpoints committed under checkpoints/")
    return shipped


@pytest.fixture(scope="module")
def torch_store() -> ModelStore:
    """The shipped models all in PyTorch (app.py --runtime torch): every head on the one shared encoder."""
    shipped = ModelStore(CHECKPOINTS)
    require(len(shipped.checkpoints) >= 2, "fewer than two checkpoints committed under checkpoints/")
    return shipped


def test_head_embedding_is_what_embed_gives(torch_store):
    import torch

    from data_process import load_audio

    audio = load_audio(recording())
    for name in torch_store.checkpoints:
        recognizer = torch_store.get(name)
        batch = recognizer.extractor([audio], sampling_rate=16_000, return_attention_mask=True, return_tensors="pt")
        with torch.inference_mode():
            layers, mask = recognizer.model.backbone(batch["input_values"], batch["attention_mask"])
            shared = compare.head_embedding(recognizer.model, layers, mask)
            alone = recognizer.model.embed(batch["input_values"], batch["attention_mask"])
        assert torch.equal(shared, alone), name


def test_heads_sharing_the_encoder_run_it_once(torch_store):
    recognizers = {name: torch_store.get(name) for _, name in torch_store.choices()}
    assert compare.groups(recognizers) == [list(recognizers)]  # all five on the one encoder in memory
    backbone = next(iter(recognizers.values())).model.backbone
    calls = []
    hook = backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        compare.compare(str(recording(CLIPS[1])), torch_store)  # the scheduler checks the group's padding once
        calls.clear()
        analyses, failed, scored = compare.compare(str(recording(CLIPS[0])), torch_store)
        assert len(calls) == 1  # one encoder pass for every model
        assert not failed and len(analyses) == len(recognizers) and scored == [list(recognizers)]
        for clip in CLIPS[1], CLIPS[0]:  # what the main view does, model after model (the first clip: padding checks)
            calls.clear()
            for name in recognizers:
                callbacks.analyse(str(recording(clip)), name, torch_store)
        assert len(calls) == len(recognizers)
    finally:
        hook.remove()


def test_each_answer_is_the_models_own_alone_and_adapted(store, tmp_path):
    """On real recordings, the last one long (timeline windows): the compare view's probabilities and modes are the
    main view's, model after model, while the page learns the voice (the second and third are judged adapted)."""
    clips = [str(recording(c)) for c in CLIPS[:2]] + [str(long_speech(tmp_path / "long.wav", 12.0))]
    compared, single = Voice(), Voice()
    modes = []
    for clip in clips:
        analyses, failed, scored = compare.compare(clip, store, voice=compared)
        assert not failed and [a.model for a in analyses] == [name for _, name in store.choices()]
        assert [len(g) for g in scored] == [1, len(store.checkpoints) - 1]  # the default in onnxruntime, alone
        for a in analyses:
            expected = callbacks.analyse(clip, a.model, store, voice=single)
            assert list(a.probabilities) == list(expected.probabilities)  # same ranking
            assert max(abs(a.probabilities[k] - p) for k, p in expected.probabilities.items()) < 1e-5, a.model
            assert (a.adapted, a.unsure_below, len(a.windows)) == (expected.adapted, expected.unsure_below,
                                                                  len(expected.windows)), a.model
        modes.append({a.model: a.adapted for a in analyses})
    adapting = [n for n in store.checkpoints if store.info(n).config.get("embedding_norm", "none") != "none"]
    assert adapting and not any(modes[0].values())
    assert all(modes[1][n] and modes[2][n] for n in adapting), {n: (modes[1][n], modes[2][n]) for n in adapting}
    assert {n: len(compared.seen[n]) for n in adapting} == {n: len(single.seen[n]) for n in adapting}


def test_bad_audio_gets_the_main_views_refusal(store, tmp_path):
    bogus = tmp_path / "notes.wav"
    bogus.write_text("this is not a recording\n" * 100)
    silent = (16_000, np.zeros(32_000, dtype=np.int16))
    for value in (None, str(bogus), silent):
        with pytest.raises(gr.Error) as main:
            callbacks.analyse(value, store.default, store)
        with pytest.raises(gr.Error) as compared:
            compare.compare_models(value, store.default, Voice(), store)
        assert compared.value.message == main.value.message


def test_no_checkpoints_is_refused_as_in_the_main_view(tmp_path):
    empty = ModelStore(tmp_path)
    with pytest.raises(gr.Error, match="No checkpoints found"):
        compare.compare_models(str(recording()), None, Voice(), empty)


def test_page_outputs(store):
    note, table, figure, voice, calibration, history = compare.compare_models(str(recording()), store.default,
                                                                              Voice(), store)
    frame = table["value"]
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == compare.COLUMNS
    served = [name + (" (int8)" if store.get(name).precision == "int8" else "") for _, name in store.choices()]
    assert list(frame["model"]) == served  # a model its int8 graph serves (--precision auto) says so
    assert set(frame["judged"]) == {"alone"}  # the first recording of the page
    assert f"**{len(frame)} models**" in note and "shared one pass" in note
    assert len(figure["value"].axes[0].patches) == sum(len(store.info(n).labels) for n in store.checkpoints)
    assert voice.seen  # the recording teaches the page the voice, as analysing it would


def test_a_model_that_fails_to_load_is_listed_with_its_reason(store, tmp_path):
    import shutil

    folder = tmp_path / "checkpoints"
    for name in list(store.checkpoints)[:2]:
        shutil.copytree(CHECKPOINTS / name, folder / name)
    shutil.copytree(CHECKPOINTS / "encoders", folder / "encoders")
    broken = folder / "broken"
    shutil.copytree(CHECKPOINTS / list(store.checkpoints)[0], broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    analyses, failed, _ = compare.compare(str(recording()), ModelStore(folder))
    assert len(analyses) == 2 and list(failed) == ["broken"] and "could not be loaded" in failed["broken"]
    assert "broken" in list(compare.table(analyses, failed)["model"])
