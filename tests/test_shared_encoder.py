"""One encoder, many heads (issue 19): the shipped models share one frozen encoder on disk and in memory, each
exports to a self-contained folder that transformers loads alone, and the dropdown shows honest figures."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, require

CHECKPOINTS = ROOT / "checkpoints"

# Runs with `python -I` outside the project: the exported folders alone, through pipeline() and AutoModel.
OUTSIDE = """
import json, sys
import numpy as np, soundfile as sf, torch
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline

project, files, folders = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
assert not any(p.startswith(project) or p in ("", ".") for p in sys.path), sys.path
arrays = [sf.read(f, dtype="float32")[0] for f in files]
out = {}
for folder in folders:
    classify = pipeline("audio-classification", model=folder, trust_remote_code=True)
    model = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True).eval()
    extractor = AutoFeatureExtractor.from_pretrained(folder)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    with torch.no_grad():
        direct = [torch.softmax(model(**extractor(a, sampling_rate=16000, return_tensors="pt")).logits, -1)[0].tolist()
                  for a in arrays]
    piped = [{s["label"]: s["score"] for s in classify(f, top_k=None)} for f in files]
    out[folder] = {"labels": labels, "module": type(model).__module__, "model": direct,
                   "pipeline": [[p[label] for label in labels] for p in piped]}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def store():
    from ui.model_store import ModelStore

    shipped = ModelStore(CHECKPOINTS)
    if not shipped.checkpoints:
        pytest.skip("no checkpoints committed under checkpoints/")
    return shipped


@pytest.fixture(scope="module")
def clips(emodb_rows):
    """Three real EmoDB recordings (paths and 16 kHz audio)."""
    from data_process import load_audio

    paths = [r.path for r in emodb_rows[:3]]
    return paths, [load_audio(p) for p in paths]


def test_dropdown_lists_at_least_four_models_with_their_unseen_corpus_figures(store):
    from ui import callbacks

    choices = store.choices()
    assert len(choices) >= 4, choices
    for label, name in choices:
        info = store.info(name)
        assert info.unseen is not None, f"{name}: no leave-one-corpus-out figure"
        assert label.startswith(f"{name} — UA {info.unseen['ua']:.3f} on unseen corpora"), label
        assert info.purpose and info.purpose in label, f"{name}: the dropdown does not say what it is for"
        if info.ua is not None:  # the within-corpus figure is not in the dropdown, only under About this model
            assert f"{info.ua:.3f}" not in label
        text, image, card = callbacks.model_panel(store, name)
        assert "On corpora it never heard" in text and f"{info.unseen['ua']:.3f}" in text
        assert "Within-corpus" in text and "text cues" in text  # all five corpora: ASED and the Korean scripts
        assert image is not None and card


def test_heads_share_one_encoder_on_disk(store):
    heads = [info for info in store.checkpoints.values() if info.shared_encoder]
    assert len(heads) >= 4 and len(heads) == len(store.checkpoints)
    folders = {(info.path / info.shared_encoder).resolve() for info in heads}
    assert len(folders) == 1, folders
    (encoder,) = folders
    assert encoder.is_relative_to(CHECKPOINTS.resolve())
    for info in heads:
        assert (info.path / "model.safetensors").stat().st_size < 5e6, f"{info.name}: not head-only"
    big = [p for p in CHECKPOINTS.rglob("*.safetensors") if p.stat().st_size > 10e6]
    assert big == [encoder / "model.safetensors"], big  # one copy of the encoder's weights, no more


def test_heads_share_one_encoder_in_memory(store, clips):
    """Loading a second head reuses the first one's encoder: the same tensors, not a copy."""
    names = [info.name for info in store.checkpoints.values()]
    first, others = store.get(names[0]).model, [store.get(name).model for name in names[1:]]
    reference = first.backbone.encoder.layers[0].fc1.weight
    for model in others:
        assert model.backbone is first.backbone
        assert model.backbone.encoder.layers[0].fc1.weight.data_ptr() == reference.data_ptr()
        assert not any(p.requires_grad for p in model.backbone.parameters())
    probs = store.get(names[-1]).probabilities(clips[1])
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_every_shipped_model_exports_self_contained_and_scores_as_the_app(store, clips, tmp_path):
    """export.py --format transformers writes the full weights, the code and auto_map: the folder loads alone
    (pipeline and AutoModel, trust_remote_code) and gives the app's probabilities on real EmoDB clips."""
    from export import export_transformers

    paths, audio = clips
    folders = {}
    for name, info in store.checkpoints.items():
        folder = export_transformers(info.path, tmp_path / name)
        config = json.loads((folder / "config.json").read_text())
        assert not config.get("shared_encoder") and "auto_map" in config and "custom_pipelines" in config
        assert (folder / "model.safetensors").stat().st_size > 30e6  # the encoder is in it
        assert (folder / "README.md").read_text().startswith("---")  # the Hub-style model card
        folders[name] = folder
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-I", "-c", OUTSIDE, str(ROOT), ",".join(paths),
                           *map(str, folders.values())], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for name, folder in folders.items():
        result = got[str(folder)]
        recognizer = store.get(name)
        assert result["labels"] == recognizer.labels
        assert result["module"].startswith("transformers_modules.")  # the folder's own code
        expected = recognizer.probabilities(audio)
        for way in ("model", "pipeline"):
            np.testing.assert_allclose(result[way], expected, atol=1e-4, err_msg=f"{name} {way}")


def test_head_only_export_needs_an_output_folder(store):
    from export import export_transformers

    name = next(iter(store.checkpoints))
    with pytest.raises(ValueError, match="give --output"):
        export_transformers(store.info(name).path)


def test_a_head_refuses_an_encoder_it_was_not_trained_on(store, tmp_path):
    from safetensors.torch import load_file, save_file

    from serving.recognizer import Recognizer
    from ui.model_store import ModelStore

    info = next(iter(store.checkpoints.values()))
    root = tmp_path / "checkpoints"
    shutil.copytree(info.path, root / info.name)
    encoder = root / info.name / info.shared_encoder
    encoder.mkdir(parents=True)
    weights = load_file((info.path / info.shared_encoder / "model.safetensors"))
    weights["encoder.layers.0.fc1.bias"] = weights["encoder.layers.0.fc1.bias"] + 1
    save_file(weights, str(encoder / "model.safetensors"))
    with pytest.raises(ValueError, match="not the one this head was trained on"):
        Recognizer(root / info.name)
    # an encoder reference leading out of the checkpoints folder is refused before anything loads
    config = json.loads((root / info.name / "config.json").read_text())
    config["shared_encoder"] = "../../elsewhere"
    (root / info.name / "config.json").write_text(json.dumps(config))
    outside = ModelStore(root)
    assert info.name not in outside.checkpoints and "shared encoder" in outside.refused[info.name]


def test_split_checkpoint_keeps_what_the_model_computes(tmp_path, clips, whisper_path):
    """A full frozen-encoder checkpoint made head-only computes exactly what it computed before."""
    require(CHECKPOINTS / "encoders" / "whisper-base" / "model.safetensors", "the shared encoder")
    import models
    from serving.recognizer import Recognizer
    from models.shared_encoder import split_checkpoint
    from train import ModelArguments, build_model

    margs = ModelArguments(backbone="whisper", encoder=whisper_path, pooling="conv_max", layer_mix="weighted")
    model, extractor = build_model(margs, ["angry", "sad"], models.BACKBONES["whisper"].load_encoder(whisper_path))
    full = tmp_path / "full"
    model.save_pretrained(full)
    extractor.save_pretrained(full)
    head = tmp_path / "checkpoints" / "head"
    shutil.copytree(full, head)
    split_checkpoint(head, CHECKPOINTS / "encoders" / "whisper-base")  # the same encoder: accepted, not rewritten
    assert (head / "model.safetensors").stat().st_size < 5e6
    before, after = Recognizer(full).probabilities(clips[1]), Recognizer(head).probabilities(clips[1])
    np.testing.assert_allclose(after, before, atol=1e-6)
