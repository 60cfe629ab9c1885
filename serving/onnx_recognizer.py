"""Score audio with an ONNX export of a checkpoint (export.py --format onnx) in onnxruntime, no PyTorch model needed.

`OnnxRecognizer` answers like `recognizer.Recognizer`: `labels`, `probabilities(clips)` -> (N, C),
`windows(audio)` and `predict(audio)`. Given a checkpoint folder instead of an .onnx file, it exports
the folder once into $SER_CACHE/onnx (default ~/.cache/ser/onnx), keyed by the weights, config and graph
version, and reuses that file afterwards.

Adapting to a speaker or user, as `recognizer.Recognizer` does: the graph also outputs the pooled embedding before
standardisation (`probabilities_and_embeddings`), and `classify(embeddings, mean, std)` standardises it and applies
the linear classifier and calibration temperature in numpy (`Head`), with the head's weights read from the
checkpoint's safetensors: the folder given, or the one the graph was exported from (its metadata) if its weights
are still the same. `normalizes` is true only then, for a model trained with --embedding_norm.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from models.waveform import SAMPLE_RATE, speech_parts, window_starts
from serving.recognizer import Window  # one window type for both runtimes

INPUT, OUTPUT, EMBEDDING = "waveform", "probabilities", "embedding"  # export.py's graph names
GRAPH_VERSION = 2  # export.GRAPH_VERSION (not imported: export.py imports torch)


def usable_cores() -> int:
    """Return the CPU cores this process may run on (all of the machine's where the OS cannot say)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def weights_digest(checkpoint: Path) -> str:
    """Return the digest of a checkpoint folder's config and weights (export.weights_digest, without torch)."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        digest.update((Path(checkpoint) / name).read_bytes())
    return digest.hexdigest()[:16]


def cached_export(checkpoint: Path) -> Path:
    """Return the ONNX export of the checkpoint folder, exported now if this weights + config pair has none yet."""
    cache = Path(os.environ.get("SER_CACHE", Path.home() / ".cache" / "ser")) / "onnx"
    path = cache / f"{checkpoint.resolve().name}-{weights_digest(checkpoint)}-v{GRAPH_VERSION}.onnx"
    if not path.is_file():
        from export import export_onnx

        partial = path.with_name(f".{path.stem}.{os.getpid()}.partial.onnx")  # an export cut short is never reused
        try:
            export_onnx(checkpoint, partial)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return path


class Head:
    """A checkpoint's standardisation, classifier and temperature in numpy: EmotionClassifier.classify in eval mode.

    embeddings (N, F) -> standardised with (mean, std), (F,) or (N, F), when the model normalizes (the
    checkpoint's training statistics when none are given; embedding_norm posthoc: then put back on the training
    statistics' scale) -> linear classifier (or Linear-ReLU-Linear with
    classifier_hidden; dropout does nothing in eval) -> logits / the temperature of the mode (`temperature`) ->
    softmax, in float32.
    """

    def __init__(self, folder: str | Path):
        from safetensors import safe_open

        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        self.config = config
        self.normalizes = config.get("embedding_norm", "none") not in ("none", None)
        with safe_open(str(folder / "model.safetensors"), framework="np") as weights:
            read = lambda key: weights.get_tensor(key).astype(np.float32)  # noqa: E731 (float16 stored: as from_pretrained)
            keys = set(weights.keys())
            if "classifier.weight" in keys:  # nn.Linear
                self.layers = [(read("classifier.weight"), read("classifier.bias"))]
            else:  # nn.Sequential(Linear, ReLU, Dropout, Linear)
                linear = sorted({int(k.split(".")[1]) for k in keys if k.startswith("classifier.") and k.endswith(".weight")})
                self.layers = [(read(f"classifier.{i}.weight"), read(f"classifier.{i}.bias")) for i in linear]
            if not self.layers:
                raise ValueError(f"{folder.name}: no classifier weights in model.safetensors")
            self.mean = read("embedding_mean") if self.normalizes else None
            self.std = read("embedding_std") if self.normalizes else None
        self.dim = int(self.layers[0][0].shape[1])

    def logits(self, embeddings: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> np.ndarray:
        mode = "adapted" if mean is not None else "alone"  # as EmotionClassifier.classify: given statistics adapt
        raw = x = np.asarray(embeddings, dtype=np.float32)
        if self.normalizes:
            mean = self.mean if mean is None else np.asarray(mean, dtype=np.float32)
            std = self.std if std is None else np.asarray(std, dtype=np.float32)
            x = (x - mean) / std
            if self.config.get("embedding_norm") == "posthoc":  # back on the training clips' scale
                x = self.mean + self.std * x
        for i, (weight, bias) in enumerate(self.layers):
            x = x @ weight.T + bias
            if i < len(self.layers) - 1:
                x = np.maximum(x, np.float32(0))
        return x / self.temperature(raw, mode)

    def temperature(self, embeddings: np.ndarray, mode: str) -> np.ndarray | np.float32:
        """Return the calibration temperature of `mode` ("alone" or "adapted"), as EmotionClassifier.temperature:
        config.calibration_temperature without a per-mode `calibration`; else exp(intercept) of the mode, or, with a
        slope, one per clip (N, 1) growing with its novelty: its mean squared embedding standardised with the
        model's statistics, whatever statistics judge it."""
        modes = self.config.get("calibration")
        if not modes:
            return np.float32(self.config.get("calibration_temperature", 1.0))
        fit = modes.get(mode) or modes["alone"]
        if not fit.get("slope") or not self.normalizes:
            return np.float32(math.exp(fit["intercept"]))
        novelty = (((embeddings - self.mean) / self.std) ** 2).mean(-1, keepdims=True)
        log_t = np.float32(fit["intercept"]) + np.float32(fit["slope"]) * np.log(np.maximum(novelty, np.float32(1e-6)))
        return np.exp(np.clip(log_t, np.float32(math.log(0.05)), np.float32(math.log(50.0))))

    def probabilities(self, embeddings: np.ndarray, mean: np.ndarray | None = None,
                      std: np.ndarray | None = None) -> np.ndarray:
        logits = self.logits(embeddings, mean, std)
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


class OnnxRecognizer:
    """An exported classifier in onnxruntime that turns 16 kHz audio into emotion probabilities."""

    def __init__(self, model: str | Path, batch_size: int = 8, threads: int | None = None,
                 source: str | Path | None = None):
        """`threads`: onnxruntime's threads a call (default $SER_ONNX_THREADS, else every core). `source`: the
        checkpoint folder an .onnx file was made from, where the caller knows it (its int8 graph): the folder its
        metadata names may have moved since the graph was cached."""
        import onnxruntime

        path = Path(model)
        folder = None  # the checkpoint whose head classifies embeddings
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"{path} is not a checkpoint folder (no config.json)")
            folder, path = path, cached_export(path)
        elif not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file or checkpoint folder")
        threads = threads or int(os.environ.get("SER_ONNX_THREADS") or 0) or None  # app.py: 1 (one call per core)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # threads that spin while waiting for work burnt about 50 % more CPU a clip on 2 shared cores (docs/serving.md)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        # a session runs calls from several threads at once: with one thread a call, one call per core
        self.parallel_calls = max(1, usable_cores() // threads) if threads else 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if "labels" not in meta:
            raise ValueError(f"{path} was not written by export.py (no labels in its metadata)")
        self.labels: list[str] = json.loads(meta["labels"])
        self.window_seconds = float(meta.get("max_seconds", 10.0))
        self.path = path
        self.batch_size = batch_size
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.has_embeddings = EMBEDDING in self.outputs  # graphs exported before GRAPH_VERSION 2 have none
        if folder is None and (source or meta.get("source_folder")):  # an .onnx file: its checkpoint, if unchanged
            source = Path(source or meta["source_folder"])
            if (source / "config.json").is_file() and (source / "model.safetensors").is_file() \
                    and weights_digest(source) == meta.get("weights"):
                folder = source
        # an int8 graph's embeddings too: quantize.py measures its drift in the adapted mode as well, and auto
        # (infer.load_scorer) serves it there only where that measurement meets the bound
        self.head = Head(folder) if self.has_embeddings and folder is not None else None

    @property
    def normalizes(self) -> bool:
        """Whether embeddings can be standardised with other statistics: a model trained with --embedding_norm
        whose graph outputs embeddings and whose checkpoint (the head's weights) is at hand."""
        return self.head is not None and self.head.normalizes

    @property
    def embedding_dim(self) -> int:
        if not self.has_embeddings:
            raise AttributeError(f"{self.path.name} has no embedding output (exported before it had one)")
        return self.head.dim if self.head else int(self.session.get_outputs()[self.outputs.index(EMBEDDING)].shape[-1])

    def model_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the statistics the model uses for a clip heard alone (its training groups' average)."""
        if not self.normalizes:
            raise ValueError(f"{self.path.name}: this model standardises nothing (or its checkpoint is not at hand)")
        return self.head.mean, self.head.std

    def classify(self, embeddings: np.ndarray, mean: np.ndarray | None = None,
                 std: np.ndarray | None = None) -> np.ndarray:
        """Return probabilities (N, C) of pooled embeddings (N, D), standardised with (mean, std) when given."""
        if self.head is None:
            raise ValueError(f"{self.path.name}: no classifier head at hand (give the checkpoint folder)")
        return self.head.probabilities(embeddings, mean, std)

    def probabilities_and_embeddings(self, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Return probabilities (N, C) and pooled embeddings (N, F), before standardisation, of N clips."""
        if not self.has_embeddings:
            raise ValueError(f"{self.path.name} has no embedding output: export the checkpoint again (export.py)")
        probs, vectors = self._run(clips, [OUTPUT, EMBEDDING])
        return probs, vectors

    def probabilities(self, clips: list[np.ndarray]) -> np.ndarray:
        """Return probabilities (N, C) for N clips of 16 kHz audio, clips of equal length batched together.

        A clip longer than the window is windowed inside the graph (windows averaged).
        """
        return self._run(clips, [OUTPUT])[0]

    def _run(self, clips: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
        """Return the graph's outputs `names` for N clips, each (N, ...): clips of equal length batched together."""
        out: list = [None] * len(names)
        by_length: dict[int, list[int]] = {}
        for i, clip in enumerate(clips):
            by_length.setdefault(len(clip), []).append(i)
        for group in by_length.values():
            for start in range(0, len(group), self.batch_size):
                chosen = group[start:start + self.batch_size]
                batch = np.stack([np.asarray(clips[i], dtype=np.float32) for i in chosen])
                for k, got in enumerate(self.session.run(names, {INPUT: batch})):
                    if out[k] is None:
                        out[k] = np.zeros((len(clips), *got.shape[1:]), dtype=np.float32)
                    out[k][chosen] = got
        if not clips:
            return [np.zeros((0, len(self.labels) if name == OUTPUT else self.embedding_dim), np.float32) for name in names]
        return out

    def windows(self, audio: np.ndarray) -> list[Window]:
        """Return the probabilities of each half-overlapping window of `audio` (one window if it fits).

        As infer.py's: a window without speech is not scored (probs None), one with speech is scored on its speech.
        """
        size = int(self.window_seconds * SAMPLE_RATE)
        spans = [(s, min(s + size, len(audio))) for s in window_starts(len(audio), size)]
        parts = speech_parts(audio, spans)
        scored = iter(self.probabilities([audio[part[0]:part[1]] for part in parts if part]))
        return [Window(s / SAMPLE_RATE, e / SAMPLE_RATE, next(scored) if part else None)
                for (s, e), part in zip(spans, parts)]

    def predict(self, audio: np.ndarray) -> tuple[dict[str, float], list[Window]]:
        """Return {emotion: probability} for the whole clip (its windows with speech averaged) and the windows."""
        windows = self.windows(audio)
        mean = np.mean([w.probs for w in windows if w.speech], axis=0)
        return {label: float(p) for label, p in zip(self.labels, mean)}, windows
