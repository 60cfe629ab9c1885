"""Score audio with an ONNX export of a checkpoint (export.py --format onnx) in onnxruntime, no PyTorch model needed.

`OnnxRecognizer` answers like `infer.Recognizer`: `labels`, `probabilities(clips)` -> (N, C),
`windows(audio)` and `predict(audio)`. Given a checkpoint folder instead of an .onnx file, it exports
the folder once into $SER_CACHE/onnx (default ~/.cache/ser/onnx), keyed by the weights and config, and
reuses that file afterwards.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.waveform import SAMPLE_RATE, speech_parts, window_starts

INPUT, OUTPUT = "waveform", "probabilities"  # export.py's graph names


@dataclass
class Window:
    start: float  # seconds
    end: float
    probs: np.ndarray | None  # (C,); None: no speech in the window, not scored

    @property
    def speech(self) -> bool:
        return self.probs is not None


def cached_export(checkpoint: Path) -> Path:
    """Return the ONNX export of the checkpoint folder, exported now if this weights + config pair has none yet."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        digest.update((checkpoint / name).read_bytes())
    cache = Path(os.environ.get("SER_CACHE", Path.home() / ".cache" / "ser")) / "onnx"
    path = cache / f"{checkpoint.resolve().name}-{digest.hexdigest()[:16]}.onnx"
    if not path.is_file():
        from export import export_onnx

        export_onnx(checkpoint, path)
    return path


class OnnxRecognizer:
    """An exported classifier in onnxruntime that turns 16 kHz audio into emotion probabilities."""

    def __init__(self, model: str | Path, batch_size: int = 8, threads: int | None = None):
        import onnxruntime

        path = Path(model)
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"{path} is not a checkpoint folder (no config.json)")
            path = cached_export(path)
        elif not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file or checkpoint folder")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if "labels" not in meta:
            raise ValueError(f"{path} was not written by export.py (no labels in its metadata)")
        self.labels: list[str] = json.loads(meta["labels"])
        self.window_seconds = float(meta.get("max_seconds", 10.0))
        self.path = path
        self.batch_size = batch_size

    def probabilities(self, clips: list[np.ndarray]) -> np.ndarray:
        """Return probabilities (N, C) for N clips of 16 kHz audio, clips of equal length batched together.

        A clip longer than the window is windowed inside the graph (windows averaged).
        """
        out = np.zeros((len(clips), len(self.labels)), dtype=np.float32)
        by_length: dict[int, list[int]] = {}
        for i, clip in enumerate(clips):
            by_length.setdefault(len(clip), []).append(i)
        for group in by_length.values():
            for start in range(0, len(group), self.batch_size):
                chosen = group[start:start + self.batch_size]
                batch = np.stack([np.asarray(clips[i], dtype=np.float32) for i in chosen])
                out[chosen] = self.session.run([OUTPUT], {INPUT: batch})[0]
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
