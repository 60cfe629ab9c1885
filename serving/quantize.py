"""int8 versions of a checkpoint's ONNX export (onnxruntime), and whether they may stand in for float32.

    python -m serving.quantize --checkpoint checkpoints/whisper-base-std-linear             # measure; write CHECKPOINT/int8.json
    python -m serving.quantize --checkpoint checkpoints/whisper-base-std-linear --recipe dynamic_fc1 --clips 900
    python -m serving.quantize --checkpoint checkpoints/whisper-base-std-linear --output whisper-int8.onnx --no-measure

A recipe (a key of RECIPES) names the matrix products that become int8: onnxruntime's dynamic
quantisation, weights per output channel, activations quantised per call; the log-mel front end and
the classifier head stay float32. The float32 graph is export.py's, cached as infer.py --runtime onnx
caches it; the int8 graph is cached beside it.

The drift is measured against that float32 graph on real clips of the corpora the checkpoint was
trained on (evenly spread, the same clips every run): top-1 agreement, and UA on the clips' own
labels. A recipe that agrees on at least 99 % of clips and loses at most 0.5 point of UA meets the
bound; it is used by default if it also spends at least 10 % less CPU time than float32 (int8 that
is no faster is no gain). CHECKPOINT/int8.json records the figures and the verdict, tied to the
weights they were measured on. `python app.py` and `infer.py` (--precision auto, the default) run
the int8 graph only for a checkpoint whose int8.json says so; --precision fp32 opts out,
--precision int8 forces it.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
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
    scopes: str  # regular expression over the module path (torch's name scope) of each MatMul / Gemm
    text: str


_LAYER = r"model\.backbone\.encoder\.layers\.\d+\."
RECIPES = {
    "dynamic": Recipe(_LAYER + r"(self_attn\.(q|k|v|out)_proj|fc1|fc2)$",
                      "every linear layer of the encoder (attention projections and both feed-forward layers)"),
    "dynamic_ffn": Recipe(_LAYER + r"(fc1|fc2)$", "the encoder's feed-forward layers"),
    "dynamic_fc1": Recipe(_LAYER + r"fc1$", "the first feed-forward layer of each encoder layer"),
}
DEFAULT_RECIPE = "dynamic"


def weights_digest(checkpoint: Path) -> str:
    """Return the digest export's cache uses: config and weights together."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        digest.update((Path(checkpoint) / name).read_bytes())
    return digest.hexdigest()[:16]


def scoped_nodes(graph, pattern: str) -> list[str]:
    """Return the names of the MatMul / Gemm nodes with a constant weight whose module path matches `pattern`."""
    constants = {init.name for init in graph.graph.initializer}
    chosen = []
    for node in graph.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or not any(i in constants for i in node.input):
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))  # a Python list, as torch writes it
        module = scopes[-2] if len(scopes) >= 2 else ""  # the last scope is the op itself
        if re.search(pattern, module):
            chosen.append(node.name)
    return chosen


def quantize(fp32: Path, output: Path, recipe: str = DEFAULT_RECIPE) -> Path:
    """Write the int8 graph of export.py's float32 graph `fp32` by `recipe`; return `output`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    nodes = scoped_nodes(onnx.load(str(fp32)), RECIPES[recipe].scopes)  # before pre-processing drops the scopes
    if not nodes:
        raise ValueError(f"recipe {recipe!r} finds no layer to quantise in {fp32.name} (it targets Whisper encoders)")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(output), per_channel=True, weight_type=QuantType.QInt8,
                         nodes_to_quantize=nodes)
    graph = onnx.load(str(output))
    source = {p.key: p.value for p in onnx.load(str(fp32), load_external_data=False).metadata_props}
    del graph.metadata_props[:]
    for key, value in {**source, "precision": "int8", "recipe": recipe}.items():  # labels, window, ... kept
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(output))
    return output


def cached_int8(checkpoint: str | Path, recipe: str = DEFAULT_RECIPE) -> Path:
    """Return the int8 graph of a checkpoint folder by `recipe`, made once beside its cached float32 export."""
    from serving.onnx_recognizer import cached_export

    fp32 = cached_export(Path(checkpoint))
    path = fp32.with_name(f"{fp32.stem}-int8-{recipe}.onnx")
    return path if path.is_file() else quantize(fp32, path, recipe)


def verdict(checkpoint: str | Path) -> dict | None:
    """Return CHECKPOINT/int8.json if it was measured on the checkpoint's current weights, else None."""
    path = Path(checkpoint) / VERDICT
    try:
        found = json.loads(path.read_text())
        return found if found.get("weights") == weights_digest(Path(checkpoint)) else None
    except (OSError, ValueError):
        return None


def choose(checkpoint: str | Path, precision: str = "auto") -> tuple[str, str | None]:
    """Return (precision, recipe) to run: "int8" with its recipe, or ("fp32", None).

    auto: int8 only where CHECKPOINT/int8.json, measured on these weights, meets the drift bound and is faster.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
    if precision == "fp32" or not Path(checkpoint).is_dir():  # a Hub id or an .onnx file: as given
        return "fp32", None
    found = verdict(checkpoint)
    if precision == "int8":
        return "int8", (found or {}).get("recipe", DEFAULT_RECIPE)
    return ("int8", found["recipe"]) if found and found.get("use_int8") else ("fp32", None)


# ---------------------------------------------------------------------------------------------
# Measuring the drift
# ---------------------------------------------------------------------------------------------
def real_clips(checkpoint: Path, count: int) -> list:
    """Return `count` labelled utterances spread evenly over the checkpoint's corpora found on this machine."""
    from data.corpora import corpora_root, read_corpus

    metrics = json.loads((checkpoint / "metrics.json").read_text()) if (checkpoint / "metrics.json").is_file() else {}
    names = [c for c in metrics.get("corpora") or ["emodb", "ravdess", "urdu"] if (corpora_root() / c).is_dir()]
    if not names:
        raise SystemExit(f"none of the checkpoint's corpora is under {corpora_root()} (set SER_CORPORA)")
    chosen = []
    for i, name in enumerate(names):
        rows = read_corpus(name)
        take = count // len(names) + (i < count % len(names))
        chosen += [rows[j] for j in np.linspace(0, len(rows) - 1, min(take, len(rows))).astype(int)]
    return chosen


def unweighted_accuracy(probs: np.ndarray, truth: list[str], labels: list[str]) -> float:
    """Return the mean recall over the classes of `truth` that the model knows."""
    predicted = [labels[i] for i in probs.argmax(axis=1)]
    known = sorted(set(truth) & set(labels))
    return float(np.mean([np.mean([p == c for p, t in zip(predicted, truth) if t == c]) for c in known]))


def measure(checkpoint: str | Path, recipe: str = DEFAULT_RECIPE, clips: int = 600) -> dict:
    """Return the int8 graph's drift from float32 on real clips, and both graphs' CPU time per audio second."""
    from data_process import load_audio
    from serving.onnx_recognizer import OnnxRecognizer, cached_export

    checkpoint = Path(checkpoint)
    graphs = {"fp32": OnnxRecognizer(cached_export(checkpoint)), "int8": OnnxRecognizer(cached_int8(checkpoint, recipe))}
    rows = real_clips(checkpoint, clips)
    probs = {name: [] for name in graphs}
    cpu = dict.fromkeys(graphs, 0.0)
    audio_s = 0.0
    for row in rows:
        audio = load_audio(row.path)
        audio_s += len(audio) / 16_000
        for name, graph in graphs.items():
            start = time.process_time()
            probs[name].append(graph.probabilities([audio])[0])
            cpu[name] += time.process_time() - start
    fp32, int8 = np.array(probs["fp32"]), np.array(probs["int8"])
    labels, truth = graphs["fp32"].labels, [row.label for row in rows]
    figures = {"recipe": recipe, "recipe_text": RECIPES[recipe].text, "clips": len(rows), "audio_s": round(audio_s, 1),
               "corpora": sorted({row.corpus for row in rows}),
               "agreement": float((fp32.argmax(1) == int8.argmax(1)).mean()),
               "mean_abs_difference": float(np.abs(fp32 - int8).mean()),
               "ua_fp32": unweighted_accuracy(fp32, truth, labels), "ua_int8": unweighted_accuracy(int8, truth, labels),
               "cpu_s_per_audio_s_fp32": cpu["fp32"] / audio_s, "cpu_s_per_audio_s_int8": cpu["int8"] / audio_s}
    figures["meets_bound"] = bool(figures["agreement"] >= AGREEMENT_MIN
                                  and figures["ua_fp32"] - figures["ua_int8"] <= UA_DROP_MAX)
    figures["faster"] = bool(cpu["int8"] <= CPU_SHARE_MAX * cpu["fp32"])
    figures["use_int8"] = figures["meets_bound"] and figures["faster"]
    return figures


def main(argv: list[str] | None = None) -> dict | None:
    summary, details = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(description=summary, epilog=details,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (its ONNX export is made and cached)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=DEFAULT_RECIPE,
                        help="; ".join(f"{k}: {r.text}" for k, r in RECIPES.items()))
    parser.add_argument("--clips", type=int, default=600, help="real clips the drift is measured on")
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
    figures.update({"weights": weights_digest(checkpoint), "bound": {
        "agreement_min": AGREEMENT_MIN, "ua_drop_max": UA_DROP_MAX, "cpu_share_max": CPU_SHARE_MAX}})
    (checkpoint / VERDICT).write_text(json.dumps(figures, indent=2) + "\n")
    print(f"{checkpoint.name}, int8 by recipe {args.recipe} against float32 on {figures['clips']} real clips "
          f"({', '.join(figures['corpora'])}): top-1 agreement {figures['agreement']:.1%}, UA "
          f"{figures['ua_int8']:.4f} vs {figures['ua_fp32']:.4f}, mean |difference| {figures['mean_abs_difference']:.4f}; "
          f"CPU s per audio s {figures['cpu_s_per_audio_s_int8']:.4f} vs {figures['cpu_s_per_audio_s_fp32']:.4f}")
    print(f"{'meets' if figures['meets_bound'] else 'does NOT meet'} the drift bound (agreement >= {AGREEMENT_MIN:.0%}, "
          f"UA drop <= {UA_DROP_MAX * 100:g} point); {'' if figures['faster'] else 'NOT '}faster by 10 % or more: "
          f"--precision auto runs {'int8' if figures['use_int8'] else 'float32'}; written to {checkpoint / VERDICT}")
    return figures


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
