"""The recognizer API: audio in, each emotion's probability out, with the runtime that runs the model.

    from serving.recognizer import Recognizer
    recognizer = Recognizer.from_pretrained("checkpoints/whisper-base-std-linear")
    recognizer.predict("clip.wav").label

`Scorer` holds the windows, batching and public calls over a runtime's `probabilities(clips)`; `Recognizer` runs a
checkpoint in PyTorch, `OnnxScorer` its export in onnxruntime (onnx_recognizer.py), and `load_scorer` picks one
(its int8 graph where quantize.py says it holds). The app, infer.py and the Ray engine all score through here.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from adaptation.normalization import Speaker
from data_process import SAMPLE_RATE, load_audio, to_model_rate

ROOT = Path(__file__).resolve().parent.parent  # the project folder (checkpoints/ lies in it)


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
        from adaptation.calibration import unsure_below

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

    def __init__(self, checkpoint: str | Path, batch_size: int = 8, threads: int | None = None,
                 source: str | Path | None = None):
        from serving.onnx_recognizer import OnnxRecognizer  # onnxruntime is imported only when asked for

        self.runtime = OnnxRecognizer(checkpoint, batch_size=batch_size, threads=threads, source=source)
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
        from adaptation.calibration import unsure_below

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

    auto keeps float32 where int8 cannot serve: a GPU, or embeddings asked for (--embeddings, --normalize, the app's
    adaptation to its user) where the int8 measurement does not cover the adapted mode (quantize.holds_adapted).
    """
    from serving import quantize

    chosen, recipe = quantize.choose(checkpoint, precision)
    if chosen == "int8" and precision == "auto" and ((embeddings and not quantize.holds_adapted(checkpoint))
                                                     or device not in ("auto", "cpu")
                                                     or (device == "auto" and _cuda_available())):
        chosen = "fp32"
    scorer = None
    if chosen == "int8":
        try:
            scorer = OnnxScorer(quantize.cached_int8(checkpoint, recipe), batch_size, source=checkpoint)
        except Exception as err:  # auto: an int8 graph that cannot be made or loaded here leaves float32 serving
            if precision != "auto":
                raise
            print(f"infer: {Path(checkpoint).name} runs float32: its int8 graph failed ({type(err).__name__}: {err})",
                  file=sys.stderr)
            chosen = "fp32"
    if scorer is None:
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
