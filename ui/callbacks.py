"""What the page's events do, as plain functions: decode and check the audio, score it, switch models.

Every user-facing problem raises `gr.Error` with a sentence that says what to do; nothing here
needs a browser, so the tests call these functions directly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gradio as gr
import numpy as np
import pandas as pd

from audio import checks as audio_checks
from adaptation.calibration import unsure_below
from data_process import SAMPLE_RATE
from serving.recognizer import Window
from models.waveform import speech_parts
from ui import uploads, voice as my_voice
from ui.model_store import CheckpointError, ModelStore
from ui.scheduler import Scheduler
from ui.voice import Voice

DEFAULT_MAX_SECONDS = 600.0  # longest audio accepted (--max_seconds)
LONG_AUDIO_S = 8.0           # longer audio also gets the timeline and the per-window table
TIMELINE_WINDOW_S = 4.0      # timeline windows: about one utterance, the length the models learned from
TIMELINE_HOP_S = 2.0
NO_SPEECH = "no speech"      # what the per-window table says of a window without speech (not scored)
SCHEDULER = Scheduler()      # runs every model call of the process, in turns (ui/scheduler.py)
RECENT = uploads.RecentUploads()  # uploads already read (and deleted), for Analyse again and model switches


class UserError(gr.Error):
    """A problem with what the user gave: shown on the page; no traceback in the server log."""

    def __init__(self, message: str):
        super().__init__(message, print_exception=False)


@dataclass
class Analysis:
    """The result of scoring one recording with one model."""

    model: str
    probabilities: dict[str, float]  # every emotion of the model, highest first
    windows: list                    # recognizer.Window list; several only for long audio (probs None: no speech)
    seconds: float                   # length of the audio
    elapsed: float                   # server time from the file to the probabilities
    precision: str = "fp32"          # what ran the model: fp32, or its int8 graph (serving/quantize.py)
    unsure_below: float | None = None  # a top probability under this was wrong more often than right (held out)
    adapted: bool = False            # judged with the statistics of the user's earlier recordings (else alone)

    @property
    def top(self) -> str:
        return next(iter(self.probabilities))


# ---------------------------------------------------------------------------------------------
# Audio in: decode (bounded by the length limit), then the checks infer.py runs too (audio_checks).
# ---------------------------------------------------------------------------------------------
def read_audio(value, max_seconds: float = DEFAULT_MAX_SECONDS) -> np.ndarray:
    """Return the recording or file `value` as 16 kHz mono float32, or raise gr.Error saying why not.

    `value` is what gr.Audio hands over: a file path (type="filepath"), a (rate, samples) tuple
    (type="numpy", int16 or float, mono or stereo, any rate), or None. A file over `max_seconds`
    is refused from its header, or once decoding reaches the limit, never after a full decode.
    An upload is read once, then deleted, and kept in memory for re-scoring (ui/uploads.py).
    """
    if value is None or (isinstance(value, str) and not value):
        raise UserError("No audio yet: record with the microphone or upload a file, then press Analyse.")
    try:
        return RECENT.read(value, max_seconds)
    except audio_checks.Rejected as err:  # the sentence infer.py writes too; a file named by name, not server path
        raise UserError(err.message) from None


def check_speech(audio: np.ndarray) -> None:
    """Raise gr.Error unless 16 kHz `audio` can be judged: long enough, in range, not silent, with speech."""
    try:
        audio_checks.check(audio)
    except audio_checks.Rejected as err:
        raise UserError(err.message) from None


# ---------------------------------------------------------------------------------------------
# Scoring.
# ---------------------------------------------------------------------------------------------
def load_model(store: ModelStore, name: str | None):
    """Return the Recognizer for checkpoint `name`, or raise gr.Error saying why there is none."""
    if not store.checkpoints:
        raise UserError(f"No checkpoints found in the app's checkpoints folder ('{store.root.name}'): train one with "
                       f"train.py (--output_dir {store.root.name}/NAME) and restart the app.")
    if not name or name not in store.checkpoints:
        raise UserError(f"Unknown model {name!r}: choose one of the list.")
    try:
        return store.get(name)
    except Exception as err:  # a broken checkpoint must not take the server down
        detail = str(err) if isinstance(err, CheckpointError) else type(err).__name__  # never a server path
        raise UserError(f"The model '{name}' could not be loaded ({detail}).") from None


def analyse(value, model_name: str | None, store: ModelStore, max_seconds: float = DEFAULT_MAX_SECONDS,
            progress: Callable[[int, int], None] | None = None, voice: Voice | None = None) -> Analysis:
    """Return every emotion's probability for the audio `value` scored with checkpoint `model_name`.

    Audio up to LONG_AUDIO_S is scored whole (as recognizer.Recognizer.predict does); longer audio is
    scored in TIMELINE_WINDOW_S windows and the whole clip gets the mean of those with speech (the others
    are marked, not scored), so that the timeline and the overall answer come from one pass. The model
    runs on the shared SCHEDULER, which calls `progress(windows done, windows)` while a long recording
    is scored. With the page session's
    `voice`, a model that standardises its embeddings uses the user's statistics and learns from the recording.
    """
    start = time.perf_counter()
    recognizer = load_model(store, model_name)
    audio = read_audio(value, max_seconds)
    check_speech(audio)
    seconds = len(audio) / SAMPLE_RATE
    adapted = voice is not None and my_voice.adapts(recognizer) and voice.knows(model_name, my_voice.digest(audio))
    windows = scored_windows(recognizer, audio, *((TIMELINE_WINDOW_S, TIMELINE_HOP_S) if seconds > LONG_AUDIO_S else ()),
                             progress=progress, voice=voice, model=model_name, remember=True,
                             name=Path(value).name if isinstance(value, (str, Path)) else None)
    mean = np.mean([w.probs for w in windows if w.speech], axis=0)
    probs = dict(zip(recognizer.labels, map(float, mean)))
    if not all(np.isfinite(p) for p in probs.values()):
        raise UserError(f"The model '{model_name}' computed invalid numbers (NaN) for this audio; try another model.")
    ranked = dict(sorted(probs.items(), key=lambda item: item[1], reverse=True))
    return Analysis(model_name, ranked, windows, seconds, time.perf_counter() - start,
                    getattr(recognizer, "precision", "fp32"), unsure_below(store.info(model_name).config, adapted), adapted)


def scored_windows(recognizer, audio: np.ndarray, window_seconds: float | None = None, hop_seconds: float | None = None,
                   progress: Callable[[int, int], None] | None = None, voice: Voice | None = None,
                   model: str | None = None, remember: bool = False, name: str | None = None) -> list[Window]:
    """Return recognizer.windows(audio, ...), its model calls made on the shared SCHEDULER.

    As in infer.py, a window without speech is not scored (probs None) and one with speech is scored on its
    speech (models.waveform.speech_parts). With a `voice` and a model that adapts, the windows' embeddings are
    standardised with the user's statistics (ui/voice.py); with `remember`, the recording (called `name` in the
    session's history) then joins them.
    """
    spans = recognizer.spans(len(audio), window_seconds, hop_seconds)
    parts = speech_parts(audio, spans)
    clips = [audio[part[0]:part[1]] for part in parts if part]
    if voice is None or not my_voice.adapts(recognizer):
        probs = SCHEDULER.probabilities(recognizer, clips, progress=progress)
    else:
        embeddings = SCHEDULER.probabilities(my_voice.embedder(recognizer), clips, progress=progress)
        probs = voice.judge(recognizer, model, embeddings, key=my_voice.digest(audio) if remember else None, name=name)
    scored = iter(probs)
    return [Window(s / SAMPLE_RATE, e / SAMPLE_RATE, next(scored) if part else None)
            for (s, e), part in zip(spans, parts)]


def bars_frame(probabilities: dict[str, float]) -> pd.DataFrame:
    """Return one row per emotion (emotion, probability), in the order given, for the bar chart."""
    return pd.DataFrame({"emotion": list(probabilities), "probability": list(probabilities.values())})


def windows_table(analysis: Analysis, labels: list[str]) -> pd.DataFrame:
    """Return one row per window: start, end, top emotion and each emotion's probability ("no speech": none)."""
    rows = []
    for w in analysis.windows:
        top = labels[int(np.argmax(w.probs))] if w.speech else NO_SPEECH
        row = {"start (s)": round(w.start, 2), "end (s)": round(w.end, 2), "top emotion": top}
        probs = w.probs if w.speech else [None] * len(labels)
        row.update({label: None if p is None else round(float(p), 3) for label, p in zip(labels, probs)})
        rows.append(row)
    return pd.DataFrame(rows)


def timeline_frame(windows: list, labels: list[str]) -> pd.DataFrame:
    """Return long-form rows (time at the window's centre, emotion, probability) for the timeline plot.

    A window without speech has no point (the table says "no speech").
    """
    return pd.DataFrame([{"time (s)": round((w.start + w.end) / 2, 2), "emotion": label, "probability": float(p)}
                         for w in windows if w.speech for label, p in zip(labels, w.probs)],
                        columns=["time (s)", "emotion", "probability"])


def summary(analysis: Analysis) -> str:
    """Return the one-line Markdown note above the results."""
    top = analysis.top
    model = f"`{analysis.model}`" + (" (int8)" if analysis.precision == "int8" else "")
    unsure = analysis.unsure_below is not None and analysis.probabilities[top] < analysis.unsure_below
    mode = "adapted to your voice" if analysis.adapted else "judged alone"
    doubt = (f" · **unsure**: on voices it never heard, answers {mode} under {analysis.unsure_below:.0%} were wrong "
             "more often than right") if unsure else ""
    silent = sum(not w.speech for w in analysis.windows)
    left_out = f" · {silent} of {len(analysis.windows)} windows without speech left out" if silent else ""
    return (f"**{top}** ({analysis.probabilities[top]:.0%}, {mode}){doubt} · model {model} · "
            f"{analysis.seconds:.1f} s of audio{left_out} · {analysis.elapsed:.2f} s to analyse")


# ---------------------------------------------------------------------------------------------
# Event handlers: they return the values of the page's output components, in this order.
# ---------------------------------------------------------------------------------------------
RESULT_OUTPUTS = ("note", "label", "bars", "timeline", "table")


def predict(value, model_name: str | None, store: ModelStore, max_seconds: float = DEFAULT_MAX_SECONDS,
            progress=gr.Progress(), voice: Voice | None = None) -> tuple:
    """Return (note, label, bars, timeline, table) for the page, the last two shown only for long audio.

    `progress` is Gradio's progress bar: it counts the windows of a long recording as they are scored.
    `voice` is the page session's calibration (ui/voice.py); None judges the recording alone.
    """
    def windows_done(done: int, total: int) -> None:
        progress((done, total), desc="Scoring", unit="windows")

    analysis = analyse(value, model_name, store, max_seconds, progress=windows_done, voice=voice)
    labels = store.get(model_name).labels
    long = analysis.seconds > LONG_AUDIO_S
    return (
        summary(analysis),
        analysis.probabilities,
        bars_frame(analysis.probabilities),
        gr.update(value=timeline_frame(analysis.windows, labels) if long else None, visible=long),
        gr.update(value=windows_table(analysis, labels) if long else None, visible=long),
    )


def predict_endpoint(store: ModelStore, max_seconds: float = DEFAULT_MAX_SECONDS):
    """Return predict() bound to `store` as a function of its own: its name and docstring are the /predict API docs."""
    def predict_emotions(audio, model, voice=None, progress=gr.Progress()):
        """Score a speech recording: the probability of every emotion the chosen model knows.

        The audio must hold speech: it is refused with a message saying why (the same checks and
        sentences as infer.py) when it cannot be read, is cut short, too long, too short, silent,
        has no speech, or has samples out of range.

        Args:
            audio: the recording (wav, flac, mp3, ogg, webm, m4a; any sample rate)
            model: the checkpoint's name, one of the model list
            voice: the page session's calibration to the user's voice (a state: API calls start without one)
        Returns:
            note: one line of Markdown (top emotion, model, length, time to analyse)
            label: every emotion with its probability, highest first
            bars: the same as a table (emotion, probability)
            timeline: for audio longer than 8 s, each 4 s window's probabilities over time
            table: for audio longer than 8 s, one row per window
            calibration: one line on the calibration to the user's voice
            history: this session's recordings, each with its first answer and its answer now (re-judged
                with the statistics of the others as the page learns the voice)
        """
        voice = voice if voice is not None else Voice()
        results = predict(audio, model, store, max_seconds, progress, voice)
        return (*results, voice, voice_note(store, model, voice), history_frame(store, model, voice))

    return predict_emotions


def cleared() -> tuple:
    """Return empty results (audio removed, or a new model and nothing to score)."""
    return ("", None, None, gr.update(value=None, visible=False), gr.update(value=None, visible=False))


def rescore(value, model_name: str | None, store: ModelStore, max_seconds: float = DEFAULT_MAX_SECONDS,
            voice: Voice | None = None) -> tuple:
    """Return predict()'s outputs after a model switch, or empty results when there is no audio."""
    if value is None or (isinstance(value, str) and not value):
        return cleared()
    return predict(value, model_name, store, max_seconds, voice=voice)


def model_panel(store: ModelStore, name: str | None) -> tuple:
    """Return (model description, confusion image, model card) for checkpoint `name`."""
    if store.checkpoints and name not in store.checkpoints:
        return "No checkpoint could be loaded: choose one in the list to see why.", None, ""
    if not name:
        note = (f"No checkpoints found in the app's checkpoints folder (`{store.root.name}`). Train one with "
                f"`python train.py ... --output_dir {store.root.name}/NAME` and restart the app.")
        return note, None, ""
    return store.describe(name), store.confusion_image(name), store.model_card(name)


def select_model(name: str | None, active: str | None, audio, voice: Voice | None, store: ModelStore,
                 max_seconds: float = DEFAULT_MAX_SECONDS) -> tuple:
    """Switch to checkpoint `name`: return (dropdown, active model, description, confusion, card, *results,
    calibration note, history).

    The results are `audio` scored by the new model (empty when there is no audio). If the model
    fails to load, a warning says why and the previous model stays active: the dropdown goes back
    to it and the panel and results are left as they are.
    """
    unchanged = (gr.skip(),) * (5 + len(RESULT_OUTPUTS))
    if name == active:  # also the echo of a dropdown set back after a failed load
        return (gr.skip(), gr.skip(), *unchanged)
    try:
        load_model(store, name)
    except gr.Error as err:
        gr.Warning(f"{err.message} Still using '{active}'." if active else err.message)
        return (active, active, *unchanged)
    try:
        results = rescore(audio, name, store, max_seconds, voice)
    except gr.Error as err:  # e.g. the audio is silent: say so, but the switch itself succeeded
        gr.Warning(err.message)
        results = cleared()
    return (name, name, *model_panel(store, name), *results, voice_note(store, name, voice),
            history_frame(store, name, voice))


# ---------------------------------------------------------------------------------------------
# Calibration to the user's voice and microphone (ui/voice.py).
# ---------------------------------------------------------------------------------------------
def voice_note(store: ModelStore, model_name: str | None, voice: Voice | None) -> str:
    """Return the calibration panel's line for `model_name`."""
    if not model_name or model_name not in store.checkpoints:
        return ""
    adapting = store.info(model_name).config.get("embedding_norm", "none") != "none"
    return (voice or Voice()).describe(model_name, adapting)


def history_frame(store: ModelStore, model_name: str | None, voice: Voice | None):
    """Return the session history table's update: shown once the session has recordings for `model_name`."""
    rows = []
    if voice is not None and model_name in store.checkpoints and voice.seen.get(model_name):
        rows = voice.history(store.get(model_name), model_name)
    return gr.update(value=pd.DataFrame(rows) if rows else None, visible=bool(rows))


def set_adapting(adapt: bool, model_name: str | None, voice: Voice | None, store: ModelStore) -> tuple:
    """Turn the session's adaptation on or off: return (voice, calibration note, history)."""
    voice = voice if voice is not None else Voice()
    voice.adapt = bool(adapt)
    return voice, voice_note(store, model_name, voice), history_frame(store, model_name, voice)


def reset_voice(model_name: str | None, voice: Voice | None, store: ModelStore) -> tuple:
    """Forget the session's recordings: return (voice, calibration note, history)."""
    voice = Voice(adapt=voice.adapt if voice is not None else True)
    return voice, voice_note(store, model_name, voice), history_frame(store, model_name, voice)
