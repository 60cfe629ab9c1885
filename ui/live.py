"""The live microphone: while the user speaks, the emotions of the last few seconds, every second.

Gradio's streaming gr.Audio sends the microphone's newest second as a small WAV file every
LIVE_EVERY_S. `update` keeps the last LIVE_WINDOW_S of it in the session's `Live` state, scores
that window on the app's model worker (ui/scheduler.py, in turn with every other request) and
returns the page's results: the window's probabilities, and the timeline of the windows so far.
A window without speech (silence, a hum), or shorter than the checks' minimum (the first second),
is not scored: the note says so and the timeline waits. The checks are the app's (audio_checks).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np

from audio import checks as audio_checks
from data_process import SAMPLE_RATE, AudioError, to_model_rate
from serving.recognizer import Window
from ui import callbacks, uploads
from ui.model_store import ModelStore
from ui.voice import Voice

LIVE_EVERY_S = 1.0      # the browser sends a chunk, and the page is updated, this often
LIVE_WINDOW_S = callbacks.TIMELINE_WINDOW_S  # each update scores the last 4 s, as the file timeline does
LIVE_HISTORY_S = 120.0  # the timeline shows the last 2 minutes
LIVE_SESSIONS = 4       # live microphones served at once; each costs a fraction of a core (benchmark/latency.py)


@dataclass
class Live:
    """One session's live microphone: the latest audio and the windows scored so far."""

    model: str | None = None
    rate: int = 0                     # the browser's sample rate
    recent: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # last window, at `rate`
    heard: float = 0.0                # seconds received since recording started
    windows: list = field(default_factory=list)  # recognizer.Window per scored update, in seconds heard
    updates: int = 0                  # chunks received


def read_chunk(value) -> tuple[int, np.ndarray]:
    """Return (rate, mono float32 samples) of one streamed chunk.

    `value` is a WAV file path (what the page sends; the file is deleted once read) or a
    (rate, samples) tuple.
    """
    if isinstance(value, (str, Path)):
        import soundfile as sf

        try:
            samples, rate = sf.read(str(value), dtype="float32", always_2d=True)
        except Exception as err:
            raise callbacks.UserError(f"The microphone sent audio that could not be read ({type(err).__name__}).") from None
        finally:
            uploads.discard(value)
    else:
        rate, samples = value
    try:
        return int(rate), to_model_rate(samples, int(rate), int(rate), name="the microphone's audio")
    except AudioError as err:
        raise callbacks.UserError(f"The microphone's audio could not be used: {err}.") from None


def started() -> tuple:
    """Return a fresh Live state and empty results (a new recording starts)."""
    return (Live(), *callbacks.cleared())


def update(chunk, model_name: str | None, state: Live | None, voice: Voice | None, store: ModelStore) -> tuple:
    """Add one streamed chunk; return (state, note, label, bars, timeline, table) for the page.

    The probabilities are those of the last LIVE_WINDOW_S; the timeline holds one point per
    scored update (its window's centre, in seconds since recording started).
    """
    start = time.perf_counter()
    if state is None or state.model != model_name:  # first chunk, or the model was switched
        state = Live(model=model_name)
    if chunk is None:
        return (state, *(gr.skip(),) * len(callbacks.RESULT_OUTPUTS))
    recognizer = callbacks.load_model(store, model_name)
    rate, samples = read_chunk(chunk)
    if rate != state.rate:
        state.rate, state.recent = rate, np.zeros(0, np.float32)
    state.recent = np.concatenate([state.recent, samples])[-int(LIVE_WINDOW_S * rate):]
    state.heard += len(samples) / rate
    state.updates += 1
    audio = to_model_rate(state.recent, rate)
    seconds = len(audio) / SAMPLE_RATE
    try:
        audio_checks.check(audio)
    except audio_checks.Rejected as err:
        waiting = {"too_short": "listening", "silent": f"listening: no speech in the last {seconds:.0f} s",
                   "no_speech": f"listening: no speech in the last {seconds:.0f} s"}
        note = f"Live · {state.heard:.0f} s heard · {waiting.get(err.reason, err.message)}"
        return (state, note, *(gr.skip(),) * (len(callbacks.RESULT_OUTPUTS) - 1))
    # calibrated to the user like their recordings (ui/voice.py), but a live window is not learnt from
    probs = callbacks.scored_windows(recognizer, audio, voice=voice, model=model_name)[0].probs  # one window
    state.windows.append(Window(state.heard - seconds, state.heard, probs))
    state.windows = [w for w in state.windows if w.end > state.heard - LIVE_HISTORY_S]
    ranked = dict(sorted(zip(recognizer.labels, map(float, probs)), key=lambda item: item[1], reverse=True))
    top = next(iter(ranked))
    note = (f"Live · **{top}** ({ranked[top]:.0%}) over the last {seconds:.1f} s · model `{model_name}` · "
            f"{state.heard:.0f} s heard · {time.perf_counter() - start:.2f} s to score")
    timeline = callbacks.timeline_frame(state.windows, recognizer.labels)
    return (state, note, ranked, callbacks.bars_frame(ranked), gr.update(value=timeline, visible=True),
            gr.update(value=None, visible=False))
