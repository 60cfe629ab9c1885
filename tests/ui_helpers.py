"""Shared by the app's tests: tiny real checkpoints, real recordings, and the app served on localhost.

Each is made once per test session (a module-level memo: pytest would run a "session" fixture
imported into several test modules once per module) and removed when the session ends.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
# Two small checkpoints with different label sets, so a test can tell which model answered.
# SER_UI_TEST_CHECKPOINTS=DIR keeps them between runs (trained there when missing).
TINY = {
    "cnn1d-seven": ["--backbone", "cnn1d", "--cnn_first_stride", "4", "--max_files", "28"],
    "cnn1d-three": ["--backbone", "cnn1d", "--cnn_first_stride", "4", "--max_files", "30",
                    "--labels", "angry", "neutral", "sad"],
}
DEFAULT = "cnn1d-three"  # named in default.txt, so the pointer is exercised too
_memo: dict = {}


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(ok: bool, reason: str) -> None:
    """Skip the calling test when `ok` is false, but fail under CI=true, where everything must be there."""
    if not ok:
        if under_ci():
            pytest.fail(reason)
        pytest.skip(reason)


def corpora() -> Path:
    """Return the shared corpora folder ($SER_CORPORA, else ../shared/corpora), skipping if absent."""
    from data.corpora import corpora_root

    root = corpora_root()
    require((root / "emodb").is_dir(), f"shared corpora not found at {root} (set SER_CORPORA)")
    return root


def recording(name: str = "03a01Wa.wav") -> Path:
    """Return a real EmoDB recording (16 kHz mono WAV)."""
    return corpora() / "emodb" / "wav" / name


def long_speech(path: Path, seconds: float = 12.0) -> Path:
    """Write about `seconds` of real speech (EmoDB utterances one after another) to `path` and return it."""
    import soundfile as sf

    from data_process import load_audio

    clips, total = [], 0
    for file in sorted((corpora() / "emodb" / "wav").glob("03*.wav")):
        clips.append(load_audio(file))
        total += len(clips[-1])
        if total >= seconds * 16_000:
            break
    sf.write(path, np.concatenate(clips), 16_000)
    return path


def _train(folder: Path, name: str, cache: Path) -> None:
    import train

    train.main(["--corpus", "emodb", "--protocol", "random", "--num_train_epochs", "1", "--output_dir",
                str(folder / name), "--disable_tqdm", "true", "--cache_dir", str(cache), *TINY[name]])


def checkpoints(request) -> Path:
    """Return a folder holding the TINY checkpoints (trained on real EmoDB) and a default.txt naming DEFAULT."""
    if "checkpoints" not in _memo:
        corpora()
        keep = os.environ.get("SER_UI_TEST_CHECKPOINTS")
        work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="ser_ui_"))
        if not keep:
            request.config.add_cleanup(lambda: shutil.rmtree(work, ignore_errors=True))
        folder = work / "checkpoints"
        for name in TINY:
            if not (folder / name / "metrics.json").is_file():
                _train(folder, name, work / "cache")
        (folder / "default.txt").write_text(DEFAULT + "\n")
        _memo["checkpoints"] = folder
    return _memo["checkpoints"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(folder: Path, *extra: str, timeout: float = 120.0) -> tuple[subprocess.Popen, str, Path]:
    """Start `python app.py` on a free localhost port; return (process, URL, log file) once it answers."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="ser_app_", suffix=".log")[1])
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as handle:
        proc = subprocess.Popen([sys.executable, "app.py", "--checkpoints", str(folder), "--port", str(port), *extra],
                                cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return proc, url, log
        except OSError:
            time.sleep(0.5)
    stop_app(proc)
    raise RuntimeError(f"app.py did not answer on {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_app(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def app_url(request) -> str:
    """Return the URL of one app serving checkpoints(), started once and stopped at the end of the session."""
    if "app" not in _memo:
        proc, url, log = start_app(checkpoints(request))
        request.config.add_cleanup(lambda: stop_app(proc))
        _memo["app"] = (url, log, proc.pid)
    return _memo["app"][0]


def app_pid() -> int:
    """Return the process id of the app started by app_url() (for its memory)."""
    return _memo["app"][2]


def app_log() -> str:
    return _memo["app"][1].read_text() if "app" in _memo else ""
