"""Cache of frozen-encoder outputs on disk, keyed by audio content and encoder weights.

A frozen encoder gives the same layers for the same clip every epoch and every fold, so they
are computed once: training a head then costs seconds per epoch instead of minutes.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from data_process import AudioError, audio_digest, load_audio


def default_cache_dir() -> Path:
    """Return $SER_CACHE or ~/.cache/ser."""
    return Path(os.environ.get("SER_CACHE", Path.home() / ".cache" / "ser"))


def encoder_key(model) -> str:
    """Return a digest of the backbone's weights and of what shapes its output: a different encoder never shares entries."""
    config = model.config  # everything that shapes encode()'s output
    digest = hashlib.sha1(f"{config.backbone}|{config.normalize_layers}|{config.frame_pooling}".encode())
    for name, tensor in sorted(model.backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def cached_layers(model, feature_extractor, paths: Sequence[str], cache_dir: str | Path | None = None,
                  progress: bool = True, variant: tuple[str, Callable] | None = None
                  ) -> tuple[list[np.ndarray | None], list[str]]:
    """Return every clip's encoder layers (L, T, D) as float16, computing only what the cache lacks.

    Files that cannot be decoded come back as None, with one message each in the second list.
    variant: (key, make) gives an augmented variant of each clip instead, `make(i, audio, digest) -> audio`,
    cached as "<digest>~<key>.npy": never the clean clip's "<digest>.npy", and reused by the next run.
    """
    folder = Path(cache_dir or default_cache_dir()) / "layers" / encoder_key(model)
    folder.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    home = next(model.parameters()).device
    device = torch.device("cuda") if torch.cuda.is_available() else home  # a GPU computes the cache, if there is one
    model.to(device)
    out, problems = [], []
    desc = "encoder layers" + (f" ({variant[0]})" if variant else "")
    for i, path in enumerate(tqdm(paths, desc=desc, disable=not progress, unit="clip")):
        try:
            audio = load_audio(path)
        except AudioError as err:
            out.append(None)
            problems.append(str(err))
            continue
        digest = audio_digest(audio)
        entry = folder / (f"{digest}.npy" if variant is None else f"{digest}~{variant[0]}.npy")
        if entry.exists():
            out.append(np.load(entry))
            continue
        if variant is not None:
            audio = variant[1](i, audio, digest)
        inputs = feature_extractor(audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
        layers, _ = model.encode(inputs["input_values"].to(device), inputs["attention_mask"].to(device))  # (1, L, T, D)
        array = layers[0].to(torch.float16).cpu().numpy()
        tmp = entry.with_name(f".{entry.stem}.{os.getpid()}.npy")
        np.save(tmp, array)
        os.replace(tmp, entry)  # never leave half-written entries behind
        out.append(array)
    model.to(home)
    model.train(was_training)
    return out, problems
