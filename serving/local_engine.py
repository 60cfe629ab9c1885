"""The local engine: files found, decoded ahead in threads, checked and scored in batches, as Records in input order.

`score_decoded` is the one scoring path of both engines: this one and each Ray actor (ray_engine.py) call it.
--normalize's first pass (`group_statistics_pass`) and the progress lines live here too.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from adaptation.normalization import shrunk_statistics
from audio import checks as audio_checks
from data_process import AUDIO_EXTENSIONS, find_audio_files
from serving.recognizer import Prediction, Scorer
from serving.writers import Record

PROGRESS_EVERY_S = 10.0       # off a terminal: one progress line this often


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


def decode(path: str, max_seconds: float | None, allow_nonspeech: bool):
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
    """Return the output Record of each (path, decode's result) pair, the decoded ones scored together.

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
        part = [(path, decode(path, max_seconds, allow_nonspeech)) for path in files[start:start + scorer.batch_size * 4]]
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


def records(scorer: Scorer, todo: list[str], ready: dict, batch_size: int, max_seconds: float | None,
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
                                pool.submit(decode, path, max_seconds, allow_nonspeech)))
            if not pending:
                break
            batch = [pending.popleft() for _ in range(min(chunk, len(pending)))]
            yield from score_decoded(scorer, [(path, future.result()) for path, future in batch], embeddings)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
