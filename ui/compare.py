"""Compare on my recording: every model's answer to one recording, side by side.

Models whose heads share one frozen encoder in memory (PyTorch, models/shared_encoder.py) are scored together: the
encoder runs once per batch of windows and every head reads its output (SharedHeads). A model served on its own
(the default in onnxruntime, whose graph holds its own copy of the encoder; an int8 graph) is scored as the main
view scores it. Either way each model gives the answer the main view gives for that recording: the same windows,
the same statistics of the user's voice (judged alone or adapted), the same unsure threshold. The recording teaches
each model's calibration to the voice, as analysing it with each model in turn would (ui/voice.py).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import gradio as gr
import numpy as np
import pandas as pd

from adaptation.calibration import unsure_below
from data_process import SAMPLE_RATE
from serving.recognizer import Window
from models.waveform import speech_parts
from ui import callbacks, voice as my_voice
from ui.callbacks import LONG_AUDIO_S, TIMELINE_HOP_S, TIMELINE_WINDOW_S, Analysis, UserError
from ui.model_store import ModelStore
from ui.voice import Voice

COLUMNS = ["model", "top emotion", "probability", "unsure", "judged"]
_SHARED: dict[tuple, SharedHeads] = {}  # one object per group of heads, so the scheduler checks its padding once


class SharedHeads:
    """PyTorch Recognizers whose heads share one frozen encoder, seen by the scheduler as one model: each batch of
    clips goes through the encoder once, and its rows are every head's pooled embedding side by side (split())."""

    def __init__(self, recognizers: list):
        self.recognizers = recognizers
        first = recognizers[0]
        self.backbone, self.extractor, self.device = first.model.backbone, first.extractor, first.device
        self.batch_size = first.batch_size
        self.widths = [r.embedding_dim for r in recognizers]
        self.labels = [f"{i}" for i in range(sum(self.widths))]  # row width, for the scheduler's empty result

    def probabilities(self, clips: list[np.ndarray]) -> np.ndarray:
        """Return (N, sum of the heads' embedding sizes): each head's pooled embedding of each clip, side by side."""
        import torch

        order = np.argsort([len(c) for c in clips], kind="stable")  # as Recognizer._forward batches them
        rows = np.zeros((len(clips), sum(self.widths)), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, len(clips), self.batch_size):
                chosen = order[i:i + self.batch_size]
                batch = self.extractor([clips[j] for j in chosen], sampling_rate=SAMPLE_RATE, padding=True,
                                       return_attention_mask=True, return_tensors="pt")
                layers, mask = self.backbone(batch["input_values"].to(self.device),
                                             batch["attention_mask"].to(self.device))  # (B, L, T, D), (B, T): once
                rows[chosen] = torch.cat([head_embedding(r.model, layers, mask).float()
                                          for r in self.recognizers], dim=-1).cpu().numpy()
        return rows

    def split(self, rows: np.ndarray) -> list[np.ndarray]:
        """Return each head's (N, D) embeddings from rows of probabilities()."""
        return np.split(rows, np.cumsum(self.widths)[:-1], axis=1)


def head_embedding(model, layers, mask):
    """Return what `model.embed` gives (B, F), from the shared backbone's output: EmotionClassifier.encode's steps
    after the backbone (tests/test_compare.py checks that the two agree)."""
    from torch import nn

    from models.classifier import pool_frames

    if model.config.normalize_layers:
        layers = nn.functional.layer_norm(layers, (model.backbone.output_dim,))
    if model.config.frame_pooling > 1:
        layers, mask = pool_frames(layers, mask, model.config.frame_pooling)
    return model.pool_layers(layers, mask)


def shared_key(recognizer) -> tuple | None:
    """Return what a PyTorch model must have in common with others to share their encoder pass, or None."""
    model = getattr(recognizer, "model", None)
    if getattr(recognizer, "runtime_name", None) != "torch" or not getattr(model, "shares_encoder", False):
        return None
    extractor = json.dumps(recognizer.extractor.to_dict(), sort_keys=True, default=str)
    return id(model.backbone), extractor, str(recognizer.device), recognizer.window_seconds


def groups(recognizers: dict[str, object]) -> list[list[str]]:
    """Return the names of `recognizers` in groups scored together (several: one encoder pass), in their order."""
    out, by_key = [], {}
    for name, recognizer in recognizers.items():
        key = shared_key(recognizer)
        if key is None:
            out.append([name])
        elif key in by_key:
            by_key[key].append(name)
        else:
            by_key[key] = [name]
            out.append(by_key[key])
    return out


def shared_heads(recognizers: list) -> SharedHeads:
    key = tuple(id(r) for r in recognizers)
    if key not in _SHARED or _SHARED[key].recognizers != recognizers:
        _SHARED[key] = SharedHeads(recognizers)
    return _SHARED[key]


def compare(value, store: ModelStore, max_seconds: float = callbacks.DEFAULT_MAX_SECONDS, voice: Voice | None = None,
            progress: Callable[[int, int], None] | None = None
            ) -> tuple[list[Analysis], dict[str, str], list[list[str]]]:
    """Return (every model's Analysis of the audio `value`, {model: why it could not be loaded}, the groups scored).

    The audio is refused as the main view refuses it (callbacks.read_audio, check_speech); a model that does not load
    is left out with its reason, the others still answer. Models are in the dropdown's order.
    """
    start = time.perf_counter()
    if not store.checkpoints:
        callbacks.load_model(store, None)  # the main view's refusal: no checkpoints
    audio = callbacks.read_audio(value, max_seconds)
    callbacks.check_speech(audio)
    loaded, failed = {}, {}
    for _, name in store.choices():
        try:
            loaded[name] = callbacks.load_model(store, name)
        except gr.Error as err:
            failed[name] = err.message
    seconds = len(audio) / SAMPLE_RATE
    window = (TIMELINE_WINDOW_S, TIMELINE_HOP_S) if seconds > LONG_AUDIO_S else ()
    key, filename = my_voice.digest(audio), Path(value).name if isinstance(value, (str, Path)) else None
    probs: dict[str, list] = {}
    scored = groups(loaded)
    for group in scored:
        if len(group) == 1:  # served on its own: exactly the main view's path
            name = group[0]
            probs[name] = callbacks.scored_windows(loaded[name], audio, *window, progress=progress, voice=voice,
                                                   model=name, remember=True, name=filename)
        else:
            probs.update(_shared_windows({n: loaded[n] for n in group}, audio, window, progress, voice, key, filename))
    analyses = []
    for name in loaded:
        recognizer, windows = loaded[name], probs[name]
        adapted = voice is not None and my_voice.adapts(recognizer) and voice.knows(name, key)
        mean = np.mean([w.probs for w in windows if w.speech], axis=0)
        ranked = dict(sorted(zip(recognizer.labels, map(float, mean)), key=lambda item: item[1], reverse=True))
        if not all(np.isfinite(p) for p in ranked.values()):
            failed[name] = f"The model '{name}' computed invalid numbers (NaN) for this audio."
            continue
        analyses.append(Analysis(name, ranked, windows, seconds, time.perf_counter() - start,
                                 getattr(recognizer, "precision", "fp32"),
                                 unsure_below(store.info(name).config, adapted), adapted))
    return analyses, failed, scored


def _shared_windows(recognizers: dict, audio: np.ndarray, window: tuple, progress, voice: Voice | None, key: str,
                    filename: str | None) -> dict[str, list[Window]]:
    """Return {model: its windows} for models sharing one encoder pass, judged as callbacks.scored_windows judges."""
    first = next(iter(recognizers.values()))
    spans = first.spans(len(audio), *window)
    parts = speech_parts(audio, spans)
    clips = [audio[part[0]:part[1]] for part in parts if part]
    heads = shared_heads(list(recognizers.values()))
    rows = callbacks.SCHEDULER.probabilities(heads, clips, progress=progress)
    out = {}
    for (name, recognizer), embeddings in zip(recognizers.items(), heads.split(rows)):
        embeddings = np.ascontiguousarray(embeddings)
        if voice is not None and my_voice.adapts(recognizer):
            probs = voice.judge(recognizer, name, embeddings, key=key, name=filename)
        else:
            probs = recognizer.classify(embeddings)  # what recognizer.probabilities gives: the model's own statistics
        scored = iter(probs)
        out[name] = [Window(s / SAMPLE_RATE, e / SAMPLE_RATE, next(scored) if part else None)
                     for (s, e), part in zip(spans, parts)]
    return out


# ---------------------------------------------------------------------------------------------
# What the page shows.
# ---------------------------------------------------------------------------------------------
def is_unsure(analysis: Analysis) -> bool | None:
    """Return whether the top answer is under the model's unsure threshold in its mode (None: none measured)."""
    if analysis.unsure_below is None:
        return None
    return analysis.probabilities[analysis.top] < analysis.unsure_below


def unsure_text(analysis: Analysis, unsure: bool | None) -> str:
    if unsure is None:
        return "not measured"
    if not unsure:
        return "no"
    # a threshold of 1: on voices it never heard, this model was wrong more often than right at any probability
    return "unsure (any answer)" if analysis.unsure_below >= 1 else f"unsure (under {analysis.unsure_below:.0%})"


def table(analyses: list[Analysis], failed: dict[str, str] | None = None) -> pd.DataFrame:
    """Return one row per model: its top emotion, that probability, whether it is unsure, and how it was judged."""
    rows = []
    for a in analyses:
        unsure = is_unsure(a)
        rows.append({"model": a.model + (" (int8)" if a.precision == "int8" else ""), "top emotion": a.top,
                     "probability": round(a.probabilities[a.top], 3),
                     "unsure": unsure_text(a, unsure),
                     "judged": "adapted to your voice" if a.adapted else "alone"})
    for name, why in (failed or {}).items():
        rows.append({"model": name, "top emotion": "—", "probability": None, "unsure": "", "judged": why})
    return pd.DataFrame(rows, columns=COLUMNS)


def bars(analyses: list[Analysis]):
    """Return a matplotlib Figure: each emotion's probability, one bar per model, grouped by emotion."""
    from matplotlib.figure import Figure

    emotions = list(dict.fromkeys(e for a in analyses for e in sorted(a.probabilities)))
    figure = Figure(figsize=(9, 3.4), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / max(len(analyses), 1)
    for i, a in enumerate(analyses):
        x = [k + (i - (len(analyses) - 1) / 2) * width for k, e in enumerate(emotions) if e in a.probabilities]
        axes.bar(x, [a.probabilities[e] for e in emotions if e in a.probabilities], width, label=a.model)
    axes.set_xticks(range(len(emotions)), emotions)
    axes.set_ylim(0, 1)
    axes.set_ylabel("probability")
    axes.legend(fontsize="small", ncols=2, loc="upper right", frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    return figure


RUNTIMES = {"onnx": "onnxruntime", "torch": "PyTorch"}


def note(analyses: list[Analysis], scored: list[list[str]], seconds: float, elapsed: float,
         runtimes: dict[str, str] | None = None) -> str:
    """Return the Markdown line above the comparison: how many models, which shared one encoder pass, the time.
    `runtimes` ({model: runtime_name}) says what ran each model scored on its own."""
    shared = [g for g in scored if len(g) > 1]
    parts = [f"{len(g)} models shared one pass of their encoder" for g in shared]
    for group in scored:
        if len(group) == 1:
            runtime = RUNTIMES.get((runtimes or {}).get(group[0], ""), "")
            parts.append(f"`{group[0]}` ran on its own" + (f" ({runtime})" if runtime else ""))
    agree = len({a.top for a in analyses}) == 1 and len(analyses) > 1
    verdict = f" · all say **{analyses[0].top}**" if agree else ""
    return (f"**{len(analyses)} models** on {seconds:.1f} s of audio{verdict} · {' · '.join(parts)} · "
            f"{elapsed:.2f} s to compare")


COMPARE_OUTPUTS = ("compare note", "compare table", "compare bars", "voice", "calibration note", "history")


def compare_models(value, model_name: str | None, voice: Voice | None, store: ModelStore,
                   max_seconds: float = callbacks.DEFAULT_MAX_SECONDS, progress=gr.Progress()) -> tuple:
    """Return (note, table, bar chart, voice, calibration note, history) for the recording `value` scored with every
    model; bad audio raises the main view's gr.Error."""
    def windows_done(done: int, total: int) -> None:
        progress((done, total), desc="Scoring", unit="windows")

    start = time.perf_counter()
    voice = voice if voice is not None else Voice()
    analyses, failed, scored = compare(value, store, max_seconds, voice, windows_done)
    if not analyses:
        raise UserError("No model could score this recording: " + " ".join(failed.values()))
    elapsed = time.perf_counter() - start
    runtimes = {name: getattr(store.get(name), "runtime_name", "") for group in scored for name in group}
    return (note(analyses, scored, analyses[0].seconds, elapsed, runtimes),
            gr.update(value=table(analyses, failed), visible=True),
            gr.update(value=bars(analyses), visible=True),
            voice, callbacks.voice_note(store, model_name, voice), callbacks.history_frame(store, model_name, voice))


def compare_endpoint(store: ModelStore, max_seconds: float = callbacks.DEFAULT_MAX_SECONDS):
    """Return compare_models() bound to `store` as a function of its own: its name and docstring are the /compare
    API docs."""
    def compare_all_models(audio, model, voice=None, progress=gr.Progress()):
        """Score a speech recording with every model at once: each model's top emotion side by side.

        Models that share one frozen encoder run it once for all of them. The audio is refused with the same
        messages as /predict.

        Args:
            audio: the recording (wav, flac, mp3, ogg, webm, m4a; any sample rate)
            model: the model chosen on the page (its calibration note and history are returned)
            voice: the page session's calibration to the user's voice (a state: API calls start without one)
        Returns:
            note: one line of Markdown (how many models, which shared the encoder, time to compare)
            table: one row per model: model, top emotion, its probability, unsure, judged alone or adapted
            bars: every model's probability of every emotion, grouped by emotion (an image)
            calibration: one line on the calibration to the user's voice, for `model`
            history: this session's recordings for `model`
        """
        return compare_models(audio, model, voice, store, max_seconds, progress)

    return compare_all_models


def cleared() -> tuple:
    """Return the comparison emptied (a new recording, or none)."""
    return "", gr.update(value=None, visible=False), gr.update(value=None, visible=False)
