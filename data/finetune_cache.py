"""Fine-tuning Whisper's top layers on CPU from cached inputs (issue 17, item 4).

With `--encoder_mode finetune --trainable_layers K`, the encoder below its top K layers never changes, so the hidden
state that enters the first trainable layer is the same every epoch and every fold: it is computed once per clip and
cached on disk, raw (before any layer norm or frame pooling), at the encoder's full frame rate, as float16 (T, D)
holding the clip's T real frames (its frame-mask length). Each training step then runs only the top K layers (the last
one followed by the encoder's final layer norm) on the cached input with the key-padding bias the backbone builds, then
`encode()`'s normalisation and frame pooling, joins the frozen layers the head reads (from the feature cache of
`feature_cache.cached_layers`: they do not change either) and runs the head, exactly as the model does from audio.

Entries: <cache>/hidden/<encoder_key>/layer<start>/<audio digest>.npy, and "<digest>~<variant key>.npy" for an
augmented variant: never the clean clip's file; another encoder (weights or settings) never shares the folder.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler

from data_process import AudioError, audio_digest, load_audio
from data.feature_cache import default_cache_dir, encoder_key
from models.classifier import pool_frames
from models.encoders import WhisperBackbone


def top_start(model) -> int:
    """Return the index of the hidden state that enters the first trainable layer (layers above it learn)."""
    return model.backbone.num_layers - 1 - model.config.trainable_layers


def supports_cached_finetune(model) -> bool:
    """True where the top layers can be fine-tuned from cached inputs: a Whisper backbone, finetune, 0 < K < all."""
    return (isinstance(model.backbone, WhisperBackbone) and model.config.encoder_mode == "finetune"
            and 0 < model.config.trainable_layers < model.backbone.num_layers - 1)


def hidden_folder(model, start: int, cache_dir: str | Path | None = None) -> Path:
    """Return the folder of hidden state `start` of this encoder (its weights' and settings' digest)."""
    return Path(cache_dir or default_cache_dir()) / "hidden" / encoder_key(model) / f"layer{start}"


def entry_name(digest: str, variant: str | None = None) -> str:
    """Return a clip's file name: the clean clip's, or its augmented variant's (never the same)."""
    return f"{digest}.npy" if variant is None else f"{digest}~{variant}.npy"


@torch.no_grad()
def hidden_state(model, input_values: torch.Tensor, attention_mask: torch.Tensor | None, start: int) -> torch.Tensor:
    """Return hidden state `start` of a lone clip's encoder (1, T, D), raw, at the full frame rate."""
    backbone = model.backbone
    x, _, bias = backbone.frames(input_values, attention_mask)
    layers = backbone.run_layers(x, bias, 0, start)
    return layers[-1] if layers else x


@torch.no_grad()
def cached_hidden(model, feature_extractor, paths: Sequence[str], start: int | None = None,
                  cache_dir: str | Path | None = None, progress: bool = True,
                  variant: tuple[str, Callable] | None = None) -> tuple[list[np.ndarray | None], list[str]]:
    """Return every clip's hidden state `start` (T, D) float16 (default: the input of the first trainable layer),
    computing only what the cache lacks. Undecodable files come back as None with a message each; `variant` as in
    feature_cache.cached_layers: (key, make(i, audio, digest) -> audio), cached under its own name."""
    start = top_start(model) if start is None else start
    folder = hidden_folder(model, start, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    out, problems = [], []
    desc = f"encoder hidden state {start}" + (f" ({variant[0]})" if variant else "")
    for i, path in enumerate(tqdm(paths, desc=desc, disable=not progress, unit="clip")):
        try:
            audio = load_audio(path)
        except AudioError as err:
            out.append(None)
            problems.append(str(err))
            continue
        digest = audio_digest(audio)
        entry = folder / entry_name(digest, variant[0] if variant else None)
        if entry.exists():
            out.append(np.load(entry))
            continue
        if variant is not None:
            audio = variant[1](i, audio, digest)
        inputs = feature_extractor(audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
        array = hidden_state(model, inputs["input_values"], inputs["attention_mask"], start)[0].to(torch.float16).numpy()
        tmp = entry.with_name(f".{entry.stem}.{os.getpid()}.npy")
        np.save(tmp, array)
        os.replace(tmp, entry)  # never half-written entries
        out.append(array)
    model.train(was_training)
    return out, problems


def frozen_slice(model) -> slice:
    """The layers of the feature cache (encode()'s output) that the head reads and that stay frozen."""
    start = top_start(model)
    return slice(min(model.config.first_layer, start + 1), start + 1)


class HiddenDataset:
    """Each clip's cached hidden state (T, D), its frozen head layers (Lf, T', D) and its label id."""

    def __init__(self, hidden: Sequence[np.ndarray], frozen: Sequence[np.ndarray], label_ids: Sequence[int]):
        self.hidden, self.frozen, self.label_ids = list(hidden), list(frozen), list(label_ids)

    def __len__(self) -> int:
        return len(self.hidden)

    def __getitem__(self, i: int) -> dict:
        return {"hidden_states": self.hidden[i], "frozen_layers": self.frozen[i], "labels": self.label_ids[i]}

    def lengths(self) -> list[int]:
        return [x.shape[0] for x in self.hidden]


def collate_hidden(items: list[dict]) -> dict:
    """Pad to hidden_states (B, T, D) float32 with hidden_mask (B, T), and frozen_layers (B, Lf, T', D)."""
    longest = max(it["hidden_states"].shape[0] for it in items)
    hidden = torch.zeros(len(items), longest, items[0]["hidden_states"].shape[1])
    mask = torch.zeros(len(items), longest, dtype=torch.bool)
    first = items[0]["frozen_layers"]
    frames = max(it["frozen_layers"].shape[1] for it in items)
    frozen = torch.zeros(len(items), first.shape[0], frames, first.shape[2])
    for i, it in enumerate(items):
        n = it["hidden_states"].shape[0]
        hidden[i, :n] = torch.from_numpy(np.asarray(it["hidden_states"], dtype=np.float32))
        mask[i, :n] = True
        frozen[i, :, :it["frozen_layers"].shape[1]] = torch.from_numpy(np.asarray(it["frozen_layers"], dtype=np.float32))
    return {"hidden_states": hidden, "hidden_mask": mask, "frozen_layers": frozen,
            "labels": torch.tensor([it["labels"] for it in items])}


def top_layers(model, hidden_states: torch.Tensor, hidden_mask: torch.Tensor, frozen_layers: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return what `model.encode()` gives from audio, (B, L, T', D) and (B, T'), from the cached input of the first
    trainable layer and the frozen layers; layers below the head's first one are zeros (the head never reads them)."""
    start = top_start(model)
    backbone = model.backbone
    hidden_states = hidden_states.to(model.dtype)
    bias = backbone.padding_bias(hidden_mask, hidden_states.dtype)
    layers = torch.stack(backbone.run_layers(hidden_states, bias, start), dim=1)  # (B, K, T, D)
    mask = hidden_mask
    if model.config.normalize_layers:
        layers = nn.functional.layer_norm(layers, (backbone.output_dim,))
    if model.config.frame_pooling > 1:
        layers, mask = pool_frames(layers, mask, model.config.frame_pooling)
    skipped = frozen_slice(model).start
    below = layers.new_zeros(layers.shape[0], skipped, layers.shape[2], layers.shape[3])
    frozen = frozen_layers.to(layers.dtype)[:, :, :layers.shape[2]]
    return torch.cat([below, frozen, layers], dim=1), mask


@torch.no_grad()
def top_embeddings(model, dataset: HiddenDataset, batch_size: int = 16) -> np.ndarray:
    """Return every clip's pooled embedding (N, F) from the (fine-tuned) top layers run on its cached input, in the
    dataset's order; clips are batched by length (little padding)."""
    was_training = model.training
    model.eval()
    order = np.argsort(dataset.lengths(), kind="stable")
    out = np.empty((len(dataset), 0), np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = collate_hidden([dataset[i] for i in rows])
        layers, mask = top_layers(model, batch["hidden_states"], batch["hidden_mask"], batch["frozen_layers"])
        pooled = model.pool_layers(layers, mask).float().numpy()
        if out.shape[1] == 0:
            out = np.zeros((len(dataset), pooled.shape[1]), np.float32)
        out[rows] = pooled
    model.train(was_training)
    return out


class CachedTopModel(nn.Module):
    """What the Trainer trains: the model's top encoder layers and head on cached inputs (same parameters)."""

    def __init__(self, model):
        super().__init__()
        if not supports_cached_finetune(model):
            raise ValueError("fine-tuning from cached inputs needs a Whisper backbone with --encoder_mode finetune and "
                             "0 < --trainable_layers < its number of transformer layers")
        self.model = model
        self.config = model.config

    def forward(self, hidden_states, hidden_mask, frozen_layers, labels=None, **kwargs):
        layers, mask = top_layers(self.model, hidden_states, hidden_mask, frozen_layers)
        return self.model(embeddings=self.model.pool_layers(layers, mask), labels=labels)


class HiddenTrainer(Trainer):
    """The Trainer, with --train_sampling_strategy group_by_length on cached inputs: batches of similar lengths (little
    padding for the top layers to run on), drawn at random as the Trainer's LengthGroupedSampler does."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and isinstance(dataset, HiddenDataset):
            return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        lengths=dataset.lengths())
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        if isinstance(eval_dataset, HiddenDataset):  # predictions in the clips' order
            return torch.utils.data.SequentialSampler(eval_dataset)
        return super()._get_eval_sampler(eval_dataset)
