"""Speed and scale of the benchmark (issue 4): real-time factor, latency, long clips, training size, cache.

    python -m benchmark.speed                      # every checkpoint under checkpoints/, figures in benchmark/results/speed.json
    python -m benchmark.speed --checkpoints checkpoints/whisper-base-std-linear --reps 5
    python -m benchmark.speed --quick              # one repetition, short clips, tiny training: checks the machinery

Every figure is measured end to end on this machine's CPU, with the baselines (eGeMAPS + SVM,
MFCC/chroma/mel + MLP) in the same process, so each one also comes as a ratio to a baseline. The
real-time factor (RTF) is compute seconds per audio second: decoding a 48 kHz WAV file,
resampling to 16 kHz, features and model. Where checkpoints/ has no checkpoint yet, stand-ins with
the default models' architectures are trained for one epoch on a few files (speed depends on the
architecture, not on how well the weights were trained). The figures go into RECORD/speed.json (the
committed record, benchmark/results, by default); benchmark.report renders them into the document.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# benchmark.common sets OMP_WAIT_POLICY before torch is imported
from benchmark.common import (ROOT, SPEED_BASELINE, SPEED_PARTS, SYSTEMS, WHISPER_BASE, machine, now, paths, read_json,
                              rel, write_json)

DEFAULT_NAME = "whisper-base-std-linear"  # the app's default model (checkpoints/default.txt overrides)
STAND_INS = {  # shipped checkpoint name -> the bench system whose recipe it copies
    "whisper-base-std-linear": "whisper_linear_std_l1",
    "cnn1d-light": "cnn1d_light",
}
TRAINING_HEAD = "whisper_cat_mean"  # the frozen-head recipe whose training time is measured (bench's best)


@dataclass
class SpeedArguments:
    checkpoints: list[str] | None = field(default=None, metadata={
        "help": "Checkpoint folders to time (default: every folder under checkpoints/ with a config.json; "
                "stand-ins of the default models when there is none)."})
    results: str = field(default="runs/bench", metadata={"help": "Results folder: stand-in checkpoints go there."})
    record: str | None = field(default=None, metadata={
        "help": "Record folder: speed.json goes there (default benchmark/results, committed; RESULTS/record with --quick)."})
    doc: str | None = field(default=None, metadata={
        "help": "Document to regenerate afterwards (default docs/benchmarks.md; RESULTS/benchmarks.md with --quick)."})
    quick: bool = field(default=False, metadata={"help": "One repetition, clips up to 12 s, tiny training sizes."})
    reps: int = field(default=3, metadata={"help": "Repetitions of each timing (the median is reported)."})
    clips: int = field(default=12, metadata={"help": "Real clips for the RTF figures, spread over EmoDB, RAVDESS, URDU."})
    lengths: list[float] = field(default_factory=lambda: [1, 5, 30, 60, 300, 600], metadata={
        "help": "Clip lengths (seconds) for inference time and peak memory; lengths >= 300 s are timed once."})
    train_sizes: list[int] = field(default_factory=lambda: [20, 40, 80], metadata={
        "help": "Corpus sizes (train.py --max_files, EmoDB) for training time; 2 epochs each."})
    threads: int = field(default=0, metadata={"help": "torch threads (0: torch's default, one per core)."})
    parts: list[str] = field(default_factory=lambda: list(SPEED_PARTS), metadata={
        "help": f"What to measure: some of {', '.join(SPEED_PARTS)}; the others keep their figures from speed.json."})
    encoder: str = field(default=str(WHISPER_BASE), metadata={"help": "Whisper-base encoder for the stand-ins."})
    cache_dir: str | None = field(default=None, metadata={"help": "Cache for the stand-ins' encoder outputs."})


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------
def _status_kib(key: str) -> int | None:
    try:
        return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith(key + ":")))
    except (OSError, StopIteration):
        return None


def peak_memory(function):
    """Return (function's result, seconds, peak resident memory above the starting one in MiB or None).

    The peak is Linux's VmHWM, reset through /proc/self/clear_refs before the call: it counts
    torch's and numpy's allocations alike (tracemalloc sees only Python's).
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        before = _status_kib("VmRSS")
    except OSError:
        before = None
    start = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    return result, seconds, (peak - before) / 1024 if before is not None and peak is not None else None


def timed(function, reps: int) -> tuple[float, list[float], float]:
    """Return (median seconds, every repetition's seconds, median CPU seconds) of `function()` after a warm-up call.

    CPU seconds are the process's, all threads: on a CPU shared with other jobs they change far less
    than wall time does, and approximate what one dedicated core would take.
    """
    function()
    times, cpu = [], []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), times, statistics.median(cpu)


class BaselineModel:
    """A fitted baseline with the same calls as recognizer.Recognizer: probabilities-free, but end to end."""

    def __init__(self, name: str, cache_dir: str | None):
        from benchmark import baselines
        from data.corpora import read_corpus

        self.name = name
        feature, make_model = baselines.BASELINES[name]
        self.function = baselines.FEATURES[feature]
        rows = read_corpus("emodb")[::8]  # about 67 clips of every class: the fit only has to be realistic in size
        X = baselines.extract([r.path for r in rows], feature, cache_dir=cache_dir, progress=False)
        self.model = make_model(0).fit(X, [r.label for r in rows])

    def predict(self, audio: np.ndarray):
        return self.model.predict(self.function(audio)[None])

    def probabilities(self, clips: list[np.ndarray]):
        return self.model.predict(np.stack([self.function(c) for c in clips]))


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def real_clips(n: int) -> list:
    """Return `n` utterances spread evenly over EmoDB, RAVDESS and URDU (deterministic)."""
    from data.corpora import read_corpus

    chosen = []
    corpora = ["emodb", "ravdess", "urdu"]
    for i, corpus in enumerate(corpora):
        rows = read_corpus(corpus)
        count = n // len(corpora) + (i < n % len(corpora))
        chosen += [rows[j] for j in np.linspace(0, len(rows) - 1, count).astype(int)]
    return chosen


def write_48k(audio: np.ndarray, path: Path) -> Path:
    """Write 16 kHz `audio` as a 48 kHz 16-bit WAV (what a browser or phone records), so decoding includes resampling."""
    import soundfile as sf
    import soxr

    sf.write(str(path), soxr.resample(audio, 16000, 48000), 48000, subtype="PCM_16")
    return path


def long_audio(seconds: float, rows) -> np.ndarray:
    """Return `seconds` of real speech: the clips of `rows` one after another, repeated as needed."""
    from data_process import load_audio

    pieces, total, i = [], 0, 0
    while total < seconds * 16000:
        pieces.append(load_audio(rows[i % len(rows)].path))
        total += len(pieces[-1])
        i += 1
    return np.concatenate(pieces)[: int(seconds * 16000)]


def n_windows(seconds: float, window: float) -> int:
    """Return how many half-overlapping windows Recognizer.windows scores in `seconds` of audio."""
    size, hop, n = int(window * 16000), int(window * 16000) // 2, int(seconds * 16000)
    return 1 if n <= size else len(range(0, n - size, hop)) + 1


def find_checkpoints(given: list[str] | None) -> list[Path]:
    if given:
        return [Path(p) for p in given]
    root = ROOT / "checkpoints"
    return sorted(p for p in root.iterdir() if (p / "config.json").is_file()) if root.is_dir() else []


def default_checkpoint(folders: list[Path]) -> Path | None:
    """Return the app's default: the one named in checkpoints/default.txt, else DEFAULT_NAME, else a Whisper one."""
    pointer = ROOT / "checkpoints" / "default.txt"
    wanted = pointer.read_text().strip() if pointer.is_file() else DEFAULT_NAME
    for folder in folders:
        if folder.name == wanted:
            return folder
    whisper = [f for f in folders if read_json(f / "config.json").get("backbone") == "whisper"]
    return (whisper or folders or [None])[0]


def make_stand_ins(folder: Path, names: list[str], args: SpeedArguments) -> list[Path]:
    """Train one-epoch stand-ins of the shipped checkpoints `names` (their recipes' architectures) into `folder`."""
    import train

    made = []
    for name in names:
        system = STAND_INS[name]
        out = folder / name
        if not (out / "config.json").is_file():
            flags = [args.encoder if f == "{encoder}" else f for f in SYSTEMS[system].flags]
            train.main([*flags, "--corpus", "emodb", "ravdess", "urdu", "--protocol", "all", "--max_files",
                        "12" if args.quick else "40", "--output_dir", str(out), "--disable_tqdm", "true",
                        "--log_level", "warning", "--num_train_epochs", "1", *(["--cache_dir", args.cache_dir]
                                                                               if args.cache_dir else [])])
        made.append(out)
    return made


# ---------------------------------------------------------------------------------------------
# The measurements
# ---------------------------------------------------------------------------------------------
def add_onnx_graphs(models: dict, default: Path | None) -> list[str]:
    """Add the default checkpoint's ONNX graphs, float32 and int8 (quantize.py's default recipe), to `models`;
    return their names. Both run in onnxruntime; int8 recipes target Whisper encoders, so others get none."""
    if default is None or read_json(default / "config.json").get("backbone") != "whisper":
        return []
    from serving import quantize
    from serving.recognizer import OnnxScorer
    from serving.onnx_recognizer import cached_export

    graphs = {f"{default.name} · onnx fp32": cached_export(default),
              f"{default.name} · onnx int8 ({quantize.DEFAULT_RECIPE})": quantize.cached_int8(default)}
    for name, path in graphs.items():
        models[name] = OnnxScorer(path)
    return list(graphs)


def measure_rtf(name: str, model, files: list[Path], reps: int) -> dict:
    """Return single-clip and batched RTF of `model` (Recognizer or BaselineModel) on `files`, end to end."""
    from data_process import load_audio

    audio_s = sum(len(load_audio(f)) for f in files) / 16000
    decode_s, _, _ = timed(lambda: [load_audio(f) for f in files], reps)
    single_s, _, single_cpu = timed(lambda: [model.predict(load_audio(f)) for f in files], reps)
    batched_s, _, batched_cpu = timed(lambda: model.probabilities([load_audio(f) for f in files]), reps)
    return {"system": name, "clips": len(files), "audio_s": audio_s, "single": single_s / audio_s,
            "batched": batched_s / audio_s, "single_cpu": single_cpu / audio_s, "batched_cpu": batched_cpu / audio_s,
            "decode_share": decode_s / single_s}


def measure_training(sizes: list[int], args: SpeedArguments, work: Path) -> list[dict]:
    """Return training wall time at each corpus size: Whisper head (cold and warm cache), CNN light, eGeMAPS + SVM."""
    from benchmark import baselines
    import train
    from data.corpora import read_corpus
    from data_process import load_audio

    emodb = read_corpus("emodb")
    epochs = "1" if args.quick else "2"
    rows = []
    for size in sizes:
        subset = train.subsample(emodb, size, 0)
        audio_s = sum(len(load_audio(r.path)) for r in subset) / 16000
        entry = {"files": len(subset), "audio_s": audio_s, "epochs": int(epochs), "whisper_system": TRAINING_HEAD}
        for system, key in ((TRAINING_HEAD, "whisper"), ("cnn1d_light", "cnn")):
            flags = [args.encoder if f == "{encoder}" else f for f in SYSTEMS[system].flags]
            cache = work / f"cache_{size}"  # fresh: the first run computes every encoder output
            for attempt in ("cold", "warm") if key == "whisper" else ("cold",):
                out = work / f"{system}_{size}_{attempt}"
                start = time.perf_counter()
                train.main([*flags, "--corpus", "emodb", "--protocol", "all", "--max_files", str(size),
                            "--num_train_epochs", epochs, "--output_dir", str(out), "--cache_dir", str(cache),
                            "--disable_tqdm", "true", "--log_level", "warning"])
                entry[f"{key}_{attempt}_s"] = time.perf_counter() - start
                entry[f"{key}_{attempt}_train_s"] = read_json(out / "metrics.json").get("train_seconds")
                shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()  # baseline: features (cold cache) and fit
        X = baselines.extract([r.path for r in subset], "egemaps", cache_dir=work / f"features_{size}", progress=False)
        baselines.make_svm(0).fit(X, [r.label for r in subset])
        entry["egemaps_svm_s"] = time.perf_counter() - start
        rows.append(entry)
        print(f"training with {len(subset)} files: {entry}", flush=True)
    return rows


def measure_finetune(args: SpeedArguments, work: Path) -> dict:
    """Return the CPU throughput (training samples per second) of fine-tuning Whisper-base's top 2 layers."""
    import train

    files = 8 if args.quick else 32
    flags = [args.encoder if f == "{encoder}" else f for f in SYSTEMS["whisper_ft_top2"].flags]
    out = work / "finetune"
    train.main([*flags, "--corpus", "emodb", "--protocol", "all", "--max_files", str(files), "--num_train_epochs", "1",
                "--output_dir", str(out), "--disable_tqdm", "true", "--log_level", "warning"])
    seconds = read_json(out / "metrics.json")["train_seconds"]
    shutil.rmtree(out, ignore_errors=True)
    precision = ("bf16 autocast (CPU), the two layers trained from the frozen layers' cached outputs"
                 if "--bf16" in flags else "float32 (CPU)")
    return {"samples": files, "seconds": seconds, "samples_per_s": files / seconds, "crop_seconds": 4.0,
            "precision": precision}


def length_probe(system: str, checkpoint: str | None, seconds: float, reps: int, clips: int, threads: int,
                 cache_dir: str | None) -> dict:
    """Return the median time of `reps` calls on `seconds` of speech and the most resident memory a call added (MiB).

    Meant to run in a fresh process (run_probe): memory that earlier, larger calls left with the
    allocator would otherwise hide a call's own peak.
    """
    import torch

    from serving.recognizer import Recognizer

    if threads:
        torch.set_num_threads(threads)
    rows = real_clips(clips)
    model = Recognizer(checkpoint) if checkpoint else BaselineModel(system, cache_dir)
    model.predict(long_audio(1.0, rows))  # lazy initialisation is no clip's cost
    audio = long_audio(seconds, rows)
    runs = [peak_memory(lambda: model.predict(audio)) for _ in range(reps)]
    return {"system": system, "seconds": seconds, "time_s": statistics.median(r[1] for r in runs),
            "peak_mib": max((r[2] for r in runs if r[2] is not None), default=None), "reps": reps,
            "windows": n_windows(seconds, model.window_seconds) if checkpoint else 1}


def run_probe(**kwargs) -> dict:
    """Return length_probe(**kwargs) computed in a fresh Python process."""
    import subprocess

    code = f"import json, benchmark.speed as s; print('PROBE', json.dumps(s.length_probe(**{kwargs!r})))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    found = [line for line in done.stdout.splitlines() if line.startswith("PROBE ")]
    if done.returncode or not found:
        raise RuntimeError(f"memory probe {kwargs} failed:\n{done.stderr[-3000:]}")
    return json.loads(found[-1][len("PROBE "):])


def main(argv: list[str] | None = None) -> dict:
    """Measure the chosen parts, merge them into RECORD/speed.json and regenerate the document; return the figures."""
    import torch
    from transformers import HfArgumentParser

    from benchmark.record import QUICK_RECORD, RECORD
    from benchmark.report import write_report
    from data_process import load_audio
    from serving.recognizer import Recognizer

    parser = HfArgumentParser(SpeedArguments, prog="python -m benchmark.speed", description=__doc__.split("\n\n")[0],
                              epilog=__doc__.split("\n\n", 1)[1],
                              formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    (args,) = parser.parse_args_into_dataclasses(sys.argv[1:] if argv is None else argv)
    unknown = sorted(set(args.parts) - set(SPEED_PARTS))
    if unknown:
        raise ValueError(f"--parts {unknown}: one of {', '.join(SPEED_PARTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.reps, args.clips = 1, min(args.clips, 6)
        args.lengths = [x for x in args.lengths if x <= 12] or [1, 5, 12]
        args.train_sizes = [12]
    results, doc = paths(args.results, args.doc, args.quick)
    results.mkdir(parents=True, exist_ok=True)
    record = Path(args.record) if args.record else (results / QUICK_RECORD if args.quick else RECORD)
    record.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m benchmark.speed", *(sys.argv[1:] if argv is None else argv)])
    speed = read_json(record / "speed.json") if set(args.parts) != set(SPEED_PARTS) else {}
    speed.update({"measured_at": now(), "machine": machine(), "threads": torch.get_num_threads(), "reps": args.reps,
                  "quick": args.quick})
    this_run = {"command": command, "parts": args.parts, "threads": torch.get_num_threads(),
                "load_before": list(os.getloadavg())}
    kept = [{**c, "parts": [p for p in c["parts"] if p not in args.parts]} for c in speed.get("commands", [])]
    speed["commands"] = [c for c in kept if c["parts"]] + [this_run]  # each part is credited to its latest command

    folders = find_checkpoints(args.checkpoints)
    missing = [] if args.checkpoints else [n for n in STAND_INS if n not in {f.name for f in folders}]
    stand_ins = make_stand_ins(results / "speed_checkpoints", missing, args)
    folders += stand_ins
    default = default_checkpoint(folders)
    speed["checkpoints"] = {f.name: {"path": rel(f), "backbone": read_json(f / "config.json").get("backbone"),
                                     "stand_in": f in stand_ins, "default": f == default} for f in folders}

    with tempfile.TemporaryDirectory(prefix="ser_speed_") as tmp:
        work = Path(tmp)
        clips = real_clips(args.clips)
        models = {}
        for folder in folders:
            start = time.perf_counter()
            models[folder.name] = Recognizer(folder)
            speed["checkpoints"][folder.name]["load_s"] = time.perf_counter() - start
            speed["checkpoints"][folder.name]["parameters"] = sum(p.numel() for p in models[folder.name].model.parameters())
        onnx_names = add_onnx_graphs(models, default)
        for name in ("egemaps_svm", "mfcc_mlp"):
            models[name] = BaselineModel(name, args.cache_dir)

        if "rtf" in args.parts:
            files = [write_48k(load_audio(r.path), work / f"clip{i:02d}.wav") for i, r in enumerate(clips)]
            speed["rtf"] = []
            for name, model in models.items():
                entry = measure_rtf(name, model, files, args.reps)
                entry["default"] = default is not None and name == default.name
                speed["rtf"].append(entry)
                print(f"RTF {name}: single {entry['single']:.4f}, batched {entry['batched']:.4f}", flush=True)

        if "latency" in args.parts:
            five = write_48k(long_audio(5.0, clips), work / "five_seconds.wav")
            speed["latency_5s"] = []
            for who in ([default.name] if default else []) + onnx_names + [SPEED_BASELINE]:
                median, times, cpu = timed(lambda: models[who].predict(load_audio(five)), max(args.reps, 5))
                speed["latency_5s"].append({"system": who, "median_s": median, "max_s": max(times), "reps": len(times),
                                            "cpu_s": cpu})
                print(f"5 s clip, {who}: {median * 1000:.0f} ms", flush=True)
        del models

        if "lengths" in args.parts:  # each in a fresh process, so one length's allocations do not hide the next's
            speed["lengths"] = []
            for seconds in sorted(args.lengths):
                for who, checkpoint in ([(default.name, str(default))] if default else []) + [(SPEED_BASELINE, None)]:
                    entry = run_probe(system=who, checkpoint=checkpoint, seconds=seconds, clips=args.clips,
                                      reps=1 if seconds >= 300 else args.reps, threads=args.threads,
                                      cache_dir=args.cache_dir)
                    speed["lengths"].append(entry)
                    print(f"{seconds:g} s audio, {who}: {entry['time_s']:.2f} s, peak +{entry['peak_mib']} MiB", flush=True)

        if "training" in args.parts:
            speed["training"] = measure_training(args.train_sizes, args, work)
        if "finetune" in args.parts:
            speed["finetune"] = measure_finetune(args, work)
    speed["gpu"] = (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    speed["load_after"] = this_run["load_after"] = list(os.getloadavg())
    this_run["at"] = now()
    write_json(record / "speed.json", speed)
    write_report(record, doc)
    print(f"wrote {record / 'speed.json'} and {doc}")
    return speed


if __name__ == "__main__":
    main()
