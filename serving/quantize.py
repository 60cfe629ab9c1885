"""int8 versions of a checkpoint's ONNX export (onnxruntime), and whether they may stand in for float32.

    python -m serving.quantize --checkpoint checkpoints/whisper-base-std-linear             # measure; write CHECKPOINT/int8.json
    python -m serving.quantize --checkpoint checkpoints/whisper-base-std-linear --recipe dynamic --clips 300
    python -m serving.quantize --checkpoint checkpoints/whisper-base-std-linear --output whisper-int8.onnx --no-measure

A recipe (a key of RECIPES) names the matrix products that become int8 and those kept float32: onnxruntime's
dynamic quantisation (weights per output channel, activations quantised per call) or static QDQ (activation
ranges calibrated once on real clips); the log-mel front end and the classifier head stay float32.
benchmark/int8_drift.py measured which parts lose accuracy (benchmark/results/int8_drift.json): layer 3's fc2 alone
carries most of it, the first layer and the other fc2 most of the rest; the default recipe keeps layers 0-2 and every
fc2 float32. The float32 graph is export.py's, cached as
infer.py --runtime onnx caches it; the int8 graph is cached beside it.

The drift is measured against that float32 graph on real clips of the corpora the checkpoint was trained on (evenly
spread, the same clips every run), in two sets: the checkpoint's own head (clips it was trained on), and for each
corpus a head fitted on the other corpora only (new voices and a new language to it), and in two modes: alone and
adapted (each speaker's own statistics). A recipe that agrees on at least 99 % of clips and loses at most 0.5 point
of UA in every set and mode meets the bound; it is used by default if it also spends at least 10 % less CPU time than
float32 (int8 that is no faster is no gain). CHECKPOINT/int8.json records the figures and the verdict, tied to the
checkpoint's weights and to the digest of the int8 graph's own weights: `python app.py` and `infer.py`
(--precision auto, the default) run the int8 graph only for a checkpoint whose int8.json says so and only if the
graph that would run is the one measured; --precision fp32 opts out, --precision int8 forces it.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent  # the project folder
AGREEMENT_MIN = 0.99  # top-1 agreement with float32 on real clips
UA_DROP_MAX = 0.005   # UA lost against float32 on the same clips
CPU_SHARE_MAX = 0.9   # int8 is used by default only if it needs at most this share of float32's CPU time
VERDICT = "int8.json"
PRECISIONS = ("auto", "fp32", "int8")


@dataclass(frozen=True)
class Recipe:
    scopes: str  # regular expression over the module path (torch's name scope) of each MatMul / Gemm made int8
    text: str
    keep: str = ""  # regular expression over module paths kept float32 although `scopes` names them
    static: bool = False  # QDQ: activation scales calibrated once on real clips (else: measured on each call)


_LAYER = r"model\.backbone\.encoder\.layers\.\d+\."
_LINEAR = _LAYER + r"(self_attn\.(q|k|v|out)_proj|fc1|fc2)$"
RECIPES = {
    "dynamic": Recipe(_LINEAR, "every linear layer of the encoder (attention projections and both feed-forward layers)"),
    "dynamic_ffn": Recipe(_LAYER + r"(fc1|fc2)$", "the encoder's feed-forward layers"),
    "dynamic_fc1": Recipe(_LAYER + r"fc1$", "the first feed-forward layer of each encoder layer"),
    # benchmark/int8_drift.py's sensitivity: layer 3's fc2 alone carries most of the drift, the first layer and the
    # other fc2 most of the rest; only dynamic_but_l012_fc2 held the bound on both halves of the 1200 sampled clips
    "dynamic_but_l0_l3fc2": Recipe(_LINEAR, "every linear layer of the encoder but layer 0's and layer 3's fc2 (kept float32)",
                                   keep=r"model\.backbone\.encoder\.layers\.(0\.|3\.fc2$)"),
    "dynamic_but_l0_fc2": Recipe(_LINEAR, "every linear layer of the encoder but layer 0's and every fc2 (kept float32)",
                                 keep=r"model\.backbone\.encoder\.layers\.(0\.|\d+\.fc2$)"),
    "dynamic_but_l012_fc2": Recipe(_LINEAR, "every linear layer of the encoder but layers 0-2's and every fc2 "
                                            "(kept float32)", keep=r"model\.backbone\.encoder\.layers\.([012]\.|\d+\.fc2$)"),
    "static": Recipe(_LINEAR, "every linear layer of the encoder, static QDQ: activation scales calibrated on "
                              f"real clips", static=True),
}
DEFAULT_RECIPE = "dynamic_but_l012_fc2"  # the one measured to hold (benchmark/results/int8_drift.json)
CALIBRATION_CLIPS = 40  # real clips a static recipe's activation ranges are calibrated on (none of them measured)


def weights_digest(checkpoint: Path) -> str:
    """Return the digest export's cache uses: config and weights together."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        digest.update((Path(checkpoint) / name).read_bytes())
    return digest.hexdigest()[:16]


def graph_digest(path: str | Path) -> str:
    """Return the digest of an ONNX graph's weights (every initializer, by name): what the drift was measured on."""
    import onnx
    from onnx import numpy_helper

    digest = hashlib.sha256()
    for init in sorted(onnx.load(str(path)).graph.initializer, key=lambda t: t.name):
        digest.update(init.name.encode())
        digest.update(numpy_helper.to_array(init).tobytes())
    return digest.hexdigest()[:16]


def scoped_nodes(graph, pattern: str, keep: str = "") -> list[str]:
    """Return the names of the MatMul / Gemm nodes with a constant weight whose module path matches `pattern`
    (and not `keep`)."""
    constants = {init.name for init in graph.graph.initializer}
    chosen = []
    for node in graph.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or not any(i in constants for i in node.input):
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))  # a Python list, as torch writes it
        module = scopes[-2] if len(scopes) >= 2 else ""  # the last scope is the op itself
        if re.search(pattern, module) and not (keep and re.search(keep, module)):
            chosen.append(node.name)
    return chosen


class _Clips:
    """onnxruntime's CalibrationDataReader over real clips, one clip per call (the graph takes any length)."""

    def __init__(self, clips: list[np.ndarray]):
        self.clips = iter(clips)

    def get_next(self) -> dict | None:
        clip = next(self.clips, None)
        return None if clip is None else {"waveform": np.asarray(clip, np.float32)[None]}


def calibration_clips(checkpoint: Path, count: int = CALIBRATION_CLIPS) -> list[np.ndarray]:
    """Return `count` real clips of the checkpoint's corpora, none of those the drift is measured on, cut to 10 s."""
    from data_process import load_audio

    return [load_audio(row.path)[:160_000] for row in real_clips(checkpoint, count, part=1)]


def quantize(fp32: Path, output: Path, recipe: str | Recipe = DEFAULT_RECIPE,
             calibration: list[np.ndarray] | None = None) -> Path:
    """Write the int8 graph of export.py's float32 graph `fp32` by `recipe`; return `output`.

    A static recipe calibrates on `calibration` (real clips), by default calibration_clips() of the checkpoint the
    graph was exported from (its metadata).
    """
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name, recipe = (recipe, RECIPES[recipe]) if isinstance(recipe, str) else ("custom", recipe)
    source = {p.key: p.value for p in onnx.load(str(fp32), load_external_data=False).metadata_props}
    nodes = scoped_nodes(onnx.load(str(fp32)), recipe.scopes, recipe.keep)  # before pre-processing drops the scopes
    if not nodes:
        raise ValueError(f"recipe {name!r} finds no layer to quantise in {fp32.name} (it targets Whisper encoders)")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        if recipe.static:
            if calibration is None:
                calibration = calibration_clips(Path(source["source_folder"]))
            # weights int8 per output channel, activations uint8 with one range per tensor over the clips (MinMax)
            quantize_static(str(prepared), str(output), _Clips(calibration), quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            nodes_to_quantize=nodes, op_types_to_quantize=["MatMul", "Gemm"],
                            calibrate_method=CalibrationMethod.MinMax,
                            calibration_providers=["CPUExecutionProvider"])
        else:
            quantize_dynamic(str(prepared), str(output), per_channel=True, weight_type=QuantType.QInt8,
                             nodes_to_quantize=nodes)
    graph = onnx.load(str(output))
    del graph.metadata_props[:]
    for key, value in {**source, "precision": "int8", "recipe": name}.items():  # labels, window, ... kept
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(output))
    return output


def cached_int8(checkpoint: str | Path, recipe: str = DEFAULT_RECIPE) -> Path:
    """Return the int8 graph of a checkpoint folder by `recipe`, made once beside its cached float32 export."""
    from serving.onnx_recognizer import cached_export

    fp32 = cached_export(Path(checkpoint))
    path = fp32.with_name(f"{fp32.stem}-int8-{recipe}.onnx")
    if not path.is_file():
        partial = path.with_name(f".{path.stem}.{os.getpid()}.partial.onnx")
        try:
            quantize(fp32, partial, recipe)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return path


def verdict(checkpoint: str | Path) -> dict | None:
    """Return CHECKPOINT/int8.json if it was measured on the checkpoint's current weights, else None."""
    path = Path(checkpoint) / VERDICT
    try:
        found = json.loads(path.read_text())
        return found if found.get("weights") == weights_digest(Path(checkpoint)) else None
    except (OSError, ValueError):
        return None


def drift_check(checkpoint: str | Path, found: dict) -> str | None:
    """Return why the int8 graph that would serve may not (None: it may): the measurement must meet the bound in
    every set and mode, be faster, and have been taken on this very graph (its weights' digest)."""
    if not found.get("use_int8"):
        return (f"its measurement of recipe {found.get('recipe')!r} does not meet the drift bound"
                if not found.get("meets_bound") else "int8 measured no faster than float32")
    path = cached_int8(checkpoint, found["recipe"])
    if graph_digest(path) != found.get("graph_weights"):
        return (f"{path.name}'s weights are not those measured ({graph_digest(path)} against "
                f"{found.get('graph_weights')}): measure again (python -m serving.quantize --checkpoint {checkpoint})")
    return None


def choose(checkpoint: str | Path, precision: str = "auto") -> tuple[str, str | None]:
    """Return (precision, recipe) to run: "int8" with its recipe, or ("fp32", None).

    auto: int8 only where CHECKPOINT/int8.json, measured on these weights and on the int8 graph that would run,
    meets the drift bound and is faster.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
    if precision == "fp32" or not Path(checkpoint).is_dir():  # a Hub id or an .onnx file: as given
        return "fp32", None
    found = verdict(checkpoint)
    if precision == "int8":
        return "int8", (found or {}).get("recipe", DEFAULT_RECIPE)
    if not found:
        return "fp32", None
    why = drift_check(checkpoint, found)
    if why and found.get("use_int8"):  # a measured recipe refused: say so (an unmeasured one is the usual case)
        print(f"quantize: {Path(checkpoint).name} runs float32: {why}", file=sys.stderr)
    return ("fp32", None) if why else ("int8", found["recipe"])


def holds_adapted(checkpoint: str | Path) -> bool:
    """Return whether the checkpoint's int8 measurement meets the bound in the adapted mode too (in every set): then
    its int8 graph's embeddings may be standardised with a speaker's or user's statistics (serving.recognizer.load_scorer)."""
    found = verdict(checkpoint) or {}
    return all(group in found and meets(found[group]["adapted"]) for group in ("training", "loco"))


# ---------------------------------------------------------------------------------------------
# Measuring the drift
# ---------------------------------------------------------------------------------------------
def real_clips(checkpoint: Path, count: int, part: int = 0, parts: int = 2) -> list:
    """Return `count` labelled utterances spread evenly over the checkpoint's corpora found on this machine.

    Each corpus's rows are taken at `count * parts` even steps and dealt into `parts` sets: part 0 is measured, the
    others calibrate a static recipe or train the leave-one-corpus-out heads, so no clip serves twice.
    """
    from data.corpora import corpora_root, read_corpus

    metrics = json.loads((checkpoint / "metrics.json").read_text()) if (checkpoint / "metrics.json").is_file() else {}
    names = [c for c in metrics.get("corpora") or ["emodb", "ravdess", "urdu"] if (corpora_root() / c).is_dir()]
    if not names:
        raise SystemExit(f"none of the checkpoint's corpora is under {corpora_root()} (set SER_CORPORA)")
    chosen = []
    for i, name in enumerate(names):
        rows = read_corpus(name)
        take = count // len(names) + (i < count % len(names))
        steps = np.unique(np.linspace(0, len(rows) - 1, min(take * parts, len(rows))).astype(int))
        chosen += [rows[j] for j in steps[part::parts]]
    return chosen


def unweighted_accuracy(probs: np.ndarray, truth: list[str], labels: list[str]) -> float:
    """Return the mean recall over the classes of `truth` that the model knows."""
    predicted = [labels[i] for i in probs.argmax(axis=1)]
    known = sorted(set(truth) & set(labels))
    return float(np.mean([np.mean([p == c for p, t in zip(predicted, truth) if t == c]) for c in known]))


def run_graph(path: Path, clips: list[np.ndarray], threads: int = 1) -> tuple[np.ndarray, np.ndarray, float]:
    """Return a graph's probabilities (N, C) and pooled embeddings (N, F) of clips scored one at a time, and the
    CPU seconds it spent."""
    import onnxruntime

    from serving.onnx_recognizer import EMBEDDING, INPUT, OUTPUT

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    probs, vectors, cpu = [], [], 0.0
    for clip in clips:
        start = time.process_time()
        p, e = session.run([OUTPUT, EMBEDDING], {INPUT: np.asarray(clip, np.float32)[None]})
        cpu += time.process_time() - start
        probs.append(p[0])
        vectors.append(e[0])
    return np.array(probs), np.array(vectors), cpu


class FoldHead:
    """A leave-one-corpus-out stand-in for the checkpoint's head: a logistic regression on embeddings standardised
    per speaker (normalization.speaker_or_corpus, as train.py --embedding_norm speaker), fitted on float32 embeddings
    of the other corpora's clips, so its clips of the left-out corpus are new voices (and a new language) to it."""

    def __init__(self, embeddings: np.ndarray, rows: list, labels: list[str]):
        from sklearn.linear_model import LogisticRegression

        from adaptation.normalization import GROUPINGS, average_statistics, group_statistics

        groups = GROUPINGS["speaker"](rows)
        mean, std = group_statistics(embeddings, groups)
        self.mean, self.std = average_statistics(embeddings, groups)
        self.labels = labels
        self.model = LogisticRegression(C=0.1, max_iter=3000).fit((embeddings - mean) / std,
                                                                  [labels.index(r.label) for r in rows])

    def probabilities(self, embeddings: np.ndarray, mean: np.ndarray | None = None,
                      std: np.ndarray | None = None) -> np.ndarray:
        mean, std = (self.mean, self.std) if mean is None else (mean, std)
        found = np.zeros((len(embeddings), len(self.labels)))
        found[:, self.model.classes_] = self.model.predict_proba((embeddings - mean) / std)
        return found


def speaker_statistics(embeddings: np.ndarray, rows: list, mean: np.ndarray, std: np.ndarray):
    """Return each clip's (mean, std), (N, F) each: its speaker's clips' own, drawn towards the model's
    (normalization.shrunk_statistics, as infer.py --normalize speaker and benchmark.onnx_parity do)."""
    from adaptation.normalization import shrunk_statistics

    out_mean, out_std = np.empty_like(embeddings), np.empty_like(embeddings)
    speakers = np.array([r.speaker for r in rows])
    for speaker in np.unique(speakers):
        mine = speakers == speaker
        out_mean[mine], out_std[mine] = shrunk_statistics(embeddings[mine], mean, std)
    return out_mean, out_std


def compare(fp32: np.ndarray, int8: np.ndarray, rows: list, labels: list[str]) -> dict:
    """Return the top-1 agreement, the UA of each and the UA lost (fraction), on the clips `rows`."""
    truth = [r.label for r in rows]
    ua_fp32, ua_int8 = unweighted_accuracy(fp32, truth, labels), unweighted_accuracy(int8, truth, labels)
    return {"clips": len(rows), "agreement": round(float((fp32.argmax(1) == int8.argmax(1)).mean()), 4),
            "flips": int((fp32.argmax(1) != int8.argmax(1)).sum()),
            "ua_fp32": round(ua_fp32, 4), "ua_int8": round(ua_int8, 4), "ua_lost": round(ua_fp32 - ua_int8, 4),
            "mean_abs_difference": round(float(np.abs(fp32 - int8).mean()), 5)}


def meets(figures: dict) -> bool:
    return figures["agreement"] >= AGREEMENT_MIN and figures["ua_lost"] <= UA_DROP_MAX


class Reference:
    """What the int8 graph is compared with: float32's outputs on the measured clips, the checkpoint's head, and
    one leave-one-corpus-out head per corpus (FoldHead, fitted on float32 embeddings of further clips)."""

    def __init__(self, checkpoint: Path, fp32: Path, clips: int, threads: int = 1, part: int = 0):
        from data_process import load_audio
        from serving.onnx_recognizer import Head

        # part 1: the other half of the sampled clips is measured (the heads fitted on part 0 and the other corpora)
        self.rows, train_rows = real_clips(checkpoint, clips, part=part), real_clips(checkpoint, clips, part=1 - part)
        self.clips = [load_audio(r.path) for r in self.rows]
        self.audio_s = sum(map(len, self.clips)) / 16_000
        self.head = Head(checkpoint)
        self.labels = json.loads((checkpoint / "config.json").read_text())["id2label"]
        self.labels = [self.labels[str(i)] for i in range(len(self.labels))]
        self.probs, self.embeddings, self.cpu = run_graph(fp32, self.clips, threads)
        _, train, _ = run_graph(fp32, [load_audio(r.path) for r in train_rows], threads)
        everything, every_row = np.concatenate([self.embeddings, train]), self.rows + train_rows
        known = np.array([r.label in self.labels for r in every_row])
        self.folds = {}
        for corpus in sorted({r.corpus for r in self.rows}):
            fit = known & np.array([r.corpus != corpus for r in every_row])
            self.folds[corpus] = FoldHead(everything[fit], [r for r, f in zip(every_row, fit) if f], self.labels)

    def modes(self, probs: np.ndarray, embeddings: np.ndarray) -> dict:
        """Return the probabilities (N, C) of each set and mode from a graph's outputs on the measured clips."""
        head = self.head
        out = {("training", "alone"): probs,
               ("training", "adapted"): head.probabilities(embeddings, *speaker_statistics(embeddings, self.rows,
                                                                                          head.mean, head.std))}
        alone, adapted = np.zeros_like(probs), np.zeros_like(probs)
        for corpus, fold in self.folds.items():
            mine = np.array([r.corpus == corpus for r in self.rows])
            rows = [r for r, m in zip(self.rows, mine) if m]
            alone[mine] = fold.probabilities(embeddings[mine])
            adapted[mine] = fold.probabilities(embeddings[mine], *speaker_statistics(embeddings[mine], rows,
                                                                                     fold.mean, fold.std))
        out["loco", "alone"], out["loco", "adapted"] = alone, adapted
        return out

    def drift(self, probs: np.ndarray, embeddings: np.ndarray) -> dict:
        """Return the figures of each set and mode (and per corpus) of a graph's outputs against float32's."""
        mine, theirs = self.modes(self.probs, self.embeddings), self.modes(probs, embeddings)
        out: dict = {}
        for (group, mode), reference in mine.items():
            figures = compare(reference, theirs[group, mode], self.rows, self.labels)
            figures["by_corpus"] = {}
            for corpus in self.folds:
                rows = np.array([r.corpus == corpus for r in self.rows])
                found = compare(reference[rows], theirs[group, mode][rows], [r for r in self.rows if r.corpus == corpus],
                                self.labels)
                figures["by_corpus"][corpus] = {k: found[k] for k in ("agreement", "flips", "ua_lost")}
            out.setdefault(group, {})[mode] = figures
        scale = np.linalg.norm(self.embeddings, axis=1)
        out["embedding_relative_error"] = round(float((np.linalg.norm(embeddings - self.embeddings, axis=1)
                                                       / scale).mean()), 5)
        return out


def speed(graphs: dict[str, Path], clip: np.ndarray, repeats: int = 15, threads: int = 1) -> dict:
    """Return each graph's median wall ms and mean CPU ms for one clip, the graphs taking turns in this process."""
    import onnxruntime

    from serving.onnx_recognizer import EMBEDDING, INPUT, OUTPUT

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    sessions = {n: onnxruntime.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                for n, p in graphs.items()}
    feed = {INPUT: np.asarray(clip, np.float32)[None]}
    wall, cpu = {n: [] for n in graphs}, {n: [] for n in graphs}
    for session in sessions.values():
        session.run([OUTPUT, EMBEDDING], feed)  # warm-up
    for _ in range(repeats):
        for name, session in sessions.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            session.run([OUTPUT, EMBEDDING], feed)
            wall[name].append(1000 * (time.perf_counter() - start))
            cpu[name].append(1000 * (time.process_time() - start_cpu))
    return {n: {"ms": round(float(np.median(wall[n])), 1), "cpu_ms": round(float(np.mean(cpu[n])), 1)} for n in graphs}


def git_commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def measure(checkpoint: str | Path, recipe: str = DEFAULT_RECIPE, clips: int = 600, reference: Reference | None = None,
            threads: int = 1) -> dict:
    """Return the int8 graph's drift from float32 on real clips in each set (the checkpoint's head: training;
    leave-one-corpus-out heads: loco) and mode (alone; adapted: each speaker's own statistics), its weights' digest,
    and both graphs' speed on a 5 s clip."""
    from serving.onnx_recognizer import cached_export

    checkpoint = Path(checkpoint)
    fp32, int8 = cached_export(checkpoint), cached_int8(checkpoint, recipe)
    reference = reference or Reference(checkpoint, fp32, clips, threads)
    probs, embeddings, cpu = run_graph(int8, reference.clips, threads)
    figures = {"recipe": recipe, "recipe_text": RECIPES[recipe].text, "clips": len(reference.rows),
               "audio_s": round(reference.audio_s, 1),
               "corpora": {c: sum(r.corpus == c for r in reference.rows) for c in reference.folds},
               **reference.drift(probs, embeddings),
               "cpu_s_per_audio_s_fp32": round(reference.cpu / reference.audio_s, 4),
               "cpu_s_per_audio_s_int8": round(cpu / reference.audio_s, 4)}
    five = next(c for c in reference.clips if len(c) >= 80_000)[:80_000]  # a real 5 s clip
    timing = speed({"fp32": fp32, "int8": int8}, five, threads=threads)
    figures["ms_per_5s_clip"] = {"fp32": timing["fp32"]["ms"], "int8": timing["int8"]["ms"],
                                 "int8_over_fp32": round(timing["int8"]["ms"] / timing["fp32"]["ms"], 3),
                                 "cpu_ms_fp32": timing["fp32"]["cpu_ms"], "cpu_ms_int8": timing["int8"]["cpu_ms"]}
    figures["meets_bound"] = all(meets(figures[group][mode]) for group in ("training", "loco")
                                 for mode in ("alone", "adapted"))
    figures["faster"] = bool(cpu <= CPU_SHARE_MAX * reference.cpu)
    figures["use_int8"] = figures["meets_bound"] and figures["faster"]
    figures.update({"weights": weights_digest(checkpoint), "graph_weights": graph_digest(int8),
                    "fp32_graph_weights": graph_digest(fp32), "commit": git_commit(),
                    "bound": {"agreement_min": AGREEMENT_MIN, "ua_drop_max": UA_DROP_MAX, "cpu_share_max": CPU_SHARE_MAX,
                              "in": "every set (training, loco) and mode (alone, adapted)"}})
    return figures


def main(argv: list[str] | None = None) -> dict | None:
    summary, details = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(description=summary, epilog=details,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (its ONNX export is made and cached)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=DEFAULT_RECIPE,
                        help="; ".join(f"{k}: {r.text}" for k, r in RECIPES.items()))
    parser.add_argument("--clips", type=int, default=600, help="real clips the drift is measured on (as many more fit "
                                                                   "the leave-one-corpus-out heads)")
    parser.add_argument("--output", help="also copy the int8 graph here")
    parser.add_argument("--no-measure", dest="measure", action="store_false",
                        help="only write the int8 graph; int8.json is left as it is")
    args = parser.parse_args(argv)
    checkpoint = Path(args.checkpoint)
    if not (checkpoint / "config.json").is_file():
        parser.error(f"{checkpoint} is not a checkpoint folder (no config.json)")
    path = cached_int8(checkpoint, args.recipe)
    if args.output:
        Path(args.output).write_bytes(path.read_bytes())
        print(f"wrote {args.output} ({path.stat().st_size / 1e6:.1f} MB, recipe {args.recipe})")
    if not args.measure:
        return None
    figures = measure(checkpoint, args.recipe, args.clips)
    figures["command"] = " ".join(["python -m serving.quantize", *(argv if argv is not None else sys.argv[1:])])
    (checkpoint / VERDICT).write_text(json.dumps(figures, indent=2) + "\n")
    print(f"{checkpoint.name}, int8 by recipe {args.recipe} against float32 on {figures['clips']} real clips "
          f"({', '.join(figures['corpora'])}), top-1 agreement / UA lost:")
    for group in ("training", "loco"):
        print("  " + group + ": " + ", ".join(f"{mode} {figures[group][mode]['agreement']:.1%} / "
                                              f"{100 * figures[group][mode]['ua_lost']:.2f} point"
                                              for mode in ("alone", "adapted")))
    print(f"ms per 5 s clip {figures['ms_per_5s_clip']['int8']} vs {figures['ms_per_5s_clip']['fp32']} (float32)")
    print(f"{'meets' if figures['meets_bound'] else 'does NOT meet'} the drift bound (agreement >= {AGREEMENT_MIN:.0%}, "
          f"UA drop <= {UA_DROP_MAX * 100:g} point, in every set and mode); {'' if figures['faster'] else 'NOT '}"
          f"faster by 10 % or more: --precision auto runs {'int8' if figures['use_int8'] else 'float32'}; "
          f"written to {checkpoint / VERDICT}")
    return figures


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
