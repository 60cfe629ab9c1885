"""Load the app on localhost as many users would, and print the latencies they see.

    python scripts/load_test.py                         # starts app.py (checkpoints/) on a free port
    python scripts/load_test.py --url http://127.0.0.1:7860/ --burst 50 --long_minutes 10 --shorts 20
    python scripts/load_test.py clients                 # 1, 10, 50, 200 clients at once: benchmark/results/load_test.json
    python scripts/load_test.py clients --levels 1 10 --output /tmp/load.json

Three figures, each client in its own gradio_client session (as separate browsers are):
  alone   a short clip with nobody else on the server (the floor for the others);
  long    short clips sent one a second while a long recording is being analysed;
  burst   short clips sent by `--burst` clients at the same moment.
A latency runs from submitting the clip to receiving the probabilities, on the client. Short clips
are real EmoDB recordings (1.5-4 s); the long one is EmoDB speech, one utterance after another.
Aims on 2 cores (issue 14): long p95 <= 1 s, burst p95 <= 3 s. The clients run on the same machine
as the app and take some of its CPU; the load average before the run is printed alongside.
Everything is bounded: each request has `--timeout` seconds, and the run stops after its clips.

`clients` (scripts/load_clients.py) sends real 4.5-6 s clips from N clients at the same moment for
each N of `--levels`, checks every answer against the same clip asked alone, and writes p50/p95,
CPU-seconds a request and the app's peak memory to a results JSON (docs/serving.md reads it).
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def speech_files() -> list[Path]:
    from data.corpora import corpora_root

    files = sorted((corpora_root() / "emodb" / "wav").glob("*.wav"))
    if not files:
        raise SystemExit(f"no EmoDB recordings under {corpora_root()} (set SER_CORPORA)")
    return files


def write_long(path: Path, minutes: float) -> Path:
    """Write `minutes` of EmoDB speech (utterances one after another, repeated if needed) as a 16 kHz WAV."""
    import soundfile as sf

    from data_process import load_audio

    clips, total, files = [], 0, speech_files()
    while total < minutes * 60 * 16_000:
        clips.append(load_audio(files[len(clips) % len(files)]))
        total += len(clips[-1])
    sf.write(path, np.concatenate(clips)[: int(minutes * 60 * 16_000)], 16_000, subtype="PCM_16")
    return path


def start_app(checkpoints: str, log: Path, flags: list[str] | None = None,
              env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start app.py on a free localhost port; return (process, URL) once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log, "w") as handle:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--checkpoints", checkpoints, "--port", str(port),
                                 *(flags or [])],
                                stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"app.py did not start:\n{log.read_text()[-2000:]}")


class Clients:
    """Ready gradio_client sessions (made before any timing) that send clips to /predict."""

    def __init__(self, url: str, count: int, model: str | None, timeout: float):
        from gradio_client import Client

        with ThreadPoolExecutor(8) as pool:
            self.sessions = list(pool.map(lambda _: Client(url, verbose=False, analytics_enabled=False,
                                                           httpx_kwargs={"timeout": timeout}), range(count)))
        self.model, self.timeout = model, timeout

    def ask(self, index: int, path: Path) -> tuple[float, float, str]:
        """Return (submitted at, latency in s, error or "") for one clip sent by session `index`."""
        from gradio_client import handle_file

        args = (handle_file(str(path)),) + ((self.model,) if self.model else ())
        start = time.perf_counter()
        try:
            job = self.sessions[index].submit(*args, api_name="/predict")
            note = job.result(timeout=self.timeout)[0]
            error = "" if "to analyse" in note else f"unexpected answer: {note[:80]}"
        except Exception as err:
            error = f"{type(err).__name__}: {err}"[:200]
        return start, time.perf_counter() - start, error


def cpu_seconds(pid: int | None) -> float:
    """Return the CPU time (user + system, all threads) process `pid` has used so far; 0 when unknown."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def figures(latencies: list[float]) -> str:
    if not latencies:
        return "no requests"
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(np.ceil(0.95 * len(ordered))) - 1)]
    return (f"n {len(ordered):3d}  median {statistics.median(ordered):6.2f} s  p95 {p95:6.2f} s  "
            f"max {ordered[-1]:6.2f} s")


def run(url: str, args: argparse.Namespace, work: Path, pid: int | None = None) -> None:
    files = speech_files()
    short = [files[i] for i in range(0, len(files), max(1, len(files) // 40))][:40]  # spread over speakers
    clients = Clients(url, max(args.burst, args.shorts) + 1, args.model, args.timeout)
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"short clips {min(map(_seconds, short)):.1f}-{max(map(_seconds, short)):.1f} s of EmoDB speech")

    clients.ask(0, short[0])  # warm-up: the first request of a process allocates
    cpu = cpu_seconds(pid)
    alone = [clients.ask(0, short[i % len(short)]) for i in range(args.alone)]
    print(f"alone  {figures([lat for _, lat, err in alone if not err])}{app_cpu(pid, cpu, len(alone))}")

    if args.shorts:
        long = write_long(work / "long.wav", args.long_minutes)
        done = threading.Event()
        cpu = cpu_seconds(pid)
        with ThreadPoolExecutor(args.shorts + 1) as pool:
            long_job = pool.submit(clients.ask, len(clients.sessions) - 1, long)
            long_job.add_done_callback(lambda _: done.set())
            time.sleep(args.lead)
            jobs = []
            for i in range(args.shorts):
                if done.is_set():
                    break
                jobs.append(pool.submit(clients.ask, i, short[i % len(short)]))
                done.wait(args.short_every)
            started, long_s, long_error = long_job.result()
            answers = [job.result() for job in jobs]
        during = [lat for start, lat, err in answers if not err and start < started + long_s]
        print(f"long   {figures(during)}  (sent during the {args.long_minutes:g}-min clip, which took "
              f"{long_s:.1f} s{'; ' + long_error if long_error else ''}){app_cpu(pid, cpu)}")
        _errors(answers)

    if args.burst:
        barrier = threading.Barrier(args.burst)

        def together(i: int):
            barrier.wait()
            return clients.ask(i, short[i % len(short)])

        start, cpu = time.perf_counter(), cpu_seconds(pid)
        with ThreadPoolExecutor(args.burst) as pool:
            answers = list(pool.map(together, range(args.burst)))
        print(f"burst  {figures([lat for _, lat, err in answers if not err])}  ({args.burst} at once, all answered "
              f"after {time.perf_counter() - start:.1f} s){app_cpu(pid, cpu, args.burst)}")
        _errors(answers)


def app_cpu(pid: int | None, before: float, requests: int = 0) -> str:
    """Return ", app CPU N s (M s a request)" since `before`, or "" for an app not started here."""
    if pid is None:
        return ""
    used = cpu_seconds(pid) - before
    return f"; app CPU {used:.1f} s" + (f" ({used / requests:.2f} s a request)" if requests else "")


def _seconds(path: Path) -> float:
    import soundfile as sf

    return sf.info(str(path)).duration


def _errors(answers) -> None:
    errors = [err for _, _, err in answers if err]
    if errors:
        print(f"       {len(errors)} failed, e.g. {errors[0]}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["clients"]:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from load_clients import main as clients

        return clients(argv[1:])
    summary, details = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(description=summary, epilog=details,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running app (default: start app.py on a free localhost port)")
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"), help="for the app started here")
    parser.add_argument("--model", help="checkpoint name to ask for (default: the app's default model)")
    parser.add_argument("--alone", type=int, default=5, help="short clips sent one after another, alone")
    parser.add_argument("--long_minutes", type=float, default=10.0, help="length of the long recording")
    parser.add_argument("--shorts", type=int, default=20, help="short clips sent during the long one (0: skip)")
    parser.add_argument("--short_every", type=float, default=1.0, help="seconds between those short clips")
    parser.add_argument("--lead", type=float, default=1.0, help="seconds between the long clip and the first short")
    parser.add_argument("--burst", type=int, default=50, help="clients sending a short clip at once (0: skip)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a request may take before it counts as failed")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="ser_load_") as tmp:
        work = Path(tmp)
        proc = None
        url = args.url
        if not url:
            proc, url = start_app(args.checkpoints, work / "app.log")
            print(f"app.py started on {url} (log kept until the end: {work / 'app.log'})")
        try:
            run(url, args, work, proc.pid if proc else None)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)


if __name__ == "__main__":
    main()
