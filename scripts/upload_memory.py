"""Upload a small file that holds hours of low-bitrate Opus to the app and print its resident memory meanwhile.

    python scripts/upload_memory.py                    # 3 h of speech in a ~10 MB WebM, app started on a free port
    python scripts/upload_memory.py --hours 1 --format ogg --url http://127.0.0.1:7860/ --pid 12345

The file is EmoDB speech encoded once at 6 kbit/s and repeated by stream copy (ffmpeg), so making
it takes seconds. The app must refuse it for its length (--max_seconds, 10 min by default) without
decoding it all: the printed peak is the app's resident set (and its ffmpeg children's) sampled
every 20 ms from the upload to the answer; "held" is how long the request took. The upload must be
gone from Gradio's upload folder afterwards.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def long_opus(path: Path, hours: float, bitrate: str = "6k") -> Path:
    """Write `hours` of real speech as low-bitrate Opus (WebM or Ogg by `path`'s suffix) and return `path`."""
    from load_test import speech_files

    with tempfile.TemporaryDirectory() as tmp:
        seed = Path(tmp) / f"seed{path.suffix}"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(speech_files()[0]), "-ac", "1", "-c:a", "libopus",
                        "-b:a", bitrate, "-application", "voip", str(seed)], check=True)
        seconds = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                                        str(seed)], capture_output=True, text=True, check=True).stdout)
        listing = Path(tmp) / "list.txt"
        listing.write_text(f"file '{seed}'\n" * int(hours * 3600 / seconds + 1))
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                        "-c", "copy", str(path)], check=True)
    return path


def resident_mb(pid: int) -> float:
    """Return the resident memory of process `pid` and of its children (an ffmpeg decoding), in MB."""
    total = 0
    for proc in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{proc}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        found = [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                 for c in (t / "children").read_text().split()]
    except FileNotFoundError:
        return []
    return found + [g for c in found for g in _children(c)]


def measure(url: str, pid: int, path: Path) -> dict:
    """Upload `path` to /predict while sampling the app's memory; return what was seen."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, analytics_enabled=False)
    before, peak, stop = resident_mb(pid), [0.0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], resident_mb(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        answer = client.predict(handle_file(str(path)), api_name="/predict")[0]
    except Exception as err:
        answer = str(err)
    held = time.perf_counter() - start
    stop.set()
    sampler.join()
    from ui.uploads import upload_folder

    left = list(upload_folder().glob(f"*/{path.name}"))
    return {"before": before, "peak": peak[0], "after": resident_mb(pid), "held": held, "answer": answer, "left": left}


def main(argv: list[str] | None = None) -> None:
    summary, details = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(description=summary, epilog=details,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=3.0, help="length of the Opus file")
    parser.add_argument("--format", choices=["webm", "ogg"], default="webm", help="container of the Opus stream")
    parser.add_argument("--url", help="a running app (then --pid is needed); default: start app.py here")
    parser.add_argument("--pid", type=int, help="the running app's process id, for its memory")
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"), help="for the app started here")
    args = parser.parse_args(argv)
    if args.url and not args.pid:
        parser.error("--url needs --pid (the app's process, whose memory is measured)")

    from load_test import start_app

    with tempfile.TemporaryDirectory(prefix="ser_memory_") as tmp:
        path = long_opus(Path(tmp) / f"hours-{os.getpid()}.{args.format}", args.hours)
        print(f"{path.name}: {args.hours:g} h of Opus speech in {path.stat().st_size / 1e6:.1f} MB")
        proc = None
        url, pid = args.url, args.pid
        if not url:
            proc, url = start_app(args.checkpoints, Path(tmp) / "app.log")
            pid = proc.pid
        try:
            seen = measure(url, pid, path)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    print(f"app resident memory: {seen['before']:.0f} MB before, peak {seen['peak']:.0f} MB during, "
          f"{seen['after']:.0f} MB after; request held {seen['held']:.1f} s")
    print(f"answer: {seen['answer'][:200]}")
    print("upload deleted from the server" if not seen["left"] else f"upload LEFT on the server: {seen['left']}")


if __name__ == "__main__":
    main()
