"""The adapted mode, benchmarked: recipes judged alone and adapted to the speaker, calibrated per mode.

Two ways to judge a clip (`MODES`): alone, standardised with the model's statistics (the app's first recording,
`infer.py` without --normalize), and adapted, standardised with the statistics of its speaker's clips
(`infer.py --normalize speaker`; the app from a user's second recording on). A speaker whose clips carry fewer
than three emotions is standardised with its corpus's statistics instead (most URDU speakers recorded one
emotion: their own mean would remove the emotion itself; normalization.speaker_or_corpus).

Every recipe (`RECIPES`, train.py flags on top of its defaults) runs twice on the same clips: leave one corpus out
(unseen languages and setups) and 5 speaker folds over all five corpora (unseen speakers of seen corpora). Their
held-out logits give, per mode: UA per left-out corpus; calibration checked fold by fold with a temperature fit on
the other folds of both kinds (one temperature, or one that grows with the clip's distance from its statistics);
the "unsure" rule; and simulated app users judged with the shrunk statistics of their first K recordings.

    python -m benchmark.adaptation train             # resumable: runs/adaptation/<recipe>/<loco|cv>
    python -m benchmark.adaptation analyse           # benchmark/results/adaptation.json (+ users, slow part)
    python -m benchmark.adaptation report            # docs/adaptation.md and its figures, from the JSON alone
    python -m benchmark.adaptation users --cell runs/default_loco   # one LOCO run's simulated users (users.json)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmark.common import ROOT, WHISPER_BASE, machine, now, read_json, write_json
from adaptation.calibration import MODES

RUNS = Path("runs/adaptation")
RESULTS = ROOT / "benchmark" / "results" / "adaptation.json"
DOC = ROOT / "docs" / "adaptation.md"
DATA = ("--corpus", "emodb", "ravdess", "urdu", "ased", "emotiontts_ko",
        "--labels", "angry", "disgust", "fearful", "happy", "neutral", "sad")
PROTOCOLS = {"loco": ("--protocol", "loco"), "cv": ("--protocol", "speaker_kfold", "--folds", "5")}
# (title, train.py flags): the default recipe and the ways of training for the adapted mode
RECIPES = {
    "std_all": ("standardised with the training set's statistics (the previous default)",
                ("--embedding_norm", "all", "--train_alone", "false")),
    "std_speaker": ("standardised per training speaker", ("--embedding_norm", "speaker", "--train_alone", "false")),
    "std_speaker_alone": ("per training speaker, and every clip also as if alone: one head for both modes (the "
                          "new default)", ("--embedding_norm", "speaker", "--train_alone", "true")),
    "std_all_weighted": ("the previous default with the loss weighted by inverse class frequency",
                         ("--embedding_norm", "all", "--train_alone", "false", "--class_weighted", "true")),
    "std_speaker_alone_weighted": ("one head for both modes, loss weighted by inverse class frequency",
                                   ("--embedding_norm", "speaker", "--train_alone", "true", "--class_weighted", "true")),
}
CHOSEN = "std_speaker_alone"  # train.py's defaults since this benchmark: the recipe the report details
# Lexical leakage: the default recipe on leave-one-corpus-out with the text cues of two corpora taken away (ASED's
# emotion-specific sentences 03-07; the Korean corpus, whose `ne?` speakers read emotional scripts). LOCO only.
LEAKAGE = {
    "ased_common_texts": ("ASED sentences 01-02 only (every text in every emotion)",
                          ("--corpus", "emodb", "ravdess", "urdu", "ased:common_texts", "emotiontts_ko")),
    "without_korean": ("without the Korean corpus", ("--corpus", "emodb", "ravdess", "urdu", "ased")),
}
FIRST_RECORDINGS = (1, 2, 4, 8, 16)  # simulated users: statistics of only their first K recordings
SESSION_PRIOR = 8.0  # as the app (ui/voice.py)


def train(recipes: list[str], leakage: list[str]) -> None:
    """Run train.py for every recipe and protocol (and leakage variant, LOCO only) that has no metrics.json yet."""
    runs = [(RUNS / name / protocol, (*flags, *RECIPES[name][1])) for name in recipes
            for protocol, flags in PROTOCOLS.items()]
    runs += [(RUNS / name / "loco", (*PROTOCOLS["loco"], *LEAKAGE[name][1])) for name in leakage]
    for out, flags in runs:
        if (out / "metrics.json").exists():
            print(f"{out}: done, kept")
            continue
        command = [sys.executable, "train.py", *DATA, *flags, "--encoder", str(WHISPER_BASE), "--disable_tqdm", "true",
                   "--output_dir", str(out)]  # later flags win: a variant's --corpus replaces DATA's
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True, cwd=ROOT)


def leakage_figures(name: str) -> dict:
    """Return UA per left-out corpus in both modes of a leakage variant (LOCO only)."""
    folds = held_out(RUNS / name / "loco")
    classes = int(max(f["alone"]["logits"].shape[1] for f in folds))
    return {"title": LEAKAGE[name][0], "flags": list(LEAKAGE[name][1]),
            "modes": {mode: {f["name"]: ua(f[mode]["logits"], f["labels"], classes) for f in folds} for mode in MODES}}


def held_out(run: Path) -> list[dict]:
    """Return each fold's held-out logits, novelty and labels per mode, with the fold's name."""
    metrics = read_json(run / "metrics.json")
    if not metrics:  # not run (a recipe measured on leave-one-corpus-out only)
        return []
    folds = []
    for i, report in enumerate(metrics["folds"]):
        data = np.load(run / f"fold_{i:02d}" / "test_logits.npz")
        corpora = report["test_corpora"]
        folds.append({"name": corpora[0] if run.name == "loco" else f"speaker fold {i}", "labels": data["labels"],
                      **{mode: {"logits": data[f"logits_{key}"], "novelty": data[f"novelty_{key}"]}
                         for mode, key in MODES.items()}})
    return folds


def ua(logits: np.ndarray, labels: np.ndarray, classes: int) -> float:
    from metrics import classification_report

    return classification_report(labels, logits.argmax(1), list(range(classes)))["ua"]


def check_fold(test: dict, others: list[dict], loco: list[dict], mode: str) -> dict:
    """Return one fold's calibration figures in `mode`: raw, the shipped way (one temperature fit on the clip-alone
    logits of the left-out corpora), one temperature per mode and a temperature that grows with the clip's
    distance, each fit on the other folds; and the unsure rule (from the other folds) with what it flags."""
    from adaptation.calibration import (expected_calibration_error, fit_novelty_temperature, fit_temperature,
                             novelty_temperatures, reliability, scaled_softmax, softmax, unsure_threshold)

    def pool(folds, key):
        return np.concatenate([f[mode][key] if key != "labels" else f["labels"] for f in folds])

    logits, labels, novelty = test[mode]["logits"], test["labels"], test[mode]["novelty"]
    shipped_from = [f for f in loco if f is not test]
    shipped_t = fit_temperature(np.concatenate([f["alone"]["logits"] for f in shipped_from]),
                                np.concatenate([f["labels"] for f in shipped_from]))
    mode_t = fit_temperature(pool(others, "logits"), pool(others, "labels"))
    params = fit_novelty_temperature(pool(others, "logits"), pool(others, "labels"), pool(others, "novelty"))
    ways = {"raw": softmax(logits), "shipped": softmax(logits, shipped_t), "per_mode": softmax(logits, mode_t),
            "novelty": scaled_softmax(logits, novelty_temperatures(novelty, *params))}
    out = {"n": int(len(labels)), "accuracy": float(np.mean(logits.argmax(1) == labels)),
           "temperature_per_mode": mode_t, "novelty_params": list(params), "mean_novelty": float(np.mean(novelty)),
           "ece": {way: expected_calibration_error(p, labels) for way, p in ways.items()},
           "reliability": {way: reliability(p, labels) for way, p in ways.items()}}
    for way in ("per_mode", "novelty"):
        other_probs = (softmax(pool(others, "logits"), mode_t) if way == "per_mode" else scaled_softmax(
            pool(others, "logits"), novelty_temperatures(pool(others, "novelty"), *params)))
        threshold = unsure_threshold(other_probs, pool(others, "labels"))
        confident = ways[way].max(1) >= threshold
        out[f"unsure_{way}"] = {"below": threshold, "flagged": float(1 - confident.mean()),
                                "accuracy_unflagged": float(np.mean((ways[way].argmax(1) == labels)[confident]))
                                if confident.any() else None}
    return out


def analyse_recipe(name: str) -> dict:
    """Return UA per left-out corpus and speaker fold, and the calibration checks, in both modes."""
    loco, cv = held_out(RUNS / name / "loco"), held_out(RUNS / name / "cv")
    classes = int(max(f["alone"]["logits"].shape[1] for f in loco))
    every = loco + cv
    out = {"title": RECIPES[name][0], "flags": list(RECIPES[name][1]), "modes": {}}
    for mode in MODES:
        checks = {f["name"]: check_fold(f, [g for g in every if g is not f], loco, mode) for f in every}
        for f in every:
            checks[f["name"]]["ua"] = ua(f[mode]["logits"], f["labels"], classes)
        loco_names, cv_names = [f["name"] for f in loco], [f["name"] for f in cv]
        out["modes"][mode] = {
            "folds": checks,
            "loco_mean_ua": float(np.mean([checks[n]["ua"] for n in loco_names])),
            "cv_mean_ua": float(np.mean([checks[n]["ua"] for n in cv_names])) if cv_names else None,
            "worst_ece": {way: max(c["ece"][way] for c in checks.values()) for way in next(iter(checks.values()))["ece"]},
            "mean_ece": {kind: {way: float(np.mean([checks[n]["ece"][way] for n in names]))
                                for way in next(iter(checks.values()))["ece"]}
                         for kind, names in (("corpora", loco_names), ("speakers", cv_names)) if names}}
        cv_ua = out["modes"][mode]["cv_mean_ua"]
        print(f"{name} {mode}: LOCO UA {out['modes'][mode]['loco_mean_ua']:.3f}, CV UA "
              f"{'not run' if cv_ua is None else f'{cv_ua:.3f}'}, worst ECE " +
              ", ".join(f"{k} {v:.3f}" for k, v in out["modes"][mode]["worst_ece"].items()), flush=True)
    return out


def simulate_users(cell: Path, seed: int = 0) -> dict:
    """Every speaker of a left-out corpus plays a new user who records their clips in a random order: UA of the clips
    from the (K+1)-th on, judged alone, with the shrunk statistics of the first K recordings (K in FIRST_RECORDINGS),
    and with every earlier recording (the app's way). Per left-out corpus, and the mean over corpora."""
    import torch

    from benchmark.common import PROTOCOLS, prepare
    from benchmark.users import embeddings_of, fold_model
    from metrics import classification_report
    from adaptation.normalization import shrunk_statistics

    name = cell.parent.name
    rows, folds, _ = prepare(PROTOCOLS["loco_six"], seed)
    vectors = embeddings_of(cell, rows)
    rng = np.random.default_rng(seed)
    out = {}
    for i, fold in enumerate(folds):
        model, labels, mean, std = fold_model(cell, i)

        def judge(x, stats=(None, None)):
            with torch.no_grad():
                return model.classify(*[None if a is None else torch.as_tensor(a) for a in (x, *stats)]).argmax(-1).numpy()

        found = {way: ([], []) for way in ("alone", "all earlier", *(f"first {k}" for k in FIRST_RECORDINGS))}
        for speaker in sorted({rows[j].speaker for j in fold["test"]}):
            order = rng.permutation([j for j in fold["test"] if rows[j].speaker == speaker])
            x, truth = vectors[order], np.array([labels.index(rows[j].label) for j in order])
            alone = judge(x)
            for k in FIRST_RECORDINGS:
                if len(order) > k:
                    found[f"first {k}"][0].extend(truth[k:])
                    found[f"first {k}"][1].extend(judge(x[k:], shrunk_statistics(x[:k], mean, std, SESSION_PRIOR)))
            found["alone"][0].extend(truth[1:])
            found["alone"][1].extend(alone[1:])
            found["all earlier"][0].extend(truth[1:])
            found["all earlier"][1].extend([judge(x[n:n + 1], shrunk_statistics(x[:n], mean, std, SESSION_PRIOR))[0]
                                            for n in range(1, len(order))])
        corpus = rows[fold["test"][0]].corpus
        out[corpus] = {way: {"ua": classification_report(t, p, labels)["ua"], "clips": len(t)}
                       for way, (t, p) in found.items()}
        print(name, corpus, {k: round(v["ua"], 3) for k, v in out[corpus].items()}, flush=True)
    ways = list(next(iter(out.values())))
    return {"by_corpus": out, "mean": {way: float(np.mean([c[way]["ua"] for c in out.values()])) for way in ways},
            "seed": seed, "prior": SESSION_PRIOR}


def analyse(recipes: list[str], users: bool, leakage: list[str]) -> dict:
    """Write RESULTS: every recipe's figures (and simulated users), with the command and machine."""
    results = read_json(RESULTS) or {"recipes": {}}
    results.setdefault("leakage", {}).update({name: leakage_figures(name) for name in leakage
                                              if (RUNS / name / "loco" / "metrics.json").exists()})
    for name in recipes:
        previous = results["recipes"].get(name, {})
        results["recipes"][name] = analyse_recipe(name)
        if users:
            results["recipes"][name]["users"] = simulate_users(RUNS / name / "loco")
        elif "users" in previous:
            results["recipes"][name]["users"] = previous["users"]
    results.update(command="python -m benchmark.adaptation analyse", date=now(), chosen=CHOSEN, machine=machine(),
                   commit=subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                         cwd=ROOT).stdout.strip(), bins=15, data=list(DATA),
                   min_emotions_for_speaker_statistics=3)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS, results)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmark.adaptation", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("train", "analyse", "report", "users"))
    parser.add_argument("--cell", help="users: a LOCO run of the default label set; writes CELL/users.json")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--leakage", nargs="*", default=list(LEAKAGE), choices=list(LEAKAGE),
                        help="the leakage variants to train or analyse (LOCO only; none: --leakage with no name)")
    parser.add_argument("--no_users", action="store_true", help="analyse: keep the simulated users already stored")
    args = parser.parse_args(argv)
    if args.step == "train":
        train(args.recipes, args.leakage)
    elif args.step == "analyse":
        analyse(args.recipes, not args.no_users, args.leakage)
    elif args.step == "users":
        if not args.cell:
            parser.error("users needs --cell, a leave-one-corpus-out run folder")
        write_json(Path(args.cell) / "users.json", simulate_users(Path(args.cell)))
    else:
        from benchmark.adaptation_report import write_report

        write_report(read_json(RESULTS), DOC)


if __name__ == "__main__":
    main()
