"""Export a checkpoint: as one ONNX graph, or as a self-contained transformers folder (its code beside the weights).

    python export.py --checkpoint checkpoints/whisper-base-std-linear --format onnx --output whisper-base-std-linear.onnx
    python export.py --checkpoint tests/checkpoints/cnn1d-light --format transformers     # rewrite the folder in place

onnx: the whole classifier in one fp32 graph. Input `waveform` (batch, samples): float32 audio at 16 kHz,
    any length, the clips of one batch of equal length; outputs `probabilities` (batch, labels) and `embedding`
    (batch, features): the pooled embedding the classifier reads, before any standardisation, so that a runtime
    can standardise it with a speaker's or user's statistics (onnx_recognizer.py). Audio longer than the
    checkpoint's window (config.max_seconds) is scored in half-overlapping windows whose probabilities (and
    embeddings) are averaged, inside the graph, as infer.py does. The log-mel front end is a convolution
    with a fixed DFT basis. The labels, sampling rate and window are in the model's metadata
    (`labels` as JSON). `python infer.py --runtime onnx --checkpoint FILE.onnx` runs it; every export is
    checked against PyTorch with onnxruntime before it is kept. Backbones: cnn1d and whisper (the others
    are refused with the reason).
transformers: config.json with `auto_map` and `custom_pipelines`, and the modeling code, so that
    `AutoModelForAudioClassification.from_pretrained(DIR, trust_remote_code=True)` and
    `pipeline("audio-classification", model=DIR, trust_remote_code=True)` work without this project.
    The weights file is not rewritten. A head-only checkpoint (one that shares a frozen encoder with other
    models: models/shared_encoder.py) needs --output: the copy gets the full weights (the shared encoder's
    and the head's, in their stored precision), so it loads alone, anywhere.

    python export.py --checkpoint checkpoints/whisper-base-max-pool --format transformers --output /tmp/max-pool
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForAudioClassification

import models  # noqa: F401  (registers the architecture with the Auto classes)
from models.waveform import SAMPLE_RATE
# the graph's names; GRAPH_VERSION 2: the pooled embedding beside the probabilities (an older cached export is redone)
from serving.onnx_recognizer import EMBEDDING, GRAPH_VERSION, INPUT, OUTPUT, weights_digest

OPSET = 18  # the torch.export-based exporter's own opset; onnxruntime's int8 quantisation handles it
TOLERANCE = 1e-3  # largest difference in any probability between onnxruntime and PyTorch that an export may have
_PER_CLIP = "it computes its features clip by clip (a Python loop over the batch), not yet written for a graph"
_UNCHECKED = ("not supported yet: a first export of a tiny wav2vec2 ran out of memory in onnxruntime's check; "
              "the supported ones are cnn1d and whisper")
NOT_EXPORTABLE = {  # backbone -> why export.py refuses it (cnn1d and whisper export and are tested)
    "keyseg_cnn_bilstm": "it picks key segments with K-means (scikit-learn) on each clip",
    "mel_efficientnet": "it trims silence with librosa (numpy) inside its forward",
    "logmel_cnn": _PER_CLIP,
    "mfcc_lstm": _PER_CLIP,
    **dict.fromkeys(("wav2vec2", "hubert", "wavlm", "data2vec-audio"), _UNCHECKED),
}


def load(checkpoint: str | Path) -> nn.Module:
    """Return the checkpoint's EmotionClassifier in float32, in eval mode."""
    folder = Path(checkpoint)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a checkpoint folder (no config.json)")
    return AutoModelForAudioClassification.from_pretrained(folder, dtype=torch.float32, use_safetensors=True).eval()


class WaveformClassifier(nn.Module):
    """An EmotionClassifier with the steps around it, as one traceable module: waveform (B, N) -> probabilities (B, C)
    and the pooled embedding (B, F) the classifier reads, before any standardisation (the mean over the windows
    of long audio, as recognizer.Prediction.embedding), so that a runtime can standardise it with other statistics.

    The windows, the feature extractor's per-window normalisation and the softmax average are tensor
    operations on the input's shape, so a trace of one length serves every length.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.normalize = bool(model.backbone.normalize_waveform)  # what Wav2Vec2FeatureExtractor(do_normalize) does
        self.size = int(float(model.config.max_seconds) * SAMPLE_RATE)
        self.hop = self.size // 2
        self.min_samples = int(getattr(model.backbone, "min_samples", 0))

    def windows(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, K, L): models.waveform.window_starts's windows, L = min(N, window).

        Symbolic-size arithmetic (torch.sym_min / sym_max): under torch.export N stays a dimension of the graph.
        """
        n = waveform.shape[-1]
        length = torch.sym_min(n, self.size)
        count = (torch.sym_max(n - self.size, 0) + self.hop - 1) // self.hop + 1
        starts = torch.clamp(torch.arange(count, device=waveform.device) * self.hop, max=n - length)  # the last ends at N
        return waveform[:, starts[:, None] + torch.arange(length, device=waveform.device)[None]]

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        windows = self.windows(waveform)
        batch, count, length = windows.shape
        flat = windows.reshape(batch * count, length)
        if self.normalize:  # zero mean, unit variance per window
            mean = flat.mean(-1, keepdim=True)
            flat = (flat - mean) / torch.sqrt(((flat - mean) ** 2).mean(-1, keepdim=True) + 1e-7)
        if self.min_samples:  # zero-padded to the backbone's shortest input, as its forward does in PyTorch
            flat = torch.cat([flat, flat.new_zeros(flat.shape[0], self.min_samples)], dim=-1)
            flat = flat[:, :torch.sym_max(length, self.min_samples)]
        pooled = self.model.embed(flat)  # (B * K, F): what EmotionClassifier.forward computes, in two steps
        probs = torch.softmax(self.model.classify(pooled).float(), dim=-1)  # (B * K, C)
        return probs.reshape(batch, count, -1).mean(dim=1), pooled.float().reshape(batch, count, -1).mean(dim=1)


def probe_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Return a speech-like test signal: a gliding harmonic tone with syllable-rate loudness and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 2 * np.pi * np.cumsum(140 + 40 * np.sin(2 * np.pi * 0.7 * t)) / SAMPLE_RATE
    voice = sum(np.sin(k * pitch) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    return (0.2 * voice + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def largest_difference(path: Path, wrapper: WaveformClassifier, clips: list[np.ndarray]) -> tuple[float, float]:
    """Return the largest |probability difference| between onnxruntime on `path` and PyTorch over `clips`, and the
    largest difference in the embedding relative to its largest magnitude."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst, worst_embedding = 0.0, 0.0
    for clip in clips:
        with torch.inference_mode():
            expected, embedding = (t.numpy() for t in wrapper(torch.from_numpy(clip)[None]))
        got, got_embedding = session.run([OUTPUT, EMBEDDING], {INPUT: clip[None]})
        worst = max(worst, float(np.abs(got - expected).max()))
        scale = max(float(np.abs(embedding).max()), 1e-6)
        worst_embedding = max(worst_embedding, float(np.abs(got_embedding - embedding).max()) / scale)
    return worst, worst_embedding


def export_onnx(checkpoint: str | Path, output: str | Path | None = None) -> Path:
    """Write the checkpoint as one ONNX graph (see the module's help), check it with onnxruntime, return its path."""
    import onnx

    model = load(checkpoint)
    backbone = model.config.backbone
    if backbone in NOT_EXPORTABLE:
        raise ValueError(f"backbone {backbone!r} cannot be exported to ONNX: {NOT_EXPORTABLE[backbone]}")
    output = Path(output) if output else Path(checkpoint).parent / f"{Path(checkpoint).resolve().name}.onnx"
    output.parent.mkdir(parents=True, exist_ok=True)
    wrapper = WaveformClassifier(model).eval()
    seconds = 1.2 * wrapper.size / SAMPLE_RATE  # two windows each, two clips: no size of 1 to specialise on
    example = torch.from_numpy(np.stack([probe_audio(seconds, seed) for seed in (0, 1)]))
    samples = torch.export.Dim("samples", min=1)
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        # torch.export (dynamo): the TorchScript exporter (dynamo=False) is deprecated since torch 2.9
        torch.onnx.export(wrapper, (example,), str(output), dynamo=True, opset_version=OPSET, external_data=False,
                          input_names=[INPUT], output_names=[OUTPUT, EMBEDDING],
                          dynamic_shapes={"waveform": {0: torch.export.Dim("batch"), 1: samples}})
    graph = onnx.load(str(output))
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    for key, value in {"labels": json.dumps(labels), "sampling_rate": str(SAMPLE_RATE),
                       "max_seconds": str(model.config.max_seconds), "backbone": backbone,
                       "source": str(checkpoint), "source_folder": str(Path(checkpoint).resolve()),
                       "weights": weights_digest(Path(checkpoint)), "graph_version": str(GRAPH_VERSION),
                       "embedding_norm": str(model.config.embedding_norm)}.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(output))
    clips = [probe_audio(s, seed) for seed, s in enumerate((0.01, 3.0, 1.7 * wrapper.size / SAMPLE_RATE))]
    worst, worst_embedding = largest_difference(output, wrapper, clips)
    if worst > TOLERANCE or worst_embedding > TOLERANCE:
        output.unlink()
        raise RuntimeError(f"the ONNX graph of {checkpoint} differs from PyTorch by {worst:.2e} in a probability and "
                           f"{worst_embedding:.2e} (relative) in the embedding (more than {TOLERANCE}): not written")
    print(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB); onnxruntime matches PyTorch within {worst:.1e} "
          f"(probabilities), {worst_embedding:.1e} (embedding, relative)", file=sys.stderr)
    return output


def export_transformers(checkpoint: str | Path, output: str | Path | None = None) -> Path:
    """Make the checkpoint folder self-contained (code, `auto_map`, `custom_pipelines`); return the folder written.

    With `output`, the whole folder is copied there first. The weights file is kept as it is (same bytes):
    only config.json and the code files are written, by `save_pretrained` into a scratch folder.
    """
    source = Path(checkpoint)
    model = load(source)
    folder = Path(output) if output else source
    source_config = json.loads((source / "config.json").read_text())
    head_only = bool(source_config.get("shared_encoder"))
    if head_only and folder.resolve() == source.resolve():
        raise ValueError(f"{source.name} is a head-only checkpoint sharing the encoder {source_config['shared_encoder']}: "
                         "give --output DIR for its self-contained copy (the full weights, the code, auto_map)")
    if folder.resolve() != source.resolve():
        shutil.copytree(source, folder, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(WEIGHTS) if head_only else None)
    stored_dtype = source_config.get("dtype", "float32")
    with tempfile.TemporaryDirectory() as scratch:
        model.save_pretrained(scratch)  # a head-only model saves its full weights and names no shared encoder
        config = json.loads((Path(scratch) / "config.json").read_text())
        config["dtype"] = stored_dtype  # what from_pretrained computes in (float16 weights load as float32)
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for code in Path(scratch).glob("*.py"):
            shutil.copyfile(code, folder / code.name)
        if head_only:  # the head's tensors as stored (float16 or float32), the shared encoder's as its file stores them
            write_full_weights(source, Path(scratch) / WEIGHTS, folder / WEIGHTS)
    if head_only and (folder / "settings.json").is_file() and (folder / "metrics.json").is_file():
        from reports.model_card import rewrite

        rewrite(folder)  # the copy's card: full weights, no shared encoder
    print(f"{folder}: self-contained ({', '.join(sorted(p.name for p in folder.glob('*.py')))})", file=sys.stderr)
    return folder


def write_full_weights(head_only: Path, full: Path, output: Path) -> None:
    """Write `full` (a head-only model's float32 save_pretrained weights) to `output` in the stored dtypes: the
    head's tensors in the head-only file's dtype, the encoder's in its shared file's (float16 for those shipped)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from models.shared_encoder import BACKBONE_PREFIX, ENCODER_WEIGHTS, encoder_folder

    dtypes = {}
    with safe_open(head_only / WEIGHTS, "pt") as handle:
        dtypes.update({key: handle.get_slice(key).get_dtype() for key in handle.keys()})
    config = json.loads((head_only / "config.json").read_text())
    with safe_open(encoder_folder(head_only, config) / ENCODER_WEIGHTS, "pt") as handle:
        dtypes.update({BACKBONE_PREFIX + key: handle.get_slice(key).get_dtype() for key in handle.keys()})
    names = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
    state = load_file(full)
    save_file({key: value.to(names.get(dtypes.get(key), value.dtype)) if value.is_floating_point() else value
               for key, value in state.items()}, str(output), metadata={"format": "pt"})


WEIGHTS = "model.safetensors"
FORMATS = {"onnx": export_onnx, "transformers": export_transformers}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder written by train.py")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="what to write")
    parser.add_argument("--output", help="onnx: the .onnx file (default: CHECKPOINT.onnx beside the folder); "
                                         "transformers: a new folder (default: the checkpoint folder itself)")
    args = parser.parse_args(argv)
    try:
        return FORMATS[args.format](args.checkpoint, args.output)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        raise SystemExit(f"export.py: {err}") from None


if __name__ == "__main__":
    main()
