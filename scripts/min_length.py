"""How much audio does a judgement need? Accuracy of a checkpoint on real clips cut to a few lengths.

    python scripts/min_length.py --checkpoint checkpoints/whisper-base-std-linear --corpus ased emotiontts_ko emodb

Each clip is cut to each length around its centre (where the speech is) and scored; the top emotion
is taken among the labels the corpus uses, so that chance is 1 / (number of its labels). Prints
UA (mean per-class recall) and WA per corpus and length, and the full-length figure for reference.
The minimum length of audio_checks.MIN_SECONDS was chosen from these figures (docs/input_checks.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.corpora import read_corpus  # noqa: E402
from data_process import SAMPLE_RATE, load_audio  # noqa: E402
from serving.recognizer import Recognizer  # noqa: E402
from metrics import classification_report  # noqa: E402


def sample(rows, per_label: int, seed: int = 0):
    """Return up to `per_label` rows of each label, drawn at random."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted({r.label for r in rows}):
        members = [r for r in rows if r.label == label]
        chosen.extend(members[i] for i in sorted(rng.permutation(len(members))[:per_label]))
    return chosen


def centre_cut(audio: np.ndarray, seconds: float | None) -> np.ndarray:
    if seconds is None or len(audio) <= seconds * SAMPLE_RATE:
        return audio
    size = int(seconds * SAMPLE_RATE)
    start = (len(audio) - size) // 2
    return audio[start:start + size]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints/whisper-base-std-linear")
    parser.add_argument("--corpus", nargs="+", default=["ased", "emotiontts_ko", "emodb"])
    parser.add_argument("--lengths", nargs="+", type=float, default=[0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
    parser.add_argument("--per_label", type=int, default=60, help="clips per label and corpus")
    args = parser.parse_args(argv)

    recognizer = Recognizer(args.checkpoint)
    lengths = [*args.lengths, None]
    print(f"checkpoint {args.checkpoint}; UA / WA over each corpus's own labels; chance = 1 / labels")
    print("corpus (clips, labels) | " + " | ".join(f"{x:g} s" if x else "full" for x in lengths))
    for corpus in args.corpus:
        rows = sample([r for r in read_corpus(corpus) if r.label in recognizer.labels], args.per_label)
        labels = sorted({r.label for r in rows})
        keep = [recognizer.labels.index(label) for label in labels]
        audio = [load_audio(r.path) for r in rows]
        truth = [labels.index(r.label) for r in rows]
        cells = []
        for seconds in lengths:
            probs = recognizer.probabilities([centre_cut(a, seconds) for a in audio])[:, keep]
            report = classification_report(truth, probs.argmax(axis=1), labels)
            cells.append(f"{report['ua']:.3f} / {report['wa']:.3f}")
        print(f"{corpus} ({len(rows)}, {len(labels)}; chance {1 / len(labels):.3f}) | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
