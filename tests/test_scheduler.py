"""The app's model worker (ui/scheduler.py): own answers, turns, batching, errors, on a stand-in model.

The stand-in's "probabilities" encode each clip's identity, so a mixed-up batch cannot go unseen;
what the real models do under a burst is tested against the running app in test_app_load.py.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ui.scheduler import Scheduler, pads_exactly

RATE = 16_000


class StandIn:
    """Returns (clip id, clip length) per clip; optionally lets the batch's longest clip leak in, as
    a model whose padding is not masked does."""

    labels = ["id", "length"]

    def __init__(self, seconds_per_clip: float = 0.0, exact: bool = True, fail_on: float | None = None):
        self.seconds_per_clip, self.exact, self.fail_on = seconds_per_clip, exact, fail_on
        self.calls: list[list[int]] = []
        self.lock = threading.Lock()

    def probabilities(self, clips):
        with self.lock:
            self.calls.append([len(c) for c in clips])
        time.sleep(self.seconds_per_clip * len(clips))
        if self.fail_on is not None and any(c[0] == self.fail_on for c in clips):
            raise RuntimeError("model failed")
        longest = max(len(c) for c in clips)
        return np.array([[c[0], len(c) if self.exact else longest] for c in clips], dtype=np.float32)


def clip(identity: float, seconds: float = 2.0) -> np.ndarray:
    return np.full(int(seconds * RATE), identity, dtype=np.float32)


def test_every_caller_gets_its_own_answer_and_short_jobs_share_batches():
    model, scheduler = StandIn(seconds_per_clip=0.005), Scheduler()
    jobs = [[clip(i * 10 + k, seconds=1 + (i % 3) * 0.5) for k in range(1 + i % 3)] for i in range(40)]
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda clips: scheduler.probabilities(model, clips), jobs, timeout=60))
    for clips, answer in zip(jobs, answers):
        assert answer.tolist() == [[c[0], len(c)] for c in clips]
    scored = [n for call in model.calls for n in call]
    assert len(scored) == sum(map(len, jobs)) + 3  # every clip once (+ the three of the padding check)
    assert len(model.calls) < len(jobs)  # waiting short jobs were batched
    assert scheduler.pending() == 0


def test_a_short_job_does_not_wait_for_a_long_one():
    model, scheduler = StandIn(seconds_per_clip=0.01), Scheduler(slice_seconds=8)
    long = [clip(1000 + i, seconds=4) for i in range(200)]  # 2 windows per slice: 100 turns
    progress = []
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(scheduler.probabilities, model, long, lambda done, total: progress.append((done, total)))
        while not model.calls or len(model.calls) < 3:
            time.sleep(0.005)
        short = scheduler.probabilities(model, [clip(7), clip(8)])
        assert not running.done()  # the short job was served between two slices of the long one
        assert short.tolist() == [[7, 2 * RATE], [8, 2 * RATE]]
        assert running.result(timeout=60)[:, 0].tolist() == [c[0] for c in long]
    assert max(len(call) for call in model.calls) <= 2  # no slice over 8 s of audio
    assert progress and all(b[0] > a[0] for a, b in zip(progress, progress[1:])) and progress[-1][1] == 200


def test_a_model_whose_padding_leaks_batches_only_clips_of_equal_length():
    model, scheduler = StandIn(seconds_per_clip=0.005, exact=False), Scheduler()
    assert not pads_exactly(StandIn(exact=False)) and pads_exactly(StandIn())
    jobs = [[clip(i, seconds=1 + (i % 2))] for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda clips: scheduler.probabilities(model, clips), jobs, timeout=60))
    for clips, answer in zip(jobs, answers):
        assert answer.tolist() == [[clips[0][0], len(clips[0])]]  # as scored alone
    assert all(len(set(call)) == 1 for call in model.calls[2:])  # after the check, never mixed lengths


def test_a_model_error_reaches_its_caller_and_the_worker_goes_on():
    model, scheduler = StandIn(fail_on=13.0), Scheduler()
    with pytest.raises(RuntimeError, match="model failed"):
        scheduler.probabilities(model, [clip(13)])
    assert scheduler.probabilities(model, [clip(14)]).tolist() == [[14, 2 * RATE]]
    assert scheduler.probabilities(model, []).shape == (0, 2)
    model.probabilities = lambda clips: np.zeros((1, 2), np.float32)  # one row for any batch: an error, not a mix-up
    with pytest.raises(RuntimeError, match="1 rows of probabilities for 2 clips"):
        scheduler.probabilities(model, [clip(15), clip(16)])


class SideBySide(StandIn):
    """A stand-in that may run `parallel_calls` calls at once; records how many ran at the same time."""

    def __init__(self, parallel_calls: int, seconds_per_clip: float = 0.02):
        super().__init__(seconds_per_clip=seconds_per_clip)
        self.parallel_calls, self.running, self.most = parallel_calls, 0, 0

    def probabilities(self, clips):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return super().probabilities(clips)
        finally:
            with self.lock:
                self.running -= 1


def test_a_model_that_runs_calls_side_by_side_gets_one_per_core_and_one_job_a_call():
    side, whole, scheduler = SideBySide(parallel_calls=2), SideBySide(parallel_calls=1), Scheduler(cores=2)
    overlap = []

    def ask(i):
        return scheduler.probabilities(whole if i % 5 == 4 else side, [clip(i)])

    original = whole.probabilities  # a call on every core never shares the machine: seen on entry
    whole.probabilities = lambda clips: (overlap.append(side.running), original(clips))[1]
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, range(20)))
    assert [a.tolist() for a in answers] == [[[i, 2 * RATE]] for i in range(20)]
    assert side.most == 2 and whole.most == 1
    assert all(len(call) == 1 for call in side.calls)  # one job a call for a model that runs calls side by side
    assert overlap and not any(overlap)  # when the whole-machine model started, nothing else ran
