"""Speed and scale of the benchmark (issue 4): real-time factor, latency, long clips, training size, cache.

    python bench_speed.py                          # every checkpoint under checkpoints/, results in runs/bench/speed.json
    python bench_speed.py --checkpoints checkpoints/whisper-base-mean --reps 5
    python bench_speed.py --quick                  # one repetition, short clips, tiny training: checks the machinery

Every figure is measured end to end on this machine's CPU, with the baselines (eGeMAPS + SVM,
MFCC/chroma/mel + MLP) in the same process, so each one also comes as a ratio to a baseline. The
real-time factor (RTF) is compute seconds per audio second: decoding a 48 kHz WAV file,
resampling to 16 kHz, features and model. Where checkpoints/ has no checkpoint yet, stand-ins with
the default models' architectures are trained for one epoch on a few files (speed depends on the
architecture, not on how well the weights were trained).
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

from bench import ROOT, SYSTEMS, WHISPER_BASE, machine, now, read_json, rel, write_json  # sets OMP_WAIT_POLICY first

DEFAULT_NAME = "whisper-base-mean"  # the app's default model (checkpoints/default.txt overrides)
STAND_INS = {  # shipped checkpoint name -> the bench system whose recipe it copies
    "whisper-base-mean": "whisper_lw_mean",
    "cnn1d-light": "cnn1d_light",
}
BASELINE = "egemaps_svm"  # the ratios' reference
TRAINING_HEAD = "whisper_cat_mean"  # the frozen-head recipe whose training time is measured (bench's best)
PARTS = ("rtf", "latency", "lengths", "training", "finetune")


@dataclass
class SpeedArguments:
    checkpoints: list[str] | None = field(default=None, metadata={
        "help": "Checkpoint folders to time (default: every folder under checkpoints/ with a config.json; "
                "stand-ins of the default models when there is none)."})
    results: str = field(default="runs/bench", metadata={"help": "Results folder: speed.json goes there."})
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
    parts: list[str] = field(default_factory=lambda: list(PARTS), metadata={
        "help": f"What to measure: some of {', '.join(PARTS)}; the others keep their figures from speed.json."})
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
    """A fitted baseline with the same calls as infer.Recognizer: probabilities-free, but end to end."""

    def __init__(self, name: str, cache_dir: str | None):
        import baselines
        from corpora import read_corpus

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
    from corpora import read_corpus

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
    import quantize
    from infer import OnnxScorer
    from onnx_recognizer import cached_export

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
    import baselines
    import train
    from corpora import read_corpus
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
    return {"samples": files, "seconds": seconds, "samples_per_s": files / seconds, "crop_seconds": 4.0,
            "precision": "float32 (CPU)"}


def length_probe(system: str, checkpoint: str | None, seconds: float, reps: int, clips: int, threads: int,
                 cache_dir: str | None) -> dict:
    """Return the median time of `reps` calls on `seconds` of speech and the most resident memory a call added (MiB).

    Meant to run in a fresh process (run_probe): memory that earlier, larger calls left with the
    allocator would otherwise hide a call's own peak.
    """
    import torch

    from infer import Recognizer

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

    code = f"import json, bench_speed; print('PROBE', json.dumps(bench_speed.length_probe(**{kwargs!r})))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    found = [line for line in done.stdout.splitlines() if line.startswith("PROBE ")]
    if done.returncode or not found:
        raise RuntimeError(f"memory probe {kwargs} failed:\n{done.stderr[-3000:]}")
    return json.loads(found[-1][len("PROBE "):])


def main(argv: list[str] | None = None) -> dict:
    """Measure the chosen parts, merge them into RESULTS/speed.json and regenerate the document; return the figures."""
    import torch
    from transformers import HfArgumentParser

    import bench
    from data_process import load_audio
    from infer import Recognizer

    parser = HfArgumentParser(SpeedArguments, description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                              formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    (args,) = parser.parse_args_into_dataclasses(sys.argv[1:] if argv is None else argv)
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        raise ValueError(f"--parts {unknown}: one of {', '.join(PARTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.reps, args.clips = 1, min(args.clips, 6)
        args.lengths = [x for x in args.lengths if x <= 12] or [1, 5, 12]
        args.train_sizes = [12]
    results = Path(args.results)
    doc = Path(args.doc or (results / "benchmarks.md" if args.quick else ROOT / "docs" / "benchmarks.md"))
    results.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python bench_speed.py", *(sys.argv[1:] if argv is None else argv)])
    speed = read_json(results / "speed.json") if set(args.parts) != set(PARTS) else {}
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
            for who in ([default.name] if default else []) + onnx_names + [BASELINE]:
                median, times, cpu = timed(lambda: models[who].predict(load_audio(five)), max(args.reps, 5))
                speed["latency_5s"].append({"system": who, "median_s": median, "max_s": max(times), "reps": len(times),
                                            "cpu_s": cpu})
                print(f"5 s clip, {who}: {median * 1000:.0f} ms", flush=True)
        del models

        if "lengths" in args.parts:  # each in a fresh process, so one length's allocations do not hide the next's
            speed["lengths"] = []
            for seconds in sorted(args.lengths):
                for who, checkpoint in ([(default.name, str(default))] if default else []) + [(BASELINE, None)]:
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
    write_json(results / "speed.json", speed)
    bench.write_report(results, doc)
    print(f"wrote {results / 'speed.json'} and {doc}")
    return speed


# ---------------------------------------------------------------------------------------------
# The document's speed section
# ---------------------------------------------------------------------------------------------
def _ratio(ours: float | None, base: float | None) -> str:
    return f"{ours / base:.2f}×" if ours and base else "–"


def speed_chart(speed: dict, path: Path) -> Path | None:
    """Write RTF per system and time / peak memory against clip length to `path`; return it (None without figures)."""
    if not speed.get("rtf"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if speed.get("lengths") else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), squeeze=False)
    ax = axes[0, 0]
    names = [r["system"] for r in speed["rtf"]]
    x = np.arange(len(names))
    ax.bar(x - 0.2, [r["single"] for r in speed["rtf"]], 0.4, label="single clip")
    ax.bar(x + 0.2, [r["batched"] for r in speed["rtf"]], 0.4, label="batched")
    ax.axhline(0.01, color="red", linestyle="--", linewidth=0.8, label="aim 0.01")
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("RTF (compute s / audio s)")
    ax.legend(fontsize=7)
    if panels > 1:
        for r_key, axis, label in (("time_s", axes[0, 1], "inference time (s)"), ("peak_mib", axes[0, 2], "peak memory added (MiB)")):
            for system in dict.fromkeys(r["system"] for r in speed["lengths"]):
                rows = [r for r in speed["lengths"] if r["system"] == system and r.get(r_key) is not None]
                axis.plot([r["seconds"] for r in rows], [max(r[r_key], 1e-2) for r in rows], marker="o", label=system)
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_xlabel("clip length (s)")
            axis.set_ylabel(label)
            axis.grid(alpha=0.3, which="both")
            axis.legend(fontsize=7)
    fig.suptitle(f"Speed on this CPU ({speed['threads']} torch thread(s))", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def report_lines(speed: dict, png: Path | None = None) -> list[str]:
    """Return the Markdown of the speed-and-scale section from speed.json's figures (and its chart `png`)."""
    lines = ["## Speed and scale", ""]
    if not speed:
        return lines + ["Not measured yet: run `python bench_speed.py` (or `python bench.py`, which runs it after "
                        "the accuracy cells).", "", "## GPU", "", "No GPU was lent to this task: GPU figures and "
                        "full fine-tuning throughput (bf16) are not measured.", ""]
    m = speed["machine"]
    stand_ins = [n for n, c in speed["checkpoints"].items() if c.get("stand_in")]
    commands = speed.get("commands") or [{"command": speed.get("command"), "parts": list(PARTS),
                                          "load_before": m["load_average"], "load_after": speed["load_after"]}]
    lines += [f"Median of {speed['reps']} repetition(s) after a warm-up call, torch with {speed['threads']} thread(s), "
              f"on {m['usable_cores']} cores; measured by:", "", "| command | figures | finished | load average before / after |",
              "|---|---|---|---|"]
    lines += [f"| `{c['command']}` | {', '.join(c['parts'])} | {c.get('at', '')} | "
              f"{c['load_before'][0]:.1f} / {c['load_after'][0]:.1f} |" for c in commands]
    lines.append("")
    busy = max(max(c["load_before"][0], c["load_after"][0]) for c in commands) > m["usable_cores"]
    if speed.get("quick"):
        lines += ["> **Quick run**: one repetition, short clips, tiny training sets; only checks the machinery.", ""]
    if busy:
        lines += ["> The CPU was shared with other jobs while these figures were taken (load average above the core "
                  "count): they are upper bounds; an idle machine is faster.", ""]
    if speed["threads"] < m["usable_cores"]:
        lines += [f"> torch ran with {speed['threads']} thread(s) (`--threads`): on cores already busy with other "
                  "jobs, one torch thread per core makes the threads wait on each other (with other jobs running, a "
                  "2 s clip once took 2.5 s with 2 threads and 0.1 s with 1 here). `python bench_speed.py` on an idle machine, one thread per core, "
                  "gives the 2-core figures the RTF aim refers to.", ""]
    if stand_ins:
        lines += [f"> `checkpoints/` had no checkpoint yet: {', '.join(stand_ins)} are one-epoch stand-ins with the "
                  "default models' architectures (same backbone, head and sizes; speed does not depend on how well "
                  "the weights are trained).", ""]
    if png:
        lines += [f"![RTF per system; inference time and memory against clip length]({png.name})", ""]
    base = {r["system"]: r for r in speed.get("rtf", [])}.get(BASELINE, {})
    lines += ["### Real-time factor (compute seconds per audio second; lower is faster)", "",
              f"End to end on {speed['rtf'][0]['clips']} real clips ({speed['rtf'][0]['audio_s']:.1f} s of speech from "
              "EmoDB, RAVDESS and URDU) stored as 48 kHz 16-bit WAV: decoding, resampling to 16 kHz, features, "
              "model. Single: one clip at a time (`Recognizer.predict`); batched: all clips through "
              "`Recognizer.probabilities` (batches of 8 of similar length). RTF is wall-clock; CPU-s per audio s "
              "counts the process's CPU time over all its threads, which other jobs on the machine disturb less. "
              "Ratio: this system's RTF over eGeMAPS + SVM's (above 1: slower). Rows `· onnx fp32` and `· onnx "
              "int8` are the default model's ONNX graph (export.py) in onnxruntime, as exported and quantised by "
              "quantize.py's default recipe; its drift from float32 is in the checkpoint's int8.json.", "",
              "| system | parameters | RTF single | CPU-s per audio s | RTF batched | CPU-s per audio s | decode share "
              "| single vs eGeMAPS+SVM | batched vs eGeMAPS+SVM |", "|---|---|---|---|---|---|---|---|---|"]
    for r in speed["rtf"]:
        params = speed["checkpoints"].get(r["system"], {}).get("parameters")
        lines.append(f"| `{r['system']}`{' (default)' if r.get('default') else ''} | "
                     f"{f'{params / 1e6:.1f} M' if params else '–'} | {r['single']:.4f} | {_num(r.get('single_cpu'))} | "
                     f"{r['batched']:.4f} | {_num(r.get('batched_cpu'))} | {100 * r['decode_share']:.0f} % | "
                     f"{_ratio(r['single'], base.get('single'))} | {_ratio(r['batched'], base.get('batched'))} |")
    lines.append("")
    if speed.get("latency_5s"):
        lat = {r["system"]: r for r in speed["latency_5s"]}
        loads = {n: c.get("load_s") for n, c in speed["checkpoints"].items()}
        lines += ["### App latency: one 5 s clip, file to probabilities", "",
                  "| system | median | slowest | CPU time | vs eGeMAPS+SVM | model load (once) |", "|---|---|---|---|---|---|"]
        for r in speed["latency_5s"]:
            lines.append(f"| `{r['system']}` | {1000 * r['median_s']:.0f} ms | {1000 * r['max_s']:.0f} ms | "
                         + (f"{1000 * r['cpu_s']:.0f} ms | " if r.get("cpu_s") is not None else "– | ") +
                         f"{_ratio(r['median_s'], lat.get(BASELINE, {}).get('median_s'))} | "
                         + (f"{loads[r['system']]:.1f} s |" if loads.get(r["system"]) else "– |"))
        lines.append("")
    if speed.get("lengths"):
        by = {}
        for r in speed["lengths"]:
            by.setdefault(r["seconds"], {})[r["system"]] = r
        ours = next(s for s in by[min(by)] if s != BASELINE) if any(s != BASELINE for s in by[min(by)]) else None
        lines += ["### Inference time and peak memory against clip length", "",
                  f"`{ours}` scores audio longer than 10 s in half-overlapping 10 s windows (`Recognizer.predict`, "
                  "8 windows a batch), so every second is encoded about twice and its RTF beyond 10 s is about twice "
                  "the short-clip one; time grows linearly, memory levels off. eGeMAPS + SVM takes the whole clip at "
                  "once. Each row is measured in a fresh process (after a 1 s warm-up call): peak memory is the rise "
                  "of the peak resident set (Linux VmHWM, reset before the call) over the resident size before it, "
                  "the model and the audio excluded. Clips are real speech, concatenated; lengths of 300 s and more "
                  "are timed once.", "",
                  f"| clip | `{ours}` time | RTF | peak memory | eGeMAPS+SVM time | peak memory | time ratio |",
                  "|---|---|---|---|---|---|---|"]
        for seconds, row in sorted(by.items()):
            o, b = row.get(ours, {}), row.get(BASELINE, {})
            lines.append(f"| {seconds:g} s | {o.get('time_s', 0):.2f} s | {o.get('time_s', 0) / seconds:.4f} | "
                         f"{_mib(o.get('peak_mib'))} | {b.get('time_s', 0):.2f} s | {_mib(b.get('peak_mib'))} | "
                         f"{_ratio(o.get('time_s'), b.get('time_s'))} |")
        lines.append("")
    if speed.get("training"):
        head = speed["training"][0].get("whisper_system", "whisper_lw_mean")  # older results: the recipe of then
        flags = SYSTEMS[head].flags
        epochs = int(flags[flags.index("--num_train_epochs") + 1])
        lines += ["### Training time against corpus size", "",
                  f"EmoDB subsets (`train.py --max_files N --protocol all`), {speed['training'][0]['epochs']} epoch(s), "
                  "wall time of the whole `train.main` call (loading, encoder outputs, training, saving). Whisper "
                  f"head: `{head}` with an empty cache (cold: the frozen encoder runs once per clip) and "
                  "again with that cache filled (warm). The cache speed-up is cold over warm.", "",
                  "| files | audio | Whisper head, cold cache | warm cache | cache speed-up | CNN light | eGeMAPS+SVM "
                  "(features + fit) | Whisper cold vs eGeMAPS+SVM |", "|---|---|---|---|---|---|---|---|"]
        for r in speed["training"]:
            lines.append(f"| {r['files']} | {r['audio_s']:.0f} s | {r['whisper_cold_s']:.1f} s | {r['whisper_warm_s']:.1f} s "
                         f"| {r['whisper_cold_s'] / r['whisper_warm_s']:.1f}× | {r['cnn_cold_s']:.1f} s | "
                         f"{r['egemaps_svm_s']:.1f} s | {_ratio(r['whisper_cold_s'], r['egemaps_svm_s'])} |")
        big = speed["training"][-1]
        per_clip = (big["whisper_cold_s"] - big["whisper_warm_s"]) / big["files"]
        lines += ["", f"Derived: the encoder costs about {per_clip:.2f} s per clip here, so without the cache every "
                  f"epoch over {big['files']} clips would add about {per_clip * big['files']:.0f} s, and the "
                  f"`{head}` recipe's {epochs} epochs about {epochs * per_clip * big['files']:.0f} s instead of the one "
                  "cold pass.", ""]
    if speed.get("finetune"):
        f = speed["finetune"]
        lines += ["### Fine-tuning throughput", "",
                  f"Whisper-base with its top 2 layers trained (`whisper_ft_top2`), {f['crop_seconds']:g} s crops, "
                  f"{f['precision']}: **{f['samples_per_s']:.2f} training samples/s** ({f['samples']} samples in "
                  f"{f['seconds']:.1f} s).", ""]
    lines += ["## GPU", ""]
    lines += [f"Measured on {speed['gpu']}." if speed.get("gpu") else
              "No GPU was lent to this task (the device tool offered none), so the GPU figures, full fine-tuning "
              "(`whisper_ft_full`) and bf16 fine-tuning throughput are not measured. On a machine with one, "
              "`python bench.py --systems whisper_ft_full` and `python bench_speed.py` produce them.", ""]
    return lines


def _num(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "–"


def _mib(value: float | None) -> str:
    return f"{value:.0f} MiB" if value is not None else "n/a"


if __name__ == "__main__":
    main()
