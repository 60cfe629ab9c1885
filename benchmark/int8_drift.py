"""Which parts of the default model lose accuracy in int8, and which recipe keeps the drift bound.

    python -m benchmark.int8_drift --stage sensitivity     # one layer group int8 at a time, on 200 of the clips
    python -m benchmark.int8_drift --stage recipes --recipes dynamic dynamic_but_l0_fc2   # quantize.RECIPES, 600 clips
    python -m benchmark.int8_drift --stage speed --recipes dynamic dynamic_but_l0_fc2  # ms per 5 s clip, one process
    python -m benchmark.int8_drift --stage recipes --part 1 --recipes dynamic_but_l0_fc2  # the other 600 clips
    python -m benchmark.int8_drift --stage verdict --recipes dynamic_but_l0_fc2   # its figures -> CHECKPOINT/int8.json

The reference (quantize.Reference) is float32 onnxruntime on 600 real clips, 120 of each corpus spread evenly
(quantize.real_clips part 0), in two sets and two modes:
- training: the checkpoint's own head, which was trained on every clip of the five corpora;
- loco: for each corpus, a head fitted on float32 embeddings of the other four corpora's clips (1200 sampled clips
  in all, parts 0 and 1), so the clips of the left-out corpus are voices and a language it never heard. The shipped
  default heard every clip here: RAVDESS actors 21-24 are held out of ../shared altogether, so the leave-one-out
  heads are the only way to judge new voices on this machine;
- alone (the model's statistics) and adapted (each speaker's own, shrunk towards the model's).
The sensitivity stage makes one layer group int8 (dynamic, per channel) with everything else float32, or
everything but one group, and reports the flips and the embedding's relative error. Results accumulate in
benchmark/results/int8_drift.json; float32's outputs are cached in runs/int8/.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from benchmark.common import ROOT, machine, now, write_json

OUTPUT = ROOT / "benchmark" / "results" / "int8_drift.json"
CACHE = ROOT / "runs" / "int8"
_L = r"model\.backbone\.encoder\.layers\."


def groups() -> dict:
    """Return the sensitivity variants: name -> quantize.Recipe (dynamic, per channel)."""
    from serving.quantize import _LINEAR, Recipe

    kinds = {"qkv": r"self_attn\.(q|k|v)_proj", "out_proj": r"self_attn\.out_proj", "fc1": "fc1", "fc2": "fc2"}
    found = {"all": Recipe(_LINEAR, "every linear layer")}
    found |= {f"only_layer{i}": Recipe(_L + f"{i}\\." + r"(self_attn\.(q|k|v|out)_proj|fc1|fc2)$", f"layer {i} only")
              for i in range(6)}
    found |= {f"only_{k}": Recipe(_L + r"\d+\." + v + "$", f"{k} of every layer only") for k, v in kinds.items()}
    found |= {f"all_but_{k}": Recipe(_LINEAR, f"all but {k}", keep=_L + r"\d+\." + v + "$") for k, v in kinds.items()}
    found["static_all"] = Recipe(_LINEAR, "every linear layer, static QDQ (MinMax, 40 clips)", static=True)
    # second round, from the first's findings: layer 3 and fc2 carry most of the error
    l3_fc2, l0 = _L + r"3\.fc2$", _L + r"0\."
    found["only_l3_fc2"] = Recipe(l3_fc2, "layer 3's fc2 only")
    found["all_but_l3_fc2"] = Recipe(_LINEAR, "all but layer 3's fc2", keep=l3_fc2)
    found["all_but_l3_fc2_l0"] = Recipe(_LINEAR, "all but layer 3's fc2 and layer 0", keep=f"{l3_fc2}|{l0}")
    found["all_but_l3_l0"] = Recipe(_LINEAR, "all but layers 0 and 3", keep=_L + r"(0|3)\.")
    found["all_but_fc2_l0"] = Recipe(_LINEAR, "all but every fc2 and layer 0", keep=_L + r"(\d+\.fc2|0\.)")
    found["static_but_l3_fc2"] = Recipe(_LINEAR, "static QDQ, all but layer 3's fc2", keep=l3_fc2, static=True)
    return found


def reference(checkpoint: Path, clips: int, part: int = 0):
    """Return quantize.Reference for the checkpoint, from runs/int8/ when float32 was already run on these weights."""
    from data_process import load_audio
    from serving.onnx_recognizer import cached_export
    from serving.quantize import Reference, graph_digest

    fp32 = cached_export(checkpoint)
    path = CACHE / f"reference-{checkpoint.name}-{graph_digest(fp32)}-{clips}{'-part1' if part else ''}.pkl"
    if path.is_file():
        found = pickle.loads(path.read_bytes())
        found.clips = [load_audio(r.path) for r in found.rows]
        return found
    start = time.perf_counter()
    found = Reference(checkpoint, fp32, clips, part=part)
    print(f"int8_drift: float32 reference on {clips} + {clips} clips in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
    CACHE.mkdir(parents=True, exist_ok=True)
    kept = copy.copy(found)
    kept.clips = None
    path.write_bytes(pickle.dumps(kept))
    return found


def subset(ref, every: int):
    """Return a copy of the reference restricted to every `every`-th measured clip (all corpora alike)."""
    part = copy.copy(ref)
    keep = np.arange(0, len(ref.rows), every)
    part.rows, part.clips = [ref.rows[i] for i in keep], [ref.clips[i] for i in keep]
    part.probs, part.embeddings = ref.probs[keep], ref.embeddings[keep]
    return part


def summary(drift: dict) -> dict:
    """The figures that rank the variants: flips and UA lost per set and mode, and the embedding's error."""
    out = {"embedding_relative_error": drift["embedding_relative_error"]}
    for group in ("training", "loco"):
        for mode in ("alone", "adapted"):
            f = drift[group][mode]
            out[f"{group}_{mode}"] = {"agreement": f["agreement"], "flips": f["flips"], "ua_lost": f["ua_lost"],
                                      "mean_abs_difference": f["mean_abs_difference"]}
    return out


def with_second_look(figures: dict, result: dict) -> dict:
    """Return the verdict: part 0's figures, and where the other half of the clips was measured with the same graph
    ('recipes_part1'), its figures too; the bound must then hold in both halves."""
    from serving import quantize

    second = result.get("recipes_part1", {}).get(figures["recipe"])
    if not second or second["graph_weights"] != figures["graph_weights"]:
        return figures
    look = {group: {mode: {k: second[group][mode][k] for k in ("clips", "agreement", "flips", "ua_fp32", "ua_int8",
                                                                "ua_lost")} for mode in ("alone", "adapted")}
            for group in ("training", "loco")}
    holds = all(quantize.meets(look[g][m]) for g in look for m in look[g])
    verdict = {**figures, "second_look": {"what": "the other 600 sampled clips measured, the loco heads fitted on "
                                                  "the first 600 and the other corpora", "meets_bound": holds, **look}}
    verdict["meets_bound"] = figures["meets_bound"] and holds
    verdict["use_int8"] = verdict["meets_bound"] and figures["faster"]
    return verdict


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmark.int8_drift", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: checkpoints/default.txt's)")
    parser.add_argument("--stage", choices=["sensitivity", "recipes", "verdict", "speed"], required=True)
    parser.add_argument("--clips", type=int, default=600, help="clips measured (and as many more for the loco heads)")
    parser.add_argument("--every", type=int, default=3, help="sensitivity: every n-th measured clip")
    parser.add_argument("--variants", nargs="*", help="sensitivity: only these variants (default: all)")
    parser.add_argument("--recipes", nargs="*", default=[], help="recipes / verdict: quantize.RECIPES keys")
    parser.add_argument("--part", type=int, choices=[0, 1], default=0,
                        help="recipes: 1 measures the other half of the sampled clips (a second look; results under "
                             "'recipes_part1'), the verdict is always part 0's")
    parser.add_argument("--output", default=str(OUTPUT))
    args = parser.parse_args(argv)

    from serving import quantize
    from serving.recognizer import default_checkpoint
    from serving.onnx_recognizer import cached_export

    checkpoint = Path(args.checkpoint or default_checkpoint())
    output = Path(args.output)
    result = json.loads(output.read_text()) if output.is_file() else {}
    result.update({"what": __doc__.split("\n\n")[0], "checkpoint": checkpoint.name, "machine": machine(),
                   "bound": {"agreement_min": quantize.AGREEMENT_MIN, "ua_drop_max": quantize.UA_DROP_MAX}})
    command = " ".join(["python -m benchmark.int8_drift", *(argv if argv is not None else sys.argv[1:])])
    ref = reference(checkpoint, args.clips, args.part) if args.stage in ("sensitivity", "recipes") else None  # loaded when measuring
    fp32 = cached_export(checkpoint)
    if args.stage == "speed":  # float32 and the recipes taking turns on one real 5 s clip, more repeats
        from data_process import load_audio

        rows = quantize.real_clips(checkpoint, args.clips)
        five = next(c for c in (load_audio(r.path) for r in rows) if len(c) >= 80_000)[:80_000]
        graphs = {"fp32": fp32, **{r: quantize.cached_int8(checkpoint, r) for r in args.recipes}}
        timing = quantize.speed(graphs, five, repeats=40)
        result["speed"] = {"command": command, "date": now(), "clip_s": 5.0, "threads": 1,
                           "load_average": [round(x, 2) for x in os.getloadavg()],
                           "ms_per_5s_clip": {n: t["ms"] for n, t in timing.items()},
                           "cpu_ms_per_5s_clip": {n: t["cpu_ms"] for n, t in timing.items()},
                           "over_fp32_wall": {n: round(t["ms"] / timing["fp32"]["ms"], 3) for n, t in timing.items()},
                           "over_fp32_cpu": {n: round(t["cpu_ms"] / timing["fp32"]["cpu_ms"], 3)
                                             for n, t in timing.items()}}
        print(f"int8_drift: speed {json.dumps(result['speed'])}", file=sys.stderr)
    elif args.stage == "sensitivity":
        part = subset(ref, args.every)
        found = result.setdefault("sensitivity", {})
        found.setdefault("commands", []).append({"command": command, "date": now(), "commit": quantize.git_commit()})
        found.update({"clips": len(part.rows),
                      "how": "dynamic int8 (per channel) of the named layers only, the rest float32; flips against "
                             "float32 on the same clips"})
        variants = groups()
        for name in args.variants or variants:
            graph = CACHE / "graphs" / f"{name}.onnx"
            if not graph.is_file():
                calibration = quantize.calibration_clips(checkpoint) if variants[name].static else None
                quantize.quantize(fp32, graph, variants[name], calibration)
            probs, embeddings, cpu = quantize.run_graph(graph, part.clips)
            found.setdefault("variants", {})[name] = {"text": variants[name].text, **summary(part.drift(probs, embeddings)),
                                                      "cpu_s_per_audio_s": round(cpu / (sum(map(len, part.clips)) / 16_000), 4)}
            print(f"int8_drift: {name}: {json.dumps(found['variants'][name])}", file=sys.stderr)
            write_json(output, result)
    else:
        for recipe in args.recipes:
            key = "recipes_part1" if args.part else "recipes"
            figures = result.get(key, {}).get(recipe)
            graph = quantize.cached_int8(checkpoint, recipe)
            if not (args.stage == "verdict" and figures and figures.get("clips") == args.clips
                    and figures["graph_weights"] == quantize.graph_digest(graph)
                    and figures["weights"] == quantize.weights_digest(checkpoint)):  # else measured already
                ref = ref or reference(checkpoint, args.clips, args.part)
                figures = quantize.measure(checkpoint, recipe, args.clips, reference=ref)
                figures.update({"command": command, "date": now()})
            result.setdefault(key, {})[recipe] = figures
            print(f"int8_drift: {recipe}: meets the bound {figures['meets_bound']}, "
                  f"{json.dumps(summary(figures))}, {figures['ms_per_5s_clip']}", file=sys.stderr)
            write_json(output, result)
            if args.stage == "verdict" and not args.part:
                (checkpoint / quantize.VERDICT).write_text(json.dumps(with_second_look(figures, result), indent=2) + "\n")
    write_json(output, result)
    return result


if __name__ == "__main__":
    main()
