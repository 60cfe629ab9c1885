"""N clients at once against the app, for each N: latency, right answers, CPU a request, peak memory.

    python scripts/load_test.py clients                          # starts app.py; 1, 10, 50, 200 clients
    python scripts/load_test.py clients --url http://127.0.0.1:7860/ --levels 10 50

Clips: real recordings of 4.5-6 s (EmoDB and RAVDESS, 16 kHz, evenly spread over the sorted files).
First each clip is asked alone, one after another, each in a new session (a page session adapts to its
earlier recordings): that answer is the reference. Then, per level N, N gradio_client sessions (made
before any timing, as N browsers) each send one clip at the same moment (N = 1: `--alone` requests
one after another). A request is answered when its probabilities arrive
and right when each emotion's probability is within 1e-4 of the reference. The app's CPU time
(all threads, from /proc) over the level, divided by its requests, is the CPU-seconds a request; its
resident memory is sampled every 20 ms. The clients run on the same machine and take some CPU too.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from load_test import cpu_seconds, start_app  # noqa: E402

RESULTS = ROOT / "benchmark" / "results" / "load_test.json"
TOLERANCE = 1e-4  # largest difference in a probability from the clip's answer alone


def five_second_clips(count: int = 40) -> list[Path]:
    """Return `count` real recordings of 4.5-6 s, spread over EmoDB and RAVDESS."""
    import soundfile as sf

    from data.corpora import corpora_root

    root = corpora_root()
    found = []
    for corpus, pattern in (("emodb", "wav/*.wav"), ("ravdess", "Actor_*/*.flac")):
        files = sorted((root / corpus).glob(pattern))
        found += [f for f in files if 4.5 <= sf.info(str(f)).duration <= 6.0]
    if not found:
        raise SystemExit(f"no 4.5-6 s recordings of EmoDB or RAVDESS under {root} (set SER_CORPORA)")
    return [found[i] for i in np.linspace(0, len(found) - 1, min(count, len(found))).astype(int)]


def resident_mb(pid: int | None, field: str = "VmRSS") -> float:
    if pid is None:
        return float("nan")
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) / 1024


def confidences(label: dict) -> dict[str, float]:
    return {c["label"]: float(c["confidence"]) for c in label["confidences"]}


class Session:
    """One gradio_client session (a browser) that sends a clip to /predict."""

    def __init__(self, url: str, model: str, timeout: float):
        from gradio_client import Client

        self.client = Client(url, verbose=False, analytics_enabled=False, httpx_kwargs={"timeout": timeout})
        self.model, self.timeout = model, timeout

    def ask(self, path: Path) -> tuple[float, dict | None, str]:
        """Return (latency s, confidences or None, error or "")."""
        from gradio_client import handle_file

        start = time.perf_counter()
        try:
            job = self.client.submit(handle_file(str(path)), self.model, api_name="/predict")
            label = job.result(timeout=self.timeout)[1]
            return time.perf_counter() - start, confidences(label), ""
        except Exception as err:
            return time.perf_counter() - start, None, f"{type(err).__name__}: {err}"[:200]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(np.ceil(q * len(ordered))) - 1)] if ordered else float("nan")


def level(url: str, clients: int, clips: list[Path], reference: dict, args, pid: int | None) -> dict:
    """Return one level's figures: `clients` sessions each sending a clip at the same moment."""
    count = args.alone if clients == 1 else clients
    with ThreadPoolExecutor(8) as pool:  # a session a request: each judged alone, as its reference
        sessions = list(pool.map(lambda _: Session(url, args.model, args.timeout), range(count)))
    jobs = [(sessions[i], clips[i % len(clips)]) for i in range(count)]
    peak, done = [resident_mb(pid)], threading.Event()

    def sample():
        while not done.is_set():
            peak.append(resident_mb(pid))
            time.sleep(0.02)

    load_before = [round(x, 2) for x in os.getloadavg()]
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu, own, start = cpu_seconds(pid), time.process_time(), time.perf_counter()
    if clients == 1:
        answers = [session.ask(path) for session, path in jobs]
    else:
        barrier = threading.Barrier(clients)

        def together(job):
            barrier.wait()
            return job[0].ask(job[1])

        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(together, jobs))
    elapsed, app_cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu
    own = time.process_time() - own
    done.set()
    sampler.join()
    latencies = [lat for lat, probs, err in answers if probs is not None]
    right = sum(probs is not None and max(abs(probs[k] - reference[path][k]) for k in reference[path]) <= TOLERANCE
                and set(probs) == set(reference[path]) for (_, path), (_, probs, _) in zip(jobs, answers))
    errors = [err for _, _, err in answers if err]
    row = {"clients": clients, "requests": len(jobs), "answered": len(latencies), "right": right,
           "p50_s": round(statistics.median(latencies), 3) if latencies else None,
           "p95_s": round(percentile(latencies, 0.95), 3), "max_s": round(max(latencies), 3) if latencies else None,
           "all_answered_after_s": round(elapsed, 2),
           "cpu_s_per_request": round(app_cpu / len(jobs), 4) if pid else None,
           "client_cpu_s_per_request": round(own / len(jobs), 4),
           "peak_rss_mb": round(max(peak), 1), "rss_before_mb": round(peak[0], 1),
           "load_average_before": load_before, "errors": errors[:3]}
    print(f"{clients:4d} clients: {row['answered']}/{row['requests']} answered, {right} right, p50 {row['p50_s']} s, "
          f"p95 {row['p95_s']} s, max {row['max_s']} s; app CPU {row['cpu_s_per_request']} s a request; peak "
          f"{row['peak_rss_mb']} MB; load {load_before}" + (f"; e.g. {errors[0]}" if errors else ""), flush=True)
    with ThreadPoolExecutor(64) as pool:  # close() waits up to 1 s for each session's heartbeat thread
        list(pool.map(lambda session: session.client.close(), sessions))
    return row


def served_precision(checkpoint: Path) -> str:
    """Return the precision app.py serves `checkpoint` in by default (--precision auto: int8 where measured to hold)."""
    from serving import quantize

    return quantize.choose(checkpoint, "auto")[0]


def run(url: str, args, pid: int | None, runtime: str) -> dict:
    from benchmark.common import machine
    from benchmark.run import git_commit

    clips = five_second_clips(args.clips)
    import soundfile as sf

    seconds = [sf.info(str(c)).duration for c in clips]
    print(f"{len(clips)} real clips of {min(seconds):.2f}-{max(seconds):.2f} s; load average {os.getloadavg()}")
    Session(url, args.model, args.timeout).ask(clips[0])  # warm-up: the first request of a process allocates
    reference = {}
    for path in clips:  # a new session each: a page session adapts to its earlier recordings (ui/voice.py)
        _, probs, err = Session(url, args.model, args.timeout).ask(path)
        if probs is None:
            raise SystemExit(f"{path.name} alone got no answer: {err}")
        reference[path] = probs
    rows = [level(url, n, clips, reference, args, pid) for n in args.levels]
    return {"command": shlex.join(["python", "scripts/load_test.py", "clients", *args.argv]), "commit": git_commit(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": args.model, "setting": runtime,
            "precision": served_precision(Path(args.checkpoints) / args.model) if pid else None,
            "clips": f"{len(clips)} real clips of {min(seconds):.1f}-{max(seconds):.1f} s (EmoDB and RAVDESS, 16 kHz)",
            "how": ("Each level: N gradio_client sessions, made before timing, send one clip each at the same moment "
                    f"(1 client: {args.alone} requests one after another, a new session each), over HTTP to app.py on localhost, clients "
                    "on the same 2 CPUs; right = every probability within 1e-4 of the same clip asked alone; CPU-s a "
                    "request = the app process's CPU time over the level / its requests; peak memory = the app's "
                    "resident memory sampled every 20 ms (every checkpoint of checkpoints/ loaded)."),
            "machine": machine(), "rows": rows}


def main(argv: list[str] | None = None) -> None:
    from benchmark import serving_report

    parser = argparse.ArgumentParser(prog="python scripts/load_test.py clients", description=__doc__.split("\n\n")[0],
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running app (default: start app.py on a free localhost port)")
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"), help="for the app started here")
    parser.add_argument("--model", help="checkpoint name to ask for (default: the one in CHECKPOINTS/default.txt)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 10, 50, 200], help="clients at once")
    parser.add_argument("--alone", type=int, default=10, help="requests of the 1-client level, one after another")
    parser.add_argument("--clips", type=int, default=40, help="distinct real clips the clients send")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a request counts as lost")
    parser.add_argument("--runtime", default="auto", help="app.py --runtime for the app started here")
    parser.add_argument("--onnx_threads", type=int, default=1,
                        help="onnxruntime threads a call for the app started here (app.py's default: 1, a call per "
                             "core side by side; 0: every core, one call at a time)")
    parser.add_argument("--app_flags", default="", help="more flags for the app started here, e.g. '--queue_updates auto'")
    parser.add_argument("--output", default=str(RESULTS), help="results JSON (docs/serving.md reads the default)")
    args = parser.parse_args(argv)
    args.argv = list(argv or [])
    args.model = args.model or (Path(args.checkpoints) / "default.txt").read_text().strip()
    with tempfile.TemporaryDirectory(prefix="ser_load_") as tmp:
        proc, url = None, args.url
        if not url:
            proc, url = start_app(args.checkpoints, Path(tmp) / "app.log", ["--runtime", args.runtime, *args.app_flags.split()],
                                  {"SER_ONNX_THREADS": str(args.onnx_threads)})
            print(f"app.py started on {url}")
        try:
            setting = (f"app.py --runtime {args.runtime}" + (
                ", the default in PyTorch (waiting requests batched)" if args.runtime == "torch" else
                ", onnxruntime one thread a call, a call per core side by side" + ("" if args.app_flags else " (as served)")
                if args.onnx_threads == 1
                else f", onnxruntime SER_ONNX_THREADS={args.onnx_threads} (every core a call, one call at a time)")
                + (f", {args.app_flags}" if args.app_flags else "") if proc else "the app at --url, as it was started")
            results = run(url, args, proc.pid if proc else None, setting)
        finally:
            if proc is not None:
                results_log = (Path(tmp) / "app.log").read_text()[-1500:]
                proc.terminate()
                proc.wait(timeout=30)
        if proc is not None and "Traceback" in results_log:
            print(f"the app's log ends:\n{results_log}", file=sys.stderr)
    serving_report.write_json(Path(args.output), results)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
