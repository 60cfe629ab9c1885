"""Shared test fixtures: the project on sys.path, the real corpora and encoder from ../shared."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("SER_SHARED", ROOT.parent / "shared"))


def require(path: Path, what: str) -> Path:
    """Return `path`; skip the test when it is absent, but fail under CI=true, where it must exist."""
    if not path.exists():
        reason = f"{what} not found at {path} (set SER_SHARED / SER_CORPORA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def whisper_path() -> str:
    return str(require(SHARED / "models" / "whisper-base-encoder", "the Whisper-base encoder"))


@pytest.fixture(scope="session")
def emodb_rows():
    from data.corpora import corpora_root, read_corpus

    require(corpora_root() / "emodb", "the EmoDB corpus")
    return read_corpus("emodb")


@pytest.fixture
def tone():
    """Return a function making a 16 kHz-style test signal: `tone(seconds, sr)`."""
    def make(seconds: float = 1.0, sr: int = 16_000, freq: float = 220.0) -> np.ndarray:
        t = np.arange(int(seconds * sr)) / sr
        return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return make
