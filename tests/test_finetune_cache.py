"""Fine-tuning Whisper's top layers from cached inputs (finetune_cache.py): the same model as from audio, a cache
that never mixes clean and augmented audio nor two encoders, and a train.py run that works and resumes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import models
import train
from data_process import load_audio
from data.feature_cache import cached_layers, encoder_key
from data.finetune_cache import (CachedTopModel, cached_hidden, collate_hidden, frozen_slice, hidden_folder, hidden_state,
                            top_layers, top_start)


@pytest.fixture(scope="module")
def encoder(whisper_path):
    return models.BACKBONES["whisper"].load_encoder(whisper_path)


def finetune_model(whisper_path, encoder, trainable: int = 2, first_layer: int = 1):
    _, margs, _ = train.parse_args(["--encoder", whisper_path, "--encoder_mode", "finetune", "--trainable_layers",
                                    str(trainable), "--first_layer", str(first_layer), "--layer_mix", "concat",
                                    "--pooling", "mean", "--classifier_hidden", "0", "--output_dir", "unused"])
    model, extractor = train.build_model(margs, ["angry", "happy", "neutral", "sad"], encoder)
    return model.eval(), extractor


def lone(extractor, audio):
    inputs = extractor(audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    return inputs["input_values"], inputs["attention_mask"]


@pytest.mark.parametrize("trainable, first_layer", [(2, 1), (1, 6)])
def test_the_cached_path_gives_what_the_model_gives_from_audio(whisper_path, encoder, emodb_rows, tmp_path,
                                                                trainable, first_layer):
    model, extractor = finetune_model(whisper_path, encoder, trainable, first_layer)
    paths = [r.path for r in emodb_rows[:4]]
    audios = [load_audio(p) for p in paths]
    with torch.no_grad():
        batch = extractor(audios, sampling_rate=16000, return_tensors="pt", return_attention_mask=True, padding=True)
        from_audio = model(batch["input_values"], batch["attention_mask"]).logits  # padded together, as training does
        embedded = model.embed(batch["input_values"], batch["attention_mask"])
        start, heard = top_start(model), frozen_slice(model)
        exact = [{"hidden_states": hidden_state(model, *lone(extractor, a), start)[0].numpy(),
                  "frozen_layers": model.encode(*lone(extractor, a))[0][0, heard].numpy(), "labels": 0} for a in audios]
        top = CachedTopModel(model)
        inputs = collate_hidden(exact)
        assert torch.allclose(top(**inputs).logits, from_audio, atol=1e-3)  # float32: the same computation
        layers, mask = top_layers(model, inputs["hidden_states"], inputs["hidden_mask"], inputs["frozen_layers"])
        assert torch.allclose(model.pool_layers(layers, mask), embedded, atol=1e-3, rtol=1e-4)
        # what the disk holds: float16 inputs and frozen layers
        hidden, _ = cached_hidden(model, extractor, paths, cache_dir=tmp_path, progress=False)
        frozen, _ = cached_layers(model, extractor, paths, cache_dir=tmp_path, progress=False)
        assert all(h.dtype == np.float16 and h.shape == e["hidden_states"].shape for h, e in zip(hidden, exact))
        stored = collate_hidden([{"hidden_states": h, "frozen_layers": f[heard], "labels": 0} for h, f in zip(hidden, frozen)])
        assert torch.allclose(top(**stored).logits, from_audio, atol=2e-2)


def test_the_cache_never_mixes_clean_and_augmented_audio_nor_two_encoders(whisper_path, encoder, emodb_rows, tmp_path):
    model, extractor = finetune_model(whisper_path, encoder)
    paths = [r.path for r in emodb_rows[:2]]
    clean, _ = cached_hidden(model, extractor, paths, cache_dir=tmp_path, progress=False)
    folder = hidden_folder(model, top_start(model), tmp_path)
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 2 and all("~" not in n for n in names)
    noisy = ("noise-0", lambda i, audio, digest: audio + np.float32(0.05) * np.random.default_rng(i).standard_normal(
        audio.shape).astype(np.float32))
    augmented, _ = cached_hidden(model, extractor, paths, cache_dir=tmp_path, progress=False, variant=noisy)
    variant_names = sorted(p.name for p in folder.iterdir() if "~" in p.name)
    assert len(variant_names) == 2 and all(n.endswith("~noise-0.npy") for n in variant_names)
    assert all(not np.array_equal(a, c) for a, c in zip(augmented, clean))
    again, _ = cached_hidden(model, extractor, paths, cache_dir=tmp_path, progress=False)  # the clean clips stay clean
    assert all(np.array_equal(a, c) for a, c in zip(again, clean))
    # another layer index: another folder
    assert hidden_folder(model, top_start(model) - 1, tmp_path) != folder
    # another encoder (one weight changed): another folder, never the first one's entries
    other, _ = finetune_model(whisper_path, encoder)
    with torch.no_grad():
        other.backbone.encoder.layers[0].fc1.weight[0, 0] += 1.0
    assert encoder_key(other) != encoder_key(model)
    assert hidden_folder(other, top_start(other), tmp_path) != folder
    changed, _ = cached_hidden(other, extractor, paths, cache_dir=tmp_path, progress=False)
    assert all(not np.array_equal(a, c) for a, c in zip(changed, clean))
    assert sorted(p.name for p in folder.iterdir() if "~" not in p.name) == names


def test_a_tiny_fine_tuning_run_from_the_cache_works_and_resumes(whisper_path, emodb_rows, tmp_path, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = ["--corpus", "emodb", "--labels", "angry", "sad", "neutral", "--encoder", whisper_path,
            "--encoder_mode", "finetune", "--trainable_layers", "2", "--first_layer", "1", "--pooling", "mean",
            "--layer_mix", "concat", "--classifier_hidden", "0", "--head_epochs", "2", "--learning_rate", "1e-3",
            "--encoder_learning_rate", "5e-5", "--per_device_train_batch_size", "8", "--num_train_epochs", "1",
            "--max_files", "24", "--protocol", "loso", "--val_speakers", "0", "--run_folds", "0",
            "--output_dir", str(out), "--cache_dir", str(cache), "--disable_tqdm", "true"]
    before = models.EmotionClassifier  # the checkpoint is a normal full model
    result = train.main(argv)
    fold = out / "fold_00"
    metrics = json.loads((fold / "metrics.json").read_text())
    assert metrics["finetune_from_cache"] and metrics["fold_seconds"] > 0 and result["folds"]
    assert len(list((cache / "hidden").rglob("*.npy"))) == len(list((cache / "layers").rglob("*.npy"))) == 24
    assert not list(fold.glob("checkpoint-*"))
    # both modes: alone as trained, adapted with each group's statistics on the training set's scale
    saved = np.load(fold / "test_logits.npz")
    assert set(metrics["test"]["normalization"]) == {"none", "speaker", "corpus"}
    assert np.array_equal(saved["logits_none"], saved["logits"]) and saved["logits_speaker"].shape == saved["logits"].shape
    assert not np.allclose(saved["logits_speaker"], saved["logits_none"])
    # the saved model runs from audio and gives the fold's test predictions
    model = before.from_pretrained(fold).eval()
    rows = [line.split(",") for line in (fold / "predictions.csv").read_text().splitlines()[1:]]
    extractor = train.Wav2Vec2FeatureExtractor.from_pretrained(fold)
    with torch.no_grad():
        for row in rows:
            probs = torch.softmax(model(*lone(extractor, load_audio(row[0]))).logits, -1)[0].numpy()
            assert np.allclose(probs, np.array(row[5:], dtype=float), atol=2e-2)
    # the encoder's top layers learnt, the lower ones did not
    pretrained = models.BACKBONES["whisper"].load_encoder(whisper_path)[1]
    state = model.backbone.encoder.state_dict()
    assert torch.equal(state["layers.0.fc1.weight"], pretrained["layers.0.fc1.weight"])
    assert not torch.equal(state["layers.5.fc1.weight"], pretrained["layers.5.fc1.weight"])
    # a second run keeps the finished fold
    capsys.readouterr()
    again = train.main(argv)
    assert "already done, kept" in capsys.readouterr().out
    assert again["folds"][0]["ua"] == result["folds"][0]["ua"]


def test_an_interrupted_fold_resumes_from_its_last_epoch(whisper_path, emodb_rows, tmp_path, monkeypatch, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = ["--corpus", "emodb", "--labels", "angry", "sad", "--encoder", whisper_path, "--encoder_mode", "finetune",
            "--trainable_layers", "1", "--pooling", "mean", "--layer_mix", "concat", "--classifier_hidden", "0",
            "--head_epochs", "2", "--encoder_learning_rate", "5e-5", "--per_device_train_batch_size", "8",
            "--num_train_epochs", "1", "--save_strategy", "epoch", "--max_files", "16", "--protocol", "loso",
            "--train_sampling_strategy", "group_by_length",  # batches of similar lengths (HiddenTrainer)
            "--val_speakers", "0", "--run_folds", "0", "--output_dir", str(out), "--cache_dir", str(cache),
            "--disable_tqdm", "true"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    with monkeypatch.context() as patch:
        patch.setattr(train, "save_checkpoint", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train.main(argv)
    fold = out / "fold_00"
    assert list(fold.glob("checkpoint-*")) and not (fold / "metrics.json").exists()
    first = (fold / "predictions.csv").read_text()
    fitted = []
    monkeypatch.setattr(train, "fit_head", lambda *args, **kwargs: fitted.append(1))
    train.main(argv)  # resumes from the epoch's checkpoint: the same weights, the head not fitted again
    assert not fitted and (fold / "metrics.json").exists() and not list(fold.glob("checkpoint-*"))
    assert (fold / "predictions.csv").read_text() == first
