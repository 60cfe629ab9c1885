"""Worker threads that run every model call of the app, in turns, so that nobody waits behind a long clip.

On a 2-core machine two PyTorch calls at once only slow each other down (torch already uses every
core for one). So request threads hand their clips to the workers and wait for the result:

- jobs take turns (round robin): a long recording is scored one slice of windows per turn and
  then goes to the back of the line, so a short clip waits for at most one slice of it;
- a model says how many of its calls may run at once (`parallel_calls`, default 1: a call uses
  every core). onnxruntime with one thread a call (app.py) runs one call per core: on 2 shared
  cores that cost less CPU a clip than one call on two threads and shortened waits under load
  (docs/serving.md). The workers never run more calls than the machine has cores' worth of;
- short jobs waiting for a model that takes one call at a time are scored together in one batch
  (fewer, fuller matrix products than one call per clip), if padding a clip in a batch leaves its
  probabilities as they are alone (checked once per model: Whisper and the 1-D CNN mask padding in
  PyTorch, wav2vec2-family encoders do not); otherwise only clips of equal length share a batch.
  A model that runs calls side by side gets one job a call: its ONNX graph has no padding mask
  (only clips of equal length could share a call), and a call of 4 clips cost as much CPU as 4.

A slice holds at most `slice_seconds` of audio and `max_batch` clips: about a quarter of a
second of compute for Whisper-base on 2 cores.
"""
from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from data_process import SAMPLE_RATE

PROGRESS_EVERY_S = 0.5


@dataclass(eq=False)
class _Job:
    recognizer: object                   # anything with probabilities(list of clips) -> (N, C) array
    clips: list                          # 16 kHz float32 arrays
    done: int = 0                        # clips scored so far
    busy: bool = False                   # a slice of it is being scored
    results: list = field(default_factory=list)
    future: Future = field(default_factory=Future)

    def seconds(self, start: int, stop: int) -> float:
        return sum(len(c) for c in self.clips[start:stop]) / SAMPLE_RATE


class Scheduler:
    """Score clips on worker threads (a call per free core's worth), jobs in turns, waiting short jobs batched."""

    def __init__(self, slice_seconds: float = 8.0, max_batch: int = 8, cores: int | None = None):
        self.slice_seconds = slice_seconds
        self.max_batch = max_batch
        # the calls' budget: a call costs cores / parallel_calls (as onnx_recognizer.usable_cores, without its imports)
        self.cores = cores or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        self._jobs: deque[_Job] = deque()
        self._exact: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # recognizer -> pads exactly
        self._ready = threading.Condition()
        self._checking = threading.Lock()  # held while a model's padding is checked
        self._workers: list[threading.Thread] = []
        self._used = 0.0  # cores taken by the calls running now
        self.calls = 0    # model calls made so far (the load test reads it: clips a call)

    def probabilities(self, recognizer, clips: list[np.ndarray],
                      progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Return recognizer.probabilities(clips), computed on a worker (or here, when nobody waits); block until done.

        While it waits, `progress(done, total)` is called in the caller's thread (where Gradio's
        progress bar works) every `PROGRESS_EVERY_S` in which more clips were scored.
        An exception raised by the model is raised here, in the caller's thread.
        """
        if not clips:
            return np.zeros((0, len(getattr(recognizer, "labels", []))), dtype=np.float32)
        job = _Job(recognizer, list(clips))
        if self._direct(job):
            return job.future.result()
        with self._ready:
            self._jobs.append(job)
            self._workers = [w for w in self._workers if w.is_alive()]
            if len(self._workers) < self.cores:  # at most one call per core ever runs: that many workers
                self._workers.append(threading.Thread(target=self._run, name="model-worker", daemon=True))
                self._workers[-1].start()
            self._ready.notify_all()
        shown = 0
        while True:
            try:
                return job.future.result(timeout=PROGRESS_EVERY_S if progress else None)
            except FuturesTimeout:
                if job.done > shown:
                    shown = job.done
                    progress(shown, len(job.clips))

    def _direct(self, job: _Job) -> bool:
        """Score `job` in the caller's thread if nobody waits, its call fits in the free cores and it is one slice:
        no hand-over to a worker thread (on a busy machine waking one took milliseconds). Return whether it did."""
        cost = self._cost(job.recognizer)
        with self._ready:
            known = job.recognizer in self._exact or getattr(job.recognizer, "parallel_calls", 1) > 1
            if (self._jobs or not known or self._used + cost > self.cores + 1e-9
                    or self._stop(job) < len(job.clips)):
                return False
            self._used += cost
            self.calls += 1
        try:
            self._score([(job, len(job.clips))])
        finally:
            with self._ready:
                self._used -= cost
                self._ready.notify_all()
        return True

    def pending(self) -> int:
        """Return how many jobs are waiting or being scored."""
        with self._ready:
            return len(self._jobs)

    # -- the worker ------------------------------------------------------------------------------
    def _stop(self, job: _Job) -> int:
        """Return the end of `job`'s next slice: at least one clip, then up to the time and count budget."""
        stop = job.done + 1
        while (stop < len(job.clips) and stop - job.done < self.max_batch
               and job.seconds(job.done, stop + 1) <= self.slice_seconds):
            stop += 1
        return stop

    def _cost(self, recognizer) -> float:
        """Return the cores one call of `recognizer` takes."""
        return self.cores / max(1, min(self.cores, int(getattr(recognizer, "parallel_calls", 1))))

    def _first(self) -> _Job | None:
        """Return the first job in line not being scored, if its call fits in the free cores (else None: it waits,
        and nobody behind it overtakes it), called with the lock held."""
        job = next((j for j in self._jobs if not j.busy), None)
        if job is None or self._used + self._cost(job.recognizer) > self.cores + 1e-9:
            return None
        return job

    def _next_turn(self, first: _Job) -> list[tuple[_Job, int]]:
        """Take the next turn from the line: [(job, end of its slice)], called with the lock held.

        The first job in line gets a slice. If that slice finishes it, and its model takes one call at a
        time, other jobs for the same model that also fit whole join it, within the budget. A job left
        unfinished goes to the back.
        """
        self._jobs.remove(first)
        stop = self._stop(first)
        turn = [(first, stop)]
        if stop < len(first.clips):
            self._jobs.append(first)
            return turn
        if getattr(first.recognizer, "parallel_calls", 1) > 1:
            return turn
        clips, seconds = stop - first.done, first.seconds(first.done, stop)
        exact = self._exact.get(first.recognizer, False)
        sizes = {len(c) for c in first.clips[first.done:stop]}
        for job in list(self._jobs):
            if job.recognizer is not first.recognizer or job.done or job.busy:
                continue
            if not exact and {len(c) for c in job.clips} | sizes != sizes:
                continue
            more = job.seconds(0, len(job.clips))
            if clips + len(job.clips) > self.max_batch or seconds + more > self.slice_seconds:
                continue
            self._jobs.remove(job)
            turn.append((job, len(job.clips)))
            clips, seconds = clips + len(job.clips), seconds + more
        return turn

    def _run(self) -> None:
        while True:
            with self._ready:
                while (first := self._first()) is None:
                    self._ready.wait()
                cost = self._cost(first.recognizer)
                self._used += cost  # the padding check runs the model too: it takes its cores like a call
                unknown = first.recognizer not in self._exact and getattr(first.recognizer, "parallel_calls", 1) <= 1
                if not unknown:
                    turn = self._next_turn(first)
                    self.calls += 1
                    for job, _ in turn:
                        job.busy = True
            try:
                if unknown:  # outside the lock (it runs the model), once; then the next pass takes the turn
                    with self._checking:
                        if first.recognizer not in self._exact:
                            self._exact[first.recognizer] = pads_exactly(first.recognizer)
                else:
                    self._score(turn)
            finally:
                with self._ready:
                    self._used -= cost
                    for job, _ in ([] if unknown else turn):
                        job.busy = False
                    self._ready.notify_all()

    def _score(self, turn: list[tuple[_Job, int]]) -> None:
        """Score one turn's clips in one call and hand each job its rows (or the call's error)."""
        batch = [clip for job, stop in turn for clip in job.clips[job.done:stop]]
        try:
            probs = np.asarray(turn[0][0].recognizer.probabilities(batch))
            if len(probs) != len(batch):
                raise RuntimeError(f"the model returned {len(probs)} rows of probabilities for {len(batch)} clips")
        except BaseException as err:  # the callers get the error; the workers keep serving
            with self._ready:
                for job, _ in turn:
                    if job in self._jobs:
                        self._jobs.remove(job)
            for job, _ in turn:
                job.future.set_exception(err)
            return
        offset = 0
        for job, stop in turn:
            count = stop - job.done
            job.results.append(probs[offset:offset + count])
            offset += count
            job.done = stop
            if stop == len(job.clips):
                job.future.set_result(np.concatenate(job.results))


def pads_exactly(recognizer) -> bool:
    """Return whether a clip scored in a batch with a longer one gets the probabilities it gets alone."""
    rng = np.random.default_rng(0)
    short, long = (rng.normal(0, 0.05, n).astype(np.float32) for n in (SAMPLE_RATE, SAMPLE_RATE * 7 // 4))
    try:
        alone = recognizer.probabilities([short])[0]
        together = recognizer.probabilities([short, long])[0]
    except Exception:  # the real request will raise the error to its caller
        return False
    return bool(np.all(np.abs(alone - together) < 1e-4))
