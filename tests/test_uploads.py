"""Uploads are deleted once read, refused or not; their audio stays in memory for re-scoring (ui/uploads.py)."""
from __future__ import annotations

import shutil

import gradio as gr
import numpy as np
import pytest

from tests.ui_helpers import DEFAULT, TINY, checkpoints, recording
from ui import callbacks, uploads
from ui.model_store import ModelStore


@pytest.fixture(scope="module")
def store(request) -> ModelStore:
    return ModelStore(checkpoints(request))


@pytest.fixture
def upload_dir(tmp_path, monkeypatch):
    """Gradio's upload folder, moved into the test's own folder; the kept audio starts empty."""
    folder = tmp_path / "gradio"
    folder.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    monkeypatch.setattr(callbacks, "RECENT", uploads.RecentUploads())
    return folder


def as_upload(folder, source, name: str | None = None):
    """Put `source` where Gradio saves an upload: a folder of its own inside the upload folder."""
    own = folder / f"{abs(hash((str(source), name))):x}"
    own.mkdir()
    return shutil.copy(source, own / (name or source.name))


def test_an_analysed_upload_is_deleted_and_scored_again_from_memory(store, upload_dir):
    path = as_upload(upload_dir, recording())
    first = callbacks.analyse(path, DEFAULT, store).probabilities
    assert not list(upload_dir.iterdir())  # the file and its folder are gone
    again = callbacks.analyse(path, DEFAULT, store).probabilities  # Analyse pressed again
    assert again == first
    other = next(name for name in TINY if name != DEFAULT)
    out = callbacks.select_model(other, DEFAULT, path, None, store)  # a model switch scores it too
    assert sorted(dict(out[6])) == sorted(store.get(other).labels)


def test_a_refused_upload_is_deleted_and_refused_again_with_the_same_message(store, upload_dir, tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not a recording\n" * 50)
    path = as_upload(upload_dir, text)
    with pytest.raises(gr.Error) as first:
        callbacks.predict(path, DEFAULT, store)
    assert not list(upload_dir.iterdir())
    with pytest.raises(gr.Error) as again:
        callbacks.predict(path, DEFAULT, store)
    assert again.value.message == first.value.message and "notes.wav" in first.value.message
    long = as_upload(upload_dir, recording(), "long.wav")
    with pytest.raises(gr.Error, match="limit"):
        callbacks.predict(long, DEFAULT, store, max_seconds=1.0)
    assert not list(upload_dir.iterdir())


def test_files_outside_the_upload_folder_are_never_deleted(store, upload_dir, tmp_path):
    mine = shutil.copy(recording(), tmp_path / "mine.wav")
    callbacks.predict(str(mine), DEFAULT, store)
    callbacks.predict(str(recording()), DEFAULT, store)
    assert (tmp_path / "mine.wav").is_file() and recording().is_file()
    uploads.discard(upload_dir / ".." / "mine.wav")  # a path that only looks inside
    assert (tmp_path / "mine.wav").is_file()


def test_an_upload_forgotten_by_the_memory_asks_to_be_uploaded_again(store, upload_dir, monkeypatch):
    monkeypatch.setattr(callbacks, "RECENT", uploads.RecentUploads(keep_mb=0.2))  # 3 s of audio: one clip
    first = as_upload(upload_dir, recording("03a01Wa.wav"))
    second = as_upload(upload_dir, recording("03a04Ta.wav"))
    callbacks.predict(first, DEFAULT, store)
    callbacks.predict(second, DEFAULT, store)  # the first falls out
    assert callbacks.RECENT.nbytes() <= 200_000 and len(callbacks.RECENT) == 1
    with pytest.raises(gr.Error, match="no longer on the server.*upload or record it again"):
        callbacks.predict(first, DEFAULT, store)
    callbacks.predict(second, DEFAULT, store)


def test_recent_uploads_keep_within_their_budget():
    recent = uploads.RecentUploads(keep_mb=1.0)
    for i in range(10):
        recent.put(f"/x/{i}", np.full(100_000, i, dtype=np.float32))  # 0.4 MB each
    assert len(recent) == 2 and recent.nbytes() <= 1_000_000
    assert recent.get("/x/0") is None and recent.get("/x/9")[0] == 9
    recent.put("/x/huge", np.zeros(1_000_000, dtype=np.float32))  # over the whole budget: not kept
    assert recent.get("/x/huge") is None and recent.get("/x/9") is not None
    recent.put("/x/refused", "why it was refused")
    assert recent.get("/x/refused") == "why it was refused"
