"""Score audio files with a trained checkpoint: one row per file, the probability of every emotion.

    python infer.py clip.wav folder/                               # default checkpoint, CSV on standard output
    python infer.py --checkpoint checkpoints/whisper-base-std-linear --output out.csv clip.wav folder/
    python infer.py --format jsonl --top_k 3 --output - folder/    # JSON lines, the 3 likeliest emotions
    python infer.py --embeddings emb.npy --output out.csv folder/  # also one pooled embedding per file
    python infer.py --checkpoint owner/model --device cuda --batch_size 32 --output out.jsonl folder/
    python infer.py --engine ray --output out.csv archive/         # Ray Data actors; RAY_ADDRESS=... for a cluster

Each row: `path` (as found from the INPUT given), `label` (top emotion), each emotion's probability
(with --top_k K: the K likeliest as label_1, prob_1, ...), `error` (why a file was not scored: the
same sentence the app shows) and `reason` (one word: too_short, silent, no_speech, truncated,
unreadable, too_long, out_of_range, dc_offset, not_finite, directory, ...). Audio longer than the
model's window is scored in half-overlapping windows whose probabilities are averaged (--segments
also writes each window); a window without speech is not scored nor averaged (its segment row says
no_speech), and a window with speech is scored on its speech. Windows of files of similar length
are batched together.

Rows are written in input order and flushed one file at a time. An interrupted run (Ctrl-C, SIGTERM)
leaves a valid file; the same command again skips the files already in it (--overwrite starts over).
Off a terminal, progress is printed as plain lines on standard error.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import signal
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

import audio_checks
from data_process import AUDIO_EXTENSIONS, SAMPLE_RATE, find_audio_files, load_audio, to_model_rate
from normalization import Speaker
from normalization import shrunk_statistics

ROOT = Path(__file__).resolve().parent
DEFAULT_MAX_SECONDS = 3600.0  # longest file scored by default: an hour is 230 MB of 16 kHz samples
PROGRESS_EVERY_S = 10.0       # off a terminal: one progress line this often


@dataclass
class Window:
    start: float  # seconds
    end: float
    probs: np.ndarray | None  # (C,); None: the window holds no speech and was not scored
    embedding: np.ndarray | None = None  # (D,) the pooled embedding (before any standardisation), when asked for

    @property
    def speech(self) -> bool:
        return self.probs is not None


class Prediction(NamedTuple):
    """One clip's result; unpacks as (probabilities, windows) like earlier versions."""

    probabilities: dict[str, float]  # every emotion of the model, in the model's label order
    windows: list[Window]

    @property
    def label(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)

    def top(self, k: int | None = None) -> list[tuple[str, float]]:
        """Return the `k` likeliest (emotion, probability) pairs, highest first (all when k is None)."""
        return sorted(self.probabilities.items(), key=lambda item: item[1], reverse=True)[:k]

    @property
    def embedding(self) -> np.ndarray | None:
        """The pooled embedding of the whole clip (mean over its windows with speech), if it was computed."""
        vectors = [w.embedding for w in self.windows if w.embedding is not None]
        return np.mean(vectors, axis=0) if vectors else None


def resolve_device(device: str = "auto") -> str:
    """Return the torch device for `device`: auto picks cuda, then mps, then cpu."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible to PyTorch (or this PyTorch is the CPU build)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps: Apple's Metal backend is not available on this machine")
    return device


def _as_audio(source) -> np.ndarray:
    """Return a path, a (rate, samples) pair or 16 kHz samples as 16 kHz mono float32."""
    if isinstance(source, (str, Path)):
        return load_audio(source)
    if isinstance(source, tuple):
        return to_model_rate(source[1], int(source[0]))
    return to_model_rate(source, SAMPLE_RATE)


class Scorer:
    """Windows, batching across clips and the public calls, over a runtime's `probabilities(clips)`.

    A runtime (PyTorch here; others, e.g. ONNX, the same way) gives `labels`, `window_seconds`,
    `batch_size` and `probabilities(clips)`; `probabilities_and_embeddings(clips)` if it has embeddings.
    """

    labels: list[str]
    window_seconds: float = 10.0
    batch_size: int = 8

    def probabilities(self, clips: list[np.ndarray]) -> np.ndarray:
        """Return softmax probabilities (N, C) for N clips of 16 kHz audio."""
        raise NotImplementedError

    def probabilities_and_embeddings(self, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} does not give embeddings")

    def spans(self, n_samples: int, window_seconds: float | None = None,
              hop_seconds: float | None = None) -> list[tuple[int, int]]:
        """Return (start, end) samples of the half-overlapping windows of a clip (one window if it fits)."""
        size = int((window_seconds or self.window_seconds) * SAMPLE_RATE)
        hop = int((hop_seconds or (window_seconds or self.window_seconds) / 2) * SAMPLE_RATE)
        if n_samples <= size:
            return [(0, n_samples)]
        # the last window ends with the audio, so no tail is scored on a sliver
        return [(s, s + size) for s in [*range(0, n_samples - size, hop), n_samples - size]]

    def windows(self, audio: np.ndarray, window_seconds: float | None = None,
                hop_seconds: float | None = None) -> list[Window]:
        """Return the probabilities of each half-overlapping window of `audio` (one window if it fits)."""
        return self.score([audio], window_seconds=window_seconds, hop_seconds=hop_seconds)[0].windows

    def score(self, audios: Sequence[np.ndarray], embeddings: bool = False, window_seconds: float | None = None,
              hop_seconds: float | None = None, speaker: Speaker | None = None) -> list[Prediction]:
        """Return one Prediction per 16 kHz clip; the windows of all clips are batched together by length. With a
        `speaker`, every clip is judged adapted to that speaker (standardised with their statistics).

        Of audio longer than one window, a window without speech is not scored (its `probs` are None) nor
        averaged, and a window with speech is scored on its speech (models.waveform.speech_parts).
        """
        from models.waveform import speech_parts

        spans = [self.spans(len(a), window_seconds, hop_seconds) for a in audios]
        parts = [speech_parts(a, clip_spans) for a, clip_spans in zip(audios, spans)]
        clips = [a[part[0]:part[1]] for a, clip_parts in zip(audios, parts) for part in clip_parts if part]
        if speaker is not None:
            _, vectors = self.probabilities_and_embeddings(clips)
            probs = self.classify(vectors, *speaker.statistics(*self.model_statistics()))
        elif embeddings:
            probs, vectors = self.probabilities_and_embeddings(clips)
        else:
            probs, vectors = self.probabilities(clips), [None] * len(clips)
        out, i = [], 0
        for clip_spans, clip_parts in zip(spans, parts):
            windows = []
            for (s, e), part in zip(clip_spans, clip_parts):
                windows.append(Window(s / SAMPLE_RATE, e / SAMPLE_RATE, probs[i] if part else None,
                                      vectors[i] if part else None))
                i += bool(part)
            mean = np.mean([w.probs for w in windows if w.speech], axis=0)
            out.append(Prediction({label: float(p) for label, p in zip(self.labels, mean)}, windows))
        return out

    def predict(self, source, speaker: Speaker | None = None) -> Prediction:
        """Return the Prediction for a file path, a (rate, samples) pair or 16 kHz samples.

        Unpacks as `probabilities, windows`; `.label` is the top emotion, `.top(k)` the k likeliest.
        Long audio is scored in half-overlapping windows whose probabilities are averaged (those with speech).
        With a `speaker` (see `adapt`), the clip is judged adapted to that speaker, with that mode's calibration.
        """
        return self.score([_as_audio(source)], speaker=speaker)[0]

    def predict_batch(self, sources: Sequence, embeddings: bool = False,
                      speaker: Speaker | None = None) -> list[Prediction]:
        """Return predict() of each source, their windows batched together (`batch_size` at a time)."""
        return self.score([_as_audio(s) for s in sources], embeddings=embeddings, speaker=speaker)

    def adapt(self, sources: Sequence, speaker: Speaker | None = None) -> Speaker:
        """Return `speaker` (a new one when None) having heard `sources`, one speaker's recordings: the statistics
        `predict(..., speaker=)` then judges with. Several recordings of varied emotions adapt best; with few, the
        statistics stay close to the model's (8 pseudo-recordings, as the app). Keep it between calls, or
        `speaker.to_dict()` / `Speaker.from_dict()` it: for leave-one-corpus-out speakers this gained about
        6-9 points of UA over judging each clip alone (docs/adaptation.md).
        Only models that standardise their embeddings adapt (`normalizes`)."""
        if not getattr(self, "normalizes", False):
            raise ValueError("this model judges every clip alone: it was trained without --embedding_norm")
        speaker = speaker or Speaker()
        for prediction in self.score([_as_audio(s) for s in sources], embeddings=True):
            speaker.add(prediction.embedding)
        return speaker

    def unsure_below(self, adapted: bool = False) -> float | None:
        """Return the top probability under which an answer in that mode is unsure (held-out data), or None."""
        from calibration import unsure_below

        config = getattr(getattr(self, "model", None), "config", None)
        return unsure_below(config.to_dict(), adapted) if config is not None else None

    def embed(self, source) -> np.ndarray:
        """Return the pooled embedding (D,) the classifier reads for this clip (mean over windows of long audio)."""
        return self.score([_as_audio(source)], embeddings=True)[0].embedding


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class Recognizer(Scorer):
    """A checkpoint (a folder or a Hugging Face Hub id) loaded with PyTorch: 16 kHz audio in, probabilities out."""

    runtime_name = "torch"

    def __init__(self, checkpoint: str | Path, batch_size: int = 8, device: str = "cpu",
                 trust_remote_code: bool = False, revision: str | None = None):
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        import models  # noqa: F401  (registers the architecture with the Auto classes)

        source = str(checkpoint)
        folder = Path(checkpoint)
        if folder.exists():
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"{folder} is not a checkpoint folder (no config.json)")
        elif not HUB_ID.match(source) or ".." in source:
            raise FileNotFoundError(f"{source}: no such checkpoint folder (nor a Hub id like owner/name)")
        options = {"trust_remote_code": trust_remote_code, "revision": revision}
        try:
            # float32 compute even when the weights are stored in float16; safetensors only, nothing unpickled
            self.model = AutoModelForAudioClassification.from_pretrained(source, dtype=torch.float32,
                                                                         use_safetensors=True, **options)
            self.extractor = AutoFeatureExtractor.from_pretrained(source, **options)
        except OSError as err:
            if folder.exists():
                raise
            raise FileNotFoundError(f"{source}: not a local folder, and not loadable from the Hugging Face Hub "
                                    f"({str(err).splitlines()[0]})") from None
        self.device = resolve_device(device)
        self.model.to(self.device).eval()
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.window_seconds = float(getattr(self.model.config, "max_seconds", 10.0))
        self.batch_size = batch_size
        self.folder = folder

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, device: str = "auto", batch_size: int = 8,
                        **options) -> Recognizer:
        """Load a checkpoint folder or Hub id on `device` (auto: cuda, then mps, then cpu)."""
        return cls(path_or_id, batch_size=batch_size, device=device, **options)

    @property
    def embedding_dim(self) -> int:
        """Length of the pooled embedding (what `embed` returns)."""
        return int(self.model.pool.output_dim)

    @property
    def normalizes(self) -> bool:
        """Whether the model standardises embeddings with group statistics (trained with --embedding_norm)."""
        return bool(getattr(self.model, "normalizes", False))

    def model_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the statistics the model uses for a clip heard alone (its training groups' average)."""
        return (self.model.embedding_mean.float().cpu().numpy(), self.model.embedding_std.float().cpu().numpy())

    def probabilities(self, clips: list[np.ndarray]) -> np.ndarray:
        """Return softmax probabilities (N, C) for N clips, batched by similar length."""
        return self._forward(clips, embeddings=False)[0]

    def probabilities_and_embeddings(self, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Return probabilities (N, C) and the pooled embeddings (N, D) of N clips."""
        return self._forward(clips, embeddings=True)

    def classify(self, embeddings: np.ndarray, mean: np.ndarray | None = None,
                 std: np.ndarray | None = None) -> np.ndarray:
        """Return probabilities (N, C) of pooled embeddings (N, D), standardised with (mean, std) when given."""
        import torch

        as_tensor = lambda a: None if a is None else torch.as_tensor(a, dtype=torch.float32, device=self.device)  # noqa
        with torch.inference_mode():
            logits = self.model.classify(as_tensor(embeddings), as_tensor(mean), as_tensor(std))
            return torch.softmax(logits.float(), dim=-1).cpu().numpy()

    def _forward(self, clips: list[np.ndarray], embeddings: bool) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        order = np.argsort([len(c) for c in clips], kind="stable")
        probs = np.zeros((len(clips), len(self.labels)), dtype=np.float32)
        vectors = np.zeros((len(clips), self.embedding_dim), dtype=np.float32) if embeddings else None
        with torch.inference_mode():
            for i in range(0, len(clips), self.batch_size):
                chosen = order[i:i + self.batch_size]
                batch = self.extractor([clips[j] for j in chosen], sampling_rate=SAMPLE_RATE, padding=True,
                                       return_attention_mask=True, return_tensors="pt")
                pooled = self.model.embed(batch["input_values"].to(self.device),
                                          batch["attention_mask"].to(self.device))
                probs[chosen] = torch.softmax(self.model.classify(pooled).float(), dim=-1).cpu().numpy()
                if embeddings:
                    vectors[chosen] = pooled.float().cpu().numpy()
        return probs, vectors


class OnnxScorer(Scorer):
    """The classifier exported by export.py, in onnxruntime (onnx_recognizer.py), behind the same calls.

    Like `Recognizer` it gives embeddings (`probabilities_and_embeddings`) and, for a model that standardises them
    (`normalizes`), `model_statistics()` and `classify(embeddings, mean, std)`: infer.py --normalize and the app's
    calibration to the user's voice run in onnxruntime too (the head in numpy, from the checkpoint's weights).
    """

    runtime_name = "onnx"

    def __init__(self, checkpoint: str | Path, batch_size: int = 8, threads: int | None = None):
        from onnx_recognizer import OnnxRecognizer  # onnxruntime is imported only when asked for

        self.runtime = OnnxRecognizer(checkpoint, batch_size=batch_size, threads=threads)
        self.labels, self.window_seconds, self.batch_size = self.runtime.labels, self.runtime.window_seconds, batch_size

    @property
    def parallel_calls(self) -> int:
        """How many calls may run at once without slowing each other (one per core with one thread a call)."""
        return self.runtime.parallel_calls

    def probabilities(self, clips: list[np.ndarray]) -> np.ndarray:
        return self.runtime.probabilities(clips)

    def probabilities_and_embeddings(self, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if not self.runtime.has_embeddings:
            return super().probabilities_and_embeddings(clips)  # NotImplementedError: an export without them
        return self.runtime.probabilities_and_embeddings(clips)

    @property
    def embedding_dim(self) -> int:  # AttributeError (hasattr False) for a graph without embeddings
        return self.runtime.embedding_dim

    @property
    def normalizes(self) -> bool:
        return self.runtime.normalizes

    def model_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        return self.runtime.model_statistics()

    def classify(self, embeddings: np.ndarray, mean: np.ndarray | None = None,
                 std: np.ndarray | None = None) -> np.ndarray:
        """Return probabilities (N, C) of pooled embeddings (N, D), as Recognizer.classify does (numpy)."""
        return self.runtime.classify(embeddings, mean, std)

    def unsure_below(self, adapted: bool = False) -> float | None:
        """Return the top probability under which an answer in that mode is unsure (the checkpoint's config), or None."""
        from calibration import unsure_below

        head = self.runtime.head
        return unsure_below(head.config, adapted) if head is not None else None


def auto_runtime(checkpoint: str | Path, device: str = "auto", batch_size: int = 8) -> Scorer:
    """Return onnxruntime float32 (OnnxScorer) for a checkpoint folder that exports (cached in $SER_CACHE/onnx) when
    the model runs on the CPU, with its embeddings and head where it standardises them; else PyTorch (Recognizer)."""
    folder = Path(checkpoint)
    on_cpu = device == "cpu" or (device == "auto" and resolve_device("auto") == "cpu")
    if on_cpu and folder.is_dir() and (folder / "config.json").is_file():
        from export import NOT_EXPORTABLE

        config = json.loads((folder / "config.json").read_text())
        if config.get("backbone") not in NOT_EXPORTABLE:
            try:
                scorer = OnnxScorer(folder, batch_size)
                if scorer.normalizes or config.get("embedding_norm", "none") in ("none", None):
                    return scorer
                why = "its graph gives no embeddings to standardise"
            except Exception as err:  # an export that fails or differs from PyTorch: serve PyTorch instead
                why = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            print(f"infer: {folder.name} runs in PyTorch: no ONNX export ({why})", file=sys.stderr)
    return Recognizer.from_pretrained(checkpoint, device=device, batch_size=batch_size)


# A runtime is a key here: the name given to --runtime -> a function (checkpoint, device, batch_size) -> Scorer.
RUNTIMES = {
    "torch": lambda checkpoint, device, batch_size: Recognizer.from_pretrained(checkpoint, device=device,
                                                                               batch_size=batch_size),
    "onnx": lambda checkpoint, device, batch_size: OnnxScorer(checkpoint, batch_size),  # CPU (onnxruntime)
    "auto": auto_runtime,  # onnx where the checkpoint exports and runs on the CPU, else torch
}


def load_scorer(checkpoint: str, runtime: str = "torch", precision: str = "auto", device: str = "auto",
                batch_size: int = 8, embeddings: bool = False) -> Scorer:
    """Return the Scorer for `checkpoint`: its int8 graph (onnxruntime) where quantize.choose says so, else
    `runtime` in float32. `scorer.precision` says which ("int8" or "fp32").

    auto keeps float32 where int8 cannot serve: embeddings asked for (--embeddings, --normalize), or a GPU.
    """
    import quantize

    chosen, recipe = quantize.choose(checkpoint, precision)
    if chosen == "int8" and precision == "auto" and (embeddings or device not in ("auto", "cpu")
                                                     or (device == "auto" and _cuda_available())):
        chosen = "fp32"
    if chosen == "int8":
        scorer = OnnxScorer(quantize.cached_int8(checkpoint, recipe), batch_size)
    else:
        scorer = RUNTIMES[runtime](checkpoint, device, batch_size)
    scorer.precision = chosen
    return scorer


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def default_checkpoint() -> str | None:
    """Return the committed default checkpoint (checkpoints/default.txt), or None."""
    pointer = ROOT / "checkpoints" / "default.txt"
    if pointer.is_file():
        folder = ROOT / "checkpoints" / pointer.read_text().strip()
        if (folder / "config.json").is_file():
            return str(folder)
    return None


# ---------------------------------------------------------------------------------------------
# Output: one record per file, as CSV rows or JSON lines.
# ---------------------------------------------------------------------------------------------
@dataclass
class Record:
    path: str
    prediction: Prediction | None = None
    error: str = ""
    reason: str = ""


class CsvOutput:
    """CSV: a header, then per file a row (and with --segments one row per window of long audio)."""

    def __init__(self, labels: list[str], top_k: int | None, segments: bool):
        self.labels, self.top_k, self.segments = labels, top_k, segments
        scores = ([f"{kind}_{i}" for i in range(1, top_k + 1) for kind in ("label", "prob")] if top_k
                  else list(labels))
        self.columns = (["path", "label", *scores, "error", "reason"]
                        + (["segment", "start_s", "end_s"] if segments else []))

    def header(self) -> str:
        return self._lines([self.columns])

    @staticmethod
    def _lines(rows: list[list]) -> str:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        return text.getvalue()

    def _scores(self, probs: np.ndarray | None) -> list:
        if probs is None:
            return [""] * (2 * self.top_k if self.top_k else len(self.labels))
        if not self.top_k:
            return [f"{p:.6f}" for p in probs]
        best = np.argsort(-probs, kind="stable")[:self.top_k]
        return [v for i in best for v in (self.labels[i], f"{probs[i]:.6f}")] + ["", ""] * (self.top_k - len(best))

    def encode(self, record: Record) -> str:
        pred = record.prediction
        probs = np.array(list(pred.probabilities.values())) if pred else None
        label = self.labels[int(np.argmax(probs))] if pred else ""
        rows = [[record.path, label, *self._scores(probs), record.error, record.reason]]
        if self.segments:
            end = f"{pred.windows[-1].end:.2f}" if pred else ""
            rows[0] += ["all", "0.00" if pred else "", end]
            for i, w in enumerate(pred.windows if pred and len(pred.windows) > 1 else []):
                label = self.labels[int(np.argmax(w.probs))] if w.speech else ""
                rows.append([record.path, label, *self._scores(w.probs), "", "" if w.speech else "no_speech",
                             i, f"{w.start:.2f}", f"{w.end:.2f}"])
        return self._lines(rows)

    def done(self, text: str) -> list[str]:
        """Return the paths of the file rows in an earlier output `text`; raise ValueError if its columns differ."""
        rows = list(csv.reader(io.StringIO(text)))
        if not rows:
            return []
        if rows[0] != self.columns:
            raise ValueError(f"its columns ({', '.join(rows[0][:6])}, ...) are not those of this run")
        where = self.columns.index("segment") if self.segments else None
        return [r[0] for r in rows[1:] if r and (where is None or r[where] in ("all", ""))]


class JsonlOutput:
    """JSON lines: one object per file; with --segments its windows inside it."""

    def __init__(self, labels: list[str], top_k: int | None, segments: bool):
        self.labels, self.top_k, self.segments = labels, top_k, segments

    def header(self) -> str:
        return ""

    def _probs(self, probs: np.ndarray) -> dict[str, float]:
        ranked = np.argsort(-probs, kind="stable")[:self.top_k or len(self.labels)]
        return {self.labels[i]: round(float(probs[i]), 6) for i in ranked}

    def encode(self, record: Record) -> str:
        pred = record.prediction
        item = {"path": record.path, "label": pred.label if pred else None,
                "probabilities": self._probs(np.array(list(pred.probabilities.values()))) if pred else None,
                "error": record.error or None, "reason": record.reason or None}
        if self.segments and pred:
            item["windows"] = [{"start_s": round(w.start, 2), "end_s": round(w.end, 2),
                                "label": self.labels[int(np.argmax(w.probs))] if w.speech else None,
                                "probabilities": self._probs(w.probs) if w.speech else None,
                                "reason": None if w.speech else "no_speech"}
                               for w in pred.windows]
        return json.dumps(item, ensure_ascii=False) + "\n"

    def done(self, text: str) -> list[str]:
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
        unknown = {k for item in items for k in (item.get("probabilities") or {})} - set(self.labels)
        if unknown:
            raise ValueError(f"it holds emotions this checkpoint does not know ({', '.join(sorted(unknown))})")
        return [item["path"] for item in items]


FORMATS = {"csv": CsvOutput, "jsonl": JsonlOutput}


def _complete_lines(path: Path) -> str:
    """Return the text of `path` up to its last newline, cutting a line a killed run left half-written."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(end)
    return data[:end].decode("utf-8")


# ---------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------
class Progress:
    """A bar on a terminal; elsewhere (a log, a pipe) a plain line every PROGRESS_EVERY_S seconds and at the end."""

    def __init__(self, total: int, done: int, stream=None, label: str = "scoring"):
        self.stream, self.label = stream or sys.stderr, label
        self.total, self.count, self.start, self.last = total, done, time.monotonic(), time.monotonic()
        self.first = done
        self.bar = None
        if self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, unit="file", desc=label, file=self.stream)

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
        elif time.monotonic() - self.last >= PROGRESS_EVERY_S:
            self.line()

    def line(self) -> None:
        self.last = time.monotonic()
        rate = (self.count - self.first) / max(self.last - self.start, 1e-9)
        left = f", about {(self.total - self.count) / rate:.0f} s left" if rate > 0 and self.count < self.total else ""
        print(f"infer: {self.label} {self.count}/{self.total} files ({self.count / max(self.total, 1):.0%}), "
              f"{rate:.2f} files/s{left}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            self.line()


def expand_inputs(inputs: Sequence[str | Path]) -> list[str]:
    """Return the files to score, folders searched recursively, in a stable order.

    A folder that holds no audio stays in the list, to get an error row, and so does a folder
    inside one whose name looks like an audio file (`x.wav/`): nothing given vanishes unreported.
    """
    found: list[str] = []
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            found.append(str(item))
            continue
        inside = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS
                        and (p.is_file() or (p.is_dir() and not find_audio_files([p]))))
        found.extend(map(str, inside) if inside else [str(item)])
    return list(dict.fromkeys(found))  # each file once, first place kept


def _decode(path: str, max_seconds: float | None, allow_nonspeech: bool):
    """Return the checked 16 kHz audio of `path`, or the Rejected that says why it cannot be scored."""
    try:
        return audio_checks.load(path, max_seconds=max_seconds, allow_nonspeech=allow_nonspeech)
    except Exception as err:  # Rejected: a refusal with its reason; anything else still costs one row only
        return err


def _score(scorer: Scorer, audios: list[np.ndarray], embeddings: bool) -> list[Prediction | Exception]:
    """Score `audios` together; if the model fails on the batch, one at a time, so one bad clip costs one row."""
    try:
        return scorer.score(audios, embeddings=embeddings)
    except Exception as err:
        if len(audios) == 1:
            return [err]
    out = []
    for audio in audios:
        try:
            out.append(scorer.score([audio], embeddings=embeddings)[0])
        except Exception as err:
            out.append(err)
    return out


def score_decoded(scorer: Scorer, decoded: Sequence[tuple[str, object]], embeddings: bool = False) -> list[Record]:
    """Return the output Record of each (path, _decode's result) pair, the decoded ones scored together.

    The one scoring path of both engines: the local loop and each Ray actor (ray_engine.py) call it.
    """
    good = [i for i, (_, result) in enumerate(decoded) if isinstance(result, np.ndarray)]  # decoded audio
    results = dict(zip(good, _score(scorer, [decoded[i][1] for i in good], embeddings))) if good else {}
    return [_record(path, results.get(i, result)) for i, (path, result) in enumerate(decoded)]


def _record(path: str, result) -> Record:
    if isinstance(result, audio_checks.Rejected):
        return Record(path, error=result.message, reason=result.reason)
    if isinstance(result, Exception):
        return Record(path, error=f"This file could not be scored ({type(result).__name__}: {result}).",
                      reason="error")
    if not all(np.isfinite(p) for p in result.probabilities.values()):
        return Record(path, error="The model computed invalid numbers (NaN) for this audio.", reason="model_error")
    return Record(path, prediction=result)


class Embeddings:
    """The --embeddings file: rows in output order, kept in memory and saved (atomically) when the run stops."""

    def __init__(self, path: str | None, dim: int, rows_before: int, resume: bool):
        self.path, self.dim = (Path(path) if path else None), dim
        self.rows = [np.zeros((0, dim), np.float32)]
        if self.path and resume and rows_before:
            previous = np.load(self.path) if self.path.is_file() else None
            if previous is None or previous.shape != (rows_before, dim):
                shape = "no file" if previous is None else f"shape {previous.shape}"
                raise SystemExit(f"cannot resume: {self.path} ({shape}) does not hold one {dim}-value row for each of "
                                 f"the {rows_before} files already in the output; use --overwrite to start over")
            self.rows = [previous.astype(np.float32)]

    def add(self, record: Record) -> None:
        if self.path:
            vector = record.prediction.embedding if record.prediction else None
            self.rows.append(np.full((1, self.dim), np.nan, np.float32) if vector is None else vector[None])

    def save(self) -> None:
        if self.path:
            temporary = self.path.with_name(self.path.name + ".partial.npy")
            np.save(temporary, np.concatenate(self.rows))
            os.replace(temporary, self.path)


# --normalize: how files are grouped to standardise their embeddings together (a model trained with --embedding_norm)
GROUPINGS = {
    "folder": lambda path, pattern: str(Path(path).parent),
    "speaker": lambda path, pattern: (m.group(1) if m.groups() else m.group(0)) if (m := re.search(pattern, Path(path).name))
    else "?",
}


def group_statistics_pass(scorer: Scorer, files: list[str], normalize: str, pattern: str | None,
                          max_seconds: float | None, allow_nonspeech: bool) -> dict:
    """Return {path: Prediction or refusal}, every file's windows standardised with its group's statistics.

    A first pass embeds every file; each group (a folder, or a speaker named by --speaker_pattern) then gets the
    statistics of its windows, drawn towards the model's own while the group is small (normalization.py).
    """
    results: dict = {}
    progress = Progress(len(files), 0, label=f"embedding (--normalize {normalize})")
    for start in range(0, len(files), max(scorer.batch_size * 4, 16)):
        part = [(path, _decode(path, max_seconds, allow_nonspeech)) for path in files[start:start + scorer.batch_size * 4]]
        good = [i for i, (_, audio) in enumerate(part) if not isinstance(audio, Exception)]
        scored = dict(zip(good, _score(scorer, [part[i][1] for i in good], True))) if good else {}
        results.update((path, scored.get(i, audio)) for i, (path, audio) in enumerate(part))
        progress.update(len(part))
    progress.close()
    group = {path: GROUPINGS[normalize](path, pattern) for path in files}
    vectors: dict[str, list] = {}
    for path, result in results.items():
        if isinstance(result, Prediction):
            vectors.setdefault(group[path], []).extend(w.embedding for w in result.windows if w.speech)
    mean, std = scorer.model_statistics()
    statistics = {g: shrunk_statistics(np.stack(v), mean, std) for g, v in vectors.items()}
    for path, result in results.items():
        if isinstance(result, Prediction):
            probs = scorer.classify(np.stack([w.embedding for w in result.windows if w.speech]),
                                    *statistics[group[path]])
            judged = iter(probs)
            windows = [dataclasses.replace(w, probs=next(judged)) if w.speech else w for w in result.windows]
            results[path] = Prediction(dict(zip(scorer.labels, map(float, probs.mean(0)))), windows)
    return results


def _local_records(scorer: Scorer, todo: list[str], ready: dict, batch_size: int, max_seconds: float | None,
                   allow_nonspeech: bool, embeddings: bool):
    """The local engine: yield each file's Record in input order, files decoded ahead in threads."""
    chunk = max(batch_size * 4, 16)  # files decoded ahead and scored together
    workers = max(1, min(4, os.cpu_count() or 1))
    pool = ThreadPoolExecutor(workers)
    try:
        pending = deque()
        queue = iter(todo)
        while True:
            while len(pending) < 2 * chunk and (path := next(queue, None)) is not None:
                pending.append((path, pool.submit(ready.get, path) if ready else
                                pool.submit(_decode, path, max_seconds, allow_nonspeech)))
            if not pending:
                break
            batch = [pending.popleft() for _ in range(min(chunk, len(pending)))]
            yield from score_decoded(scorer, [(path, future.result()) for path, future in batch], embeddings)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def run(checkpoint: str | None, output: str, inputs: list[str], segments: bool = False, fmt: str | None = None,
        device: str = "auto", batch_size: int = 8, top_k: int | None = None, embeddings: str | None = None,
        max_seconds: float | None = DEFAULT_MAX_SECONDS, allow_nonspeech: bool = False, overwrite: bool = False,
        runtime: str = "torch", scorer: Scorer | None = None, normalize: str = "none",
        speaker_pattern: str | None = None, engine: str = "local", precision: str = "auto",
        ray_options: dict | None = None) -> int:
    """Score every audio file under `inputs` into `output` ("-": standard output); return how many failed.

    engine "ray": scored by Ray Data actors (ray_engine.py; `ray_options`: its actors, cpus_per_actor,
    gpus_per_actor, address), the same rows in the same order; `scorer` then only gives the labels.
    """
    checkpoint = checkpoint or default_checkpoint()
    if scorer is None:
        if checkpoint is None:
            raise SystemExit("no --checkpoint given and no default in checkpoints/default.txt")
        scorer = RUNTIMES[runtime](checkpoint, device, batch_size)
    fmt = fmt or ("jsonl" if output.lower().endswith((".jsonl", ".json", ".ndjson")) else "csv")
    writer = FORMATS[fmt](scorer.labels, top_k, segments)
    files = expand_inputs(inputs)
    if not files:
        raise SystemExit("no INPUT given")
    to_stdout = output == "-"
    target = Path(output)
    done: list[str] = []
    if not to_stdout and target.is_file() and target.stat().st_size and not overwrite:
        try:
            done = writer.done(_complete_lines(target))
        except ValueError as err:
            raise SystemExit(f"cannot resume into {output}: {err}. Use --overwrite to replace it, or another --output")
    if embeddings and not hasattr(scorer, "embedding_dim"):
        raise SystemExit(f"--embeddings: the {runtime} runtime gives no embeddings")
    store = Embeddings(embeddings, scorer.embedding_dim if embeddings else 0, len(done), resume=bool(done))
    skip = set(done)
    todo = [f for f in files if f not in skip]
    if done:
        print(f"infer: resuming {output}: {len(files) - len(todo)} of {len(files)} files are in it already",
              file=sys.stderr)
    ready = {}  # --normalize: every file was scored in a first pass, with its group's statistics
    if normalize != "none":
        if engine == "ray":
            raise SystemExit(f"--normalize {normalize} needs every file's embedding before any row: "
                             "not with --engine ray")
        if not getattr(scorer, "normalizes", False):
            raise SystemExit(f"--normalize {normalize}: this checkpoint standardises nothing (it was not trained with "
                             "--embedding_norm, or an .onnx file's checkpoint folder is not at hand: give the folder); "
                             "it scores each file alone")
        if normalize == "speaker" and not speaker_pattern:
            raise SystemExit("--normalize speaker needs --speaker_pattern, a regular expression whose first group is "
                             "the speaker in a file name (e.g. '^(\\d\\d)' for EmoDB's 03a01Fa.wav)")
        ready = group_statistics_pass(scorer, files, normalize, speaker_pattern, max_seconds, allow_nonspeech)
    handle = sys.stdout if to_stdout else open(target, "a" if done else "w", newline="", encoding="utf-8")
    if not done:
        handle.write(writer.header())
        handle.flush()
    progress = Progress(len(files), len(files) - len(todo))
    failed = 0
    if engine == "ray":  # the same records, scored by Ray Data actors (ray_engine.py), in input order
        import ray_engine

        records = ray_engine.records(checkpoint, todo, runtime=runtime, precision=precision, device=device,
                                     batch_size=batch_size, embeddings=bool(embeddings), max_seconds=max_seconds,
                                     allow_nonspeech=allow_nonspeech, **(ray_options or {}))
    else:
        records = _local_records(scorer, todo, ready, batch_size, max_seconds, allow_nonspeech, bool(embeddings))
    try:
        for record in records:
            failed += bool(record.error)
            with SIGNALS.held():  # a file's rows and its embedding, or neither
                handle.write(writer.encode(record))  # one write per file: a killed run leaves whole rows
                handle.flush()
                store.add(record)
            progress.update()
    finally:
        records.close()
        store.save()
        if not to_stdout:
            handle.close()
        progress.close()
    where = "standard output" if to_stdout else output
    print(f"infer: wrote {len(todo) - failed} scored and {failed} failed file(s) to {where}", file=sys.stderr)
    return failed


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread so that the output is closed and the embeddings saved."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Signals:
    """Once installed, SIGINT and SIGTERM raise Interrupted, but never inside `held()`: there they wait for its end."""

    def __init__(self):
        self.holding, self.pending = False, None

    def install(self) -> dict:
        """Install the handlers; return the previous ones (for `restore`)."""
        return {signum: signal.signal(signum, self._handle) for signum in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def restore(previous: dict) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self.holding:
            self.pending = signum
        else:
            raise Interrupted(signum)

    @contextmanager
    def held(self):
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
            if self.pending is not None:
                signum, self.pending = self.pending, None
                raise Interrupted(signum)


SIGNALS = Signals()


def main(argv: list[str] | None = None) -> None:
    summary, details = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(description=summary, epilog=details,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio file or folder (searched recursively)")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint folder written by train.py, or a Hugging Face Hub id (owner/name); "
                             "default: the one named in checkpoints/default.txt")
    parser.add_argument("--output", default="-", help="file to write, or - for standard output (default)")
    parser.add_argument("--format", choices=sorted(FORMATS), default=None,
                        help="csv or jsonl (JSON lines); default: jsonl for a .jsonl/.json output, else csv")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1 or mps")
    parser.add_argument("--batch_size", type=int, default=8,
                        help="windows scored at once, across files, grouped by similar length (default 8)")
    parser.add_argument("--top_k", type=int, default=None, help="write only the K likeliest emotions of each file")
    parser.add_argument("--embeddings", default=None, metavar="OUT.npy",
                        help="also save one pooled embedding per file (the vector the classifier reads), rows in "
                             "output order; NaN rows for files that were not scored")
    parser.add_argument("--segments", action="store_true", help="also write each window of long audio")
    parser.add_argument("--max_seconds", type=float, default=DEFAULT_MAX_SECONDS,
                        help=f"longer files get an error row, found before decoding all of them "
                             f"(default {DEFAULT_MAX_SECONDS:g}; 0: no limit)")
    parser.add_argument("--allow_nonspeech", action="store_true",
                        help="score audio the checks refuse as too short (down to "
                             f"{audio_checks.MIN_SCORABLE_SECONDS} s), silent or without speech")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over; without it, a rerun skips the files already in --output")
    parser.add_argument("--runtime", choices=sorted(RUNTIMES), default="torch",
                        help="what runs the model: torch (PyTorch), onnx (onnxruntime on the CPU; a checkpoint folder "
                             "is exported once into $SER_CACHE/onnx), auto (onnx where the checkpoint exports and runs "
                             "on the CPU, else torch); --normalize and --embeddings work with each")
    parser.add_argument("--precision", choices=["auto", "fp32", "int8"], default="auto",
                        help="auto: the int8 graph (onnxruntime, quantize.py) where the checkpoint's int8.json shows "
                             "it meets the drift bound (>= 99%% top-1 agreement with float32, <= 0.5 point of UA "
                             "lost on real clips), else float32 in --runtime; fp32: always float32; int8: int8 even "
                             "where it was not measured")
    parser.add_argument("--normalize", choices=["none", *GROUPINGS], default="none",
                        help="with a checkpoint trained with --embedding_norm (the default model): standardise each "
                             "file's embedding with the statistics of its group rather than judging it alone. folder: "
                             "the files of one folder (one speaker or one recording setup); speaker: the files whose "
                             "names --speaker_pattern gives the same speaker. Same voice and microphone, fewer "
                             "confident mistakes: docs/benchmarks.md measures it (leave-one-corpus-out)")
    parser.add_argument("--speaker_pattern", default=None, metavar="REGEX",
                        help="with --normalize speaker: a regular expression searched in each file name; its first "
                             "group (else the whole match) is the speaker, e.g. '^(\\d\\d)' for EmoDB")
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: this process; ray: Ray Data actors that each load the model once, on a local Ray "
                             "instance, or on the cluster named by the RAY_ADDRESS environment variable (e.g. "
                             "ray://head:10001; every node must see INPUT at the same paths, and the checkpoint "
                             "unless it lies in this folder or is a Hub id). Same rows, same order, same resume "
                             "(ray_engine.py)")
    parser.add_argument("--ray_actors", type=int, default=None, metavar="N",
                        help="--engine ray: scoring actors (default: as many as the cluster's CPUs allow, leaving one "
                             "CPU free for Ray's own work; with --ray_gpus_per_actor, the cluster's GPUs)")
    parser.add_argument("--ray_cpus_per_actor", type=float, default=1.0, metavar="C",
                        help="--engine ray: CPUs each actor reserves, and its torch threads (default 1)")
    parser.add_argument("--ray_gpus_per_actor", type=float, default=0.0, metavar="G",
                        help="--engine ray: GPUs each actor reserves (e.g. 1, or 0.5 to share one), on GPU nodes; "
                             "above 0 the actors score on cuda (default 0: CPU)")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or (args.top_k is not None and args.top_k < 1):
        parser.error("--batch_size and --top_k must be at least 1")
    if args.engine == "ray" and ((args.ray_actors is not None and args.ray_actors < 1) or args.ray_cpus_per_actor <= 0
                                 or args.ray_gpus_per_actor < 0):
        parser.error("--ray_actors must be at least 1, --ray_cpus_per_actor above 0, --ray_gpus_per_actor at least 0")
    previous = SIGNALS.install()
    try:
        checkpoint = args.checkpoint or default_checkpoint()
        if checkpoint is None:
            parser.error("no --checkpoint given and no default named in checkpoints/default.txt")
        try:  # with --engine ray this one only gives the labels: on this machine's CPU; the actors score
            scorer = load_scorer(checkpoint, args.runtime, args.precision,
                                 "cpu" if args.engine == "ray" else args.device, args.batch_size,
                                 embeddings=bool(args.embeddings) or args.normalize != "none")
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(f"infer: {err}") from None
        ray_options = {"actors": args.ray_actors, "cpus_per_actor": args.ray_cpus_per_actor,
                       "gpus_per_actor": args.ray_gpus_per_actor}
        run(checkpoint, args.output, args.inputs, args.segments, args.format, args.device, args.batch_size,
            args.top_k, args.embeddings, args.max_seconds or None, args.allow_nonspeech, args.overwrite, args.runtime,
            scorer=scorer, normalize=args.normalize, speaker_pattern=args.speaker_pattern, engine=args.engine,
            precision=args.precision, ray_options=ray_options)
    except KeyboardInterrupt as err:
        where = ("" if args.output == "-"
                 else f"; {args.output} holds every file finished so far: the same command resumes")
        print(f"infer: interrupted{where}", file=sys.stderr)
        raise SystemExit(128 + (err.signum if isinstance(err, Interrupted) else signal.SIGINT)) from None
    finally:
        SIGNALS.restore(previous)


if __name__ == "__main__":
    main()
