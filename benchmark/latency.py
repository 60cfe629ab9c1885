"""Print the app's server-side time from an uploaded 5 s clip to its probabilities, for each checkpoint.

    python -m benchmark.latency                # checkpoints/, 5 s of real EmoDB speech as a 48 kHz WAV
    python -m benchmark.latency --checkpoints runs/x --clip my.wav --repeats 20

What is timed is what the app does per request (ui.callbacks.analyse): decode the uploaded file,
resample it to 16 kHz, the silence and voice-activity checks, and the model. Model loading is
timed apart (it happens once per model). Wall-clock times on a shared machine vary with its load,
printed alongside; the CPU seconds per request (all threads) vary less.

The second table times the live microphone (ui.live.update): the page streams 1 s chunks of
48 kHz audio and each update scores the last 4 s. An update must cost well under the second
between chunks for the page to keep up in real time; "share" is that cost as a part of it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as app.py serves (set before torch is imported)
ROOT = Path(__file__).resolve().parents[1]  # the project root
sys.path.insert(0, str(ROOT))


def five_seconds_of_speech(seconds: float) -> np.ndarray:
    """Return `seconds` of real speech at 16 kHz: EmoDB utterances of one speaker, one after another."""
    from data.corpora import corpora_root
    from data_process import load_audio

    files = sorted((corpora_root() / "emodb" / "wav").glob("03a0*.wav"))
    if not files:
        raise SystemExit(f"no EmoDB recordings under {corpora_root()}: pass --clip FILE (real speech)")
    clips, total = [], 0
    for path in files:
        clips.append(load_audio(path))
        total += len(clips[-1])
        if total >= seconds * 16_000:
            break
    return np.concatenate(clips)[: int(seconds * 16_000)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmark.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"), help="folder of checkpoint folders")
    parser.add_argument("--clip", help="audio file to time (default: 5 s of EmoDB speech, written as 48 kHz WAV)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the default clip")
    parser.add_argument("--repeats", type=int, default=10, help="timed requests per checkpoint (after one warm-up)")
    parser.add_argument("--live_seconds", type=int, default=20, help="seconds of speech streamed to the live microphone")
    args = parser.parse_args(argv)

    import soundfile as sf
    import soxr
    import torch

    import serving.recognizer  # noqa: F401  (imported before timing, so the first load time is the checkpoint's own)
    from ui import callbacks
    from ui.voice import Voice
    from ui.model_store import ModelStore, format_ua

    store = ModelStore(args.checkpoints)
    if not store.checkpoints:
        raise SystemExit(f"no checkpoints in {args.checkpoints}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.clip:
            clip = args.clip
        else:  # what a browser uploads: 48 kHz 16-bit WAV
            clip = str(Path(tmp) / "speech48k.wav")
            speech = soxr.resample(five_seconds_of_speech(args.seconds), 16_000, 48_000)
            sf.write(clip, speech, 48_000, subtype="PCM_16")
        info = sf.info(clip)
        print(f"clip: {clip if args.clip else 'EmoDB speech'} ({info.duration:.2f} s at {info.samplerate} Hz); "
              f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load average "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print(f"{'checkpoint':32s} {'UA':>6s} {'load s':>7s} {'median s':>9s} {'p90 s':>7s} {'min s':>7s} "
              f"{'CPU s':>6s}  decode+checks / model (median s)")
        for name, info in store.checkpoints.items():
            start = time.perf_counter()
            try:
                store.get(name)
            except Exception as err:
                print(f"{name:32s} {format_ua(info.ua):>6s}  failed to load: {type(err).__name__}: {err}")
                continue
            load_s = time.perf_counter() - start
            callbacks.analyse(clip, name, store, voice=Voice())  # warm-up: first-call allocations
            total, prep, cpu = [], [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                audio = callbacks.read_audio(clip)
                callbacks.check_speech(audio)
                prep.append(time.perf_counter() - t0)
                t0, c0 = time.perf_counter(), time.process_time()
                callbacks.analyse(clip, name, store, voice=Voice())  # as the page: with its calibration
                total.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            median = statistics.median(total)
            p90 = sorted(total)[min(len(total) - 1, int(0.9 * len(total)))]
            print(f"{name:32s} {format_ua(info.ua):>6s} {load_s:7.2f} {median:9.3f} {p90:7.3f} {min(total):7.3f} "
                  f"{statistics.median(cpu):6.3f}  {statistics.median(prep):.3f} / {median - statistics.median(prep):.3f}")
        if args.live_seconds:
            time_live(store, Path(tmp), args.live_seconds)


def time_live(store, folder: Path, seconds: int) -> None:
    """Print, per checkpoint, the server time of one live-microphone update (a 1 s chunk in, the last 4 s scored)."""
    import soundfile as sf
    import soxr

    from ui import live
    from ui.voice import Voice
    from ui.model_store import format_ua

    speech = soxr.resample(five_seconds_of_speech(seconds), 16_000, 48_000)
    print(f"\nlive microphone: {seconds} updates of {live.LIVE_EVERY_S:g} s (48 kHz WAV chunks), each scoring the last "
          f"{live.LIVE_WINDOW_S:g} s")
    print(f"{'checkpoint':32s} {'UA':>6s} {'median s':>9s} {'p90 s':>7s} {'max s':>7s} {'CPU s':>6s} {'share':>6s}")
    for name, info in store.checkpoints.items():
        if not store.is_loaded(name):
            continue
        state, total, cpu, voice = None, [], [], Voice()  # a user's page: adapting, nothing learnt yet
        for i in range(seconds):
            (folder / f"chunk{i}").mkdir(exist_ok=True)
            chunk = folder / f"chunk{i}" / "audio.wav"  # written as the page streams it; read, not deleted (not an upload)
            sf.write(chunk, speech[i * 48_000:(i + 1) * 48_000], 48_000, subtype="PCM_16")
            t0, c0 = time.perf_counter(), time.process_time()
            state, *_ = live.update(str(chunk), name, state, voice, store)
            total.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        steady = total[int(live.LIVE_WINDOW_S):] or total  # once the window is full
        ordered = sorted(steady)
        print(f"{name:32s} {format_ua(info.ua):>6s} {statistics.median(steady):9.3f} "
              f"{ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]:7.3f} {ordered[-1]:7.3f} "
              f"{statistics.median(cpu[int(live.LIVE_WINDOW_S):] or cpu):6.3f} "
              f"{statistics.median(steady) / live.LIVE_EVERY_S:6.0%}")


if __name__ == "__main__":
    main()
