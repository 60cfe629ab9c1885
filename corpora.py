"""Corpus readers: list the utterances of emotional-speech corpora as (path, label, speaker, corpus).

A corpus is named by a spec string (read_corpus, read_corpora):

  emodb | ravdess | urdu        a corpus folder under corpora_root() (env SER_CORPORA, else ../shared/corpora)
  NAME=PATH                     reader NAME on an explicit root, NAME one of: emodb ravdess urdu
  NAME=PATH:OPTIONS             options are comma-separated, `key=value` or a bare flag

Readers never decode audio (they only list files), skip non-audio files, return their utterances
sorted by path, and raise ValueError naming the path when a root is missing or yields nothing.
Every label is one of CANONICAL; every speaker is prefixed with its corpus ("emodb:03"), so that
speakers of different corpora never collide.
"""
from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from data_process import AUDIO_EXTENSIONS

CANONICAL = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised", "boredom")

SPEC_FORMS = """valid corpus specs:
  emodb | ravdess | urdu          a corpus folder under corpora_root()
  emodb=PATH  ravdess=PATH  urdu=PATH"""


@dataclass(frozen=True)
class Utterance:
    path: str  # absolute path of an audio file
    label: str  # canonical emotion name from CANONICAL
    speaker: str  # "<corpus>:<id>", e.g. "emodb:03"
    corpus: str  # "emodb", "ravdess", ...
    session: str | None = None  # IEMOCAP "Session1".. ; None elsewhere


def corpora_root() -> Path:
    """Return the folder holding the shared corpora: env SER_CORPORA, else <project>/../shared/corpora."""
    env = os.environ.get("SER_CORPORA")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "shared" / "corpora"


# ---------------------------------------------------------------------------------------------
# Label tables: each corpus's own names -> CANONICAL
# ---------------------------------------------------------------------------------------------
EMODB_LABELS = dict(W="angry", L="boredom", E="disgust", A="fearful", F="happy", T="sad", N="neutral")
RAVDESS_LABELS = dict(zip(["01", "02", "03", "04", "05", "06", "07", "08"], CANONICAL[:8]))
URDU_LABELS = dict(A="angry", H="happy", N="neutral", S="sad")


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------
def _existing_dir(root: str | Path) -> Path:
    """Return `root` as an absolute folder path; ValueError naming it if it is not a folder."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ValueError(f"{path}: corpus folder does not exist")
    return path.resolve()


def _audio_files(root: Path) -> list[Path]:
    """Return the audio files below `root`, recursively and sorted, skipping hidden files (._x.wav)."""
    return sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def _nonempty(rows: list[Utterance], root: Path | str) -> list[Utterance]:
    """Return `rows` sorted by path; ValueError naming `root` if there are none."""
    if not rows:
        raise ValueError(f"{root}: no labelled audio files found")
    return sorted(rows, key=lambda u: u.path)


def _by_name(root: str | Path, corpus: str, pattern: str, parse: Callable) -> list[Utterance]:
    """Return the utterances of files below `root` whose stem matches `pattern`; parse(match) -> (label, id)."""
    root = _existing_dir(root)
    rows, odd = [], []
    for path in _audio_files(root):
        match = re.fullmatch(pattern, path.stem)
        parsed = parse(match) if match else None
        if parsed is None:
            odd.append(path.name)
            continue
        label, speaker = parsed
        rows.append(Utterance(str(path), label, f"{corpus}:{speaker}", corpus))
    if odd and not rows:
        raise ValueError(f"{root}: no file follows the {corpus} naming scheme (e.g. {odd[0]})")
    return _nonempty(rows, root)


# ---------------------------------------------------------------------------------------------
# Readers: one per corpus layout. Each returns a sorted list of Utterance.
# ---------------------------------------------------------------------------------------------
def read_emodb(root: str | Path) -> list[Utterance]:
    """Return EmoDB utterances: `03a01Fa.wav` = speaker 03, text a01, emotion letter F, version a."""
    return _by_name(root, "emodb", r"(\d\d)[a-z]\d\d([WLEAFTN])[a-z]?",
                    lambda m: (EMODB_LABELS[m[2]], m[1]))


def read_ravdess(root: str | Path) -> list[Utterance]:
    """Return RAVDESS speech utterances: `03-01-05-01-02-01-12` = modality-channel-EMOTION-...-ACTOR.

    Only vocal channel 01 (speech) is kept; song files (channel 02) are skipped.
    """
    return _by_name(root, "ravdess", r"\d\d-(\d\d)-(0[1-8])-\d\d-\d\d-\d\d-(\d\d)",
                    lambda m: (RAVDESS_LABELS[m[2]], m[3]) if m[1] == "01" else None)


def read_urdu(root: str | Path) -> list[Utterance]:
    """Return URDU utterances: `SM1_F10_A010` = speaker SM1 (S + gender + number), file 10, emotion A."""
    return _by_name(root, "urdu", r"(S[MF]\d+)_F\d+_([AHNS])\d+",
                    lambda m: (URDU_LABELS[m[2]], m[1]))


CORPORA: dict[str, Callable[..., list[Utterance]]] = {
    "emodb": read_emodb,
    "ravdess": read_ravdess,
    "urdu": read_urdu,
}
SHARED = ("emodb", "ravdess", "urdu")  # names usable bare, as folders under corpora_root()


# ---------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------
def _parse_options(text: str) -> dict[str, str | bool]:
    """Return the options of `a=1,flag` as {"a": "1", "flag": True}."""
    options: dict[str, str | bool] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        options[key.strip()] = value.strip() if sep else True
    return options


def _split_spec(spec: str) -> tuple[str, str | None, dict]:
    """Return (reader name, root or None for a bare name, options) of a corpus spec."""
    name, sep, rest = spec.strip().partition("=")
    name = name.strip().lower()
    options_text = ""
    if not sep:
        name, _, options_text = name.partition(":")
        root = None
    else:
        root, colon, tail = rest.rpartition(":")
        # a trailing ":options" never contains a path separator (keeps C:\data and URLs intact)
        if colon and root and not re.search(r"[/\\]", tail):
            options_text = tail
        else:
            root = rest
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r} in spec {spec!r}\n{SPEC_FORMS}")
    if root is None and name not in SHARED:
        raise ValueError(f"{name!r} needs a folder: {name}=PATH\n{SPEC_FORMS}")
    if root is not None and not root.strip():
        raise ValueError(f"spec {spec!r} names no path\n{SPEC_FORMS}")
    return name, root, _parse_options(options_text)


def read_corpus(spec: str) -> list[Utterance]:
    """Return the utterances named by `spec` (see the module docstring for the forms)."""
    name, root, options = _split_spec(spec)
    reader = CORPORA[name]
    allowed = [p for p in inspect.signature(reader).parameters if p != "root"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"spec {spec!r}: unknown option(s) {unknown}; {name} takes {allowed or 'none'}\n{SPEC_FORMS}")
    return reader(root if root is not None else corpora_root() / name, **options)


def _check_labels(names, what: str) -> None:
    """Raise ValueError if any of `names` is not a CANONICAL label."""
    bad = sorted(set(names) - set(CANONICAL))
    if bad:
        hint = " (IEMOCAP: use the spec option :merge_excited)" if "excited" in bad else ""
        raise ValueError(f"{what}: unknown label(s) {bad}; labels are {', '.join(CANONICAL)}{hint}")


def select_labels(rows: list[Utterance], keep: Sequence[str] | None = None,
                  merge: dict[str, str] | None = None) -> list[Utterance]:
    """Return `rows` with `merge` applied (e.g. {"calm": "neutral"}), then only `keep` labels (None: all)."""
    merge = dict(merge or {})
    _check_labels(list(merge) + list(merge.values()), "merge")
    if keep is not None:
        _check_labels(keep, "keep")
    out = []
    for row in rows:
        label = merge.get(row.label, row.label)
        if keep is None or label in keep:
            out.append(row if label == row.label else Utterance(row.path, label, row.speaker, row.corpus, row.session))
    return out


def read_corpora(specs: Sequence[str], keep: Sequence[str] | None = None,
                 merge: dict[str, str] | None = None) -> list[Utterance]:
    """Return the utterances of several corpora, in spec order, after select_labels(keep, merge)."""
    if isinstance(specs, str):
        specs = [specs]
    if not specs:
        raise ValueError(f"no corpus given\n{SPEC_FORMS}")
    rows = [row for spec in specs for row in read_corpus(spec)]
    selected = select_labels(rows, keep, merge)
    if not selected:
        raise ValueError(f"no utterances of {specs} have the labels {list(keep or [])}")
    return selected


def parse_merge(text: str) -> dict[str, str]:
    """Return the label merges of `"calm:neutral,excited:happy"` as {"calm": "neutral", "excited": "happy"}."""
    merge = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        source, sep, target = (s.strip().lower() for s in item.partition(":"))
        if not (sep and source and target):
            raise ValueError(f"bad merge {item!r}; expected FROM:TO pairs like calm:neutral,excited:happy")
        merge[source] = target
    return merge
