"""Models: padding never changes an output, checkpoints round-trip, and `pipeline` loads them."""
import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForAudioClassification, WhisperConfig, Wav2Vec2Config, pipeline

import models
from models import POOLINGS, EmotionClassifier, EmotionConfig
from train import ModelArguments, build_model

LABELS = ["angry", "happy", "neutral", "sad"]
TINY_WHISPER = WhisperConfig(num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=2,
                             encoder_ffn_dim=64, max_source_positions=1500).to_dict()
TINY_W2V2 = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2), feat_extract_norm="layer",
                           num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, do_stable_layer_norm=True).to_dict()


def tiny(backbone="cnn1d", **kw) -> EmotionClassifier:
    encoder = {"whisper": TINY_WHISPER, "wav2vec2": TINY_W2V2}.get(backbone)
    config = EmotionConfig(backbone=backbone, encoder_config=encoder, cnn_first_stride=4, projector_dim=16,
                           pool_hidden=8, normalize_layers=backbone != "cnn1d", frame_pooling=2 if backbone != "cnn1d" else 1,
                           id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)}, **kw)
    torch.manual_seed(0)
    return EmotionClassifier(config).eval()


def padded_batch(lengths, seed=0):
    rng = np.random.default_rng(seed)
    clips = [torch.tensor(rng.standard_normal(n).astype(np.float32) * 0.1) for n in lengths]
    x = torch.zeros(len(clips), max(lengths))
    mask = torch.zeros(len(clips), max(lengths), dtype=torch.long)
    for i, c in enumerate(clips):
        x[i, :len(c)], mask[i, :len(c)] = c, 1
    return clips, x, mask


@pytest.mark.parametrize("pooling", sorted(POOLINGS))
def test_pooling_ignores_padding(pooling):
    torch.manual_seed(0)
    pool = POOLINGS[pooling](8, 4)
    frames = torch.randn(1, 5, 8)
    padded = torch.cat([frames, torch.randn(1, 7, 8) * 100], dim=1)  # wild values in the padding
    mask = torch.tensor([[True] * 5 + [False] * 7])
    assert torch.allclose(pool(frames, mask[:, :5]), pool(padded, mask), atol=1e-5)


def test_conv_max_channels_below_zero_everywhere_still_learn():
    """A channel negative on every frame must still pass gradient, or the head can die into answering one emotion."""
    torch.manual_seed(0)
    pool = POOLINGS["conv_max"](8, 4)
    with torch.no_grad():
        pool.conv.bias.fill_(-100.0)  # every channel below zero on every frame
    frames, mask = torch.randn(2, 6, 8), torch.ones(2, 6, dtype=torch.bool)
    out = pool(frames, mask)
    assert not torch.allclose(out[0], out[1])  # the answer still depends on the clip
    out.sum().backward()
    assert pool.conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("backbone, pooling, layer_mix", [
    ("cnn1d", "max", "last"), ("cnn1d", "conv_max", "last"), ("whisper", "attention", "weighted"),
    ("whisper", "max", "concat"),
    ("whisper", "mean", "last"), ("wav2vec2", "attention", "weighted"), ("wav2vec2", "conv_max", "concat")])
def test_padding_a_batch_changes_no_output(backbone, pooling, layer_mix):
    model = tiny(backbone, pooling=pooling, layer_mix=layer_mix)
    clips, x, mask = padded_batch([16000, 9001, 4567])
    with torch.no_grad():
        batched = model(x, mask).logits
        alone = torch.cat([model(c[None]).logits for c in clips])
    assert torch.allclose(batched, alone, atol=1e-4), (batched - alone).abs().max()


def test_layer_weights_are_learned():
    model = tiny("whisper", layer_mix="weighted")
    assert model.layer_mix.weights.shape == (3,)  # embeddings + 2 layers
    model.train()
    loss = model(torch.randn(2, 8000) * 0.1, labels=torch.tensor([0, 1])).loss
    loss.backward()
    assert model.layer_mix.weights.grad.abs().sum() > 0


def test_frozen_encoder_gets_no_gradient():
    model = tiny("whisper")
    model.backbone.set_trainable("frozen")
    model.train()
    model(torch.randn(2, 8000) * 0.1, labels=torch.tensor([0, 1])).loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.classifier.weight.grad is not None
    model.backbone.set_trainable("finetune", top=1)
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("encoder.layers.1.") for n in trainable)


def test_checkpoint_round_trip_and_pipeline(tmp_path):
    model, extractor = build_model(ModelArguments(backbone="cnn1d", cnn_first_stride=4, pooling="attention"), LABELS, None)
    model.eval()
    model.save_pretrained(tmp_path)
    extractor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["id2label"]["0"] == "angry" and saved["model_type"] == "speech-emotion"
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    # the code travels with the weights: auto_map names files that are in the folder
    assert saved["auto_map"] == {"AutoConfig": "configuration.EmotionConfig",
                                 "AutoModelForAudioClassification": "classifier.EmotionClassifier"}
    impl = saved["custom_pipelines"]["audio-classification"]["impl"]
    for module in ["configuration", "classifier", impl.split(".")[0], "cnn1d", "encoders", "pooling", "spectral"]:
        assert (tmp_path / f"{module}.py").is_file(), module
    reloaded = AutoModelForAudioClassification.from_pretrained(tmp_path).eval()
    audio = np.random.default_rng(0).standard_normal(12000).astype(np.float32) * 0.1
    inputs = extractor(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**inputs).logits, reloaded(**inputs).logits, atol=1e-6)
    scores = pipeline("audio-classification", model=str(tmp_path), trust_remote_code=True)(audio, top_k=None)
    assert sorted(s["label"] for s in scores) == LABELS
    assert abs(sum(s["score"] for s in scores) - 1) < 1e-4


def test_real_whisper_encoder_batches_like_alone(whisper_path, emodb_rows):
    model, extractor = build_model(ModelArguments(encoder=whisper_path, layer_mix="concat"), LABELS, 
                                   models.BACKBONES["whisper"].load_encoder(whisper_path))
    model.eval()
    from data_process import load_audio
    clips = [load_audio(r.path) for r in emodb_rows[:3]]
    batch = extractor(clips, sampling_rate=16000, padding=True, return_attention_mask=True, return_tensors="pt")
    with torch.no_grad():
        batched = model(**batch).logits
        alone = torch.cat([model(**extractor(c, sampling_rate=16000, return_tensors="pt")).logits for c in clips])
    assert torch.allclose(batched, alone, atol=1e-4)


def test_unknown_names_fail_clearly():
    with pytest.raises(ValueError, match="unknown backbone"):
        EmotionClassifier(EmotionConfig(backbone="nope", id2label={0: "a"}))
    with pytest.raises(ValueError, match="unknown layer_mix"):
        EmotionClassifier(EmotionConfig(layer_mix="nope", id2label={0: "a"}))
    with pytest.raises(ValueError, match="unknown pooling"):
        EmotionClassifier(EmotionConfig(pooling="nope", id2label={0: "a"}))


def test_whisper_checkpoint_reloads_to_the_same_outputs(tmp_path):
    """from_pretrained builds on the meta device: the log-mel constants must still be right after loading."""
    model = tiny("whisper", layer_mix="weighted")
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForAudioClassification.from_pretrained(tmp_path).eval()
    audio = torch.randn(1, 16000) * 0.1
    with torch.no_grad():
        expected, got = model(audio).logits, reloaded(audio).logits
    assert torch.isfinite(got).all() and torch.allclose(expected, got, atol=1e-5)


def test_concat_reads_every_layer_and_old_configs_still_load():
    model = tiny("whisper", layer_mix="concat")
    layers = torch.randn(2, 3, 5, model.backbone.output_dim)  # (B, L, T, D) as the cache stores them
    assert model.layer_mix(layers).shape == (2, 5, 3 * model.backbone.output_dim)
    assert torch.equal(model.layer_mix(layers)[..., -model.backbone.output_dim:], layers[:, -1])
    # checkpoints written before layer_mix existed (the shipped default among them) said layer_weighted
    assert EmotionConfig(layer_weighted=True).layer_mix == "weighted"
    assert EmotionConfig().layer_mix == "last" and "layer_weighted" not in EmotionConfig().to_dict()
