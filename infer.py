"""Score audio files with a trained checkpoint and write one CSV row per file (and per window).

    python infer.py --checkpoint checkpoints/whisper-base-attention --output out.csv clip.wav folder/ ...

The CSV has `path` (as found from the INPUT given), `label` (top emotion), one probability
column per emotion of the checkpoint, and `error` (why a file could not be scored). Audio
longer than the model's window is scored in half-overlapping windows whose probabilities are
averaged; `--segments` also writes each window's row.
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

import models  # noqa: F401  (registers the architecture with the Auto classes)
from data_process import SAMPLE_RATE, AudioError, find_audio_files, load_audio


@dataclass
class Window:
    start: float  # seconds
    end: float
    probs: np.ndarray  # (C,)


class Recognizer:
    """A loaded checkpoint that turns 16 kHz audio into emotion probabilities."""

    def __init__(self, checkpoint: str | Path, batch_size: int = 8):
        folder = Path(checkpoint)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a checkpoint folder (no config.json)")
        # float32 compute even when the weights are stored in float16; safetensors only, nothing unpickled
        self.model = AutoModelForAudioClassification.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
        self.model.eval()
        self.extractor = AutoFeatureExtractor.from_pretrained(folder)
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.window_seconds = float(getattr(self.model.config, "max_seconds", 10.0))
        self.batch_size = batch_size
        self.folder = folder

    @torch.inference_mode()
    def probabilities(self, clips: list[np.ndarray]) -> np.ndarray:
        """Return softmax probabilities (N, C) for N clips, batched by similar length."""
        order = np.argsort([len(c) for c in clips])
        out = np.zeros((len(clips), len(self.labels)), dtype=np.float32)
        for i in range(0, len(clips), self.batch_size):
            chosen = order[i:i + self.batch_size]
            batch = self.extractor([clips[j] for j in chosen], sampling_rate=SAMPLE_RATE, padding=True,
                                   return_attention_mask=True, return_tensors="pt")
            logits = self.model(input_values=batch["input_values"], attention_mask=batch["attention_mask"]).logits
            out[chosen] = torch.softmax(logits, dim=-1).numpy()
        return out

    def windows(self, audio: np.ndarray, window_seconds: float | None = None, hop_seconds: float | None = None,
                score=None) -> list[Window]:
        """Return the probabilities of each half-overlapping window of `audio` (one window if it fits).

        `score(clips)` computes the probabilities (default: self.probabilities; the app queues them).
        """
        size = int((window_seconds or self.window_seconds) * SAMPLE_RATE)
        hop = int((hop_seconds or (window_seconds or self.window_seconds) / 2) * SAMPLE_RATE)
        if len(audio) <= size:
            starts = [0]
        else:  # the last window ends with the audio, so no tail is scored on a sliver
            starts = list(range(0, len(audio) - size, hop)) + [len(audio) - size]
        clips = [audio[s:s + size] for s in starts]
        probs = (score or self.probabilities)(clips)
        return [Window(s / SAMPLE_RATE, (s + len(c)) / SAMPLE_RATE, p) for s, c, p in zip(starts, clips, probs)]

    def predict(self, audio: np.ndarray) -> tuple[dict[str, float], list[Window]]:
        """Return {emotion: probability} for the whole clip (windows averaged) and the windows."""
        windows = self.windows(audio)
        mean = np.mean([w.probs for w in windows], axis=0)
        return {label: float(p) for label, p in zip(self.labels, mean)}, windows


def _onnx_recognizer(checkpoint: str):
    """Return an OnnxRecognizer (onnxruntime is imported only when asked for)."""
    from onnx_recognizer import OnnxRecognizer

    return OnnxRecognizer(checkpoint)


RUNTIMES = {"torch": Recognizer, "onnx": _onnx_recognizer}  # --runtime -> what loads the checkpoint


def _row(path: str, labels: list[str], probs: np.ndarray | None, error: str = "", **extra) -> dict:
    row = {"path": path, "label": labels[int(np.argmax(probs))] if probs is not None else ""}
    row.update({label: (f"{p:.6f}" if probs is not None else "") for label, p in zip(labels, probs if probs is not None else labels)})
    return {**row, "error": error, **extra}


def run(checkpoint: str, output: str, inputs: list[str], segments: bool = False, runtime: str = "torch") -> int:
    """Score every audio file under `inputs` into the CSV `output`; return how many files failed."""
    recognizer = RUNTIMES[runtime](checkpoint)
    files = find_audio_files(inputs)
    if not files:
        raise SystemExit(f"no audio files found in {', '.join(inputs)}")
    columns = ["path", "label", *recognizer.labels, "error"] + (["segment", "start_s", "end_s"] if segments else [])
    failed = 0
    with open(output, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for path in tqdm(files, desc="scoring", unit="file", disable=None):
            try:
                audio = load_audio(path)
            except AudioError as err:
                failed += 1
                writer.writerow(_row(str(path), recognizer.labels, None, str(err)))
                continue
            probs, windows = recognizer.predict(audio)
            extra = {"segment": "all", "start_s": 0.0, "end_s": f"{len(audio) / SAMPLE_RATE:.2f}"} if segments else {}
            writer.writerow(_row(str(path), recognizer.labels, np.array(list(probs.values())), **extra))
            for i, w in enumerate(windows if segments and len(windows) > 1 else []):
                writer.writerow(_row(str(path), recognizer.labels, w.probs, segment=i,
                                     start_s=f"{w.start:.2f}", end_s=f"{w.end:.2f}"))
    print(f"wrote {len(files) - failed} scored and {failed} failed file(s) to {output}", file=sys.stderr)
    return failed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder written by train.py (or, with "
                                                            "--runtime onnx, an .onnx file written by export.py)")
    parser.add_argument("--output", required=True, help="CSV file to write")
    parser.add_argument("--segments", action="store_true", help="also write one row per window of long audio")
    parser.add_argument("--runtime", choices=sorted(RUNTIMES), default="torch",
                        help="torch: the checkpoint in PyTorch; onnx: its ONNX export in onnxruntime (--checkpoint "
                             "may then be an .onnx file from export.py; a folder is exported once and cached)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio file or folder (searched recursively)")
    args = parser.parse_args(argv)
    run(args.checkpoint, args.output, args.inputs, args.segments, args.runtime)


if __name__ == "__main__":
    main()
