"""Calibrate to my voice and microphone: one page session's statistics that standardise the model's embeddings.

A model trained with --embedding_norm standardises each pooled embedding before its linear classifier. A clip
heard alone gets the training groups' average statistics; the statistics of the user's own recordings take out
part of what their voice, language, room and microphone add: every recording analysed so far in this page session,
drawn towards the model's statistics while there are few (normalization.shrunk_statistics). On unless the user
turns it off; Reset forgets the recordings. Only float32 models that standardise can adapt, in PyTorch
(recognizer.Recognizer) or onnxruntime (recognizer.OnnxScorer: the export's embedding output, the head in numpy); others
judge each clip alone. Simulated users (the speakers of corpora the default recipe never heard: benchmark/users.py,
docs/benchmarks.md) gained 6 points of UA this way (0.49 -> 0.55, speakers with 3 calm clips; with every speaker of the
left-out corpora and the current default, 0.477 -> 0.518: docs/adaptation.md); two clips of calm speech instead
(normalization.from_calm_speech) lost 7, so the page does not ask for them.
"""
from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass, field

import numpy as np

from adaptation.normalization import Speaker, shrunk_statistics

SESSION_PRIOR = 8.0   # pseudo-recordings of the model's statistics (2, 4 and 8 did alike for simulated users: 8 trusts few)
MAX_SEEN = 256        # recordings kept per model (the latest)
_EMBEDDERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Embedder:
    """A recognizer seen by the scheduler as a model whose rows are pooled embeddings instead of probabilities."""

    def __init__(self, recognizer):
        self.recognizer = recognizer
        self.labels = recognizer.labels

    @property
    def parallel_calls(self) -> int:  # the scheduler runs as many of its calls at once as of the recognizer's
        return getattr(self.recognizer, "parallel_calls", 1)

    def probabilities(self, clips: list[np.ndarray]) -> np.ndarray:
        return self.recognizer.probabilities_and_embeddings(clips)[1]


def adapts(recognizer) -> bool:
    """Whether `recognizer` standardises its embeddings and can return them (a float32 Recognizer or OnnxScorer)."""
    return bool(getattr(recognizer, "normalizes", False)) and hasattr(recognizer, "classify")


def embedder(recognizer) -> Embedder:
    """Return the one Embedder of `recognizer` (one object, so the scheduler batches its users' requests together)."""
    if recognizer not in _EMBEDDERS:
        _EMBEDDERS[recognizer] = Embedder(recognizer)
    return _EMBEDDERS[recognizer]


def digest(audio: np.ndarray) -> str:
    """Return a key for a recording, so that analysing it again (or with another model) does not count it twice."""
    return hashlib.blake2b(np.ascontiguousarray(audio, np.float32).tobytes(), digest_size=12).hexdigest()


@dataclass
class Voice:
    """What the page session knows of its user's voice (a gr.State)."""

    adapt: bool = True                          # gather statistics over the session's recordings
    seen: dict = field(default_factory=dict)    # model name -> {recording key: its mean embedding (D,)}
    first: dict = field(default_factory=dict)   # model name -> {recording key: (name, top emotion, its probability,
                                                #                               judged adapted)} when first analysed

    def statistics(self, recognizer, model: str, exclude: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Return the (mean, std) that standardise this user's embeddings for `model`, or None (the model's own)."""
        earlier = [v for key, v in self.seen.get(model, {}).items() if key != exclude]
        if not self.adapt or not earlier:
            return None
        mean, std = recognizer.model_statistics()
        return shrunk_statistics(np.stack(earlier), mean, std, SESSION_PRIOR)

    def knows(self, model: str, exclude: str | None = None) -> bool:
        """Whether a recording (key `exclude`) would be judged adapted: on, with other recordings of this session."""
        return self.adapt and any(key != exclude for key in self.seen.get(model, {}))

    def judge(self, recognizer, model: str, embeddings: np.ndarray, key: str | None = None,
              name: str | None = None) -> np.ndarray:
        """Return probabilities (N, C) of `embeddings` standardised for this user; with a `key`, the recording is
        remembered (session mode, as `name` in the history) after it was judged with the statistics of the
        recordings before it."""
        statistics = self.statistics(recognizer, model, exclude=key)
        probs = recognizer.classify(embeddings, *(statistics or ()))
        if key is not None and self.adapt:
            seen, first = self.seen.setdefault(model, {}), self.first.setdefault(model, {})
            seen.pop(key, None)
            seen[key] = np.asarray(embeddings, np.float32).mean(0)  # a long recording counts once, like a clip
            if key not in first:
                mean = probs.mean(0)
                first[key] = (name or f"recording {len(first) + 1}", recognizer.labels[int(np.argmax(mean))],
                              float(mean.max()), statistics is not None)
            while len(seen) > MAX_SEEN:
                oldest = next(iter(seen))
                seen.pop(oldest)
                first.pop(oldest, None)
        return probs

    def history(self, recognizer, model: str) -> list[dict]:
        """Return this session's recordings for `model`, oldest first: the answer each got when analysed and the
        answer now, each re-judged with the statistics of all the others (never its own)."""
        seen = self.seen.get(model, {})
        if not seen:
            return []
        vectors = np.stack(list(seen.values())).astype(np.float64)
        total, squares, mean, std = vectors.sum(0), (vectors ** 2).sum(0), *recognizer.model_statistics()
        rows = []
        for i, (key, vector) in enumerate(zip(seen, vectors)):
            others = Speaker(len(seen) - 1, total - vector, squares - vector ** 2) if self.adapt else Speaker()
            now = recognizer.classify(vector[None].astype(np.float32),
                                      *(others.statistics(mean, std, SESSION_PRIOR) if others.count else ()))[0]
            name, label, probability, adapted = self.first[model][key]
            top = int(np.argmax(now))
            rows.append({"#": i + 1, "recording": name, "first answer": f"{label} {probability:.0%}",
                         "judged then": "adapted" if adapted else "alone",
                         "answer now": f"{recognizer.labels[top]} {now[top]:.0%}",
                         "judged now": f"adapted ({others.count} other{'s' * (others.count != 1)})" if others.count
                         else "alone"})
        return rows

    def describe(self, model: str, adapting_model: bool = True) -> str:
        """Return the calibration's state as one line of Markdown."""
        if not adapting_model:
            return "This model judges every recording alone (it was trained without `--embedding_norm`)."
        count = len(self.seen.get(model, {}))
        if not self.adapt:
            return "Off: every recording is judged alone."
        if not count:
            return "Adapting to your voice: from your next recording on, each is judged with the ones before it."
        return f"Adapted to your voice and microphone over {count} recording{'s' * (count != 1)} of this session."
