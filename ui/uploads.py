"""Uploads leave the disk once read: the file is deleted, its decoded audio kept a while in memory.

Gradio saves every upload (and every microphone recording) in its upload folder and never deletes
it. The app reads an upload once, deletes it, and keeps the 16 kHz audio (float32: 3.8 MB a
minute), or the reason it was refused, in a small least-recently-used memory, so that pressing
Analyse again or switching models scores the same samples without the file. What falls out of
that memory has to be uploaded again.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from audio import checks as audio_checks

KEEP_MB = 96.0  # decoded uploads kept for re-scoring: about 25 min of audio
GONE = ("This upload is no longer on the server (uploads are deleted once analysed): "
        "upload or record it again.")


def upload_folder() -> Path:
    """Return the folder where Gradio saves uploads ($GRADIO_TEMP_DIR, else the system's temp/gradio)."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def is_upload(path: str | Path) -> bool:
    """Return whether `path` lies inside Gradio's upload folder (nothing else is ever deleted)."""
    try:
        return upload_folder() in Path(path).resolve().parents
    except (OSError, ValueError):
        return False


def discard(path: str | Path) -> None:
    """Delete the upload `path` and its folder once empty; a path outside the upload folder is left alone."""
    if not is_upload(path):
        return
    path = Path(path).resolve()
    path.unlink(missing_ok=True)
    if path.parent != upload_folder():
        try:
            path.parent.rmdir()  # Gradio gives each upload a folder of its own
        except OSError:          # not empty (the same content uploaded under another name) or gone
            pass


class RecentUploads:
    """Decoded uploads (or why each was refused) by upload path, least recently used dropped first."""

    def __init__(self, keep_mb: float = KEEP_MB):
        self.budget = int(keep_mb * 1e6)
        self._items: OrderedDict[str, np.ndarray | str] = OrderedDict()
        self._lock = threading.Lock()
        self._reading: dict[str, threading.Lock] = {}

    def reading(self, path: str | Path) -> threading.Lock:
        """Return the lock to hold while `path` is read, so that a second event for the same upload
        (Analyse pressed while the upload event still decodes) waits and gets the kept audio."""
        with self._lock:
            if len(self._reading) > 1000:  # locks of finished reads; none is held long
                self._reading = {key: lock for key, lock in self._reading.items() if lock.locked()}
            return self._reading.setdefault(str(path), threading.Lock())

    def read(self, value, max_seconds: float | None = None) -> np.ndarray:
        """Return what gr.Audio hands over (a file path or a (rate, samples) pair) as 16 kHz mono float32, or raise
        audio_checks.Rejected saying why not. An upload is read once, deleted, and its audio (or why it was refused)
        kept here, so that it can be scored again without the file; anything else is decoded as it is."""
        if not (isinstance(value, (str, Path)) and is_upload(value)):
            return audio_checks.decode(value if isinstance(value, (str, Path)) else tuple(value), max_seconds)
        path = Path(value)
        with self.reading(path):
            kept = self.get(path)
            if kept is None and not path.exists():
                raise audio_checks.Rejected("gone", GONE)
            if kept is None:
                try:
                    kept = audio_checks.decode(path, max_seconds)
                except audio_checks.Rejected as err:
                    kept = err.message
                finally:
                    discard(path)
                self.put(path, kept)
        if isinstance(kept, str):
            raise audio_checks.Rejected("refused", kept)
        return kept

    def get(self, path: str | Path) -> np.ndarray | str | None:
        """Return the 16 kHz float32 audio or the refusal kept for `path`, or None."""
        with self._lock:
            item = self._items.get(str(path))
            if item is None:
                return None
            self._items.move_to_end(str(path))
        return item

    def put(self, path: str | Path, item: np.ndarray | str) -> None:
        """Keep 16 kHz float32 audio or a refusal message for `path`."""
        with self._lock:
            self._items.pop(str(path), None)
            size = item.nbytes if isinstance(item, np.ndarray) else len(item)
            if size > self.budget:  # longer than the whole memory (--max_seconds raised): not kept
                return
            while self._items and self.nbytes() + size > self.budget:
                self._items.popitem(last=False)
            self._items[str(path)] = item

    def nbytes(self) -> int:
        return sum(item.nbytes if isinstance(item, np.ndarray) else len(item) for item in self._items.values())

    def __len__(self) -> int:
        return len(self._items)
