"""Build the bona-fide vs synthetic speech corpus: real recordings from the shared corpora against speech
synthesised on this machine with espeak-ng (Debian package `espeak-ng`), varied texts, voices and prosody.

    python scripts/make_synthetic.py --out ../synthetic_voices
    python train.py --corpus csv=../synthetic_voices/manifest.csv:task=spoof --backbone mfcc_lstm \
        --protocol speaker_kfold --output_dir runs/spoof_mfcc_lstm

The folder gets one folder per label, `bonafide/` and `synthetic/` (16 kHz mono WAV), and
`manifest.csv` with path,label,speaker: real speakers keep their corpus ids ("emodb:03"), each
synthetic voice (language + espeak variant, e.g. "espeak:de+m3") is one speaker, so speaker-disjoint
splits never test a voice that was trained on. Keep the folder outside the repository: the real
recordings keep their corpora's licences (see ../shared/README.md) and audio is never committed.

espeak-ng is a formant synthesiser and sounds plainly robotic: a model that separates it from real
speech shows the pipeline works, not that it would catch modern neural text-to-speech.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]  # the project root
sys.path.insert(0, str(ROOT))
from data.corpora import read_corpus  # noqa: E402
from data_process import SAMPLE_RATE, load_audio  # noqa: E402

TEXTS = {
    "en": [
        "The kids are talking by the door.", "Dogs are sitting by the door.",
        "I will meet you at the station tomorrow morning.", "Please put the books back on the shelf.",
        "The weather has been strange all week.", "Could you tell me where the library is?",
        "We painted the kitchen a pale shade of green.", "He forgot his umbrella on the train again.",
        "The meeting was moved to Thursday afternoon.", "She plays the piano every evening after dinner.",
        "There is a small bakery at the end of the street.", "They finally fixed the broken window.",
        "My brother lives in a house near the river.", "Nobody expected the concert to be cancelled.",
        "The coffee is much too hot to drink.", "Turn left after the second traffic light.",
        "I have not seen that film yet.", "The garden looks lovely in the spring.",
        "Remember to lock the door when you leave.", "Our flight was delayed by two hours.",
    ],
    "de": [
        "Der Lappen liegt auf dem Eisschrank.", "Das will sie am Mittwoch abgeben.",
        "Heute abend könnte ich es ihm sagen.", "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
        "Wir treffen uns morgen früh am Bahnhof.", "Bitte stell die Bücher zurück ins Regal.",
        "Das Wetter war die ganze Woche seltsam.", "Kannst du mir sagen, wo die Bibliothek ist?",
        "Er hat seinen Regenschirm wieder im Zug vergessen.", "Die Sitzung wurde auf Donnerstag verschoben.",
        "Am Ende der Straße gibt es eine kleine Bäckerei.", "Mein Bruder wohnt in einem Haus am Fluss.",
        "Niemand hat erwartet, dass das Konzert ausfällt.", "Der Kaffee ist viel zu heiß zum Trinken.",
        "Nach der zweiten Ampel musst du links abbiegen.", "Den Film habe ich noch nicht gesehen.",
        "Im Frühling sieht der Garten wunderschön aus.", "Vergiss nicht, die Tür abzuschließen.",
        "Unser Flug hatte zwei Stunden Verspätung.", "Sie spielt jeden Abend nach dem Essen Klavier.",
    ],
}
LANGUAGES = {"en-us": "en", "en-gb": "en", "de": "de"}  # espeak voice -> text language (the real corpora's)
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "croak"]
REAL_CORPORA = ("emodb", "ravdess", "urdu")


def synthesise(text: str, voice: str, speed: int, pitch: int, gap: int) -> np.ndarray:
    """Return espeak-ng's rendering of `text` as 16 kHz float32 samples."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "say.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-g", str(gap),
                        "-w", str(wav), text], check=True, capture_output=True)
        return load_audio(wav)


def write_wav(path: Path, audio: np.ndarray) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")


def real_rows(per_speaker: int, rng: np.random.Generator) -> list:
    """Return up to `per_speaker` random utterances of every speaker of the shared corpora."""
    chosen = []
    for corpus in REAL_CORPORA:
        rows = read_corpus(corpus)
        for speaker in sorted({r.speaker for r in rows}):
            mine = [r for r in rows if r.speaker == speaker]
            chosen.extend(mine[i] for i in sorted(rng.permutation(len(mine))[:per_speaker]))
    return chosen


def build(out: Path, per_speaker: int = 10, voices: int = 24, per_voice: int = 20, seed: int = 0) -> dict:
    """Write the corpus under `out` and return a summary (counts of files and speakers per label)."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed: apt-get install -y espeak-ng")
    rng = np.random.default_rng(seed)
    manifest = []
    for row in real_rows(per_speaker, rng):
        name = f"{row.corpus}_{Path(row.path).stem}.wav"
        write_wav(out / "bonafide" / name, load_audio(row.path))
        manifest.append((f"bonafide/{name}", "bonafide", row.speaker))

    pairs = [(lang, variant) for variant in VARIANTS for lang in LANGUAGES]
    for lang, variant in [pairs[i] for i in sorted(rng.permutation(len(pairs))[:voices])]:
        voice, speaker = f"{lang}+{variant}", f"espeak:{lang}+{variant}"
        texts = TEXTS[LANGUAGES[lang]]
        for i, t in enumerate(rng.permutation(len(texts))[:per_voice]):
            audio = synthesise(texts[t], voice, speed=int(rng.integers(120, 211)), pitch=int(rng.integers(20, 81)),
                               gap=int(rng.integers(0, 4)))
            name = f"{lang}_{variant}_{i:02d}.wav"
            write_wav(out / "synthetic" / name, audio)
            manifest.append((f"synthetic/{name}", "synthetic", speaker))

    with open(out / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "speaker"])
        writer.writerows(manifest)
    summary = {label: {"files": sum(m[1] == label for m in manifest),
                       "speakers": len({m[2] for m in manifest if m[1] == label})}
               for label in ("bonafide", "synthetic")}
    settings = {"per_speaker": per_speaker, "voices": voices, "per_voice": per_voice, "seed": seed}
    (out / "summary.json").write_text(json.dumps({"settings": settings, "summary": summary}, indent=1))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write (outside the repository)")
    parser.add_argument("--per_speaker", type=int, default=10, help="real clips per speaker (emodb, ravdess, urdu)")
    parser.add_argument("--voices", type=int, default=24, help="synthetic voices (language x espeak variant)")
    parser.add_argument("--per_voice", type=int, default=20, help="sentences per synthetic voice (at most 20)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out).expanduser().resolve()
    if out == ROOT or ROOT in out.parents:
        raise SystemExit(f"{out} is inside the repository: write the audio elsewhere (e.g. ../synthetic_voices)")
    print(json.dumps(build(out, args.per_speaker, args.voices, args.per_voice, args.seed), indent=1), file=sys.stderr)


if __name__ == "__main__":
    main()
