"""Audio decoding, speaker-aware splits and batch collation. No model code lives here."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

SAMPLE_RATE = 16_000
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".webm", ".m4a", ".aac", ".aiff", ".aif")


class AudioError(ValueError):
    """Raised when a file cannot be turned into speech samples; the message names the file.

    `reason` says why in one word (a key of audio_checks.MESSAGES, which words it for users) and
    `facts` hold the numbers that sentence quotes (e.g. seconds, limit).
    """

    def __init__(self, message: str, reason: str = "unreadable", **facts):
        super().__init__(message)
        self.reason, self.facts = reason, facts

    def __reduce__(self):  # picklable across DataLoader workers despite the keyword facts
        return _rebuild_audio_error, (self.args[0], self.reason, self.facts)


def _rebuild_audio_error(message: str, reason: str, facts: dict) -> AudioError:
    return AudioError(message, reason, **facts)


BLOCK_SECONDS = 1           # libsndfile formats are read in blocks of this length and downmixed as they come
FFMPEG_TIMEOUT_S = 120      # a decode that takes longer is abandoned (it is bounded by max_seconds anyway)


def load_audio(path: str | Path, sampling_rate: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Return the file's samples as mono float32 at `sampling_rate` (16 kHz by default).

    With `max_seconds`, a longer file raises AudioError (reason "too_long") with memory and work
    bounded whatever the file holds: the length in the header refuses it before decoding (a WAV's
    from the bytes it holds, not from what its header claims), and the decode itself stops just
    past the limit (a header may lie or say nothing). libsndfile reads WAV, FLAC, Ogg/Opus and MP3;
    anything else (webm, m4a, aac) is decoded by ffmpeg as a stream. A file that ends before its
    header says it should is judged on the audio it holds; one of which nothing decodes raises
    reason "truncated" (its header announced audio) or "unreadable". Channels are mixed to mono
    (`downmix`).
    """
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file", "directory")
    if not path.is_file():
        raise AudioError(f"{path}: no such file", "missing")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty", "empty")
    read = _read_soundfile(path, max_seconds)
    audio, sr = read if read is not None else _read_ffmpeg(path, max_seconds)
    return to_model_rate(audio, sr, sampling_rate, name=str(path))


def _too_long(path: Path, seconds: float, max_seconds: float, exact: bool = True) -> AudioError:
    """The error for audio over the limit; `exact` False: decoding stopped at the limit, the length is unknown."""
    what = f"is {seconds:.1f} s long" if exact else "goes on past the limit (decoding stopped there)"
    return AudioError(f"{path}: the audio {what}; the limit is {max_seconds:g} s", "too_long",
                      seconds=seconds if exact else None, limit=max_seconds)


def _truncated(path: Path, found: float, expected: float | None) -> AudioError:
    """The error for a file of which nothing decodes though its header announces `expected` seconds."""
    said = f"its header announces {expected:.1f} s" if expected else "decoding stopped on an error"
    return AudioError(f"{path}: the file is cut short ({found:.1f} s decoded; {said})", "truncated",
                      found=found, expected=expected)


CANCELLED_DB = 30.0  # a mix this far under its channels' mean energy cancelled out (channels in opposite phase)


def downmix(frames: np.ndarray) -> np.ndarray:
    """Return (samples, channels) audio as mono: the channels' mean, or the louder channel where the mean cancels.

    A stereo file whose channels are in opposite phase (right = -left, a wiring or export fault) mixes to
    silence; where the mix's energy is CANCELLED_DB under the channels' mean energy, the loudest channel is the
    recording.
    """
    frames = np.asarray(frames, dtype=np.float32)
    mix = frames.mean(axis=1)
    energies = (frames.astype(np.float64) ** 2).sum(axis=0)
    if frames.shape[1] > 1 and mixed_out(energies, float((mix.astype(np.float64) ** 2).sum())):
        return frames[:, int(np.argmax(energies))].copy()
    return mix


def mixed_out(energies: np.ndarray, mixed: float) -> bool:
    """Whether a mix of energy `mixed` cancelled out channels of these `energies` (sums of squares)."""
    return float(np.max(energies)) > 0 and mixed < float(np.mean(energies)) * 10 ** (-CANCELLED_DB / 10)


def _wav_data_frames(path: Path, block_align: int) -> int | None:
    """Return the frames a WAV file's `data` chunk header announces, or None when it says nothing usable."""
    import struct

    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # RF64, W64: leave it to libsndfile
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                return None
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"data":  # 0 or 0xFFFFFFFF: a recorder that never wrote the length
                return size // block_align if 0 < size < 0xFFFFFFFF and block_align else None
            handle.seek(size + (size & 1), 1)


def _read_soundfile(path: Path, max_seconds: float | None) -> tuple[np.ndarray, int] | None:
    """Return (mono float32 samples, rate) via libsndfile, or None if libsndfile cannot open the file."""
    import soundfile as sf

    try:
        handle = sf.SoundFile(str(path))
    except Exception:  # not a libsndfile format (webm, m4a), or malformed for it: ffmpeg may still read it
        return None
    with handle:
        sr, held, kind, channels = handle.samplerate, handle.frames, handle.format, handle.channels
        announced = held  # for a WAV, libsndfile's length is that of the bytes present; its header may claim more
        if kind in ("WAV", "WAVEX"):
            announced = max(held, _wav_data_frames(path, channels * _sample_bytes(handle.subtype)) or 0)
        if max_seconds is not None and held > max_seconds * sr:
            raise _too_long(path, held / sr, max_seconds)
        limit = int(max_seconds * sr) + 1 if max_seconds is not None else None
        blocks, got = [], 0
        energies, mixed = np.zeros(channels), 0.0
        try:
            while limit is None or got < limit:
                block = handle.read(sr * BLOCK_SECONDS if limit is None else min(sr * BLOCK_SECONDS, limit - got),
                                    dtype="float32", always_2d=True)
                if not len(block):
                    break
                blocks.append(block.mean(axis=1) if channels > 1 else block[:, 0].copy())
                if channels > 1:
                    energies += (block.astype(np.float64) ** 2).sum(axis=0)
                    mixed += float((blocks[-1].astype(np.float64) ** 2).sum())
                got += len(block)
        except Exception as err:  # a file cut short or corrupt: what decoded before the error is judged
            if not got and not announced:
                raise AudioError(f"{path}: not a readable audio file ({type(err).__name__}: {err})") from None
        if limit is not None and got >= limit:  # the header said less than the file holds
            raise _too_long(path, got / sr, max_seconds, exact=False)
        if not got and announced:
            raise _truncated(path, 0.0, announced / sr)
        if channels > 1 and mixed_out(energies, mixed):  # opposite phases: read the louder channel instead
            handle.seek(0)
            return _read_soundfile_channel(handle, got, int(np.argmax(energies))), sr
    return (np.concatenate(blocks) if blocks else np.zeros(0, np.float32)), sr


def _read_soundfile_channel(handle, frames: int, channel: int) -> np.ndarray:
    """Return channel `channel` of the first `frames` frames of an open libsndfile `handle`, read in blocks."""
    blocks, got = [np.zeros(0, np.float32)], 0
    try:
        while got < frames:
            block = handle.read(min(handle.samplerate * BLOCK_SECONDS, frames - got), dtype="float32",
                                always_2d=True)
            if not len(block):
                break
            blocks.append(block[:, channel].copy())
            got += len(block)
    except Exception:  # cut short, as on the first pass
        pass
    return np.concatenate(blocks)


def _sample_bytes(subtype: str) -> int:
    """Return the bytes per sample of a libsndfile PCM/float subtype name (0 when it is not one)."""
    import re

    bits = re.search(r"(\d+)$", subtype)
    return {"FLOAT": 4, "DOUBLE": 8, "ULAW": 1, "ALAW": 1}.get(subtype, int(bits.group(1)) // 8 if bits else 0)


def _read_ffmpeg(path: Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Return (mono float32 samples, rate) decoded by ffmpeg, stopping just past `max_seconds`."""
    import json
    import shutil
    import subprocess

    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise AudioError(f"{path}: not a format libsndfile reads, and ffmpeg is not installed to decode it")
    try:
        probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                                "stream=sample_rate,channels:format=duration", "-of", "json", str(path)],
                               capture_output=True, timeout=30, check=True)
        info = json.loads(probe.stdout)
        sr = int(info["streams"][0]["sample_rate"])
        channels = min(max(int(info["streams"][0].get("channels") or 1), 1), 8)
    except Exception:
        raise AudioError(f"{path}: not a readable audio file (ffprobe finds no audio stream in it)") from None
    try:
        duration = float(info.get("format", {}).get("duration"))
    except (TypeError, ValueError):
        duration = None  # e.g. webm written as a stream (MediaRecorder): no length in the header
    if max_seconds is not None and duration and duration > max_seconds:
        raise _too_long(path, duration, max_seconds)
    command = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", str(channels),
               "-f", "f32le"]  # the channels interleaved, mixed here (`downmix`) as libsndfile's are
    if max_seconds is not None:  # stop decoding just past the limit whatever the header said
        command += ["-t", f"{max_seconds + 0.5:.3f}"]
    most = int((max_seconds + 1) * sr) * channels if max_seconds is not None else None
    audio, returncode, errors = _run_decoder([*command, "pipe:1"], path, most)
    audio = downmix(audio[: len(audio) // channels * channels].reshape(-1, channels)) if channels > 1 else audio
    if max_seconds is not None and len(audio) > max_seconds * sr:
        raise _too_long(path, len(audio) / sr, max_seconds, exact=False)
    if not len(audio):  # a file cut short or corrupt is judged on what decoded; here nothing did
        if returncode != 0:
            raise AudioError(f"{path}: not a readable audio file ({(errors.splitlines() or ['ffmpeg failed'])[-1]})")
        if duration:
            raise _truncated(path, 0.0, duration)
    return audio, sr


def _run_decoder(command: list[str], path: Path, most: int | None) -> tuple[np.ndarray, int, str]:
    """Run an ffmpeg `command` writing float32 samples to stdout; return (samples, exit status, its last errors).

    With `most`, the samples go straight into one buffer of that many (pages are committed only as
    they fill, so a short file costs little), and a decoder that writes more is stopped there.
    """
    import subprocess
    import tempfile
    import threading

    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a chatty decoder cannot block
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        timed_out, full = threading.Event(), False

        def stop() -> None:
            timed_out.set()
            process.kill()

        timer = threading.Timer(FFMPEG_TIMEOUT_S, stop)
        timer.start()
        try:
            if most is None:
                data = b"".join(iter(lambda: process.stdout.read(1 << 20), b""))
                audio = np.frombuffer(data[: len(data) // 4 * 4], dtype=np.float32)
            else:
                buffer = np.empty(most, dtype=np.float32)
                view, got = memoryview(buffer).cast("B"), 0
                while got < len(view) and (n := process.stdout.readinto(view[got:])):
                    got += n
                audio = buffer[: got // 4]
                full = got == len(view)
                if full:  # more than the caller will take: stop the decoder here
                    process.kill()
        finally:
            process.stdout.close()
            returncode = process.wait()
            timer.cancel()
        if timed_out.is_set():
            raise AudioError(f"{path}: decoding took over {FFMPEG_TIMEOUT_S} s; the file is damaged or hostile")
        errors.seek(0)
        text = errors.read()[-4000:].decode(errors="replace")
    return audio, 0 if full else returncode, text


def to_model_rate(audio: np.ndarray, sr: int, sampling_rate: int = SAMPLE_RATE, name: str = "audio") -> np.ndarray:
    """Return `audio` (samples, or samples x channels) as mono float32 resampled to `sampling_rate`."""
    audio = np.asarray(audio)
    if np.issubdtype(audio.dtype, np.integer):  # e.g. int16 from a browser recording
        audio = audio.astype(np.float32) / np.iinfo(audio.dtype).max
    audio = audio.astype(np.float32)
    if audio.ndim == 2:
        audio = downmix(audio if audio.shape[1] <= 8 else audio.T)
    if audio.size == 0:
        raise AudioError(f"{name}: contains no samples", "no_samples")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{name}: contains NaN or infinite samples", "not_finite")
    if sr != sampling_rate:
        import soxr

        audio = soxr.resample(audio, sr, sampling_rate, quality="HQ").astype(np.float32)
    return audio


def audio_digest(audio: np.ndarray) -> str:
    """Return a short content hash of decoded samples (the key of the encoder-output cache)."""
    return hashlib.sha1(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()[:20]


def find_audio_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Return the audio files named by `inputs`, searching folders recursively, in a stable order."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found.extend(sorted(p for p in item.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()))
        else:
            found.append(item)
    return found


# ---------------------------------------------------------------------------------------------
# Splits. Each returns a list of folds; a fold is a dict of index arrays "train", "val", "test".
# Speaker-independent protocols also keep the validation speakers out of training, so that early
# stopping never sees a test or training voice.
# ---------------------------------------------------------------------------------------------
def _stratified_split(idx: np.ndarray, labels: np.ndarray, fraction: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Return (rest, held) where `held` takes about `fraction` of each label of `idx`."""
    held = []
    for label in np.unique(labels[idx]):
        members = rng.permutation(idx[labels[idx] == label])
        held.extend(members[: max(1, round(len(members) * fraction))] if len(members) > 1 else [])
    held = np.array(sorted(held), dtype=int)
    return np.setdiff1d(idx, held), held


def _speaker_val(train_idx: np.ndarray, speakers: np.ndarray, labels: np.ndarray, n_val: int, rng):
    """Return (train, val): `n_val` speakers of `train_idx` held out, chosen to cover most labels."""
    spk = np.unique(speakers[train_idx])
    if len(spk) <= n_val:  # too few voices for a speaker-disjoint validation set: fall back
        return _stratified_split(train_idx, labels, 0.1, rng)
    order = rng.permutation(spk)
    coverage = [len(np.unique(labels[train_idx][speakers[train_idx] == s])) for s in order]
    chosen = [order[i] for i in np.argsort(coverage, kind="stable")[::-1][:n_val]]
    is_val = np.isin(speakers[train_idx], chosen)
    return train_idx[~is_val], train_idx[is_val]


def make_folds(
    labels: Sequence[str],
    speakers: Sequence[str],
    protocol: str = "speaker_kfold",
    k: int = 5,
    sessions: Sequence[str | None] | None = None,
    test_speakers: Sequence[str] | None = None,
    val_speakers: int = 1,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Return the folds of `protocol` over utterances with these labels and speakers.

    protocols: random (stratified 8:1:1, the original 9:1 train/test with a validation slice),
    random_kfold (k stratified folds of utterances: speaker-dependent, every speaker in train and test),
    speaker_kfold (k folds of whole speakers), loso (leave one speaker out),
    loso_session (leave one session out), fixed (the given test speakers),
    loco (leave one corpus out: the corpus is the prefix of the speaker, "emodb:03"; its test clips are
    only those whose emotion the other corpora also carry, so every test label was trained on).
    Every fold has a "name": the test corpus for loco, else its test speakers.
    """
    labels, speakers = np.asarray(labels), np.asarray(speakers)
    rng = np.random.default_rng(seed)
    every = np.arange(len(labels))
    if protocol == "random":
        rest, test = _stratified_split(every, labels, 0.1, rng)
        train, val = _stratified_split(rest, labels, 1 / 9, rng)
        return [{"train": train, "val": val, "test": test, "name": "random 10 %"}]
    if protocol == "random_kfold":
        if not 2 <= k <= len(labels):
            raise ValueError(f"random_kfold needs 2 <= k <= number of utterances ({len(labels)}), got k={k}")
        part = np.zeros(len(labels), dtype=int)  # fold of each utterance, dealt out label by label
        for label in np.unique(labels):
            members = rng.permutation(every[labels == label])
            part[members] = (np.arange(len(members)) + rng.integers(k)) % k
        folds = []
        for i in range(k):
            train, val = _stratified_split(every[part != i], labels, 1 / 9, rng)
            folds.append({"train": train, "val": val, "test": every[part == i], "name": f"random fold {i}"})
        return folds
    if protocol == "loso":
        groups = [[s] for s in np.unique(speakers)]
    elif protocol == "loso_session":
        if sessions is None or any(s is None for s in sessions):
            raise ValueError("leave-one-session-out needs a session for every utterance (IEMOCAP has them)")
        sessions = np.asarray(sessions)
        groups = [sorted(set(speakers[sessions == s])) for s in np.unique(sessions)]
    elif protocol == "speaker_kfold":
        spk = rng.permutation(np.unique(speakers))
        if k < 2 or k > len(spk):
            raise ValueError(f"speaker_kfold needs 2 <= k <= number of speakers ({len(spk)}), got k={k}")
        groups = [list(part) for part in np.array_split(spk, k)]
    elif protocol == "loco":
        corpus = np.array([s.split(":", 1)[0] for s in speakers])
        if len(np.unique(corpus)) < 2:
            raise ValueError(f"leave-one-corpus-out needs two corpora or more, got {sorted(set(corpus))}")
        groups = [sorted(set(speakers[corpus == c])) for c in np.unique(corpus)]
    elif protocol == "fixed":
        missing = sorted(set(test_speakers or []) - set(speakers))
        if not test_speakers or missing:
            raise ValueError(f"fixed protocol needs --test_speakers from the data; unknown: {missing}")
        groups = [list(test_speakers)]
    else:
        raise ValueError(f"unknown protocol {protocol!r}; one of random, random_kfold, speaker_kfold, loso, loso_session, "
                         "fixed, loco")
    folds = []
    for group in groups:
        is_test = np.isin(speakers, group)
        train, val = _speaker_val(every[~is_test], speakers, labels, val_speakers, rng)
        test = every[is_test]
        if protocol == "loco":  # a test emotion no other corpus carries cannot be recognised: leave it out
            test = test[np.isin(labels[test], labels[train])]
        name = group[0].split(":", 1)[0] if protocol == "loco" else ",".join(group)
        folds.append({"train": train, "val": val, "test": test, "name": name})
    return folds


# ---------------------------------------------------------------------------------------------
# Datasets and collators for the Trainer.
# ---------------------------------------------------------------------------------------------
class WaveDataset:
    """Decoded clips with their label ids; a random crop of `crop_seconds` when training."""

    def __init__(self, paths: Sequence[str], label_ids: Sequence[int], crop_seconds: float | None = None, seed: int = 0):
        self.paths, self.label_ids = list(paths), list(label_ids)
        self.crop = int(crop_seconds * SAMPLE_RATE) if crop_seconds else None
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        audio = load_audio(self.paths[i])
        if self.crop and len(audio) > self.crop:
            start = int(self.rng.integers(0, len(audio) - self.crop + 1))
            audio = audio[start:start + self.crop]
        return {"audio": audio, "labels": self.label_ids[i]}


class WaveCollator:
    """Pads raw clips with the checkpoint's feature extractor -> input_values, attention_mask, labels."""

    def __init__(self, feature_extractor):
        self.feature_extractor = feature_extractor

    def __call__(self, items: list[dict]) -> dict:
        import torch

        batch = self.feature_extractor([it["audio"] for it in items], sampling_rate=SAMPLE_RATE, padding=True,
                                       return_attention_mask=True, return_tensors="pt")
        batch = {"input_values": batch["input_values"], "attention_mask": batch["attention_mask"]}
        if "labels" in items[0]:
            batch["labels"] = torch.tensor([it["labels"] for it in items])
        return batch


class LayersDataset:
    """Cached encoder layers (L, T, D) of each clip with its label id."""

    def __init__(self, layers: Sequence[np.ndarray], label_ids: Sequence[int]):
        self.layers, self.label_ids = list(layers), list(label_ids)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> dict:
        return {"encoder_layers": self.layers[i], "labels": self.label_ids[i]}


class EmbeddingsDataset:
    """Pooled embeddings (F,) of each clip with its label id and, when normalising, its group's mean and std."""

    def __init__(self, embeddings: np.ndarray, label_ids: Sequence[int], mean: np.ndarray | None = None,
                 std: np.ndarray | None = None):
        self.embeddings, self.label_ids, self.mean, self.std = embeddings, list(label_ids), mean, std

    def __len__(self) -> int:
        return len(self.embeddings)

    def __getitem__(self, i: int) -> dict:
        item = {"embeddings": self.embeddings[i], "labels": self.label_ids[i]}
        if self.mean is not None:
            item.update(embedding_mean=self.mean[i], embedding_std=self.std[i])
        return item


def collate_embeddings(items: list[dict]) -> dict:
    """Stacks embeddings (and group statistics) to (B, F) float32 tensors, labels to (B,)."""
    import torch

    batch = {key: torch.from_numpy(np.stack([it[key] for it in items]).astype(np.float32))
             for key in ("embeddings", "embedding_mean", "embedding_std") if key in items[0]}
    return {**batch, "labels": torch.tensor([it["labels"] for it in items])}


def collate_layers(items: list[dict]) -> dict:
    """Pads cached layers to (B, L, T, D) float32 with a (B, T) frame mask."""
    import torch

    longest = max(it["encoder_layers"].shape[1] for it in items)
    first = items[0]["encoder_layers"]
    layers = torch.zeros(len(items), first.shape[0], longest, first.shape[2])
    mask = torch.zeros(len(items), longest, dtype=torch.bool)
    for i, it in enumerate(items):
        frames = it["encoder_layers"].shape[1]
        layers[i, :, :frames] = torch.from_numpy(np.asarray(it["encoder_layers"], dtype=np.float32))
        mask[i, :frames] = True
    return {"encoder_layers": layers, "frame_mask": mask, "labels": torch.tensor([it["labels"] for it in items])}
