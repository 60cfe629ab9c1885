"""Spectral backbones (log-mel CNN, MFCC LSTM, mel-spectrogram EfficientNet) and augment.py, on real EmoDB speech."""
import logging

import numpy as np
import pytest
import torch
from transformers import EfficientNetConfig, EfficientNetModel, pipeline

from audio import augment
from serving.recognizer import Recognizer
import train
from data_process import SAMPLE_RATE, WaveDataset, load_audio
from models import EmotionClassifier, EmotionConfig
from models.spectral import EFFICIENTNETS, MFCCLSTM, standardize

LABELS = ["angry", "sad"]
TINY = {  # backbone -> EmotionConfig settings small enough for tests
    "logmel_cnn": dict(n_mels=16),
    "mfcc_lstm": dict(lstm_layers=2, lstm_hidden=16),
    "mel_efficientnet": dict(image_model="efficientnet-tiny", n_mels=32),
}


def tiny(backbone: str, **kw) -> EmotionClassifier:
    config = EmotionConfig(backbone=backbone, pooling="attention", projector_dim=16, pool_hidden=8,
                           id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)},
                           **TINY[backbone], **kw)
    torch.manual_seed(0)
    return EmotionClassifier(config).eval()


@pytest.fixture(scope="module")
def speech(emodb_rows):
    """Three real EmoDB clips of different lengths (16 kHz float32)."""
    return [load_audio(r.path) for r in emodb_rows[:3]]


def batch_of(clips):
    x = torch.zeros(len(clips), max(len(c) for c in clips))
    mask = torch.zeros(x.shape, dtype=torch.long)
    for i, c in enumerate(clips):
        x[i, :len(c)], mask[i, :len(c)] = torch.from_numpy(c), 1
    return x, mask


@pytest.mark.parametrize("backbone", sorted(TINY))
def test_padding_a_batch_changes_no_output(backbone, speech):
    model = tiny(backbone)
    clips = [speech[0], speech[1][:9001], speech[2][:20000]]
    with torch.no_grad():
        batched = model(*batch_of(clips)).logits
        alone = torch.cat([model(torch.from_numpy(c)[None]).logits for c in clips])
    assert torch.allclose(batched, alone, atol=1e-4), (batched - alone).abs().max()


def test_mfcc_match_librosa(speech):
    import librosa

    reference = librosa.feature.mfcc(y=speech[0], sr=SAMPLE_RATE, n_mfcc=13, n_fft=512, win_length=400,
                                     hop_length=160, n_mels=40)  # (13, T)
    ours = MFCCLSTM(EmotionConfig()).mfcc(torch.from_numpy(speech[0]))  # (T, 13), z-scored per coefficient
    expected = standardize(torch.from_numpy(reference), dim=-1).T
    assert ours.shape == expected.shape == (1 + len(speech[0]) // 160, 13)
    assert torch.allclose(ours, expected, atol=2e-3)


def test_mfcc_lstm_reads_the_last_real_step(speech):
    """The LSTM's state at the clip's end: the same clip with 1 s more speech gives another output."""
    backbone = tiny("mfcc_lstm").backbone
    with torch.no_grad():
        short, _ = backbone(torch.from_numpy(speech[0][:16000])[None])
        longer, mask = backbone(*batch_of([speech[0][:16000], speech[0][:32000]]))
    assert longer.shape == (2, 1, 1, 16) and mask.tolist() == [[True], [True]]
    assert torch.allclose(short[0], longer[0], atol=1e-5) and not torch.allclose(longer[0], longer[1], atol=1e-3)


def test_logmel_cnn_keeps_every_frame(speech):
    """40 bands, hop 512, two 2x2 pools: a clip of N samples gives (1 + N // 512) // 4 frames of 1024."""
    backbone = EmotionClassifier(EmotionConfig(backbone="logmel_cnn", id2label={0: "a", 1: "b"})).backbone.eval()
    with torch.no_grad():
        layers, mask = backbone(*batch_of(speech))
    frames = [(1 + len(c) // 512) // 4 for c in speech]
    assert layers.shape == (3, 1, max(frames), 1024) and mask.sum(-1).tolist() == frames


def test_efficientnet_ignores_silence_and_level(speech):
    """Silence trimmed and peak normalised inside the model: added silence and a quieter copy change nothing."""
    model = tiny("mel_efficientnet")
    pad = np.zeros(256 * 40, dtype=np.float32)  # a whole number of librosa.effects.trim hops
    louder = np.concatenate([pad, speech[1], pad]) * 0.1
    with torch.no_grad():
        logits = [model(torch.from_numpy(c)[None]).logits for c in (speech[1], louder)]
    assert torch.allclose(*logits, atol=1e-4), (logits[0] - logits[1]).abs().max()


def test_image_weights_load_into_one_channel(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        model = tiny("mel_efficientnet")
        model.backbone.load_image_weights(None)
    assert "RANDOM INITIALISATION" in caplog.text and "google/efficientnet-b0" in caplog.text
    rgb = EfficientNetModel(EfficientNetConfig(num_channels=3, **EFFICIENTNETS["efficientnet-tiny"]))
    rgb.save_pretrained(tmp_path / "rgb")
    model.backbone.load_image_weights(str(tmp_path / "rgb"))
    grey = model.backbone.cnn.embeddings.convolution.weight
    assert grey.shape[1] == 1
    assert torch.allclose(grey, rgb.embeddings.convolution.weight.sum(dim=1, keepdim=True))


def test_augment_trim_peak_and_crop(speech, tmp_path):
    pad = np.zeros(SAMPLE_RATE, dtype=np.float32)
    padded = np.concatenate([pad, speech[0] * 0.2, pad])
    trimmed = augment.trim_silence(padded, 30.0)
    assert len(trimmed) < len(padded) - SAMPLE_RATE  # most of the 2 s of silence is gone
    assert np.max(np.abs(augment.peak_normalize(trimmed))) == pytest.approx(1.0)
    assert np.array_equal(augment.peak_normalize(pad), pad)

    plain = WaveDataset([str(tmp_path / "x.wav")], [0], crop_seconds=1.0)
    assert augment.training_dataset(plain, augment=False) is plain
    import soundfile as sf

    sf.write(tmp_path / "x.wav", padded, SAMPLE_RATE)
    wrapped = augment.training_dataset(plain, augment=True, trim_db=30.0)
    item = wrapped[0]
    assert len(item["audio"]) == SAMPLE_RATE and item["labels"] == 0
    assert np.abs(item["audio"]).max() > 0.01  # the crop holds speech, not the leading silence


@pytest.mark.parametrize("backbone, extra", [
    ("logmel_cnn", ["--n_mels", "16"]),
    ("mfcc_lstm", ["--lstm_layers", "2", "--lstm_hidden", "16", "--pooling", "mean"]),
    ("mel_efficientnet", ["--image_model", "efficientnet-tiny", "--n_mels", "32", "--crop_seconds", "2",
                          "--augment", "true"]),
])
def test_train_save_and_infer(backbone, extra, tmp_path, emodb_rows):
    """train.py trains the system on real speech and saves a checkpoint that infer.py and `pipeline` load."""
    out = tmp_path / "run"
    result = train.main([
        "--corpus", "emodb", "--labels", *LABELS, "--backbone", backbone, *extra, "--max_files", "40",
        "--protocol", "fixed", "--test_speakers", "emodb:03", "--num_train_epochs", "1",
        "--per_device_train_batch_size", "8", "--projector_dim", "16", "--output_dir", str(out),
        "--disable_tqdm", "true"])
    assert result["folds"][0]["n"] > 0
    recognizer = Recognizer(out)
    assert recognizer.labels == LABELS
    clip = load_audio(next(r.path for r in emodb_rows if r.speaker == "emodb:03"))
    probs, windows = recognizer.predict(clip)
    assert set(probs) == set(LABELS) and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    scores = {s["label"]: s["score"] for s in pipeline("audio-classification", model=str(out), trust_remote_code=True)(clip)}
    assert scores == pytest.approx(probs, abs=1e-4)


def test_logmel_cnn_learns_angry_from_sad_on_unseen_speakers(tmp_path):
    """The log-mel CNN, a few epochs on real speech, separates anger from sadness for two speakers it never heard."""
    result = train.main([
        "--corpus", "emodb", "--labels", *LABELS, "--backbone", "logmel_cnn", "--protocol", "fixed",
        "--test_speakers", "emodb:03", "emodb:10", "--num_train_epochs", "8", "--per_device_train_batch_size", "16",
        "--crop_seconds", "2", "--output_dir", str(tmp_path / "run"), "--disable_tqdm", "true"])
    assert result["folds"][0]["ua"] > 0.8, result["folds"][0]  # chance is 0.5
