"""Corpus readers: list the utterances of emotional-speech corpora as (path, label, speaker, corpus).

Spec forms (read_corpus, read_corpora):
  emodb | ravdess | urdu | ased | emotiontts_ko
                              a corpus folder under corpora_root() (env SER_CORPORA, else ../shared/corpora)
  ased[=PATH]:common_texts    ASED with only sentences 01-02 (spoken in every emotion)
  emodb=PATH ravdess=PATH urdu=PATH ased=PATH emotiontts_ko=PATH cremad=PATH tess=PATH casia=PATH iemocap=PATH
                              a corpus in its original layout and file names
  iemocap=PATH:merge_excited  "exc" becomes happy (the 4-class setup also needs keep=neutral,happy,sad,angry)
  folder=PATH                 PATH/<label>/**/*.wav: one folder per label, any names (Anger, frustrated, low)
  csv=MANIFEST.csv            columns path,label[,speaker]; relative paths are against the CSV's folder
  csv=MANIFEST.csv:task=spoof the labels must be those of a task (TASK_LABELS): bonafide/synthetic (scripts/make_synthetic.py)
  hf=NAME_OR_PATH[:OPTIONS]   a Hugging Face dataset (hub name, save_to_disk folder, or data folder);
                              options audio=COL,label=COL (defaults audio, label), split=A+B (default:
                              all), speaker=COL, config=NAME, merge_excited. Splits named session1..5
                              (IEMOCAP_Audio) give the session, and the speaker when there is no speaker column.
  folder, csv and hf take the option `canonical`: emotion names mapped to CANONICAL through ALIASES
  (Anger -> angry, hap -> happy) so the data combines with the known corpora; a name that is no
  emotion is then an error (hf: IEMOCAP's xxx, oth, fru, exc are dropped; merge_excited implies it).
Options are comma-separated `key=value` items or bare flags after the last ":" of the path.

Readers only list files (they never decode audio), skip non-audio and hidden files, return their
utterances sorted by path, and raise ValueError naming the path when a root is missing or yields
nothing. The known corpora (SHARED) give CANONICAL labels; folder, csv and hf give their labels as
written (surrounding spaces removed), any names: `frustrated`, `bonafide`, `low`/`mid`/`high`.
Speakers are prefixed with the corpus ("emodb:03") so that corpora never share a speaker. The folder
reader knows no speakers ("folder:unknown"), nor do csv and hf without a speaker column:
speaker-independent protocols need them (give the CSV a speaker column). IEMOCAP speakers are
session + gender ("iemocap:Ses01F"), with session "Session1".
"""
from __future__ import annotations

import csv
import hashlib
import inspect
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from data_process import AUDIO_EXTENSIONS

CANONICAL = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised", "boredom")
TASK_LABELS = {  # label sets a CSV manifest is checked against (csv=PATH:task=NAME); emotion: any alias
    "emotion": CANONICAL,
    "spoof": ("bonafide", "synthetic"),  # real against synthesised speech (scripts/make_synthetic.py)
}

SPEC_FORMS = """valid corpus specs:
  emodb | ravdess | urdu | ased | emotiontts_ko   a corpus folder under corpora_root()
  ased:common_texts                            ASED sentences 01-02 only (every text in every emotion)
  emodb=PATH  ravdess=PATH  urdu=PATH  cremad=PATH  tess=PATH  casia=PATH  iemocap=PATH[:merge_excited]
  folder=PATH[:canonical]                      PATH/<label>/**/*.wav, labels as named (canonical: emotion aliases)
  csv=MANIFEST.csv[:canonical|task=spoof]      columns path,label[,speaker]; task: check the labels are the task's
  hf=NAME_OR_PATH[:audio=COL,label=COL,split=A+B,speaker=COL,config=NAME,canonical,merge_excited]"""


@dataclass(frozen=True)
class Utterance:
    path: str  # absolute path of an audio file
    label: str  # a CANONICAL name for the known corpora; as written in the data for folder, csv and hf
    speaker: str  # "<corpus>:<id>", e.g. "emodb:03"
    corpus: str  # "emodb", "ravdess", ...
    session: str | None = None  # IEMOCAP "Session1".. ; None elsewhere


def corpora_root() -> Path:
    """Return the folder holding the shared corpora: env SER_CORPORA, else <project>/../shared/corpora."""
    env = os.environ.get("SER_CORPORA")
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"


# --- Label tables: each corpus's own names -> CANONICAL --------------------------------------
EMODB_LABELS = dict(W="angry", L="boredom", E="disgust", A="fearful", F="happy", T="sad", N="neutral")
RAVDESS_LABELS = dict(zip(["01", "02", "03", "04", "05", "06", "07", "08"], CANONICAL[:8]))
URDU_LABELS = dict(A="angry", H="happy", N="neutral", S="sad")
CREMAD_LABELS = dict(ANG="angry", DIS="disgust", FEA="fearful", HAP="happy", NEU="neutral", SAD="sad")
IEMOCAP_LABELS = dict(neu="neutral", hap="happy", sad="sad", ang="angry", sur="surprised", fea="fearful",
                      dis="disgust")
IEMOCAP_DROPPED = ("xxx", "oth", "fru", "exc", "other", "frustrated", "excited")  # hf labels skipped, not errors
ALIASES = {name: name for name in CANONICAL} | IEMOCAP_LABELS | {  # lower-case names -> CANONICAL
    "anger": "angry", "happiness": "happy", "joy": "happy", "sadness": "sad", "fear": "fearful",
    "disgusted": "disgust", "surprise": "surprised", "ps": "surprised", "pleasant_surprise": "surprised",
    "pleasant_surprised": "surprised", "bored": "boredom",
}


def _alias(name: str, where: str | None = None) -> str | None:
    """Return the canonical label of an emotion name (any case), else None, or ValueError naming `where`."""
    label = ALIASES.get(re.sub(r"[\s-]+", "_", str(name).strip().lower()))
    if label is None and where:
        raise ValueError(f"{where}: unknown emotion {name!r}; known names: {', '.join(sorted(ALIASES))}")
    return label


# --- Shared helpers --------------------------------------------------------------------------
def _flag(value: bool | str) -> bool:
    """Return the truth of an option given as a bare flag (True) or as text ("true", "1", "yes")."""
    return value is True or str(value).lower() in ("1", "true", "yes")


def _existing_dir(root: str | Path) -> Path:
    """Return `root` as an absolute folder path; ValueError naming it if it is not a folder."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ValueError(f"{path}: corpus folder does not exist")
    return path.resolve()


def _audio_files(root: Path) -> list[Path]:
    """Return the audio files below `root`, recursively and sorted, skipping hidden ones (._x.wav, .git/)."""
    return sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _nonempty(rows: list[Utterance], root: Path | str) -> list[Utterance]:
    """Return `rows` sorted by path; ValueError naming `root` if there are none."""
    if not rows:
        raise ValueError(f"{root}: no labelled audio files found")
    return sorted(rows, key=lambda u: u.path)


def _by_name(root: str | Path, corpus: str, pattern: str, parse: Callable) -> list[Utterance]:
    """Return the utterances of files below `root` matching `pattern`; parse(match) -> (label, id) or None.

    `pattern` matches the file's path relative to `root`, without its suffix (`.*/` skips folders).
    Files outside the naming scheme are skipped; ValueError if no file follows it.
    """
    root = _existing_dir(root)
    rows, odd = [], []
    for path in _audio_files(root):
        match = re.fullmatch(pattern, path.relative_to(root).with_suffix("").as_posix())
        parsed = parse(match) if match else None
        if parsed is None:
            odd.append(path.name)
            continue
        label, speaker = parsed
        rows.append(Utterance(str(path), label, f"{corpus}:{speaker}", corpus))
    if odd and not rows:
        raise ValueError(f"{root}: no file follows the {corpus} naming scheme (e.g. {odd[0]})")
    return _nonempty(rows, root)


# --- Readers: one per corpus layout. Each returns a sorted list of Utterance. ----------------
def read_emodb(root: str | Path) -> list[Utterance]:
    """Return EmoDB utterances: `03a01Fa.wav` = speaker 03, text a01, emotion letter F, version a."""
    return _by_name(root, "emodb", r"(?:.*/)?(\d\d)[a-z]\d\d([WLEAFTN])[a-z]?",
                    lambda m: (EMODB_LABELS[m[2]], m[1]))


def read_ravdess(root: str | Path) -> list[Utterance]:
    """Return RAVDESS speech utterances: `03-01-05-01-02-01-12` = modality-channel-EMOTION-...-ACTOR.

    Only vocal channel 01 (speech) is kept; song files (channel 02) are skipped.
    """
    return _by_name(root, "ravdess", r"(?:.*/)?\d\d-(\d\d)-(0[1-8])-\d\d-\d\d-\d\d-(\d\d)",
                    lambda m: (RAVDESS_LABELS[m[2]], m[3]) if m[1] == "01" else None)


def read_urdu(root: str | Path) -> list[Utterance]:
    """Return URDU utterances: `SM1_F10_A010` = speaker SM1 (S + gender + number), file 10, emotion A."""
    return _by_name(root, "urdu", r"(?:.*/)?(S[MF]\d+)_F\d+_([AHNS])\d+",
                    lambda m: (URDU_LABELS[m[2]], m[1]))


ASED_LABELS = dict(n="neutral", f="fearful", h="happy", s="sad", a="angry")
ASED_COMMON_TEXTS = ("01", "02")  # spoken in all five emotions; sentences 03-07 are emotion-specific texts
KO_LABELS = ("neutral", "happy", "sad", "angry")  # by hundreds of the sentence number (see read_emotiontts_ko)


def read_ased(root: str | Path, common_texts: bool | str = False) -> list[Utterance]:
    """Return ASED (Amharic) utterances: `a5-03-01-02-50` = emotion a(ngry)5, sentence 03, repetition 01,
    gender 02, SPEAKER 50.

    The speaker is the last field alone: five speaker numbers occur with both gender codes, and taking
    the number alone keeps any voice from being on both sides of a split. `common_texts` keeps only
    sentences 01-02, the texts spoken in every emotion (in 03-07 the text gives the emotion away).
    """
    keep = ASED_COMMON_TEXTS if _flag(common_texts) else None

    def parse(m):
        return (ASED_LABELS[m[1].lower()], m[3]) if keep is None or m[2] in keep else None
    return _by_name(root, "ased", r"(?:.*/)?([nfhsaNFHSA])[1-5]-(\d\d)-\d\d-\d\d-(\d\d)", parse)


def read_emotiontts_ko(root: str | Path) -> list[Utterance]:
    """Return emotiontts_ko (Korean) utterances: `nea/nea00203` = speaker nea, sentence 203.

    The sentence number gives the label: 1-100 neutral, 101-200 happy, 201-300 sad, 301-400 angry.
    The corpus's own README lists 201-300 as angry and 301-400 as sad; the scripts ("it hurts" against
    scolding) and the acoustics show those two are swapped there (../shared/README.md).
    """
    def parse(m):
        number = int(m[2])
        return (KO_LABELS[(number - 1) // 100], m[1]) if 1 <= number <= 400 else None
    return _by_name(root, "emotiontts_ko", r"(?:.*/)?([a-z]{3})(\d{5})", parse)


def read_cremad(root: str | Path) -> list[Utterance]:
    """Return CREMA-D utterances: `1001_DFA_ANG_XX` = speaker 1001, sentence DFA, emotion ANG, level XX."""
    return _by_name(root, "cremad", r"(?:.*/)?(\d{4})_[A-Z]{3}_([A-Z]{3})_[A-Z]+",
                    lambda m: (CREMAD_LABELS[m[2]], m[1]) if m[2] in CREMAD_LABELS else None)


def read_tess(root: str | Path) -> list[Utterance]:
    """Return TESS utterances: `OAF_angry/OAF_back_angry` = speaker OAF, word back, emotion angry."""
    return _by_name(root, "tess", r"(?:.*/)?([A-Za-z]{3})_([A-Za-z]+)_(\w+)",
                    lambda m: (_alias(m[3], m.string), m[1].upper()))


def read_casia(root: str | Path) -> list[Utterance]:
    """Return CASIA utterances: `liuchanhg/angry/201.wav` = speaker folder / emotion folder / file."""
    return _by_name(root, "casia", r"(?:.*/)?([^/]+)/([^/]+)/[^/]+",
                    lambda m: (_alias(m[2], m.string), m[1]))


def _iemocap_codes(root: Path) -> dict[str, str]:
    """Return {utterance id: emotion code} from the Session*/dialog/EmoEvaluation/*.txt files."""
    codes = {}
    for txt in sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt")):
        for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
            match = re.match(r"\[[\d.]+ - [\d.]+\]\t(\S+)\t(\w+)\t", line)
            if match:
                codes[match[1]] = match[2]
    if not codes:
        raise ValueError(f"{root}: no IEMOCAP labels (Session*/dialog/EmoEvaluation/*.txt)")
    return codes


def read_iemocap(root: str | Path, merge_excited: bool | str = False) -> list[Utterance]:
    """Return raw IEMOCAP utterances (Session1..5/sentences/wav/<dialog>/<utt>.wav) with canonical labels.

    xxx, oth and fru are dropped, and so is exc unless `merge_excited` makes it happy.
    Speaker: session + the utterance's gender, Ses01F_impro01_M003 -> "iemocap:Ses01M".
    """
    root = _existing_dir(root)
    table = IEMOCAP_LABELS | ({"exc": "happy"} if _flag(merge_excited) else {})
    codes, rows = _iemocap_codes(root), []
    for session in sorted(p for p in root.glob("Session*") if p.is_dir()):
        for path in _audio_files(session / "sentences" / "wav"):
            label, utt = table.get(codes.get(path.stem, "")), path.stem
            if label and "_" in utt:
                speaker = f"iemocap:{utt[:5]}{utt.rsplit('_', 1)[1][:1]}"
                rows.append(Utterance(str(path), label, speaker, "iemocap", session.name))
    return _nonempty(rows, root)


def _as_written(name) -> str | None:
    """Return a label as written in the data, without surrounding spaces; None if empty."""
    text = "" if name is None else str(name).strip()
    return text or None


def read_folder(root: str | Path, canonical: bool | str = False) -> list[Utterance]:
    """Return the utterances of ROOT/<label>/**/*.wav, labelled with the folder's name as written (`canonical`:
    the CANONICAL emotion the name is an alias of); speakers are unknown ("folder:unknown")."""
    root = _existing_dir(root)
    name_label = _alias if _flag(canonical) else _as_written
    rows, unknown = [], set()
    for path in _audio_files(root):
        folder = path.relative_to(root).parts[0]
        label = name_label(folder) if path.parent != root else None
        if label:
            rows.append(Utterance(str(path), label, "folder:unknown", "folder"))
        elif path.parent != root:
            unknown.add(folder)
    if unknown:
        raise ValueError(f"{root}: unknown emotion folder(s) {sorted(unknown)}; "
                         f"known names: {', '.join(sorted(ALIASES))}")
    return _nonempty(rows, root)


def read_csv(root: str | Path, canonical: bool | str = False, task: str | None = None) -> list[Utterance]:
    """Return the utterances of a manifest CSV with columns path,label[,speaker] ("csv:<speaker>").

    Labels are taken as written. `canonical` (or task "emotion") maps emotion names through ALIASES; another
    task of TASK_LABELS (e.g. "spoof") checks each label, in any case, is one of the task's.
    """
    if task is not None and task not in TASK_LABELS:
        raise ValueError(f"unknown task {task!r}; one of {sorted(TASK_LABELS)}")
    if _flag(canonical) or task == "emotion":
        name_label = _alias
    elif task:
        name_label = lambda text: text.lower() if text.lower() in TASK_LABELS[task] else None  # noqa: E731
    else:
        name_label = _as_written
    manifest = Path(root).expanduser().resolve()
    if not manifest.is_file():
        raise ValueError(f"{manifest}: manifest CSV does not exist")
    with open(manifest, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not {"path", "label"} <= set(reader.fieldnames or []):
            raise ValueError(f"{manifest}: needs the columns path,label[,speaker]; has {reader.fieldnames}")
        records = list(reader)
    rows, problems = [], []
    for line, record in enumerate(records, start=2):
        path = (manifest.parent / (record["path"] or "").strip()).resolve()
        text = (record["label"] or "").strip()
        label = name_label(text) if text else None
        if path.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        if not text:
            problems.append(f"line {line}: no label")
        elif label is None:
            problems.append(f"line {line}: unknown label {record['label']!r}")
        elif not path.is_file():
            problems.append(f"line {line}: no file {path}")
        else:
            speaker = (record.get("speaker") or "").strip() or "unknown"
            rows.append(Utterance(str(path), label, f"csv:{speaker}", "csv"))
    if problems:
        raise ValueError(f"{manifest}: " + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""))
    return _nonempty(rows, manifest)


# --- Hugging Face datasets (audio is listed, never decoded: `datasets` decodes with torchcodec) ---
AUDIO_MAGIC = {b"RIFF": ".wav", b"fLaC": ".flac", b"OggS": ".ogg", b"ID3": ".mp3", b"FORM": ".aiff"}


def _hf_splits(name: str, config: str | None = None) -> dict:
    """Return {split: Dataset} of a hub dataset name (with its `config`), a save_to_disk folder or a data folder."""
    import datasets

    local = Path(name).expanduser()
    if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
        loaded = datasets.load_from_disk(str(local))
    elif not local.exists() and name.startswith((".", "/", "~")):
        raise ValueError(f"{local}: Hugging Face dataset folder does not exist")
    else:
        try:
            loaded = datasets.load_dataset(str(local) if local.exists() else name, config)
        except Exception as err:
            raise ValueError(f"{name}: cannot load the Hugging Face dataset ({type(err).__name__}: {err})") from None
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}


def _cached_bytes(data: bytes, suffix: str) -> str:
    """Return the path of a file holding `data`, written once under $SER_CACHE/hf_audio (~/.cache/ser)."""
    folder = Path(os.environ.get("SER_CACHE") or "~/.cache/ser").expanduser() / "hf_audio"
    if suffix not in AUDIO_EXTENSIONS:
        suffix = next((ext for magic, ext in AUDIO_MAGIC.items() if data.startswith(magic)), ".wav")
    path = folder / (hashlib.sha1(data).hexdigest()[:24] + suffix)
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(path)
    return str(path)


def _hf_audio_path(value, base: Path) -> str:
    """Return a file path for one undecoded audio cell ({"path", "bytes"} or a path string)."""
    path, data = (value, None) if isinstance(value, str) else (value.get("path"), value.get("bytes"))
    if path and (base / path).is_file():  # an absolute path, or one relative to a local dataset folder
        return str((base / path).resolve())
    if data:
        return _cached_bytes(data, Path(path or "").suffix.lower())
    raise ValueError(f"{path or '<no path>'}: the audio file is missing and the dataset holds no bytes")


def read_hf_splits(root: str, splits: Sequence[str] | None = None, audio: str = "audio", label: str = "label",
                   speaker: str | None = None, config: str | None = None, canonical: bool | str = False,
                   merge_excited: bool | str = False) -> dict[str, list[Utterance]]:
    """Return {split: its utterances} of the named `splits` (None: all) of a Hugging Face dataset.

    Labels are the label column's values (ClassLabel names) as written; `canonical` maps emotion names through
    ALIASES and drops IEMOCAP's unusable classes (IEMOCAP_DROPPED), `merge_excited` also makes exc happy.
    Splits named session1..5 set the session. Each split's utterances are sorted by path (none where `canonical`
    drops them all). ValueError for a missing split or column, unlabelled rows, or unknown names with `canonical`.
    """
    import datasets

    found, base = _hf_splits(str(root), config), Path(str(root)).expanduser()
    wanted = list(splits) if splits else sorted(found)
    if set(wanted) - set(found):
        raise ValueError(f"{root}: no split(s) {sorted(set(wanted) - set(found))}; has {sorted(found)}")
    canonical = _flag(canonical) or _flag(merge_excited)
    merged = {"exc": "happy", "excited": "happy"} if _flag(merge_excited) else {}
    by_split, unknown, unlabelled = {}, set(), 0
    for split in wanted:
        ds, rows = found[split], []
        columns = [audio, label] + ([speaker] if speaker else ["speaker"] if "speaker" in ds.column_names else [])
        missing = sorted(set(columns) - set(ds.column_names))
        if missing:
            raise ValueError(f"{root} [{split}]: no column(s) {missing}; has {ds.column_names}")
        if isinstance(ds.features[audio], datasets.Audio):
            ds = ds.cast_column(audio, datasets.Audio(decode=False))
        names = getattr(ds.features[label], "names", None)  # ClassLabel ints -> names
        session = f"Session{m[1]}" if (m := re.fullmatch(r"session(\d+)", split, re.I)) else None
        for batch in ds.select_columns(columns).iter(batch_size=256):
            for i, value in enumerate(batch[label]):
                if names and isinstance(value, int):  # ClassLabel -1: no label (e.g. a hidden test split)
                    value = names[value] if 0 <= value < len(names) else None
                text = _as_written(value)
                mapped = ((merged.get(text.lower()) or _alias(text)) if canonical else text) if text else None
                if text is None:
                    unlabelled += 1
                elif mapped is None:
                    unknown.update([] if text.lower() in IEMOCAP_DROPPED else [text])
                else:
                    who = batch[columns[2]][i] if len(columns) > 2 else session or "unknown"
                    rows.append(Utterance(_hf_audio_path(batch[audio][i], base), mapped, f"hf:{who}", "hf", session))
        by_split[split] = rows
    if unlabelled:
        raise ValueError(f"{root}: {unlabelled} row(s) of split(s) {wanted} have no label in column {label!r}")
    if unknown:
        raise ValueError(f"{root}: unknown label(s) {sorted(unknown)}; known names: {', '.join(sorted(ALIASES))}")
    return {split: sorted(rows, key=lambda u: u.path) for split, rows in by_split.items()}


def read_hf(root: str, audio: str = "audio", label: str = "label", split: str | None = None,
            speaker: str | None = None, config: str | None = None, canonical: bool | str = False,
            merge_excited: bool | str = False) -> list[Utterance]:
    """Return the utterances of a Hugging Face dataset's splits `split` ("a+b"; None: all), merged (read_hf_splits)."""
    by_split = read_hf_splits(root, split.split("+") if split else None, audio, label, speaker, config, canonical,
                              merge_excited)
    return _nonempty([row for rows in by_split.values() for row in rows], root)


CORPORA: dict[str, Callable[..., list[Utterance]]] = {  # reader name -> reader(root, **options)
    "emodb": read_emodb, "ravdess": read_ravdess, "urdu": read_urdu, "ased": read_ased,
    "emotiontts_ko": read_emotiontts_ko, "cremad": read_cremad, "tess": read_tess,
    "casia": read_casia, "iemocap": read_iemocap, "folder": read_folder, "csv": read_csv, "hf": read_hf,
}
# names usable bare, as folders under corpora_root(): every reader of a corpus's own layout
SHARED = ("emodb", "ravdess", "urdu", "ased", "emotiontts_ko", "cremad", "tess", "casia", "iemocap")


# --- Specs -----------------------------------------------------------------------------------
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
    name, root, options_text = name.strip().lower(), None, ""
    if not sep:
        name, _, options_text = name.partition(":")
    else:
        root, colon, tail = rest.rpartition(":")
        # ":options" never holds a path separator (keeps C:\data intact); an existing path wins
        if colon and root and not re.search(r"[/\\]", tail) and not Path(rest).expanduser().exists():
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
        takes = allowed or "none"
        raise ValueError(f"spec {spec!r}: unknown option(s) {unknown}; {name} takes {takes}\n{SPEC_FORMS}")
    return reader(root if root is not None else corpora_root() / name, **options)


def _resolve(name: str, labels) -> str | None:
    """Return the label of `labels` that `name` denotes: itself, else the one label equal to it ignoring case."""
    if name in labels:
        return name
    same = [label for label in labels if label.casefold() == name.casefold()]
    return same[0] if len(same) == 1 else None


def _not_found(flag: str, names: list[str], labels, where: str) -> ValueError:
    """Return the error for label names found in neither the data nor the merges, with a hint where one helps."""
    hints = [f"{n!r} is {a!r} here" for n in names if (a := _alias(n)) and a in labels and a != n]
    if {"excited", "exc"} & {n.lower() for n in names}:
        hints.append("IEMOCAP: use the spec option :merge_excited")
    return ValueError(f"{flag}: unknown label(s) {sorted(names)}: {where}: {', '.join(sorted(labels))}"
                      + (f" ({'; '.join(hints)})" if hints else ""))


def label_map(labels, keep: Sequence[str] | None = None, merge: dict[str, str] | None = None) -> dict[str, str]:
    """Return {label of the data: the label it becomes} after `merge`, for the labels `keep` retains (None: all).

    Names are the data's (CANONICAL for the known corpora, as written for folder, csv and hf), matched exactly or,
    failing that, ignoring case. A merge source must be a label of the data; its target may be a new name. A kept
    name must be a label after the merges. ValueError lists the data's labels otherwise.
    """
    labels = set(labels)
    missing = [source for source in (merge or {}) if _resolve(source, labels) is None]
    if missing:
        raise _not_found("--merge", missing, labels, "not in the data, whose labels are")
    table, known = {label: label for label in labels}, set(labels)
    for source, target in (merge or {}).items():  # a target is a label of the data or an earlier target, or new
        table[_resolve(source, labels)] = _resolve(target, known) or target
        known.add(table[_resolve(source, labels)])
    targets = set(table.values())
    if keep is not None:
        missing = [name for name in keep if _resolve(name, targets) is None]
        if missing:
            raise _not_found("--labels", missing, targets, "in neither the data nor the merges; the labels "
                             + ("after the merges are" if merge else "of the data are"))
        kept = {_resolve(name, targets) for name in keep}
        table = {label: new for label, new in table.items() if new in kept}
    return table


def select_labels(rows: list[Utterance], keep: Sequence[str] | None = None,
                  merge: dict[str, str] | None = None) -> list[Utterance]:
    """Return `rows` with `merge` applied (e.g. {"calm": "neutral"}), then only `keep` labels (None: all)."""
    return relabel(rows, label_map({row.label for row in rows}, keep, merge))


def relabel(rows: list[Utterance], table: dict[str, str]) -> list[Utterance]:
    """Return the rows whose label is in `table`, labelled table[label] (see label_map)."""
    return [row if table[row.label] == row.label else replace(row, label=table[row.label])
            for row in rows if row.label in table]


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
    """Return the label merges of `"calm:neutral,low:not_high"` as {"calm": "neutral", "low": "not_high"}.

    Names are kept as written; label_map matches them to the data's labels exactly or ignoring case.
    """
    merge = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        source, sep, target = (s.strip() for s in item.partition(":"))
        if not (sep and source and target):
            raise ValueError(f"bad merge {item!r}; expected FROM:TO pairs like calm:neutral,excited:happy")
        merge[source] = target
    return merge


def label_corpora(rows: Sequence[Utterance]) -> dict[str, dict[str, int]]:
    """Return {label: {corpus: clips}}: which corpora carry each label, and how many clips."""
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        out.setdefault(row.label, {}).setdefault(row.corpus, 0)
        out[row.label][row.corpus] += 1
    return out
