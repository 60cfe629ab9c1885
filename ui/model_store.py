"""The checkpoints the app may serve: listing, held-out UA, the default choice, and a cache of loaded models.

The checkpoints folder is a boundary: a checkpoint, or any file in one (weights, config, model
card, confusion PNG), that is a symlink resolving outside the folder is refused, and no message
meant for users shows a server path.
"""
from __future__ import annotations

import json
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_POINTER = "default.txt"  # optional file in the checkpoints folder naming the default checkpoint
PURPOSES = "purposes.json"  # optional file in the checkpoints folder: {checkpoint name: what it is for, one line}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be served; the message names the checkpoint and shows no server path."""


def inside(path: Path, root: Path) -> bool:
    """Return True if `path` exists and, every symlink followed, lies inside folder `root`."""
    try:
        path.resolve(strict=True).relative_to(root.resolve(strict=True))
        return True
    except (OSError, ValueError, RuntimeError):  # missing, a broken or looping link, or outside
        return False


def escapes(folder: Path, root: Path) -> list[str]:
    """Return the names of the entries of checkpoint `folder` (itself included) that resolve outside `root`."""
    if not inside(folder, root):
        return [folder.name]
    return [str(p.relative_to(folder)) for p in sorted(folder.rglob("*")) if not inside(p, root)]


_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:[/\\][^\s'\"`/\\()<>,;:]+)+[/\\]?")


def public_message(text: str, folder: Path, name: str) -> str:
    """Return `text` with checkpoint `folder` replaced by its name and any other absolute path by its last part."""
    for form in {str(folder.resolve()), str(folder.absolute()), str(folder)}:
        text = text.replace(form, name)
    return _ABSOLUTE_PATH.sub(lambda m: Path(m.group().rstrip("/\\")).name or m.group(), text)


def held_out_ua(metrics: dict) -> float | None:
    """Return the held-out UA of a checkpoint's metrics.json, or None if it has none.

    A checkpoint trained on everything ("protocol all") quotes the cross-validation of the same
    recipe; a single-split checkpoint has its own test report.
    """
    cv = metrics.get("cross_validation") or {}
    ua = cv.get("summary", {}).get("ua", {}).get("mean")
    if ua is None:
        ua = (metrics.get("test") or {}).get("ua")
    if ua is None:
        ua = metrics.get("summary", {}).get("ua", {}).get("mean")
    return float(ua) if ua is not None else None


def unseen_corpora(metrics: dict) -> dict | None:
    """Return the leave-one-corpus-out figures a checkpoint's metrics.json quotes, or None if it has none.

    {"ua": mean UA over the left-out corpora (each clip judged alone), "adapted": the same with each test
    speaker's clips standardised together (the folds' "normalization" block, speaker mode; None when the model
    does not standardise), "by_corpus": {corpus: UA}, "corpora": how many}. A LOCO run's own metrics.json counts too.
    """
    loco = metrics.get("leave_one_corpus_out") or (metrics if metrics.get("protocol") == "loco" else None)
    if not loco:
        return None
    ua = (loco.get("summary") or {}).get("ua", {}).get("mean")
    if ua is None:
        return None
    folds = loco.get("folds") or []
    adapted = [f["normalization"]["speaker"]["ua"] for f in folds
               if isinstance(f, dict) and "speaker" in (f.get("normalization") or {})]
    by_corpus = {corpus: r["ua"] for corpus, r in (loco.get("by_corpus") or {}).items() if "ua" in r}
    return {"ua": float(ua), "adapted": float(sum(adapted) / len(adapted)) if adapted and len(adapted) == len(folds)
            else None, "by_corpus": by_corpus, "corpora": len(folds) or len(by_corpus)}


# Corpora whose text gives the emotion away in part (ASED's emotion-specific sentences, the Korean emotional
# scripts): a within-corpus figure that includes them overstates what the model hears (../shared/README.md)
TEXT_CUE_CORPORA = {"ased": "ASED (Amharic: sentences 03-07 of each emotion are emotion-specific texts)",
                    "emotiontts_ko": "EmoTTS Korean (half its speakers read emotional scripts)"}


def format_ua(ua: float | None) -> str:
    return "n/a" if ua is None else f"{ua:.3f}"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@dataclass
class CheckpointInfo:
    """What the page shows about one checkpoint folder, read without loading the model."""

    name: str
    path: Path
    config: dict = field(repr=False)
    metrics: dict = field(repr=False)

    purpose: str = ""  # what the model is for, one line (checkpoints/purposes.json)

    @property
    def ua(self) -> float | None:
        """The within-corpus figure (new speakers of the corpora it learned from), shown under "About this model"."""
        return held_out_ua(self.metrics)

    @property
    def unseen(self) -> dict | None:
        """The figure on corpora it never heard (leave one corpus out), if its metrics hold one."""
        return unseen_corpora(self.metrics)

    @property
    def rank_ua(self) -> float | None:
        """What ranks checkpoints: UA on corpora it never heard where known, else the within-corpus UA."""
        return self.unseen["ua"] if self.unseen else self.ua

    @property
    def choice_label(self) -> str:
        """The dropdown's label: the figure on corpora it never heard where there is one, and what it is for."""
        unseen = self.unseen
        if unseen:
            adapted = f" ({unseen['adapted']:.3f} adapted to the speaker)" if unseen["adapted"] is not None else ""
            label = f"{self.name} — UA {unseen['ua']:.3f} on unseen corpora{adapted}"
        elif self.ua is not None:
            label = f"{self.name} — UA {self.ua:.3f} on its own corpora' new speakers (no unseen-corpus test)"
        else:
            label = f"{self.name} — UA n/a"
        return label + (f" · {self.purpose}" if self.purpose else "")

    @property
    def shared_encoder(self) -> str | None:
        """The encoder folder a head-only checkpoint shares (relative to it), or None."""
        return self.config.get("shared_encoder") or None

    @property
    def labels(self) -> list[str]:
        id2label = self.config.get("id2label") or {}
        return [id2label[k] for k in sorted(id2label, key=int)] if id2label else self.metrics.get("labels", [])


def list_checkpoints(root: str | Path, refused: dict[str, str] | None = None) -> list[CheckpointInfo]:
    """Return the checkpoint folders directly inside `root` (those with a config.json), by name.

    A folder that is, or holds, a symlink resolving outside `root` is left out; `refused` (when
    given) gets its name and why, for the server log.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    purposes = _read_json(root / PURPOSES) if inside(root / PURPOSES, root) else {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (folder / "config.json").is_file():
            continue
        outside = escapes(folder, root)
        config = _read_json(folder / "config.json")
        encoder = config.get("shared_encoder")
        if encoder and not outside and not inside(folder / str(encoder), root):
            outside = [f"its shared encoder {encoder}"]
        if outside:
            if refused is not None:
                refused[folder.name] = f"refused: links outside the checkpoints folder ({', '.join(outside)})"
            continue
        purpose = purposes.get(folder.name) if isinstance(purposes, dict) else None
        found.append(CheckpointInfo(folder.name, folder, config, _read_json(folder / "metrics.json"),
                                    purpose if isinstance(purpose, str) else ""))
    return found


def default_checkpoint(root: str | Path, checkpoints: list[CheckpointInfo]) -> str | None:
    """Return the name in `root`/default.txt if it is a listed checkpoint, else the highest UA (on corpora it never
    heard where known: CheckpointInfo.rank_ua)."""
    names = [c.name for c in checkpoints]
    pointer = Path(root) / DEFAULT_POINTER
    if pointer.is_file() and inside(pointer, Path(root)):
        wanted = pointer.read_text().strip()
        if wanted in names:
            return wanted
    if not checkpoints:
        return None
    # unknown UA ranks last; max() keeps the first of equals, so ties go to the first name
    return max(sorted(checkpoints, key=lambda c: c.name), key=lambda c: (c.rank_ua is not None, c.rank_ua or 0.0)).name


class ModelStore:
    """Checkpoints under one folder, loaded on first use and kept (switching back is instant).

    Only names listed from the folder can be loaded: a name never becomes a path of its own.
    """

    def __init__(self, root: str | Path, loader=None):
        self.root = Path(root)
        self.loader = loader  # checkpoint folder -> scorer (default: recognizer.Recognizer, float32 PyTorch; app.py:
        #                       recognizer.load_scorer by --runtime and --precision, onnxruntime where the checkpoint exports)
        self.refused: dict[str, str] = {}  # checkpoint name -> why it is not offered (for the server log)
        self.checkpoints = {c.name: c for c in list_checkpoints(self.root, self.refused)}
        self.default = default_checkpoint(self.root, list(self.checkpoints.values()))
        self._loaded: dict[str, object] = {}
        self._confusions: dict[str, object] = {}  # drawn confusion matrices: switching back draws nothing again
        self._lock = threading.Lock()

    def choices(self) -> list[tuple[str, str]]:
        """Return (label shown, value) pairs for the model dropdown: the default first, then the best on corpora it
        never heard (CheckpointInfo.rank_ua), unknown last."""
        ranked = sorted(self.checkpoints.values(),
                        key=lambda c: (c.name != self.default, c.rank_ua is None, -(c.rank_ua or 0.0), c.name))
        return [(c.choice_label, c.name) for c in ranked]

    def info(self, name: str) -> CheckpointInfo:
        if name not in self.checkpoints:
            raise KeyError(f"no checkpoint named {name!r} in {self.root}")
        return self.checkpoints[name]

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def get(self, name: str):
        """Return the loaded `recognizer.Recognizer` for checkpoint `name`, loading it once.

        Raises CheckpointError (naming the checkpoint, never its path) if it cannot be served.
        """
        info = self.info(name)
        with self._lock:  # one load at a time; concurrent requests for the same model wait for it
            if name not in self._loaded:
                from serving.recognizer import Recognizer

                outside = escapes(info.path, self.root)  # again: links may have changed since the listing
                encoder = _read_json(info.path / "config.json").get("shared_encoder")
                if encoder and not inside(info.path / str(encoder), self.root):
                    outside = outside + [f"its shared encoder {encoder}"]
                if outside:
                    raise CheckpointError(f"it links outside the checkpoints folder ({', '.join(outside)})")
                try:
                    recognizer = (self.loader or Recognizer)(info.path)
                    _smoke_test(recognizer)
                except Exception as err:
                    raise CheckpointError(public_message(f"{type(err).__name__}: {err}", info.path, name)) from err
                self._loaded[name] = recognizer
            return self._loaded[name]

    def file(self, name: str, filename: str) -> Path | None:
        """Return checkpoint `name`'s file `filename` if it exists inside the checkpoints folder, else None."""
        path = self.info(name).path / filename
        return path if path.is_file() and inside(path, self.root) else None

    def preload(self) -> list[str]:
        """Load the default model now so the first request is fast; return why any checkpoint failed.

        If the default does not load, the next best one (by held-out UA) that does becomes the default.
        """
        ranked = sorted(self.checkpoints.values(), key=lambda c: (c.rank_ua is not None, c.rank_ua or 0.0), reverse=True)
        order = [self.default] + [c.name for c in ranked if c.name != self.default] if self.default else []
        errors = [f"{name}: {why}" for name, why in self.refused.items()]
        for name in order:
            try:
                self.get(name)
            except Exception as err:
                errors.append(f"{name}: {type(err).__name__}: {err}")
                continue
            self.default = name
            return errors
        self.default = None  # none loads: the page says so
        return errors

    def describe(self, name: str) -> str:
        """Return Markdown for the model panel: backbone, pooling, labels, corpora, held-out metrics."""
        return describe(self.info(name))

    def confusion_image(self, name: str):
        """Return the checkpoint's confusion matrix as a PIL image (its PNG, else drawn from metrics), or None."""
        from PIL import Image

        info = self.info(name)
        if name in self._confusions:
            return self._confusions[name].copy()
        png = self.file(name, "confusion.png")
        if png is not None:
            with Image.open(png) as image:
                return image.convert("RGB")
        confusion, labels, title = _confusion(info.metrics)
        if confusion is None:
            return None
        from reports.plots import confusion_png

        with tempfile.TemporaryDirectory() as folder:
            with Image.open(confusion_png(confusion, labels, Path(folder) / "confusion.png", title)) as image:
                self._confusions[name] = image.convert("RGB")
        return self._confusions[name].copy()

    def model_card(self, name: str) -> str:
        """Return the checkpoint's README.md without its YAML header, or a note that it has none."""
        card = self.file(name, "README.md")
        if card is None:
            return "_This checkpoint has no model card (README.md)._"
        return re.sub(r"\A---\n.*?\n---\n", "", card.read_text(), flags=re.S)


def _smoke_test(recognizer) -> None:
    """Raise RuntimeError unless the model turns one second of faint noise into finite probabilities.

    Weights that load without error can still compute garbage (a buffer left uninitialised, a
    mismatched architecture); refusing them here keeps the previous model in use.
    """
    import numpy as np

    probe = np.random.default_rng(0).normal(0, 0.01, 16_000).astype(np.float32)
    probs = recognizer.probabilities([probe])
    if not np.all(np.isfinite(probs)):
        raise RuntimeError("it computes NaN or infinite probabilities (broken or incompatible weights)")


def _confusion(metrics: dict) -> tuple[list | None, list, str]:
    """Return (confusion, labels, title) from the leave-one-corpus-out run, else the cross-validation, else the test
    report, or (None, [], "")."""
    loco = (metrics.get("leave_one_corpus_out") or {}).get("summary", {}).get("pooled")
    if loco and loco.get("confusion"):
        return (loco["confusion"], loco["labels"],
                f"corpora it never heard (each left out in turn), pooled: UA {loco.get('ua', float('nan')):.3f}")
    cv = (metrics.get("cross_validation") or {}).get("summary", {}).get("pooled")
    if cv and cv.get("confusion"):
        return cv["confusion"], cv["labels"], f"cross-validation, pooled: UA {cv.get('ua', float('nan')):.3f}"
    test = metrics.get("test") or {}
    if test.get("confusion"):
        return test["confusion"], test["labels"], f"held-out test: UA {test['ua']:.3f}"
    return None, [], ""


def _held_out_text(metrics: dict, n_labels: int) -> str:
    chance = f"chance level for {n_labels} balanced classes: {1 / n_labels:.3f}" if n_labels else ""
    cv = metrics.get("cross_validation") or {}
    summary = cv.get("summary")
    if summary:
        folds = len(cv.get("folds", [])) or "?"
        return (f"UA **{summary['ua']['mean']:.3f}** ± {summary['ua']['std']:.3f}, "
                f"WA {summary['wa']['mean']:.3f} ± {summary['wa']['std']:.3f}"
                + (f", macro-F1 {summary['macro_f1']['mean']:.3f}" if "macro_f1" in summary else "")
                + f" — cross-validated with the same recipe ({cv.get('protocol', '?')}, {folds} folds, "
                f"no speaker in both training and test; {chance})")
    test = metrics.get("test")
    if test:
        speakers = ", ".join(test.get("test_speakers", [])) or "?"
        return (f"UA **{test['ua']:.3f}**, WA {test['wa']:.3f}"
                + (f", macro-F1 {test['macro_f1']:.3f}" if "macro_f1" in test else "")
                + f" on {test.get('n', '?')} clips of held-out speakers ({speakers}; {chance})")
    return "**unknown**: no held-out evaluation was recorded for this checkpoint"


def _unseen_text(info: CheckpointInfo, n_labels: int) -> str:
    unseen = info.unseen
    if not unseen:
        return ("**not measured**: no leave-one-corpus-out run is quoted in its metrics.json; expect less than the "
                "within-corpus figure below on a language, room or microphone it never heard")
    chance = f"; chance: {1 / n_labels:.3f}" if n_labels else ""
    corpora = ", ".join(f"{c} {ua:.3f}" for c, ua in sorted(unseen["by_corpus"].items()))
    adapted = (f"; **{unseen['adapted']:.3f}** once each speaker's clips are judged together (adapted to the speaker, "
               "as the app does after a few of your recordings)") if unseen["adapted"] is not None else ""
    return (f"UA **{unseen['ua']:.3f}**, mean over {unseen['corpora']} corpora each left out of training in turn, "
            f"each clip judged alone ({corpora}){adapted}{chance}")


def _text_cue_warning(corpora: list[str]) -> str:
    cued = [text for corpus, text in TEXT_CUE_CORPORA.items() if any(str(c).split("=")[0] == corpus for c in corpora)]
    if not cued:
        return ""
    return (" ⚠ This figure includes text cues: in " + " and ".join(cued) + " the words give the emotion away in "
            "part, so within those corpora a model is rewarded for what is said, not only how. It overstates what the "
            "model hears; the figure on corpora it never heard above does not have this problem.")


def describe(info: CheckpointInfo) -> str:
    """Return the Markdown model panel for `info`: what it is for, its figure on corpora it never heard, then the
    within-corpus figure (with the text-cue warning where it applies)."""
    config, metrics = info.config, info.metrics
    backbone = config.get("backbone", "?")
    if backbone == "cnn1d":
        backbone_text = f"cnn1d (1-D CNN on the waveform, preset `{config.get('cnn_preset', '?')}`)"
    else:
        encoder = Path(str(config.get("encoder_name") or "?")).name
        from models.configuration import layers_text

        layers = layers_text(config)
        backbone_text = f"{backbone} (encoder `{encoder}`, {config.get('encoder_mode', '?')}, {layers})"
    corpora = metrics.get("corpora") or []
    sizes = f" ({metrics['n_utterances']} clips, {metrics.get('n_speakers', '?')} speakers)" if "n_utterances" in metrics else ""
    size = sum(p.stat().st_size for p in info.path.glob("*.safetensors")) / 1e6
    if info.shared_encoder:
        shared = Path(str(info.shared_encoder)).name
        weights = (f"{size * 1000:.0f} kB of its own (the head); the frozen encoder `{shared}` is shared with the "
                   "other models that use it: one copy on disk and in memory")
    else:
        weights = f"{size:.1f} MB"
    rows = [
        *([("For", info.purpose)] if info.purpose else []),
        ("On corpora it never heard", _unseen_text(info, len(info.labels))),
        ("Backbone", backbone_text),
        ("Pooling", f"`{config.get('pooling', '?')}`"),
        ("Labels", ", ".join(info.labels) or "?"),
        ("Trained on", (", ".join(corpora) or "?") + sizes
         + (f", protocol `{metrics['protocol']}`" if metrics.get("protocol") else "")),
        ("Within-corpus (new speakers of the corpora it learned from)",
         _held_out_text(metrics, len(info.labels)) + _text_cue_warning(corpora)),
        ("Weights", weights),
    ]
    return f"### {info.name}\n\n" + "\n".join(f"- **{key}**: {value}" for key, value in rows) + "\n"
