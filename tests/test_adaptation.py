"""Adapted to the speaker: groups for per-speaker statistics, statistics carried between calls, calibration per
mode (saved, loaded and applied by the model, recognizer.Recognizer and transformers' pipeline), and a head trained per
speaker served with the right statistics in each mode. Real EmoDB recordings where speech matters."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from adaptation.normalization import Speaker, remapped, shrunk_statistics, speaker_or_corpus, statistics
from tests.test_generalization import normalising_model

EMODB_03 = ["03a01Wa.wav", "03a01Nc.wav", "03a02Ta.wav", "03a01Fa.wav"]  # speaker 03: angry, neutral, sad, happy
CALIBRATION = {"alone": {"intercept": math.log(2.0), "slope": 0.0, "unsure_below": 0.4},
               "adapted": {"intercept": math.log(3.0), "slope": 0.5, "unsure_below": 0.3}}


def test_a_speaker_needs_three_emotions_for_statistics_of_their_own():
    row = lambda corpus, speaker, label: SimpleNamespace(corpus=corpus, speaker=speaker, label=label)  # noqa: E731
    rows = [row("a", "1", e) for e in ("angry", "sad", "happy")] + [row("a", "2", "sad")] * 2 + [row("b", "3", "sad"),
                                                                                                  row("b", "3", "happy")]
    assert speaker_or_corpus(rows) == ["a:1"] * 3 + ["a:*"] * 2 + ["b:*"] * 2


def test_a_model_without_standardisation_is_adapted_on_its_training_scale():
    rng = np.random.default_rng(0)
    voices = np.concatenate([rng.normal(5, 3, (40, 4)), rng.normal(-2, 0.5, (30, 4))]).astype(np.float32)
    groups = ["a"] * 40 + ["b"] * 30
    mean, std = np.array([1, 2, 3, 4], np.float32), np.array([1, 1, 2, 2], np.float32)
    out = remapped(voices, groups, mean, std)
    for group in ("a", "b"):  # each voice moved onto the training set's mean and spread, its order kept
        rows = np.array(groups) == group
        own_mean, own_std = statistics(out[rows])
        assert np.allclose(own_mean, mean, atol=1e-4) and np.allclose(own_std, std, atol=1e-4)
        assert np.array_equal(np.argsort(out[rows, 0]), np.argsort(voices[rows, 0]))


def test_speaker_statistics_are_carried_between_calls():
    rng = np.random.default_rng(0)
    x, mean, std = rng.normal(size=(5, 8)), rng.normal(size=8), rng.uniform(0.5, 2, size=8)
    speaker = Speaker()
    for row in x[:3]:
        speaker.add(row)
    carried = Speaker.from_dict(json.loads(json.dumps(speaker.to_dict())))  # e.g. stored by a web service
    for row in x[3:]:
        carried.add(row)
    for got, want in zip(carried.statistics(mean, std, 8.0), shrunk_statistics(x, mean, std, 8.0)):
        assert np.allclose(got, want, atol=1e-5)
    assert all(np.allclose(a, b) for a, b in zip(Speaker().statistics(mean, std), (mean, std)))  # nothing heard yet


def test_each_mode_has_its_own_calibration(tmp_path):
    from transformers import AutoModelForAudioClassification

    from adaptation.calibration import unsure_below
    from train import apply_calibration

    model = normalising_model()
    embeddings = torch.randn(6, model.pool.output_dim)
    raw_alone = model.classify(embeddings)
    group_mean, group_std = embeddings.mean(0), embeddings.std(0)
    raw_adapted = model.classify(embeddings, group_mean, group_std)
    model.save_pretrained(tmp_path)
    apply_calibration(tmp_path, {"by_mode": CALIBRATION})
    loaded = AutoModelForAudioClassification.from_pretrained(tmp_path).eval()
    assert torch.allclose(loaded.classify(embeddings), raw_alone / 2.0, atol=1e-5)  # one temperature alone
    z = (embeddings - loaded.embedding_mean) / loaded.embedding_std  # the distance from the training data
    temperature = 3.0 * z.pow(2).mean(-1, keepdim=True) ** 0.5  # log T = log 3 + 0.5 log(novelty)
    assert torch.allclose(loaded.classify(embeddings, group_mean, group_std), raw_adapted / temperature, atol=1e-4)
    config = json.loads((tmp_path / "config.json").read_text())
    assert unsure_below(config, adapted=False) == 0.4 and unsure_below(config, adapted=True) == 0.3
    assert config["calibration_temperature"] == pytest.approx(2.0)  # what older readers of the config see


@pytest.fixture(scope="module")
def default_copy(tmp_path_factory):
    """The committed default checkpoint, with a known calibration per mode."""
    import shutil

    from tests.ui_helpers import ROOT
    from train import apply_calibration

    source = ROOT / "checkpoints" / (ROOT / "checkpoints" / "default.txt").read_text().strip()
    folder = tmp_path_factory.mktemp("default") / source.name
    shutil.copytree(source, folder)
    (folder.parent / "encoders").symlink_to(source.parent / "encoders")  # a head-only checkpoint's shared encoder
    apply_calibration(folder, {"by_mode": CALIBRATION})
    return folder


def test_a_recognizer_adapts_to_a_speaker_on_real_speech(default_copy):
    from serving.recognizer import Recognizer
    from tests.ui_helpers import recording

    recognizer = Recognizer(default_copy, device="cpu")
    clips = [str(recording(c)) for c in EMODB_03]
    speaker = recognizer.adapt(clips[:3])
    assert speaker.count == 3
    embedding = recognizer.embed(clips[3])
    expected = recognizer.classify(embedding[None], *speaker.statistics(*recognizer.model_statistics()))[0]
    adapted = recognizer.predict(clips[3], speaker=speaker)
    assert np.allclose([adapted.probabilities[k] for k in recognizer.labels], expected, atol=1e-5)
    alone = recognizer.predict(clips[3])
    assert not np.allclose(list(alone.probabilities.values()), list(adapted.probabilities.values()), atol=1e-3)
    # alone: the alone mode's temperature, the model's statistics
    raw = recognizer.model.classifier(torch.as_tensor((embedding - recognizer.model_statistics()[0])
                                                      / recognizer.model_statistics()[1])[None])
    assert np.allclose(list(alone.probabilities.values()), torch.softmax(raw / 2.0, -1)[0].detach().numpy(), atol=1e-4)
    assert recognizer.unsure_below() == 0.4 and recognizer.unsure_below(adapted=True) == 0.3


def test_the_pipeline_applies_the_calibration_alone(default_copy):
    from transformers import pipeline

    from serving.recognizer import Recognizer
    from tests.ui_helpers import recording

    clip = str(recording(EMODB_03[0]))
    ours = Recognizer(default_copy, device="cpu").predict(clip).probabilities
    theirs = pipeline("audio-classification", model=str(default_copy), trust_remote_code=True, device="cpu")(clip, top_k=None)
    assert {r["label"]: pytest.approx(r["score"], abs=1e-4) for r in theirs} == ours


def test_a_head_trained_per_speaker_is_served_with_the_right_statistics(tmp_path, whisper_path, emodb_rows):
    """--embedding_norm speaker: each training speaker standardised with their own statistics; a clip alone then gets
    the speakers' average, and a speaker's clips adapted get that speaker's, in the app's Recognizer as in training."""
    import train
    from data.corpora import read_corpora
    from serving.recognizer import Recognizer
    from adaptation.normalization import average_statistics

    out = tmp_path / "model"
    train.main(["--encoder", whisper_path, "--corpus", "emodb", "--labels", "angry", "happy", "neutral", "sad",
                "--max_files", "32", "--embedding_norm", "speaker", "--num_train_epochs", "2", "--protocol", "all",
                "--cache_dir", str(tmp_path / "cache"), "--disable_tqdm", "true", "--report_to", "none",
                "--output_dir", str(out)])
    rows = train.subsample(read_corpora(["emodb"], keep=["angry", "happy", "neutral", "sad"]), 32, 0)  # train.py's
    recognizer = Recognizer(out, device="cpu")
    vectors = np.stack([recognizer.embed(r.path) for r in rows])
    mean, std = average_statistics(vectors, speaker_or_corpus(rows))
    assert np.allclose(recognizer.model_statistics()[0], mean, atol=2e-3)
    assert np.allclose(recognizer.model_statistics()[1], std, rtol=2e-3, atol=2e-3)
    alone = recognizer.predict(rows[0].path).probabilities
    assert np.allclose(list(alone.values()), recognizer.classify(vectors[:1])[0], atol=1e-5)


def test_a_head_trained_on_raw_embeddings_adapts_on_its_training_scale():
    # --embedding_norm posthoc: alone the embedding is left as it is; adapted, the group is standardised with its own
    # statistics and put back on the training clips' scale (normalization.remapped), then the same head judges it
    from tests.test_generalization import normalising_model

    model = normalising_model(pooling="conv_max", layer_mix="weighted", projector_dim=8, embedding_norm="posthoc")
    dim = model.pool.output_dim
    rng = np.random.default_rng(0)
    model.embedding_mean.copy_(torch.from_numpy(rng.normal(size=dim).astype(np.float32)))
    model.embedding_std.copy_(torch.from_numpy(rng.uniform(0.5, 2, dim).astype(np.float32)))
    voice = torch.from_numpy(rng.normal(3, 2, (6, dim)).astype(np.float32))  # a voice far from the training clips
    with torch.no_grad():
        raw = model.classifier(voice)
        assert torch.allclose(model(embeddings=voice).logits, raw, atol=1e-5)  # alone: the head's own judgement
        mean, std = statistics(voice.numpy())
        adapted = model(embeddings=voice, embedding_mean=torch.from_numpy(mean), embedding_std=torch.from_numpy(std))
        on_scale = remapped(voice.numpy(), ["u"] * 6, model.embedding_mean.numpy(), model.embedding_std.numpy())
        assert torch.allclose(adapted.logits, model.classifier(torch.from_numpy(on_scale)), atol=1e-4)
        assert not torch.allclose(adapted.logits, raw, atol=1e-2)


def test_the_numpy_head_adapts_a_posthoc_model_as_pytorch_does(tmp_path):
    from serving.onnx_recognizer import Head
    from tests.test_generalization import normalising_model

    model = normalising_model(pooling="conv_max", layer_mix="weighted", projector_dim=8, embedding_norm="posthoc")
    dim = model.pool.output_dim
    model.embedding_mean.normal_()
    model.embedding_std.uniform_(0.5, 2.0)
    model.save_pretrained(tmp_path)
    head = Head(tmp_path)
    voice = np.random.default_rng(1).normal(2, 3, (5, dim)).astype(np.float32)
    mean, std = statistics(voice)
    for stats in ((None, None), (mean, std)):  # alone, then adapted
        with torch.no_grad():
            want = model(embeddings=torch.from_numpy(voice),
                         **{k: torch.from_numpy(v) for k, v in zip(("embedding_mean", "embedding_std"), stats)
                            if v is not None}).logits.numpy()
        assert np.allclose(head.logits(voice, *stats), want, atol=1e-4)
