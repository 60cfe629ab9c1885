"""One set of input checks: a generated bad-input corpus gets the same sentence from the app and infer.py.

Bad inputs are generated (empty, cut short, random bytes, NaN, huge values, silence, DC, tiny clips,
a folder, hours of low-bitrate Opus); real recordings from ../shared check that speech passes.
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf

from audio import checks as audio_checks
from data_process import AudioError, load_audio
from tests.ui_helpers import recording, require
from ui import callbacks
from ui.model_store import ModelStore

ROOT = Path(__file__).resolve().parents[1]
MODEL = "cnn1d-light"  # committed: no training needed; the checks run before the model anyway
LIMIT = 60.0           # --max_seconds of both, small so that a streamed decode stops early

EXPECTED = {  # file -> reason
    "empty.wav": "empty", "header_only.wav": "truncated", "truncated.wav": "too_short",  # judged on its 0.9 s
    "random.wav": "unreadable", "random.webm": "unreadable", "nan.wav": "not_finite", "huge.wav": "out_of_range",
    "silence.wav": "silent", "hiss.wav": "silent", "dc.wav": "dc_offset", "dc_speech.wav": "dc_offset",
    "tone.wav": "no_speech", "one_sample.wav": "too_short", "50ms.wav": "too_short", "300ms.wav": "too_short",
    "x.wav": "directory", "hours.webm": "too_long", "hours_streamed.webm": "too_long",
}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def hours_of_opus(folder: Path, hours: float) -> tuple[Path, Path]:
    """Return two small webm files holding `hours` of a 6 kbit/s Opus tone: one with its length in the header,
    one written as a stream (as a browser's MediaRecorder does) whose header says 10 s."""
    require(shutil.which("ffmpeg") is not None, "ffmpeg is not installed (apt-get install ffmpeg)")
    tone = folder / "tone.webm"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:duration=10", "-ac", "1", "-c:a", "libopus", "-b:a", "6k",
           "-frame_duration", "120", str(tone))
    loops = str(int(hours * 360) - 1)
    ffmpeg("-stream_loop", loops, "-i", str(tone), "-c", "copy", str(folder / "hours.webm"))
    with open(folder / "hours_streamed.webm", "wb") as out:
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-stream_loop", loops, "-i", str(tone), "-c", "copy",
                        "-f", "webm", "pipe:1"], stdout=out, check=True)
    tone.unlink()
    return folder / "hours.webm", folder / "hours_streamed.webm"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad_inputs")
    speech = load_audio(recording())
    real = recording().read_bytes()
    rng = np.random.default_rng(0)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "header_only.wav").write_bytes(real[:44])
    (folder / "truncated.wav").write_bytes(real[: len(real) // 2])
    (folder / "random.wav").write_bytes(rng.bytes(4000))
    (folder / "random.webm").write_bytes(rng.bytes(4000))
    with_nan = speech.copy()
    with_nan[1000:1010] = np.nan
    sf.write(folder / "nan.wav", with_nan, 16_000, subtype="FLOAT")
    sf.write(folder / "huge.wav", speech * 50 / np.abs(speech).max(), 16_000, subtype="FLOAT")  # peaks at 50.0
    sf.write(folder / "silence.wav", np.zeros(5 * 16_000), 16_000)
    sf.write(folder / "hiss.wav", rng.normal(0, 3e-5, 3 * 16_000), 16_000, subtype="FLOAT")
    sf.write(folder / "dc.wav", np.full(3 * 16_000, 0.5), 16_000)
    sf.write(folder / "dc_speech.wav", speech * 0.4 + 0.5, 16_000, subtype="FLOAT")
    t = np.arange(3 * 16_000) / 16_000
    sf.write(folder / "tone.wav", 0.3 * np.sin(2 * np.pi * 200 * t), 16_000)
    sf.write(folder / "one_sample.wav", speech[8000:8001], 16_000)
    sf.write(folder / "50ms.wav", speech[8000:8800], 16_000)
    sf.write(folder / "300ms.wav", speech[8000:12800], 16_000)
    (folder / "x.wav").mkdir()
    hours_of_opus(folder, hours=2)
    return folder


@pytest.fixture(scope="module")
def store() -> ModelStore:
    store = ModelStore(ROOT / "tests" / "checkpoints")
    require(MODEL in store.checkpoints, f"the committed checkpoint {MODEL} is missing")
    return store


def app_message(value, store: ModelStore, max_seconds: float = LIMIT) -> str:
    with pytest.raises(gr.Error) as caught:
        callbacks.predict(value, MODEL, store, max_seconds)
    return caught.value.message


def run_infer(*args: str) -> dict[str, dict]:
    """Run infer.py's main() in this process (torch is imported already) and return its JSON lines by file name."""
    import contextlib
    import io

    import infer

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        infer.main(["--checkpoint", str(ROOT / "tests" / "checkpoints" / MODEL), "--format", "jsonl", *args])
    return {Path(item["path"]).name: item for item in map(json.loads, out.getvalue().splitlines())}


def test_bad_inputs_get_the_same_message_in_the_app_and_infer(corpus, store):
    rows = run_infer("--max_seconds", str(LIMIT), str(corpus))
    assert sorted(rows) == sorted(EXPECTED)  # every input has a row, the folder named x.wav too
    for name, reason in EXPECTED.items():
        row = rows[name]
        assert (row["reason"], row["label"]) == (reason, None), (name, row)
        message = app_message(str(corpus / name), store)
        assert message == row["error"], (name, message, row["error"])
        assert str(corpus) not in message and "/tmp" not in message  # a file is named by its name only
        if name.endswith((".wav", ".webm")) and reason in ("empty", "truncated", "unreadable", "not_finite"):
            assert f"'{name}'" in message
    assert re.search(r"is 1(19|20)\.\d min long; the limit is 60\.0 s", rows["hours.webm"]["error"])  # header
    assert "longer than the limit of 60.0 s" in rows["hours_streamed.webm"]["error"]  # its header says 10 s
    assert "reach 50" in rows["huge.wav"]["error"] and "0.30 s long" in rows["300ms.wav"]["error"]
    assert "every sample is zero" in rows["silence.wav"]["error"]


def test_allow_nonspeech_scores_what_the_checks_refuse(corpus):
    rows = run_infer("--allow_nonspeech", "--max_seconds", str(LIMIT), *(str(corpus / n) for n in
                     ("silence.wav", "tone.wav", "300ms.wav", "one_sample.wav", "dc.wav", "huge.wav")))
    assert all(rows[n]["label"] and rows[n]["error"] is None for n in ("silence.wav", "tone.wav", "300ms.wav"))
    # below what any model can compute on, and faults of the signal, stay refused
    assert [rows[n]["reason"] for n in ("one_sample.wav", "dc.wav", "huge.wav")] == ["too_short", "dc_offset",
                                                                                    "out_of_range"]


def test_recordings_are_refused_like_files(store):
    speech = load_audio(recording())
    assert "0.30 s long" in app_message((16_000, speech[:4800]), store)
    assert "The recording contains NaN" in app_message((16_000, np.full(16_000, np.nan, np.float32)), store)
    assert "longer" not in app_message((48_000, np.zeros(48_000 * 3, np.int16)), store)  # silent, not too long
    assert "limit" in app_message((16_000, np.tile(speech, 40)), store)


def test_long_compressed_audio_is_refused_with_bounded_memory(corpus):
    """The streamed file's header says 10 s but it holds 2 hours: decoding stops at the limit (600 s here)."""
    code = ("import re, sys; sys.path.insert(0, '.'); from data_process import load_audio, AudioError\n"
            f"try: load_audio({str(corpus / 'hours_streamed.webm')!r}, max_seconds=600)\n"
            "except AudioError as err:\n"  # VmHWM: this process's peak resident memory (ru_maxrss counts the parent's)
            "    print(err.reason, int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    reason, peak_mb = done.stdout.split()
    assert reason == "too_long" and int(peak_mb) < 400, done.stdout  # a full decode would hold 1.4 GB of samples
    with pytest.raises(AudioError) as err:
        load_audio(corpus / "hours.webm", max_seconds=600)  # the header's length: refused before decoding
    assert err.value.reason == "too_long" and err.value.facts["seconds"] == pytest.approx(7200, abs=30)


# --- real speech passes -------------------------------------------------------------------------
@pytest.mark.parametrize("corpus_name", ["emodb", "ravdess", "urdu", "ased", "emotiontts_ko"])
def test_real_speech_passes_every_check(corpus_name):
    from data.corpora import corpora_root, read_corpus

    require((corpora_root() / corpus_name).is_dir(), f"the {corpus_name} corpus is missing")
    rows = read_corpus(corpus_name)
    rng = np.random.default_rng(0)
    for i in rng.permutation(len(rows))[:12]:
        audio = audio_checks.load(rows[i].path, max_seconds=600)  # raises Rejected if a check misfires
        assert len(audio) / 16_000 >= audio_checks.MIN_SECONDS


def test_speech_level_length_and_offset():
    speech = load_audio(recording())
    audio_checks.check(speech * 10 ** (-30 / 20))  # 30 dB quieter is still speech
    audio_checks.check(speech + 0.06)              # the largest offset of a real corpus clip (URDU)
    middle = len(speech) // 2
    audio_checks.check(speech[middle - 8000: middle + 8000])  # 1 s of speech: enough
    with pytest.raises(audio_checks.Rejected) as err:
        audio_checks.check(speech[middle - 4000: middle + 4000])
    assert err.value.reason == "too_short" and f"at least {audio_checks.MIN_SECONDS:g} s" in err.value.message
    audio_checks.check(np.zeros(16_000, np.float32), allow_nonspeech=True)


# --- files whose header or channels mislead (issue 18) --------------------------------------------
def app_and_infer(path: Path, store: ModelStore) -> tuple[dict, dict]:
    """Return (the app's probabilities, infer.py's JSON row) for the file at `path`, the default limit of each."""
    _, label, *_ = callbacks.predict(str(path), MODEL, store)
    return label, run_infer(str(path))[path.name]


def assert_scored_as(path: Path, expected: dict, store: ModelStore) -> None:
    app, row = app_and_infer(path, store)
    assert row["error"] is None, row
    for probabilities in (app, row["probabilities"]):
        assert max(abs(probabilities[k] - expected[k]) for k in expected) < 1e-4, (path.name, probabilities)


def test_a_wav_header_claiming_more_than_the_file_holds_is_judged_on_what_it_holds(tmp_path, store):
    import struct

    real = recording("03a05Wa.wav").read_bytes()  # 3.4 s of real angry speech
    expected = run_infer(str(recording("03a05Wa.wav")))["03a05Wa.wav"]["probabilities"]
    data = real.index(b"data")
    lying = tmp_path / "lying_header.wav"  # a recorder that wrote a placeholder length: 1118 min
    lying.write_bytes(real[:data + 4] + struct.pack("<I", 0x7FFFFFF0) + real[data + 8:])
    half = tmp_path / "half.wav"  # a copy cut in half
    half.write_bytes(real[: len(real) // 2])
    assert_scored_as(lying, expected, store)
    assert len(load_audio(half)) == (len(real) // 2 - 44) // 2
    app, row = app_and_infer(half, store)
    assert row["error"] is None and row["label"] == max(app, key=app.get)
    header_only = tmp_path / "header_only.wav"  # nothing decodes: refused as cut short, in both
    header_only.write_bytes(real[:44])
    row = run_infer(str(header_only))["header_only.wav"]
    assert row["reason"] == "truncated" and app_message(str(header_only), store) == row["error"]
    assert row["error"] == ("'header_only.wav' is cut short: no audio could be decoded of the 3.4 s its header "
                            "announces. Upload the complete file.")


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".webm"])
def test_stereo_in_opposite_phase_is_judged_on_one_channel(tmp_path, store, suffix):
    speech = load_audio(recording("03a05Wa.wav"))
    mono = tmp_path / "mono.wav"
    sf.write(mono, speech, 16_000)
    anti = tmp_path / f"anti{suffix}"
    if suffix == ".webm":
        require(shutil.which("ffmpeg") is not None, "ffmpeg is not installed (apt-get install ffmpeg)")
        sf.write(tmp_path / "anti_source.wav", np.stack([speech, -speech], axis=1), 16_000)
        ffmpeg("-i", str(tmp_path / "anti_source.wav"), "-c:a", "libopus", "-b:a", "128k", str(anti))
    else:
        sf.write(anti, np.stack([speech, -speech], axis=1), 16_000)
    decoded = load_audio(anti)
    assert np.abs(np.corrcoef(decoded[: len(speech)], speech[: len(decoded)])[0, 1]) > 0.99  # a channel, not silence
    expected = run_infer(str(mono))["mono.wav"]["probabilities"]
    if suffix == ".wav":  # lossless: the same samples (the left channel's, or its negation)
        assert_scored_as(anti, expected, store)
        _, label, *_ = callbacks.predict((16_000, np.stack([speech, -speech], axis=1)), MODEL, store)  # a recording
        assert max(abs(label[k] - expected[k]) for k in expected) < 1e-4
    else:
        app, row = app_and_infer(anti, store)
        assert row["error"] is None and row["label"] == max(app, key=app.get)
    ordinary = np.stack([speech, 0.5 * speech], axis=1)  # channels in phase are still mixed
    assert np.allclose(audio_checks.decode((16_000, ordinary)), 0.75 * speech, atol=1e-6)
