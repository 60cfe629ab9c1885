"""Training end to end on real EmoDB speech: held-out speakers, cross-validation, resume (DDP: test_train_hf.py)."""
import csv
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from transformers import pipeline

import models  # noqa: F401
import train
from data_process import load_audio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CNN = ["--backbone", "cnn1d", "--cnn_first_stride", "4", "--pooling", "max", "--per_device_train_batch_size", "8",
            "--crop_seconds", "1.5", "--disable_tqdm", "true", "--learning_rate", "3e-3"]


def test_whisper_head_on_unseen_speakers(tmp_path, whisper_path, emodb_rows):
    """Frozen Whisper-base + attention head on 4 emotions, tested on two speakers it never heard."""
    out = tmp_path / "run"
    result = train.main([
        "--corpus", "emodb", "--labels", "angry", "happy", "neutral", "sad", "--backbone", "whisper",
        "--encoder", whisper_path, "--pooling", "attention", "--layer_mix", "weighted",
        "--protocol", "fixed", "--test_speakers", "emodb:03", "emodb:14", "--num_train_epochs", "15",
        "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"), "--disable_tqdm", "true"])
    assert result["folds"][0]["ua"] > 0.6, result["folds"][0]  # chance is 0.25
    for name in ["config.json", "model.safetensors", "preprocessor_config.json", "metrics.json", "README.md",
                 "confusion.png", "training_curve.png", "settings.json"]:
        assert (out / name).exists(), name
    assert "UA" in (out / "README.md").read_text()

    # the saved checkpoint through `pipeline`, on the held-out speakers' clips
    test_rows = [r for r in emodb_rows if r.speaker in ("emodb:03", "emodb:14") and r.label in ("angry", "happy", "neutral", "sad")]
    classify = pipeline("audio-classification", model=str(out), trust_remote_code=True)
    predicted = [classify(load_audio(r.path))[0]["label"] for r in test_rows]
    recalls = [np.mean([p == r.label for p, r in zip(predicted, test_rows) if r.label == lab]) for lab in ("angry", "happy", "neutral", "sad")]
    assert np.mean(recalls) > 0.6

    # and through infer.py: the same top emotion as the pipeline for every file
    csv_path = tmp_path / "out.csv"
    subprocess.run([sys.executable, "infer.py", "--checkpoint", str(out), "--output", str(csv_path),
                    *[r.path for r in test_rows[:6]]], cwd=ROOT, check=True)
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["label"] for r in rows] == predicted[:6]


def test_cross_validation_reports_every_fold(tmp_path, emodb_rows):
    out = tmp_path / "cv"
    result = train.main(["--corpus", "emodb", "--labels", "angry", "sad", "--protocol", "speaker_kfold", "--folds", "3",
                         "--max_files", "60", "--num_train_epochs", "2", "--output_dir", str(out), *TINY_CNN])
    assert len(result["folds"]) == 3
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    assert len(summary["ua"]["folds"]) == 3 and summary["ua"]["std"] >= 0
    assert np.sum(summary["pooled"]["confusion"]) == result["n_utterances"]  # every clip tested once
    tested = [s for f in result["folds"] for s in f["test_speakers"]]
    assert len(tested) == len(set(tested))  # no speaker tested twice
    for i in range(3):
        assert (out / f"fold_{i:02d}" / "model.safetensors").exists()
        assert not list((out / f"fold_{i:02d}").glob("checkpoint-*"))  # finished folds keep only the best weights


def test_interrupted_run_resumes(tmp_path, emodb_rows):
    out = tmp_path / "resume"
    cmd = [sys.executable, "train.py", "--corpus", "emodb", "--labels", "angry", "sad", "--protocol", "fixed",
           "--test_speakers", "emodb:03", "--max_files", "80", "--num_train_epochs", "30", "--patience", "100",
           "--output_dir", str(out), *TINY_CNN]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list(out.glob("checkpoint-*/trainer_state.json")) and time.time() < deadline and first.poll() is None:
        time.sleep(0.5)
    first.kill()
    first.wait()
    assert list(out.glob("checkpoint-*")), "no checkpoint was written before the interruption"
    second = subprocess.run(cmd + ["--num_train_epochs", "3", "--log_level", "info"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert re.search(r"Loading model from \S*checkpoint-\d+", second.stderr + second.stdout)  # the Trainer resumed
    assert json.loads((out / "metrics.json").read_text())["test"]["n"] > 0


def test_encoder_learning_rate_applies_to_the_trainable_encoder_layers_only(whisper_path):
    _, margs, targs = train.parse_args(["--encoder", whisper_path, "--encoder_mode", "finetune", "--trainable_layers", "2",
                                        "--encoder_learning_rate", "5e-5", "--learning_rate", "1e-3"])
    encoder = models.BACKBONES["whisper"].load_encoder(whisper_path)
    model, _ = train.build_model(margs, ["angry", "sad"], encoder)
    encoder_group, head_group = train.optimizer_for(model, margs, targs).param_groups
    top2 = {id(p) for layer in model.backbone.encoder.layers[-2:] for p in layer.parameters()}
    assert {id(p) for p in encoder_group["params"]} == top2 and encoder_group["lr"] == 5e-5
    head = {id(p) for name, p in model.named_parameters() if not name.startswith("backbone.")}
    assert {id(p) for p in head_group["params"]} == head and head_group["lr"] == 1e-3
    margs.encoder_learning_rate = None
    assert train.optimizer_for(model, margs, targs) is None  # the Trainer's own optimizer, one rate


def test_head_epochs_train_the_head_alone_then_free_the_top_layers(tmp_path, whisper_path):
    _, margs, targs = train.parse_args(["--encoder", whisper_path, "--encoder_mode", "finetune", "--trainable_layers", "2",
                                        "--head_epochs", "3", "--layer_mix", "concat", "--pooling", "mean",
                                        "--classifier_hidden", "0", "--per_device_train_batch_size", "4",
                                        "--output_dir", str(tmp_path), "--disable_tqdm", "true"])
    model, _ = train.build_model(margs, ["angry", "sad"], models.BACKBONES["whisper"].load_encoder(whisper_path))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    rng = np.random.default_rng(0)
    layers = [rng.standard_normal((7, 20, 512)).astype(np.float16) for _ in range(8)]  # (L, T, D) as the cache keeps them
    train.fit_head(model, layers, np.arange(8), np.array([0, 1] * 4), margs, targs, tmp_path)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert changed == {name for name in before if not name.startswith("backbone.")}  # the head learnt, the encoder did not
    trainable = {id(p) for p in model.backbone.parameters() if p.requires_grad}
    assert trainable == {id(p) for layer in model.backbone.encoder.layers[-2:] for p in layer.parameters()}


def test_fine_tuning_after_a_cached_head_on_real_speech(tmp_path, whisper_path, emodb_rows):
    cache = tmp_path / "cache"
    result = train.main(["--corpus", "emodb", "--labels", "angry", "sad", "--backbone", "whisper", "--encoder", whisper_path,
                         "--encoder_mode", "finetune", "--trainable_layers", "1", "--head_epochs", "15",
                         "--layer_mix", "concat", "--pooling", "mean", "--classifier_hidden", "0",
                         "--encoder_learning_rate", "1e-5", "--num_train_epochs", "1", "--crop_seconds", "2",
                         "--protocol", "fixed", "--test_speakers", "emodb:03", "--max_files", "60",
                         "--output_dir", str(tmp_path / "run"), "--cache_dir", str(cache), "--disable_tqdm", "true"])
    assert len(list((cache / "layers").rglob("*.npy"))) == 60  # the head was fit on cached frozen layers
    assert len(list((cache / "hidden").rglob("*.npy"))) == 60  # the top layer was fine-tuned on its cached inputs
    assert result["folds"][0]["ua"] > 0.75, result["folds"][0]  # angry against sad, after one fine-tuning epoch


@pytest.mark.parametrize("flags", [["--backbone", "cnn1d"], ["--backbone", "whisper", "--encoder_mode", "frozen"]])
def test_head_epochs_without_an_encoder_to_fine_tune_is_refused(tmp_path, emodb_rows, flags):
    with pytest.raises(ValueError, match="--head_epochs fits the head before fine-tuning"):
        train.main(["--corpus", "emodb", "--head_epochs", "5", "--output_dir", str(tmp_path), *flags])


def test_a_fully_fine_tuned_encoder_reports_the_adapted_modes(tmp_path, whisper_path, emodb_rows):
    # from audio (no cached inputs: every layer trains), the fine-tuned encoder's own statistics give the adapted modes
    result = train.main(["--corpus", "emodb", "--labels", "angry", "sad", "--backbone", "whisper", "--encoder", whisper_path,
                         "--encoder_mode", "finetune", "--trainable_layers", "0", "--layer_mix", "concat",
                         "--pooling", "mean", "--classifier_hidden", "0", "--embedding_norm", "none",
                         "--num_train_epochs", "1", "--crop_seconds", "1.5", "--protocol", "fixed",
                         "--test_speakers", "emodb:03", "--max_files", "40", "--output_dir", str(tmp_path / "run"),
                         "--cache_dir", str(tmp_path / "cache"), "--disable_tqdm", "true"])
    assert_reports_both_modes(result, tmp_path / "run")


def assert_reports_both_modes(result: dict, run) -> None:
    """A one-fold run reports UA per mode, headlines the clip judged alone, and its speaker's statistics count."""
    fold = result["folds"][0]
    assert set(fold["normalization"]) == {"none", "speaker", "corpus"}
    assert fold["normalization"]["none"]["ua"] == fold["ua"]  # the headline figure is the clip judged alone
    logits = np.load(run / "test_logits.npz")  # one fold: the run folder itself
    assert np.allclose(logits["logits"], logits["logits_none"])
    assert not np.allclose(logits["logits_none"], logits["logits_speaker"])  # the speaker's statistics change them


def test_a_conv_max_head_adapts_after_training(tmp_path, whisper_path, emodb_rows):
    # --embedding_norm posthoc: the head trains on raw embeddings, keeps the training clips' statistics, and reports
    # both modes, the adapted one through the model's own classify (what the app and infer.py run)
    from models import EmotionClassifier

    run = tmp_path / "run"
    result = train.main(["--corpus", "emodb", "--labels", "angry", "sad", "--backbone", "whisper", "--encoder", whisper_path,
                         "--pooling", "conv_max", "--layer_mix", "weighted", "--projector_dim", "16",
                         "--embedding_norm", "posthoc", "--num_train_epochs", "2", "--protocol", "fixed",
                         "--test_speakers", "emodb:03", "--max_files", "40", "--save_strategy", "no",
                         "--output_dir", str(run), "--cache_dir", str(tmp_path / "cache"), "--disable_tqdm", "true"])
    assert_reports_both_modes(result, run)
    model = EmotionClassifier.from_pretrained(run)
    assert model.normalizes and model.config.embedding_norm == "posthoc"
    assert model.embedding_mean.abs().sum() > 0 and not torch.allclose(model.embedding_std, torch.ones_like(model.embedding_std))


@pytest.mark.parametrize("flags, message", [
    (["--pooling", "mean", "--layer_mix", "concat"], "this path standardises directly: --embedding_norm speaker"),
    (["--backbone", "cnn1d", "--pooling", "attention"], "needs a frozen pretrained encoder"),
    (["--embedding_norm", "speakers"], "--embedding_norm 'speakers': one of auto, none"),
])
def test_embedding_norm_posthoc_is_refused_where_it_does_not_apply(tmp_path, emodb_rows, flags, message):
    with pytest.raises(ValueError, match=message):
        train.main(["--corpus", "emodb", "--embedding_norm", "posthoc", *flags, "--output_dir", str(tmp_path)])
