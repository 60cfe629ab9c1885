"""Files per second of infer.py's local engine and of `--engine ray` on the same real clips (issue 18 item 5).

    python -m benchmark.ray_engine                              # 100 RAVDESS clips -> benchmark/results/ray_engine.json
    python -m benchmark.ray_engine --files 20 --output /tmp/ray_engine.json      # a quick check of the machinery

Both engines score the same files with the default checkpoint through infer.run (the CLI's path, CSV output),
one after the other in this process: the local engine with torch's own threads and with one thread (what one
Ray actor of one CPU gets), then the Ray engine on a local Ray instance with its default pool (the CPUs less
one, one CPU per actor). For each: the wall time of the whole run (for Ray: the actors' start and model load
included, the Ray instance's start apart), files/s over it, and the steady rate (files after the first block
over the time from the first block's rows to the last). The steady rate per actor times actors per node times
nodes is written as a projection for a cluster, not a measurement. The machine's load average is recorded
before and after each run: other jobs share this CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import io
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from benchmark.common import ROOT, machine, write_json

RESULTS = ROOT / "benchmark" / "results" / "ray_engine.json"
PROJECTED_NODES = [1, 4, 16, 64]
PROJECTED_CPUS_PER_NODE = 16  # e.g. a 16-core node: 15 actors of one CPU, one CPU left for Ray's own work


def ravdess_clips(n: int) -> list[str]:
    """Return `n` RAVDESS files spread evenly over the corpus's sorted list (all actors, all emotions)."""
    from data.corpora import corpora_root

    files = sorted(str(p) for p in (corpora_root() / "ravdess").rglob("*.flac"))
    if len(files) < n:
        raise SystemExit(f"only {len(files)} RAVDESS files under {corpora_root() / 'ravdess'}")
    return [files[int(i * len(files) / n)] for i in range(n)]


@contextlib.contextmanager
def stamped(module, name: str, stamps: list[float]):
    """Record when each Record of `module.name`'s generator reaches the writer."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        inner = original(*args, **kwargs)
        try:
            for record in inner:
                stamps.append(time.monotonic())
                yield record
        finally:
            inner.close()

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def measure(scorer, files: list[str], output: Path, engine: str, ray_options: dict | None = None) -> dict:
    import infer
    from serving import local_engine, ray_engine
    from serving.recognizer import default_checkpoint

    stamps: list[float] = []
    load_before = os.getloadavg()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    target = (ray_engine, "records") if engine == "ray" else (local_engine, "records")
    with stamped(*target, stamps), contextlib.redirect_stderr(io.StringIO()):
        start = time.monotonic()
        failed = infer.run(default_checkpoint(), str(output), files, device="cpu", scorer=scorer,
                           engine=engine, ray_options=ray_options, overwrite=True)
        seconds = time.monotonic() - start
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = cpu.ru_utime + cpu.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
    first_block = sum(t - stamps[0] < 0.05 for t in stamps)
    steady = (len(stamps) - first_block) / (stamps[-1] - stamps[0]) if stamps[-1] > stamps[0] else None
    return {"files": len(files), "failed": failed, "seconds": round(seconds, 2),
            "files_per_s": round(len(files) / seconds, 3),
            "steady_files_per_s": round(steady, 3) if steady else None,
            "first_rows_after_s": round(stamps[0] - start, 2),
            "cpu_s_this_process": round(cpu_s, 2),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


class ActorWatch:
    """Poll the scoring actors' processes (psutil): their CPU seconds (start, model load and scoring) and niceness."""

    def __init__(self, every_s: float = 0.5):
        import threading

        self.seen: dict[int, tuple[float, int]] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._poll, args=(every_s,), daemon=True)
        self.thread.start()

    def _poll(self, every_s: float) -> None:
        try:
            import psutil
        except ImportError:
            return
        while not self.done.wait(every_s):
            for proc in psutil.process_iter(["pid", "cmdline"]):
                try:
                    if "ScoreBatch" in " ".join(proc.info["cmdline"] or []):
                        times = proc.cpu_times()
                        self.seen[proc.pid] = (times.user + times.system, proc.nice())
                except (psutil.Error, TypeError):
                    pass

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def summary(self) -> dict:
        if not self.seen:
            return {}
        return {"cpu_s_actor_processes": round(sum(cpu for cpu, _ in self.seen.values()), 2),
                "actor_niceness": sorted({nice for _, nice in self.seen.values()})}


def agreement(a: Path, b: Path, labels: list[str]) -> dict:
    ra, rb = (list(csv.DictReader(open(p))) for p in (a, b))
    assert [r["path"] for r in ra] == [r["path"] for r in rb], "the engines wrote different files or orders"
    diffs = [abs(float(x[k]) - float(y[k])) for x, y in zip(ra, rb) if not x["error"] for k in labels]
    return {"same_paths_in_same_order": True, "same_labels": sum(x["label"] == y["label"] for x, y in zip(ra, rb)),
            "of": len(ra), "max_probability_difference": max(diffs) if diffs else None}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmark.ray_engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100, help="RAVDESS clips scored by each engine (default 100)")
    parser.add_argument("--output", type=Path, default=RESULTS,
                        help=f"results JSON (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)

    import ray
    import soundfile
    import torch

    from serving import ray_engine
    from serving.recognizer import default_checkpoint, load_scorer

    files = ravdess_clips(args.files)
    start = time.monotonic()
    scorer = load_scorer(default_checkpoint(), device="cpu")
    load_s = time.monotonic() - start
    command = " ".join(["python -m benchmark.ray_engine", *(sys.argv[1:] if argv is None else argv)])
    results = {"command": command,
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "checkpoint": str(Path(default_checkpoint()).relative_to(ROOT)),
               "files": f"{len(files)} RAVDESS clips (16 kHz FLAC, evenly spread over ../shared/corpora/ravdess)",
               "audio_seconds": round(sum(soundfile.info(f).duration for f in files), 1),
               "machine": machine(), "niceness": os.nice(0), "ray": ray.__version__,
               "model_load_s": round(load_s, 2), "runs": {}}
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        results["runs"][f"local ({threads} torch threads)"] = measure(scorer, files, folder / "local.csv", "local")
        torch.set_num_threads(1)
        results["runs"]["local (1 torch thread)"] = measure(scorer, files, folder / "local1.csv", "local")
        torch.set_num_threads(threads)
        start = time.monotonic()
        ray_engine.connect()  # the local instance infer.py --engine ray starts (here timed apart)
        ray_start = time.monotonic() - start
        actors = ray_engine.default_actors(1.0, 0.0)
        watch = ActorWatch()
        try:
            ray_run = measure(scorer, files, folder / "ray.csv", "ray", {"actors": actors, "cpus_per_actor": 1.0})
        finally:
            watch.stop()
            ray.shutdown()
        ray_run.update({"actors": actors, "cpus_per_actor": 1, "ray_instance_start_s": round(ray_start, 2),
                        **watch.summary()})
        results["runs"][f"ray ({actors} actor(s) x 1 CPU, local instance of {os.cpu_count()} CPUs)"] = ray_run
        results["ray_against_local"] = agreement(folder / "local.csv", folder / "ray.csv", scorer.labels)
    per_actor = (ray_run["steady_files_per_s"] or ray_run["files_per_s"]) / actors  # one block only: the whole run
    per_node = PROJECTED_CPUS_PER_NODE - 1
    results["projection"] = {
        "what": ("a projection, not a measurement: the measured steady files/s of one Ray actor (1 CPU, this machine, "
                 f"under the load recorded) x {per_node} actors per {PROJECTED_CPUS_PER_NODE}-CPU node x nodes; "
                 "assumes CPU-bound scoring that scales linearly, storage and the driver's writing keeping up, "
                 "and nodes' cores as fast as these"),
        "files_per_s_per_actor": round(per_actor, 3),
        "actors_per_node": per_node,
        "nodes": {str(n): {"files_per_s": round(per_actor * per_node * n, 1),
                           "hours_per_million_files": round(1e6 / (per_actor * per_node * n) / 3600, 2)}
                  for n in PROJECTED_NODES}}
    one_thread = results["runs"]["local (1 torch thread)"]
    per_cpu_s = one_thread["files"] / one_thread["cpu_s_this_process"]
    results["projection_dedicated_cores"] = {
        "what": ("the same projection if every actor had its CPU to itself: files per CPU-second of the scoring "
                 "(the local engine on one torch thread, CPU time of its process, which the load does not change "
                 "much) x actors per node x nodes; an upper bound for these cores"),
        "files_per_cpu_second": round(per_cpu_s, 3),
        "nodes": {str(n): {"files_per_s": round(per_cpu_s * per_node * n, 1),
                           "hours_per_million_files": round(1e6 / (per_cpu_s * per_node * n) / 3600, 2)}
                  for n in PROJECTED_NODES}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.output, results)
    for name, run in results["runs"].items():
        print(f"{name}: {run['files']} files in {run['seconds']} s = {run['files_per_s']} files/s "
              f"(steady {run['steady_files_per_s']}), load {run['load_average_before']}")
    print(f"agreement: {results['ray_against_local']}; projection per actor {per_actor:.2f} files/s; "
          f"written to {args.output}")
    return results


if __name__ == "__main__":
    main()
