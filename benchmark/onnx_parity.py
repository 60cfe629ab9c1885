"""onnxruntime against PyTorch for the default model on real clips, in both of its modes.

    python -m benchmark.onnx_parity                      # 120 clips of each of the five corpora -> benchmark/results/
    python -m benchmark.onnx_parity --per_corpus 10 --output runs/parity.json

Both runtimes score the same clips one at a time, as the app serves them (recognizer.Scorer.score: the windows of long
audio, the pooled embedding of each), with the same number of threads:
- alone: each clip with the model's own statistics (what `probabilities` returns);
- adapted: each clip's embeddings standardised with the statistics of its speaker's clips in the sample, drawn
  towards the model's (normalization.shrunk_statistics, as infer.py --normalize speaker does), each runtime from
  its own embeddings (Recognizer.classify in PyTorch, OnnxScorer.classify in numpy).
The JSON holds the top-1 agreement and the largest |probability difference| per mode, the embeddings' largest
difference, ms per clip for each runtime (wall time, clip by clip, decoding excluded) and the machine's load.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmark.common import ROOT, machine, now, write_json

CORPORA = ("emodb", "ravdess", "urdu", "ased", "emotiontts_ko")
OUTPUT = ROOT / "benchmark" / "results" / "onnx_parity.json"


def sample(corpora: tuple[str, ...], per_corpus: int) -> list:
    """Return `per_corpus` rows of each corpus, spread evenly over its (sorted) rows: every speaker, every emotion."""
    from data.corpora import read_corpus

    rows = []
    for name in corpora:
        found = read_corpus(name)
        rows += [found[i] for i in np.linspace(0, len(found) - 1, min(per_corpus, len(found))).astype(int)]
    return rows


def score(scorer, clips: list[np.ndarray]) -> tuple[list, float]:
    """Return the Predictions (with embeddings) of each clip scored alone, and the ms per clip."""
    scorer.score([clips[0][:16_000]], embeddings=True)  # warm-up: first-call allocations are not a clip's cost
    predictions, start = [], time.perf_counter()
    for clip in clips:
        predictions += scorer.score([clip], embeddings=True)
    return predictions, 1000 * (time.perf_counter() - start) / len(clips)


def adapted(scorer, predictions: list, groups: list[str]) -> np.ndarray:
    """Return each clip's probabilities (N, C) with its group's statistics (its windows' mean, as infer.py does)."""
    from adaptation.normalization import shrunk_statistics

    mean, std = scorer.model_statistics()
    vectors: dict[str, list] = {}
    for group, prediction in zip(groups, predictions):
        vectors.setdefault(group, []).extend(w.embedding for w in prediction.windows)
    statistics = {g: shrunk_statistics(np.stack(v), mean, std) for g, v in vectors.items()}
    return np.stack([scorer.classify(np.stack([w.embedding for w in p.windows]), *statistics[g]).mean(0)
                     for g, p in zip(groups, predictions)])


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    return {"top1_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
            "max_abs_prob_diff": float(np.abs(a - b).max()), "mean_abs_prob_diff": float(np.abs(a - b).mean())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmark.onnx_parity", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: checkpoints/default.txt's)")
    parser.add_argument("--corpora", nargs="+", default=list(CORPORA))
    parser.add_argument("--per_corpus", type=int, default=120)
    parser.add_argument("--threads", type=int, default=1, help="threads of each runtime (default 1: a shared machine)")
    parser.add_argument("--output", default=str(OUTPUT))
    args = parser.parse_args(argv)

    import torch

    from data_process import load_audio
    from serving.recognizer import OnnxScorer, Recognizer, default_checkpoint

    checkpoint = Path(args.checkpoint or default_checkpoint())
    torch.set_num_threads(args.threads)
    load_before = list(os.getloadavg())
    runtimes = {"torch": Recognizer(checkpoint), "onnx": OnnxScorer(checkpoint, threads=args.threads)}
    if not all(getattr(r, "normalizes", False) for r in runtimes.values()):
        raise SystemExit(f"{checkpoint.name} does not standardise its embeddings in both runtimes: no adapted mode")
    rows = sample(tuple(args.corpora), args.per_corpus)
    clips = [load_audio(r.path) for r in rows]
    print(f"onnx_parity: {len(clips)} clips ({sum(map(len, clips)) / 16_000:.0f} s of audio) from "
          f"{', '.join(args.corpora)}", file=sys.stderr)
    predictions, ms, load = {}, {}, {}
    for name, scorer in runtimes.items():
        predictions[name], ms[name] = score(scorer, clips)
        load[name] = [round(x, 2) for x in os.getloadavg()]  # just after this runtime's clips
        print(f"onnx_parity: {name} {ms[name]:.1f} ms per clip", file=sys.stderr)
    labels = runtimes["torch"].labels
    assert runtimes["onnx"].labels == labels
    alone = {n: np.array([[p.probabilities[c] for c in labels] for p in predictions[n]]) for n in runtimes}
    speakers = [r.speaker for r in rows]  # "<corpus>:<id>"
    together = {n: adapted(runtimes[n], predictions[n], speakers) for n in runtimes}
    embeddings = {n: np.stack([p.embedding for p in predictions[n]]) for n in runtimes}
    scale = float(np.abs(embeddings["torch"]).max())
    audio_s = sum(map(len, clips)) / 16_000
    result = {
        "what": "onnxruntime float32 (recognizer.OnnxScorer) against PyTorch float32 (recognizer.Recognizer) on real clips",
        "command": " ".join(["python -m benchmark.onnx_parity", *(argv if argv is not None else sys.argv[1:])]),
        "date": now(), "checkpoint": checkpoint.name, "clips": len(clips), "audio_s": round(audio_s, 1),
        "corpora": {c: sum(r.corpus == c for r in rows) for c in args.corpora},
        "speakers": len(set(speakers)), "labels": labels,
        "alone": compare(alone["torch"], alone["onnx"]),
        "adapted_to_speaker": compare(together["torch"], together["onnx"]),
        "embedding_max_abs_diff": float(np.abs(embeddings["torch"] - embeddings["onnx"]).max()),
        "embedding_max_abs": scale,
        "ms_per_clip": {n: round(v, 1) for n, v in ms.items()},
        "ms_per_audio_s": {n: round(v * len(clips) / audio_s, 1) for n, v in ms.items()},
        "threads": args.threads,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": load,
        "machine": machine(),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(args.output), result)
    print(f"onnx_parity: wrote {args.output}: alone {result['alone']}, adapted {result['adapted_to_speaker']}",
          file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
