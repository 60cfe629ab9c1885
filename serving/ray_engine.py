"""`infer.py --engine ray`: the files scored by Ray Data actors, the same rows as the local engine.

    python infer.py --engine ray --output scores.csv archive/                                  # a local Ray instance
    RAY_ADDRESS=ray://head:10001 python infer.py --engine ray --ray_gpus_per_actor 1 --output scores.csv /nfs/archive/

infer.run() lists the files (folders searched as the local engine does), skips those already in the output
(resume), and writes what `records` yields, in input order. Here the list becomes a Ray dataset
(`ray.data.from_items`, one block per `chunk` files) and `map_batches` runs `ScoreBatch`, a callable class, on
a fixed pool of actors: each loads the model once (`recognizer.load_scorer`), then turns a batch of paths into
writers.Records with the local engine's own functions (`local_engine.decode`: decoding and the input checks;
`local_engine.score_decoded`: scoring and the refusal rows). The driver writes each Record with writers.py, so
CSV/JSONL, columns, --top_k, --segments and --embeddings are those of the local engine.

Without RAY_ADDRESS a local Ray instance is started (and stopped at the end); with it, the cluster it names is
used: `ray://...` (Ray Client) ships this folder to the workers as the job's working_dir; under `ray job submit
--working-dir .` the job's own is used. Every node must read INPUT at the same path (a shared file system) and
the checkpoint too, unless it lies inside this folder or is a Hub id.
"""
from __future__ import annotations

import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent  # the project folder, what a Ray Client run ships
# what a Ray Client run leaves out of the working_dir it ships to the cluster
EXCLUDES = [".git", "runs/", "cache/", ".cache/", "tests/", "docs/", "benchmark/results/", "__pycache__/",
            "*.wav", "*.flac", "*.mp3", "*.ogg", "*.opus", "*.npy"]


class ScoreBatch:
    """A Ray Data actor: loads the scorer once, then turns each batch of paths into pickled writers.Records."""

    def __init__(self, checkpoint: str, inside_root: bool, runtime: str, precision: str, device: str,
                 batch_size: int, embeddings: bool, max_seconds: float | None, allow_nonspeech: bool, threads: int):
        import torch

        from serving.recognizer import load_scorer

        torch.set_num_threads(threads)
        if inside_root:  # a checkpoint of this folder: wherever the folder is on this node
            checkpoint = str(ROOT / checkpoint)
        self.scorer = load_scorer(checkpoint, runtime, precision, device, batch_size, embeddings=embeddings)
        self.embeddings, self.max_seconds, self.allow_nonspeech = embeddings, max_seconds, allow_nonspeech
        self.pool = ThreadPoolExecutor(min(4, threads + 1))  # decoding, as the local engine does it, in threads

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from serving.local_engine import decode, score_decoded

        paths, files = [str(p) for p in batch["path"]], [str(f) for f in batch["file"]]
        audio = self.pool.map(lambda f: decode(f, self.max_seconds, self.allow_nonspeech), files)
        records = score_decoded(self.scorer, list(zip(paths, audio)), self.embeddings)
        return {"index": np.asarray(batch["index"], dtype=np.int64),
                "record": np.array([pickle.dumps(r) for r in records], dtype=object)}


def connect() -> bool:
    """Connect to RAY_ADDRESS's cluster, or start a local instance; return whether Ray was started here."""
    import ray

    if ray.is_initialized():  # the caller's own (a test, a notebook): used as it is
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        options = {}
        if address.startswith("ray://"):  # Ray Client: the workers get this folder (infer.py, models/, checkpoints/)
            options["runtime_env"] = {"working_dir": str(ROOT), "excludes": EXCLUDES}
        ray.init(address=address, **options)
    else:  # "local": a new instance of our own, never another user's `ray start` on this machine
        ray.init(address="local", include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    return True


def default_actors(cpus_per_actor: float, gpus_per_actor: float) -> int:
    """Return the actors the cluster holds: one per GPU share; else its CPUs less one (left for Ray's own work)."""
    import ray

    resources = ray.cluster_resources()
    if gpus_per_actor > 0:
        if not resources.get("GPU"):  # the actors would wait for ever
            raise SystemExit("--ray_gpus_per_actor: the Ray cluster has no GPU (0 scores on CPU)")
        return max(1, int(resources["GPU"] // gpus_per_actor))
    return max(1, int((resources.get("CPU", 1) - 1) // cpus_per_actor))


def _checkpoint_for_workers(checkpoint: str) -> tuple[str, bool]:
    """Return (the checkpoint as the actors find it, whether it is relative to this folder)."""
    path = Path(checkpoint)
    if not path.exists():
        return checkpoint, False  # a Hub id
    path = path.resolve()
    if path.is_relative_to(ROOT):
        return str(path.relative_to(ROOT)), True
    return str(path), False


def records(checkpoint: str, todo: list[str], *, runtime: str = "torch", precision: str = "auto",
            device: str = "auto", batch_size: int = 8, embeddings: bool = False, max_seconds: float | None = None,
            allow_nonspeech: bool = False, actors: int | None = None, cpus_per_actor: float = 1.0,
            gpus_per_actor: float = 0.0):
    """Yield the writers.Record of each file of `todo`, in its order, scored by a pool of Ray Data actors.

    `device` is not used: the actors score on cuda when they hold a GPU share (`gpus_per_actor`), else on CPU.
    """
    if not todo:
        return
    import ray

    started = connect()
    context = ray.data.DataContext.get_current()
    previous = context.execution_options.preserve_order, context.enable_progress_bars
    try:
        context.execution_options.preserve_order = True  # blocks come back in input order (and are re-ordered below)
        context.enable_progress_bars = False  # infer.py prints its own progress
        chunk = max(batch_size * 4, 16)  # files per actor call, as the local engine scores them together
        n = actors or default_actors(cpus_per_actor, gpus_per_actor)
        where, inside_root = _checkpoint_for_workers(checkpoint)
        items = [{"index": i, "path": path, "file": os.path.abspath(path)} for i, path in enumerate(todo)]
        blocks = max(1, -(-len(items) // chunk))
        dataset = ray.data.from_items(items, override_num_blocks=blocks)  # blocks of len // blocks files, or one more
        scored = dataset.map_batches(  # so that one block is one actor call
            ScoreBatch, batch_size=len(items) // blocks, num_cpus=cpus_per_actor, num_gpus=gpus_per_actor,
            # a fixed pool; one block per actor at a time, so blocks finish (and are written) in input order
            compute=ray.data.ActorPoolStrategy(size=n, max_tasks_in_flight_per_actor=1),
            fn_constructor_args=(where, inside_root, runtime, precision, "cuda" if gpus_per_actor > 0 else "cpu",
                                 batch_size, embeddings, max_seconds, allow_nonspeech,
                                 max(1, int(cpus_per_actor))))
        waiting, next_index = {}, 0
        # whole blocks as they come, none held back (iter_rows' prefetch keeps one block back: a killed run loses it)
        for batch in scored.iter_batches(batch_size=None, prefetch_batches=0, batch_format="numpy"):
            waiting.update((int(i), pickle.loads(r)) for i, r in zip(batch["index"], batch["record"]))
            while next_index in waiting:
                yield waiting.pop(next_index)
                next_index += 1
        if next_index != len(todo):
            raise RuntimeError(f"Ray returned {next_index} of {len(todo)} files in order")
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = previous
        if started:
            ray.shutdown()
