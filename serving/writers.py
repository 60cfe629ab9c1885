"""The output of infer.py: one record per file, as CSV rows or JSON lines, and the --embeddings file."""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.recognizer import Prediction


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


def complete_lines(path: Path) -> str:
    """Return the text of `path` up to its last newline, cutting a line a killed run left half-written."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(end)
    return data[:end].decode("utf-8")


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
