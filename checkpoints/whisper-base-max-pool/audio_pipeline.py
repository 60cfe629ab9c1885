"""`pipeline("audio-classification")` for these models, saved into every checkpoint (`custom_pipelines` in
config.json, loaded with `trust_remote_code=True`).

It scores audio as the project does (infer.Recognizer): audio longer than the model's window
(`config.max_seconds`) is cut into half-overlapping windows, each window is scored on its own and the
windows' probabilities are averaged, so a long recording is scored rather than refused. A window without
speech is left out and one with speech is scored on its speech (webrtcvad, when installed: `speech_parts`). Files are decoded
with soundfile and resampled with soxr, as the project reads audio; ffmpeg is the fallback.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from transformers import AudioClassificationPipeline
from transformers.pipelines.audio_utils import ffmpeg_read

from .waveform import speech_parts, window_starts

TASK = "audio-classification"
WINDOWS_PER_BATCH = 8  # windows of one recording run through the model together


def custom_pipelines() -> dict:
    """Return the `custom_pipelines` entry of config.json that makes `pipeline()` use WindowedAudioClassificationPipeline."""
    return {TASK: {"impl": f"{__name__.rsplit('.', 1)[-1]}.{WindowedAudioClassificationPipeline.__name__}",
                   "pt": ["AutoModelForAudioClassification"], "tf": [], "type": "audio"}}


def to_mono_rate(audio: np.ndarray, sr: int, rate: int) -> np.ndarray:
    """Return `audio` (samples, or samples x channels; float or integer) as mono float32 at `rate`."""
    audio = np.asarray(audio)
    if np.issubdtype(audio.dtype, np.integer):
        audio = audio.astype(np.float32) / np.iinfo(audio.dtype).max
    audio = audio.astype(np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1 if audio.shape[1] <= 8 else 0)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"expected mono or multichannel audio with samples, got shape {audio.shape}")
    if sr != rate:
        try:
            import soxr

            audio = soxr.resample(audio, sr, rate, quality="HQ")
        except ImportError:
            import librosa

            audio = librosa.resample(audio, orig_sr=sr, target_sr=rate)
    return audio.astype(np.float32)


def decode(data: bytes, rate: int) -> np.ndarray:
    """Return the audio file's bytes decoded as mono float32 at `rate` (soundfile, else ffmpeg)."""
    try:
        import soundfile

        audio, sr = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception:  # no soundfile, or a format libsndfile lacks (webm, m4a, mp4)
        return ffmpeg_read(data, rate)
    return to_mono_rate(audio, sr, rate)


class WindowedAudioClassificationPipeline(AudioClassificationPipeline):
    """Audio classification over half-overlapping windows: a path, bytes, a 16 kHz array or {"array", "sampling_rate"}."""

    def check_model_type(self, supported_models) -> None:
        pass  # made for this model, which transformers' built-in table does not list

    def load(self, inputs) -> np.ndarray:
        """Return `inputs` as mono float32 audio at the feature extractor's rate."""
        rate = self.feature_extractor.sampling_rate
        if isinstance(inputs, str):
            if inputs.startswith(("http://", "https://")):
                import httpx

                inputs = httpx.get(inputs, follow_redirects=True).content
            else:
                with open(inputs, "rb") as handle:
                    inputs = handle.read()
        if isinstance(inputs, bytes):
            return decode(inputs, rate)
        if isinstance(inputs, torch.Tensor):
            inputs = inputs.cpu().numpy()
        if isinstance(inputs, dict):
            audio = inputs.get("raw", inputs.get("array"))
            if audio is None or "sampling_rate" not in inputs:
                raise ValueError('a dict input needs the audio under "array" (or "raw") and its "sampling_rate"')
            return to_mono_rate(np.asarray(audio), int(inputs["sampling_rate"]), rate)
        if not isinstance(inputs, np.ndarray):
            raise TypeError(f"expected a file path, bytes, a numpy array or a dict, not {type(inputs).__name__}")
        return to_mono_rate(inputs, rate, rate)

    def preprocess(self, inputs):
        audio = self.load(inputs)
        rate = self.feature_extractor.sampling_rate
        size = int(float(getattr(self.model.config, "max_seconds", 10.0)) * rate)
        spans = [(start, min(start + size, len(audio))) for start in window_starts(len(audio), size)]
        windows = [audio[part[0]:part[1]] for part in speech_parts(audio, spans) if part]
        processed = self.feature_extractor(windows, sampling_rate=rate, padding=True, return_attention_mask=True,
                                           return_tensors="pt")
        if self.dtype is not None:
            processed = processed.to(dtype=self.dtype)
        return processed

    def _forward(self, model_inputs):
        count = len(model_inputs["input_values"])
        logits = [self.model(**{key: value[i:i + WINDOWS_PER_BATCH] for key, value in model_inputs.items()}).logits
                  for i in range(0, count, WINDOWS_PER_BATCH)]
        return {"logits": torch.cat(logits)}  # (windows, C)

    def postprocess(self, model_outputs, top_k=5, function_to_apply=None):
        logits = model_outputs["logits"].float()
        function_to_apply = function_to_apply or {"regression": "none", "multi_label_classification": "sigmoid"}.get(
            self.model.config.problem_type, "softmax")
        scores = {"softmax": lambda x: x.softmax(-1), "sigmoid": torch.sigmoid, "none": lambda x: x}[function_to_apply]
        probs = scores(logits).mean(dim=0)  # the windows' average
        values, ids = probs.topk(top_k)
        return [{"score": score, "label": self.model.config.id2label[i]} for score, i in zip(values.tolist(), ids.tolist())]
