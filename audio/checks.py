"""Can this audio be judged? One set of input checks, and one sentence for each refusal, for the app and infer.py.

    audio = load(path_or_recording, max_seconds=600)   # 16 kHz mono float32, or raises Rejected
    check(audio)                                        # the signal checks alone, on 16 kHz audio

Every refusal is a `Rejected` with a one-word `reason` (a key of MESSAGES) and the `message` users
see, naming a file by its name, never by a server path. The thresholds and the data they come from
are in docs/input_checks.md.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data_process import AUDIO_EXTENSIONS, SAMPLE_RATE, AudioError, find_audio_files, load_audio, to_model_rate

MIN_SECONDS = 1.0        # shorter audio is refused: accuracy falls towards chance below it (docs/input_checks.md)
PEAK_LIMIT = 2.0         # samples beyond +-2 (6 dB over full scale) mean a mis-scaled or corrupt file
DC_LIMIT = 0.2           # a mean this far off zero is a fault (real corpus clips stay within 0.06)
SILENCE_DBFS = -65.0     # loudest 30 ms frame below this: silent (the quietest corpus clip peaks near -55)
VAD_FRAME_S = 0.03       # frames of the loudness and voice-activity checks
MIN_SPEECH_S = 0.2       # voiced time needed to call it speech (webrtcvad mode 2: models/waveform.py, which the
                         # scoring windows share, so that a window of long audio is speech by the same measure)
WAIVABLE = ("too_short", "silent", "no_speech")  # what `allow_nonspeech` lets through: judgement, not faults
MIN_SCORABLE_SECONDS = 0.1  # even with `allow_nonspeech`: some models cannot compute on less (the 1-D CNN)

MESSAGES = {
    # the file itself ({name}: 'clip.wav', or "The recording")
    "missing": "{name} was not found.",
    "directory": "{name} is a folder with no audio files in it (looked for {extensions}).",
    "folder": "{name} is a folder: give one audio file.",
    "empty": "{name} is empty (0 bytes): the upload or copy did not complete. Upload it again.",
    "no_samples": "{name} holds no audio samples. Record or upload some speech.",
    "unreadable": "{name} could not be read as audio: it is not an audio file or it is corrupt.",
    "truncated": "{name} is cut short: no audio could be decoded{expected_text}. Upload the complete file.",
    "too_long": "The audio is {length_text}. Upload a shorter excerpt.",
    "not_finite": "{name} contains NaN or infinite sample values: the file is corrupt. Export it again.",
    # the signal
    "out_of_range": "The audio's samples reach {peak:.3g}, far outside the -1..1 of normal audio: the file is "
                    "mis-scaled or corrupt. Normalise it (or export it as 16-bit PCM) and try again.",
    "dc_offset": "The audio sits off zero (a DC offset of {dc:+.2f} of full scale): the microphone or sound card is "
                 "faulty, or this is not a recording. Remove the offset (a high-pass filter) or record again.",
    "too_short": "The audio is only {seconds:.2f} s long: record or upload at least {min_seconds:g} s of speech "
                 "(shorter clips are too short for any judgement).",
    "silent": "The audio is silent ({level}). Check the microphone or the file and try again.",
    "no_speech": "No speech was detected in the audio (voice-activity check). Record or upload someone speaking.",
}


class Rejected(ValueError):
    """Audio that cannot be judged: `reason` is a key of MESSAGES, `message` the sentence users see."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def _duration_text(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def message(reason: str, name: str = "The audio", **facts) -> str:
    """Return the sentence for `reason`, filled with `name` and the facts the decoder found."""
    if reason == "too_long":
        seconds, limit = facts.get("seconds"), _duration_text(facts["limit"])
        facts["length_text"] = (f"{_duration_text(seconds)} long; the limit is {limit}" if seconds
                                else f"longer than the limit of {limit}")  # decoding stopped at the limit
    if reason == "truncated":
        expected = facts.get("expected")
        facts["expected_text"] = (f" of the {expected:.1f} s its header announces" if expected
                                  else " before decoding stopped on an error")
    facts.setdefault("extensions", ", ".join(AUDIO_EXTENSIONS))
    return MESSAGES[reason].format(name=name, **facts)


def rejected(reason: str, name: str = "The audio", **facts) -> Rejected:
    return Rejected(reason, message(reason, name, **facts))


def decode(source, max_seconds: float | None = None) -> np.ndarray:
    """Return `source` as 16 kHz mono float32: a file path, a (rate, samples) pair, or 16 kHz samples.

    A path is decoded with memory and work bounded by `max_seconds` (data_process.load_audio).
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = f"'{path.name}'"
        if path.is_dir() and find_audio_files([path]):
            raise rejected("folder", name)
        try:
            audio = load_audio(path, max_seconds=max_seconds)
        except AudioError as err:
            raise rejected(err.reason, name, **err.facts) from None
    else:
        rate, samples = source if isinstance(source, tuple) else (SAMPLE_RATE, source)
        try:
            audio = to_model_rate(samples, int(rate), name="the recording")
        except AudioError as err:
            raise rejected(err.reason, "The recording", **err.facts) from None
    if max_seconds is not None and len(audio) > max_seconds * SAMPLE_RATE:
        raise rejected("too_long", seconds=len(audio) / SAMPLE_RATE, limit=max_seconds)
    return audio


def voiced_seconds(audio: np.ndarray) -> float:
    """Return how many seconds of 16 kHz `audio` webrtcvad calls speech."""
    from models.waveform import voiced_frames  # here, not above: importing models/ loads transformers

    return float(voiced_frames(audio).sum()) * VAD_FRAME_S


def loudest_dbfs(audio: np.ndarray) -> float:
    """Return the level of the loudest 30 ms frame of 16 kHz `audio`, its DC offset removed, in dBFS."""
    size = int(VAD_FRAME_S * SAMPLE_RATE)
    centred = audio.astype(np.float64) - audio.mean()
    frames = centred[: max(len(centred) // size, 1) * size]
    frames = frames.reshape(-1, min(size, len(frames)))
    return float(20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)).max() + 1e-12))


def check(audio: np.ndarray, allow_nonspeech: bool = False) -> None:
    """Raise Rejected unless 16 kHz `audio` can be judged.

    Faults of the signal (samples out of range, a DC offset) are always refused; with
    `allow_nonspeech` audio that is too short, silent or holds no speech is let through.
    """
    def refuse(reason: str, **facts) -> None:
        if not (allow_nonspeech and reason in WAIVABLE):
            raise rejected(reason, **facts)

    if not len(audio):
        raise rejected("no_samples", "The audio")
    peak = float(np.abs(audio).max())
    if peak > PEAK_LIMIT:
        refuse("out_of_range", peak=peak)
    seconds = len(audio) / SAMPLE_RATE
    if seconds < MIN_SCORABLE_SECONDS:
        floor = MIN_SCORABLE_SECONDS if allow_nonspeech else MIN_SECONDS
        raise rejected("too_short", seconds=seconds, min_seconds=floor)
    if seconds < MIN_SECONDS:
        refuse("too_short", seconds=seconds, min_seconds=MIN_SECONDS)
    dc = float(audio.mean())
    if abs(dc) > DC_LIMIT:
        refuse("dc_offset", dc=dc)
    if allow_nonspeech:
        return
    loudest = loudest_dbfs(audio)
    if loudest < SILENCE_DBFS:
        level = ("every sample is zero" if not audio.any() else "it holds a constant value, no sound"
                 if loudest < -200 else f"its loudest moment is {loudest:.0f} dBFS")
        refuse("silent", level=level)
    if voiced_seconds(audio - dc) < MIN_SPEECH_S:
        refuse("no_speech")


def load(source, max_seconds: float | None = None, allow_nonspeech: bool = False) -> np.ndarray:
    """Return `source` (see `decode`) as 16 kHz mono float32 if it can be judged, else raise Rejected."""
    audio = decode(source, max_seconds)
    check(audio, allow_nonspeech)
    return audio
