"""One frozen encoder, many heads: head-only checkpoints that share one copy of the encoder, on disk and in memory.

A head-only checkpoint is a normal checkpoint folder (config.json, model card, code, preprocessor) whose
`model.safetensors` holds only the head (layer mix, projector, pooling, classifier, standardisation statistics).
Its config names the encoder folder (`shared_encoder`, relative to the checkpoint folder, e.g.
`../encoders/whisper-base`) and the SHA-256 of that folder's weights file (`shared_encoder_sha256`).

The encoder folder holds `model.safetensors` with the backbone's tensors (the keys of `EmotionClassifier.backbone`,
e.g. `encoder.layers.0.fc1.weight`) and `config.json` (`backbone`, `encoder_config`, `encoder_name`). In a process,
each encoder folder is loaded once (ENCODERS): every head that names it gets the same backbone module, so a
second head costs its own few tensors only. The backbone is frozen there (no gradients, eval mode).

This file travels with every checkpoint (classifier.py imports it relatively), so a head-only checkpoint also loads
with `AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True)` where its encoder folder is
beside it; `export.py --format transformers --output DIR` writes a self-contained copy with the full weights.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import torch
from torch import nn

ENCODER_WEIGHTS = "model.safetensors"
ENCODER_CONFIG = "config.json"
BACKBONE_PREFIX = "backbone."
ENCODERS: dict[tuple[str, str], nn.Module] = {}  # (resolved weights file, sha256) -> the loaded, frozen backbone
_LOCK = threading.Lock()


_DIGESTS: dict[tuple[str, int, int], str] = {}  # (file, size, mtime) -> SHA-256: a second head does not hash it again


def file_sha256(path: str | Path) -> str:
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = _sha256(path)
    return _DIGESTS[key]


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def encoder_folder(checkpoint: str | Path, config) -> Path:
    """Return the encoder folder a head-only checkpoint's config names, resolved against the checkpoint folder."""
    reference = getattr(config, "shared_encoder", None) if not isinstance(config, dict) else config.get("shared_encoder")
    if not reference:
        raise ValueError(f"{Path(checkpoint).name}: not a head-only checkpoint (no shared_encoder in its config)")
    folder = (Path(checkpoint) / reference).resolve()
    if not (folder / ENCODER_WEIGHTS).is_file():
        raise FileNotFoundError(f"{Path(checkpoint).name}: its shared encoder {reference} (relative to the checkpoint "
                                f"folder) has no {ENCODER_WEIGHTS}; export the model with export.py --format "
                                "transformers --output DIR for a self-contained copy")
    return folder


def shared_backbone(folder: str | Path, config, sha256: str | None = None) -> nn.Module:
    """Return the frozen backbone stored in encoder `folder`, loaded once per process and shared by every head.

    `config` (the head's EmotionConfig) builds the backbone's architecture; with `sha256`, the weights file must
    have that digest (a head never runs on an encoder it was not trained on).
    """
    from safetensors.torch import load_file

    from .classifier import BACKBONES

    weights = (Path(folder) / ENCODER_WEIGHTS).resolve()
    with _LOCK:
        digest = file_sha256(weights)
        if sha256 and digest != sha256:
            raise ValueError(f"the shared encoder {Path(folder).name} is not the one this head was trained on "
                             f"(SHA-256 {digest[:12]}…, expected {sha256[:12]}…)")
        key = (str(weights), digest)
        if key not in ENCODERS:
            with torch.device("meta"):  # no random weights first: the stored ones are assigned below
                backbone = BACKBONES[config.backbone](config)
            state = {name: tensor.to(torch.float32) for name, tensor in load_file(weights).items()}
            backbone.load_state_dict(state, strict=True, assign=True)
            backbone.requires_grad_(False)
            ENCODERS[key] = backbone.eval()
        return ENCODERS[key]


def load_head_only(cls, checkpoint: str | Path, config=None, dtype=None) -> nn.Module:
    """Return `cls` (EmotionClassifier) built from head-only `checkpoint` with the shared backbone in place."""
    from safetensors.torch import load_file

    checkpoint = Path(checkpoint)
    config = config if config is not None else cls.config_class.from_pretrained(checkpoint)
    backbone = shared_backbone(encoder_folder(checkpoint, config), config, getattr(config, "shared_encoder_sha256", None))
    with torch.device("meta"):
        model = cls(config)
    model.backbone = backbone
    head = load_file(checkpoint / ENCODER_WEIGHTS)
    stray = sorted(k for k in head if k.startswith(BACKBONE_PREFIX))
    if stray:
        raise ValueError(f"{checkpoint.name}: a head-only checkpoint holds backbone tensors ({stray[0]}, ...)")
    wanted = dtype if isinstance(dtype, torch.dtype) else torch.float32
    head = {k: v.to(wanted) if v.is_floating_point() else v for k, v in head.items()}
    missing, unexpected = model.load_state_dict(head, strict=False, assign=True)
    missing = [k for k in missing if not k.startswith(BACKBONE_PREFIX)]
    if missing or unexpected:
        raise ValueError(f"{checkpoint.name}: its head does not fit its config (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    model.config.dtype = wanted
    return model.eval()


def split_checkpoint(checkpoint: str | Path, encoders: str | Path) -> Path:
    """Turn a full frozen-encoder checkpoint into a head-only one that shares encoder folder `encoders`.

    The encoder folder is written from the checkpoint's backbone when it has no weights yet (float16, as the
    checkpoints store them); otherwise its weights must equal the checkpoint's backbone (same encoder). The
    checkpoint's model.safetensors is rewritten with the head's tensors only (their stored dtype kept), and its
    config.json gets `shared_encoder` (relative path) and `shared_encoder_sha256`. Return the encoder folder.
    """
    from safetensors.torch import load_file, save_file

    checkpoint, encoders = Path(checkpoint), Path(encoders)
    config = json.loads((checkpoint / "config.json").read_text())
    if config.get("shared_encoder"):
        raise ValueError(f"{checkpoint}: already head-only (shares {config['shared_encoder']})")
    if config.get("encoder_mode", "frozen") != "frozen":
        raise ValueError(f"{checkpoint}: its encoder was fine-tuned ({config.get('encoder_mode')}): it has its own")
    state = load_file(checkpoint / ENCODER_WEIGHTS)
    backbone = {k[len(BACKBONE_PREFIX):]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    head = {k: v.contiguous() for k, v in state.items() if not k.startswith(BACKBONE_PREFIX)}
    if not backbone:
        raise ValueError(f"{checkpoint}: no backbone tensors in {ENCODER_WEIGHTS}")
    weights = encoders / ENCODER_WEIGHTS
    if weights.is_file():
        stored = load_file(weights)
        if sorted(stored) != sorted(backbone) or any(
                not torch.equal(stored[k].to(torch.float32), backbone[k].to(torch.float32)) for k in stored):
            raise ValueError(f"{checkpoint}: its encoder differs from the one in {encoders}")
    else:
        encoders.mkdir(parents=True, exist_ok=True)
        save_file({k: v.to(torch.float16).contiguous() for k, v in backbone.items()}, str(weights),
                  metadata={"format": "pt"})
        (encoders / ENCODER_CONFIG).write_text(json.dumps(
            {"backbone": config["backbone"], "encoder_name": config.get("encoder_name"),
             "encoder_config": config.get("encoder_config")}, indent=2) + "\n")
    save_file(head, str(checkpoint / ENCODER_WEIGHTS), metadata={"format": "pt"})
    config["shared_encoder"] = Path(os.path.relpath(encoders.resolve(), checkpoint.resolve())).as_posix()
    config["shared_encoder_sha256"] = file_sha256(weights)
    (checkpoint / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return encoders
