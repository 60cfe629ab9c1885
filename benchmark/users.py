"""Simulated users of the app's "calibrate to my voice" step, on the leave-one-corpus-out folds.

Every speaker of a left-out corpus plays a user the model never heard, in a language it never heard. Their
clips are judged by the fold's model five ways, always on the same clips:
  alone       each clip with the model's own statistics (what the app does without calibration);
  calm 1 / 2  after the user recorded 1 or 2 clips of calm (neutral) speech (normalization.from_calm_speech);
  session     each clip with the statistics of the user's earlier clips in a random order, drawn towards the
              model's while there are few (normalization.shrunk_statistics): adapting without asking;
  speaker     with all of the speaker's clips (an upper bound: infer.py --normalize speaker).
The calibration clips are two neutral clips per speaker; speakers with fewer than three neutral clips are
left out of every way, and the calibration clips are never judged.

    python -m benchmark.users --cell runs/bench/whisper_linear_speakernorm/loco     # writes users.json in the cell
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

CALM_CLIPS = 2  # calibration clips per simulated user
PRIORS = (2.0, 4.0, 8.0)  # pseudo-clips of the model's statistics in the session mode


def embeddings_of(cell: Path, rows) -> np.ndarray:
    """Return every row's pooled embedding, from the encoder cache, as the cell's train.py computed them."""
    import models
    from config import parse_args
    from data.feature_cache import cached_layers
    from train import build_model, pooled_embeddings

    settings = json.loads((cell / "settings.json").read_text())
    flags = [f"--{k}={v}" for k, v in settings["model"].items() if v is not None and not isinstance(v, (list, dict))]
    _, margs, _ = parse_args(flags)
    encoder = models.BACKBONES[margs.backbone].load_encoder(margs.encoder)
    model, extractor = build_model(margs, sorted({r.label for r in rows}), encoder)
    layers, skipped = cached_layers(model, extractor, [r.path for r in rows], settings["data"].get("cache_dir"))
    if skipped:
        raise ValueError(f"{len(skipped)} clips do not decode: {skipped[:2]}")
    return pooled_embeddings(model, layers)


def fold_model(cell: Path, i: int):
    """Return fold i's model of a LOCO cell (float32, eval), its labels and its statistics for a clip alone."""
    import torch

    from models import EmotionClassifier

    model = EmotionClassifier.from_pretrained(cell / f"fold_{i:02d}", dtype=torch.float32).eval()
    if not model.normalizes:
        raise ValueError(f"{cell}: its model standardises nothing (trained without --embedding_norm)")
    labels = [model.config.id2label[k] for k in range(model.config.num_labels)]
    return model, labels, model.embedding_mean.numpy(), model.embedding_std.numpy()


def simulate(cell: Path, seed: int = 0) -> dict:
    """Return UA per left-out corpus and way of judging (see the module docstring), and their means."""
    import torch

    from benchmark.common import PROTOCOLS, prepare
    from metrics import classification_report
    from adaptation.normalization import from_calm_speech, neutral_offset, shrunk_statistics, statistics

    rows, folds, _ = prepare(PROTOCOLS["loco"], seed)
    vectors = embeddings_of(cell, rows)
    rng = np.random.default_rng(seed)
    out = {}
    for i, fold in enumerate(folds):
        model, labels, mean, std = fold_model(cell, i)
        # the offset train.py now stores (a cell trained before it stored this one gets it recomputed, the same way)
        train = np.asarray(fold["train"])
        offset = neutral_offset(vectors[train], [rows[j].speaker for j in train],
                                np.array([rows[j].label == "neutral" for j in train]), std)

        def judge(x, m=None, s=None):
            with torch.no_grad():
                args = [torch.as_tensor(a) if a is not None else None for a in (x, m, s)]
                return model.classify(*args).argmax(-1).numpy()

        truth, found = [], {way: [] for way in ("alone", "calm 1", "calm 2", "speaker",
                                                *(f"session (prior {p:g})" for p in PRIORS))}
        for speaker in sorted({rows[j].speaker for j in fold["test"]}):
            mine = np.array([j for j in fold["test"] if rows[j].speaker == speaker])
            neutral = [j for j in mine if rows[j].label == "neutral"]
            if len(neutral) < CALM_CLIPS + 1:
                continue
            calm = rng.choice(neutral, CALM_CLIPS, replace=False)
            judged = rng.permutation([j for j in mine if j not in calm])  # the order the user records them
            x = vectors[judged]
            truth += [labels.index(rows[j].label) for j in judged]
            found["alone"] += list(judge(x))
            for k in (1, 2):
                found[f"calm {k}"] += list(judge(x, *from_calm_speech(vectors[calm[:k]], std, offset)))
            found["speaker"] += list(judge(x, *statistics(vectors[mine])))
            for prior in PRIORS:
                found[f"session (prior {prior:g})"] += [
                    judge(x[n:n + 1], *shrunk_statistics(x[:n], mean, std, prior))[0] for n in range(len(judged))]
        corpus = rows[fold["test"][0]].corpus
        out[corpus] = {way: classification_report(truth, predicted, labels)["ua"] for way, predicted in found.items()}
        out[corpus]["clips"] = len(truth)
        print(corpus, {k: round(v, 3) for k, v in out[corpus].items()}, flush=True)
    ways = [k for k in next(iter(out.values())) if k != "clips"]
    return {"cell": str(cell), "calm_clips": CALM_CLIPS, "seed": seed, "by_corpus": out,
            "mean": {way: float(np.mean([c[way] for c in out.values()])) for way in ways}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmark.users", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", required=True, help="a loco cell of a system trained with --embedding_norm")
    parser.add_argument("--seed", type=int, default=0, help="which neutral clips calibrate, and the order of the rest")
    args = parser.parse_args(argv)
    result = simulate(Path(args.cell), args.seed)
    (Path(args.cell) / "users.json").write_text(json.dumps(result, indent=1))
    print("mean UA over left-out corpora:", {k: round(v, 3) for k, v in result["mean"].items()})
    return result


if __name__ == "__main__":
    main()
