"""Key-segment CNN-BiLSTM: segmentation, K-means key-segment selection, the model, and the random_kfold protocol."""
import logging

import numpy as np
import pytest
import torch
from transformers import ResNetConfig, ResNetModel

from serving.recognizer import Recognizer
import train
from data_process import load_audio, make_folds
from models import EmotionClassifier, EmotionConfig
from models.key_segments import RESNETS, key_segment_count, segment, select_key_segments

LABELS = ["angry", "neutral", "sad"]


def tiny(**kw) -> EmotionClassifier:
    config = EmotionConfig(backbone="keyseg_cnn_bilstm", image_model="resnet-tiny", n_mels=32, lstm_hidden=8,
                           projector_dim=16, pool_hidden=8, id2label=dict(enumerate(LABELS)),
                           label2id={n: i for i, n in enumerate(LABELS)}, **kw)
    torch.manual_seed(0)
    return EmotionClassifier(config).eval()


def test_segments_overlap_by_a_quarter_and_the_last_is_zero_padded():
    audio = torch.arange(1, 21001, dtype=torch.float32)
    segments = segment(audio, 8000)  # hop 6000: starts 0, 6000, 12000, 18000
    assert segments.shape == (4, 8000)
    assert segments[1, 0] == 6001 and torch.equal(segments[0, 6000:], segments[1, :2000])
    assert torch.equal(segments[3, :3000], audio[18000:]) and not segments[3, 3000:].any()
    assert segment(audio[:5000], 8000).shape == (1, 8000)  # shorter than one segment: one padded segment


def test_k_counts_the_distances_above_beta_times_their_mean():
    steady = np.array([[0.0], [1.0], [1.1], [5.0]])  # distances 1, 0.1, 3.9: mean 1.667
    assert key_segment_count(steady, beta=2.0) == 2  # only 3.9 > 3.33
    assert key_segment_count(steady, beta=0.5) == 3  # 1 and 3.9 > 0.83
    assert key_segment_count(steady[:1], beta=5.0) == 1


def test_one_key_segment_per_steady_stretch_in_time_order():
    rng = np.random.default_rng(0)
    levels = np.repeat([0.0, 10.0, -10.0], 6)  # three steady stretches of 6 segments with abrupt changes
    features = levels[:, None] + 0.05 * rng.standard_normal((18, 4))
    keys = select_key_segments(features, beta=5.0)  # 2 of 17 distances carry almost everything: K = 3
    assert len(keys) == 3 and keys == sorted(keys)
    assert [k // 6 for k in keys] == [0, 1, 2]
    assert select_key_segments(features[:6], beta=5.0) == [int(np.argmin(np.linalg.norm(
        features[:6] - features[:6].mean(0), axis=1)))]  # K = 1: the most typical segment
    assert select_key_segments(features, beta=5.0) == keys  # the same choice at every call


def test_key_segments_of_real_speech(emodb_rows):
    model = tiny(key_beta=0.0)  # beta 0: every change counts, so every distinct segment is a key segment
    audio = torch.from_numpy(load_audio(emodb_rows[0].path))
    specs, keys = model.backbone.key_spectrograms(audio)
    count = len(segment(audio, 8000))
    assert keys == list(range(count)) and specs.shape == (count, 32, 51)
    model.backbone.beta = 5.0  # the design's default: few utterance-level changes stand out that much
    specs, keys = model.backbone.key_spectrograms(audio)
    assert 1 <= len(keys) <= count and keys == sorted(set(keys)) and len(specs) == len(keys)


def test_padding_a_batch_changes_no_output(emodb_rows):
    model = tiny(key_beta=1.0)
    clips = [load_audio(r.path) for r in emodb_rows[:3]]
    clips[1] = clips[1][:9001]
    x = torch.zeros(3, max(len(c) for c in clips))
    mask = torch.zeros(x.shape, dtype=torch.long)
    for i, c in enumerate(clips):
        x[i, :len(c)], mask[i, :len(c)] = torch.from_numpy(c), 1
    with torch.no_grad():
        layers, frame_mask = model.backbone(x, mask)
        batched = model(x, mask).logits
        alone = torch.cat([model(torch.from_numpy(c)[None]).logits for c in clips])
    assert torch.allclose(batched, alone, atol=1e-4), (batched - alone).abs().max()
    assert layers.shape[:2] == (3, 1) and layers.shape[-1] == 16 and frame_mask.sum(-1).min() >= 1


def test_resnet_image_weights_load_into_one_channel(tmp_path, caplog):
    model = tiny()
    with caplog.at_level(logging.WARNING):
        model.backbone.load_image_weights(None)
    assert "RANDOM INITIALISATION" in caplog.text and "microsoft/resnet-18" in caplog.text
    rgb = ResNetModel(ResNetConfig(num_channels=3, **RESNETS["resnet-tiny"]))
    rgb.save_pretrained(tmp_path / "rgb")
    model.backbone.load_image_weights(str(tmp_path / "rgb"))
    grey = model.backbone.cnn.embedder.embedder.convolution.weight
    assert torch.allclose(grey, rgb.embedder.embedder.convolution.weight.sum(dim=1, keepdim=True))


def test_random_kfold_is_stratified_and_speaker_dependent():
    labels = np.array(["a"] * 40 + ["b"] * 20 + ["c"] * 10)
    speakers = np.array([f"s{i % 4}" for i in range(70)])
    folds = make_folds(labels, speakers, "random_kfold", k=5, seed=1)
    tests = np.concatenate([f["test"] for f in folds])
    assert sorted(tests) == list(range(70))  # every utterance tested exactly once
    for fold in folds:
        assert not set(fold["test"]) & (set(fold["train"]) | set(fold["val"]))
        assert sorted(np.unique(labels[fold["test"]], return_counts=True)[1]) == [2, 4, 8]
        assert set(speakers[fold["test"]]) == set(speakers[fold["train"]])  # speaker-dependent
    with pytest.raises(ValueError, match="random_kfold needs"):
        make_folds(labels, speakers, "random_kfold", k=1)


def test_train_speaker_dependent_fold_and_infer(tmp_path, emodb_rows):
    """train.py with --protocol random_kfold on real speech saves a checkpoint that infer.py loads."""
    out = tmp_path / "run"
    result = train.main([
        "--corpus", "emodb", "--labels", *LABELS, "--backbone", "keyseg_cnn_bilstm", "--image_model", "resnet-tiny",
        "--n_mels", "32", "--lstm_hidden", "8", "--key_beta", "2", "--max_files", "40", "--protocol", "random_kfold",
        "--folds", "5", "--run_folds", "0", "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
        "--output_dir", str(out), "--disable_tqdm", "true"])
    report = result["folds"][0]
    assert 6 <= report["n"] <= 10 and np.array(report["confusion"]).sum() == report["n"]  # a fifth of 40
    recognizer = Recognizer(out / "fold_00")
    probs, _ = recognizer.predict(load_audio(emodb_rows[0].path))
    assert recognizer.labels == LABELS and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
