"""Audio decoding and speaker-aware splits."""
import numpy as np
import pytest
import soundfile as sf

from data_process import AudioError, find_audio_files, load_audio, make_folds, to_model_rate


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000, 96000])
@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_any_rate_and_format_becomes_16k_mono(tmp_path, tone, sr, fmt):
    stereo = np.stack([tone(0.5, sr), tone(0.5, sr)], axis=1)
    path = tmp_path / f"clip.{fmt}"
    sf.write(path, stereo, sr)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 8000) <= 2


def test_mp3_decodes(tmp_path, tone):
    path = tmp_path / "clip.mp3"
    sf.write(path, tone(1.0, 44100), 44100, format="MP3")
    assert abs(len(load_audio(path)) - 16000) < 1200  # mp3 adds encoder delay


def test_resampling_keeps_the_pitch(tone):
    audio = to_model_rate(tone(1.0, 48000, freq=440.0), 48000)
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / len(audio) - 440) < 2


def test_int16_input_is_scaled():
    audio = to_model_rate((np.ones(1600) * 16384).astype(np.int16), 16000)
    assert np.allclose(audio, 0.5, atol=1e-3)


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"this is not audio at all" * 20, "not a readable audio")])
def test_bad_files_are_named(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=message) as err:
        load_audio(path)
    assert "bad.wav" in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "gone.wav")


def test_find_audio_files_recurses(tmp_path, tone):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ["a/x.wav", "a/b/y.flac", "a/notes.txt"]:
        if name.endswith("txt"):
            (tmp_path / name).write_text("hi")
        else:
            sf.write(tmp_path / name, tone(0.1), 16000)
    assert [p.name for p in find_audio_files([tmp_path / "a"])] == ["y.flac", "x.wav"]


@pytest.fixture
def table():
    speakers = np.repeat([f"s{i}" for i in range(10)], 20)
    labels = np.tile(["angry", "sad", "happy", "neutral"], 50)
    return labels, speakers


@pytest.mark.parametrize("protocol, n", [("loso", 10), ("speaker_kfold", 5)])
def test_speaker_protocols_never_share_a_speaker(table, protocol, n):
    labels, speakers = table
    folds = make_folds(labels, speakers, protocol, k=5)
    assert len(folds) == n
    tested = []
    for fold in folds:
        parts = {k: set(speakers[fold[k]]) for k in ("train", "val", "test")}
        assert not parts["train"] & parts["test"] and not parts["val"] & parts["test"] and not parts["train"] & parts["val"]
        assert len(fold["train"]) + len(fold["val"]) + len(fold["test"]) == len(labels)
        tested.extend(fold["test"])
    assert sorted(tested) == list(range(len(labels)))  # every utterance is tested exactly once


def test_loco_never_puts_a_corpus_on_both_sides():
    # three corpora; "b" alone carries boredom, so its boredom clips cannot be tested when b is left out
    speakers = np.array([f"{c}:{i}" for c in "abc" for i in range(4) for _ in range(6)])
    labels = np.array(["happy", "sad", "angry"] * (len(speakers) // 3), dtype=object)
    labels[(speakers == "b:0") | (speakers == "b:1")] = "boredom"
    folds = make_folds(labels, speakers, "loco", val_speakers=1)
    assert [f["name"] for f in folds] == ["a", "b", "c"]
    corpus = np.array([s.split(":")[0] for s in speakers])
    for fold in folds:
        assert set(corpus[fold["test"]]) == {fold["name"]}
        assert fold["name"] not in set(corpus[fold["train"]]) | set(corpus[fold["val"]])
        assert set(labels[fold["test"]]) <= set(labels[fold["train"]])  # only emotions seen in training
    assert "boredom" not in set(labels[folds[1]["test"]]) and len(folds[1]["test"]) == 24 - 12
    assert "boredom" in set(labels[folds[0]["train"]])  # the other folds train on it
    with pytest.raises(ValueError, match="two corpora"):
        make_folds(labels[:24], speakers[:24], "loco")


def test_session_and_fixed_protocols(table):
    labels, speakers = table
    sessions = np.array([f"Session{int(s[1:]) // 2 + 1}" for s in speakers])
    folds = make_folds(labels, speakers, "loso_session", sessions=sessions)
    assert len(folds) == 5 and all(len(set(speakers[f["test"]])) == 2 for f in folds)
    (fold,) = make_folds(labels, speakers, "fixed", test_speakers=["s3"])
    assert set(speakers[fold["test"]]) == {"s3"}
    with pytest.raises(ValueError, match="unknown"):
        make_folds(labels, speakers, "fixed", test_speakers=["nobody"])


def test_random_split_is_stratified_9_to_1(table):
    labels, speakers = table
    (fold,) = make_folds(labels, speakers, "random")
    assert len(fold["test"]) == 20 and set(labels[fold["test"]]) == set(labels)
    assert not set(fold["test"]) & set(fold["train"])
