"""Generalization machinery: calibration, per-group standardisation, augmented cache variants, LOCO runs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForAudioClassification

from adaptation import calibration
from models import EmotionClassifier, EmotionConfig
from adaptation.normalization import average_statistics, group_statistics

LABELS = ["angry", "happy", "neutral", "sad"]


def test_ece_of_a_hand_made_case():
    # 10 predictions at confidence 0.8 of which 5 are right: one bin, gap 0.3; 10 at 0.95, all right: gap 0.05
    probs = np.array([[0.8, 0.2]] * 10 + [[0.05, 0.95]] * 10)
    labels = np.array([0] * 5 + [1] * 5 + [1] * 10)
    assert calibration.expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.3 + 0.5 * 0.05)
    table = calibration.reliability(probs, labels)
    assert sum(table["count"]) == 20 and table["count"][11] == 10 and table["count"][14] == 10  # (0.73,0.8], (0.93,1]
    assert calibration.expected_calibration_error(np.eye(3), [0, 1, 2]) == 0.0


def test_temperature_is_recovered_from_held_out_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=(4000, 5))
    labels = np.array([rng.choice(5, p=p) for p in calibration.softmax(logits, 3.0)])  # honest at T = 3
    assert calibration.fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.1)
    before = calibration.expected_calibration_error(calibration.softmax(logits), labels)
    after = calibration.expected_calibration_error(calibration.softmax(logits, 3.0), labels)
    assert before > 0.1 and after < 0.03
    result = calibration.calibrate_folds({"a": logits[:2000], "b": logits[2000:]}, {"a": labels[:2000], "b": labels[2000:]})
    assert result["folds"]["a"]["temperature_from_other_folds"] == pytest.approx(3.0, rel=0.15)
    assert result["folds"]["a"]["ece_after"] < result["folds"]["a"]["ece_before"]
    assert 0.0 < result["unsure_below"] < 1.0


def normalising_model(**kw) -> EmotionClassifier:
    from tests.test_models import TINY_WHISPER

    settings = dict(backbone="whisper", encoder_config=TINY_WHISPER, layer_mix="concat", projector_dim=None,
                    pooling="mean_std", embedding_norm="corpus", normalize_layers=True, frame_pooling=2,
                    id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    config = EmotionConfig(**{**settings, **kw})
    torch.manual_seed(0)
    return EmotionClassifier(config).eval()


def test_calibration_and_statistics_round_trip(tmp_path):
    from train import apply_calibration

    model = normalising_model()
    embeddings = torch.randn(6, model.pool.output_dim)
    mean, std = torch.randn(model.pool.output_dim), torch.rand(model.pool.output_dim) + 0.5
    model.embedding_mean.copy_(mean)
    model.embedding_std.copy_(std)
    plain = model.classify(embeddings)
    assert torch.allclose(plain, model.classifier((embeddings - mean) / std), atol=1e-5)  # a clip heard alone
    own = model.classify(embeddings, embeddings.mean(0), embeddings.std(0))  # a group's own statistics
    assert not torch.allclose(plain, own)
    model.save_pretrained(tmp_path)
    apply_calibration(tmp_path, {"temperature": 2.5, "unsure_below": 0.41})
    loaded = AutoModelForAudioClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.calibration_temperature == 2.5 and loaded.config.unsure_below == 0.41
    assert torch.allclose(loaded.embedding_mean, mean) and torch.allclose(loaded.embedding_std, std)
    assert torch.allclose(loaded.classify(embeddings), plain / 2.5, atol=1e-5)
    wave = torch.randn(1, 16000) * 0.1  # and forward, as the app, infer.py and pipeline call it
    assert torch.allclose(loaded(input_values=wave).logits, model(input_values=wave).logits / 2.5, atol=1e-4)


def test_normalisation_needs_a_path_without_weights():
    with pytest.raises(ValueError, match="no learned weights"):
        normalising_model(pooling="attention")


def test_group_statistics():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(5, 2, (50, 3)), rng.normal(-1, 0.5, (30, 3))]).astype(np.float32)
    groups = ["a"] * 50 + ["b"] * 30
    mean, std = group_statistics(x, groups)
    z = (x - mean) / std
    assert np.allclose(z[:50].mean(0), 0, atol=1e-5) and np.allclose(z[50:].std(0), 1, atol=1e-3)
    avg_mean, avg_std = average_statistics(x, groups)
    assert np.allclose(avg_mean, (x[:50].mean(0) + x[50:].mean(0)) / 2, atol=1e-5)
    assert np.allclose(avg_std, np.sqrt((x[:50].std(0) ** 2 + x[50:].std(0) ** 2) / 2), atol=1e-4)


def test_augmented_variants_are_cached_under_their_own_keys(tmp_path, emodb_rows):
    from data.feature_cache import cached_layers
    from audio.microphones import variant_maker
    from tests.test_models import tiny
    from transformers import Wav2Vec2FeatureExtractor

    model = tiny("whisper", layer_mix="concat")
    extractor = Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=True)
    rows = emodb_rows[:3]
    clean, _ = cached_layers(model, extractor, [r.path for r in rows], tmp_path, progress=False)
    variant = variant_maker(emodb_rows[:40], 0)
    first, _ = cached_layers(model, extractor, [r.path for r in rows], tmp_path, progress=False, variant=variant)
    names = sorted(p.name for p in tmp_path.rglob("*.npy"))
    assert len(names) == 6 and sum("~mic" in n for n in names) == 3  # three clean entries, three variants
    assert {n.split("~")[0] for n in names if "~" in n} == {n[:-4] for n in names if "~" not in n}
    assert not any(np.array_equal(a, b) for a, b in zip(clean, first))  # a variant is not the clean clip
    model.encode = None  # a second run must not compute anything: everything comes from the cache
    again, _ = cached_layers(model, extractor, [r.path for r in rows], tmp_path, progress=False, variant=variant)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other, _ = cached_layers(model, extractor, [r.path for r in rows], tmp_path, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(clean, other))


def test_microphone_variants_are_reproducible(emodb_rows):
    from data_process import load_audio
    from audio.microphones import MicrophoneAugmenter

    audio = load_audio(emodb_rows[0].path)
    augmenter = MicrophoneAugmenter()
    babble = [r.path for r in emodb_rows[60:80]]
    variants = [augmenter(audio, seed, babble) for seed in range(4)]
    assert all(len(v) == len(audio) and v.dtype == np.float32 and np.all(np.isfinite(v)) for v in variants)
    assert np.array_equal(variants[1], augmenter(audio, 1, babble))
    assert sum(not np.allclose(v, audio) for v in variants) >= 3


def test_loco_run_on_two_real_corpora(tmp_path, whisper_path, emodb_rows):
    """Leave-one-corpus-out with per-corpus standardisation and a variant per clip, then a calibrated final model."""
    import train
    from tests.conftest import SHARED, require

    require(SHARED / "corpora" / "emotiontts_ko", "the Korean corpus")
    common = ["--encoder", whisper_path, "--corpus", "emodb", "emotiontts_ko", "--labels", *LABELS,
              "--max_files", "32", "--layer_mix", "concat", "--projector_dim", "0", "--pooling", "mean",
              "--classifier_hidden", "0", "--embedding_norm", "corpus", "--num_train_epochs", "3",
              "--per_device_train_batch_size", "8", "--val_speakers", "0", "--cache_dir", str(tmp_path / "cache"),
              "--disable_tqdm", "true", "--report_to", "none"]
    result = train.main(common + ["--protocol", "loco", "--augment_variants", "1", "--output_dir", str(tmp_path / "loco")])
    assert [f["test_corpora"] for f in result["folds"]] == [["emodb"], ["emotiontts_ko"]]
    assert set(result["by_corpus"]) == {"emodb", "emotiontts_ko"}
    for fold in result["folds"]:
        assert set(fold["normalization"]) == {"none", "speaker", "corpus"}
        assert fold["ua"] == fold["normalization"]["none"]["ua"]  # the headline: each clip alone
    cal = result["calibration"]
    assert cal["temperature"] > 0 and set(cal["folds"]) == {"fold_00", "fold_01"}
    assert (tmp_path / "loco" / "reliability_fold_00.png").stat().st_size > 1000
    assert len(list((tmp_path / "cache").rglob("*~mic1-0.npy"))) == 32  # one variant per clip, cached
    final = train.main(common + ["--protocol", "all", "--loco_metrics", str(tmp_path / "loco" / "metrics.json"),
                                 "--output_dir", str(tmp_path / "final")])
    config = json.loads((tmp_path / "final" / "config.json").read_text())
    # each mode calibrated on the LOCO folds' held-out clips (a temperature growing with the distance from training)
    by_mode = final["calibration_by_mode"]
    assert set(config["calibration"]) == {"alone", "adapted"} and config["embedding_norm"] == "corpus"
    assert by_mode["alone"]["n"] == by_mode["adapted"]["n"] == sum(f["n"] for f in cal["folds"].values())
    for mode, fit in config["calibration"].items():
        assert fit["intercept"] == pytest.approx(by_mode[mode]["intercept"]) and 0 < fit["unsure_below"] <= 1
    assert config["unsure_below"] == config["calibration"]["alone"]["unsure_below"]
    assert final["leave_one_corpus_out"]["calibration"]["temperature"] == cal["temperature"]
    card = (tmp_path / "final" / "README.md").read_text()
    assert "never heard" in card and f"temperature of {cal['temperature']:.2f}" in card
    assert "| each clip alone" in card and "| with its speaker's other clips" in card
