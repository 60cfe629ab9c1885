"""In real headless Chromium, the app serving the committed default: as the page learns the user's voice, the
history of the session's recordings re-judges the earlier ones with the others (real EmoDB recordings)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from tests.ui_helpers import CHROMIUM, CHROMIUM_FLAGS, ROOT, recording, require, start_app, stop_app

CLIPS = ["03a01Wa.wav", "03a01Nc.wav", "03a02Ta.wav"]  # speaker 03: angry, neutral, sad
WAIT_MS = 90_000


@pytest.fixture(scope="module")
def page():
    require(CHROMIUM.exists(), f"{CHROMIUM} not found (apt-get install chromium)")
    proc, url, _ = start_app(ROOT / "checkpoints", "--runtime", "torch", timeout=180)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(url)
            page.wait_for_selector("#model-choice input", timeout=WAIT_MS)
            yield page
            browser.close()
    finally:
        stop_app(proc)


def analyse(page, path, count: int) -> str:
    """Upload `path`, wait until the history holds `count` recordings, and return the result note."""
    page.click("#audio-input button[aria-label='Upload file']")
    page.set_input_files("#audio-input input[type=file]", str(path))
    page.wait_for_function("n => { const g = document.querySelector('#history [role=grid]');"
                           " return g && g.getAttribute('aria-rowcount') === String(n + 1); }", arg=count,
                           timeout=WAIT_MS)  # the header row and one row per recording
    return page.inner_text("#result-note")


def history_rows(page) -> list[list[str]]:
    """Return the history table's rows as cell texts, read as the page shows them (its rendered text: the virtual
    table's DOM reuses cells), six cells a row after the header."""
    body = page.inner_text("#history").split("judged now", 1)[1]
    cells = [c.strip() for c in body.split("\n") if c.strip()]
    return [cells[i:i + 6] for i in range(0, len(cells), 6)]


def test_the_history_rejudges_earlier_recordings(page, tmp_path):
    from serving.recognizer import Recognizer
    from adaptation.normalization import shrunk_statistics
    from ui.voice import SESSION_PRIOR

    notes = []
    for i, clip in enumerate(CLIPS):
        if i:  # the audio component shows the previous file: clear it first
            page.click("#audio-input button[aria-label='Clear']")
        mine = tmp_path / f"{i}-{clip}"
        shutil.copy(recording(clip), mine)
        notes.append(analyse(page, mine, i + 1))
    assert "judged alone" in notes[0] and "adapted to your voice" in notes[1] and "adapted to your voice" in notes[2]
    names = [f"{i}-{c}" for i, c in enumerate(CLIPS)]
    page.wait_for_function("names => names.every(n => document.querySelector('#history').innerText.includes(n))",
                           arg=names, timeout=WAIT_MS)
    rows = history_rows(page)
    assert [r[1] for r in rows] == [f"{i}-{c}" for i, c in enumerate(CLIPS)]
    assert [r[3] for r in rows] == ["alone", "adapted", "adapted"]  # how each was judged when analysed
    assert all(r[5] == "adapted (2 others)" for r in rows)  # and now: with the other two, never itself
    # the first recording's answer now, computed outside the app
    default = (ROOT / "checkpoints" / "default.txt").read_text().strip()
    recognizer = Recognizer(ROOT / "checkpoints" / default, device="cpu")
    vectors = [recognizer.embed(str(recording(c))) for c in CLIPS]
    now = recognizer.classify(vectors[0][None], *shrunk_statistics(np.stack(vectors[1:]), *recognizer.model_statistics(),
                                                                   SESSION_PRIOR))[0]
    top = int(np.argmax(now))
    assert rows[0][4] == f"{recognizer.labels[top]} {now[top]:.0%}"
