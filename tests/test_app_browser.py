"""End to end in real headless Chromium (Debian's, driven by Playwright) against the app on localhost.

Set SER_UI_SCREENSHOTS=DIR to keep a screenshot of each step.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.ui_helpers import (CHROMIUM, CHROMIUM_FLAGS, DEFAULT, TINY, app_log, app_url, checkpoints, recording,
                              require)

OTHER = next(name for name in TINY if name != DEFAULT)
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def url(request) -> str:
    require(CHROMIUM.exists(), f"{CHROMIUM} not found (apt-get install chromium)")
    return app_url(request)


@pytest.fixture(scope="module")
def browser(url, tmp_path_factory):
    """Chromium whose fake microphone plays a real recording (as 48 kHz 16-bit WAV, what Chromium reads)."""
    import soundfile as sf
    import soxr

    from data_process import load_audio

    mic = tmp_path_factory.mktemp("mic") / "speech48k.wav"
    sf.write(mic, soxr.resample(load_audio(recording("03a01Wa.wav")), 16_000, 48_000), 48_000, subtype="PCM_16")
    flags = CHROMIUM_FLAGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                              f"--use-file-for-fake-audio-capture={mic}"]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=flags)
        yield chromium
        chromium.close()


def log_of_this_test() -> str:
    """Return what the app logged since the current test started (other modules share the app)."""
    return app_log()[_log_start[0]:]


_log_start = [0]


@pytest.fixture
def page(browser, url, request):
    _log_start[0] = len(app_log())
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, permissions=["microphone"])
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#model-choice input", timeout=WAIT_MS)
    yield page
    shots = os.environ.get("SER_UI_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(shots) / f"{request.node.name}.png"), full_page=True)
    context.close()


def probabilities(page) -> dict[str, float]:
    """Return {emotion: probability} as the page's gr.Label shows them, in the page's order."""
    meters = page.locator("#probabilities meter")
    return {meters.nth(i).get_attribute("aria-label"): float(meters.nth(i).get_attribute("value"))
            for i in range(meters.count())}


def wait_for_result(page, model: str, previous: str = "") -> str:
    """Wait until the result note names `model` (and differs from `previous`); return the note."""
    page.wait_for_function(
        """([model, previous]) => { const t = document.querySelector('#result-note').innerText;
                                    return t.includes(model) && t !== previous; }""",
        arg=[model, previous], timeout=WAIT_MS)
    return page.inner_text("#result-note")


def upload(page, path: Path) -> None:
    page.click("#audio-input button[aria-label='Upload file']")
    page.set_input_files("#audio-input input[type=file]", str(path))


def labels_of(name: str, request) -> list[str]:
    import json

    config = json.loads((checkpoints(request) / name / "config.json").read_text())
    return [config["id2label"][str(i)] for i in range(len(config["id2label"]))]


def test_upload_shows_every_probability(page, request, tmp_path):
    from serving.recognizer import Recognizer
    from data_process import load_audio
    from ui.uploads import upload_folder

    assert page.input_value("#model-choice input").startswith(f"{DEFAULT} — UA ")
    mine = tmp_path / f"speech-{uuid.uuid4().hex}.wav"
    shutil.copy(recording("03a01Wa.wav"), mine)
    upload(page, mine)
    note = wait_for_result(page, DEFAULT)
    assert not list(upload_folder().glob(f"*/{mine.name}"))  # the server's copy is deleted once analysed
    shown = probabilities(page)
    assert sorted(shown) == sorted(labels_of(DEFAULT, request))
    assert list(shown.values()) == sorted(shown.values(), reverse=True)  # highest first
    expected, _ = Recognizer(checkpoints(request) / DEFAULT).predict(load_audio(recording("03a01Wa.wav")))
    assert max(abs(shown[k] - expected[k]) for k in expected) < 1e-4  # the model's own numbers
    assert next(iter(shown)) in note
    assert page.locator("#bars").is_visible() and not page.locator("#timeline").is_visible()


def test_microphone_recording_gets_a_prediction(page, request):
    page.click("#audio-input button.record-button")
    page.wait_for_timeout(2500)  # Chromium's fake device plays the recording meanwhile
    page.click("#audio-input button.stop-button")
    note = wait_for_result(page, DEFAULT)
    seconds = float(note.split(" s of audio")[0].split("·")[-1])
    assert 1.0 < seconds < 6.0, note
    shown = probabilities(page)
    assert sorted(shown) == sorted(labels_of(DEFAULT, request))
    assert abs(sum(shown.values()) - 1) < 1e-3


def test_switching_model_answers_with_the_other_model(page, request):
    upload(page, recording("03a01Wa.wav"))
    first = wait_for_result(page, DEFAULT)
    page.click("#model-choice input")
    page.click(f"#model-choice li[role=option][aria-label^='{OTHER} — UA']")
    second = wait_for_result(page, OTHER, first)  # the same audio, scored again by the other model
    assert sorted(probabilities(page)) == sorted(labels_of(OTHER, request))
    page.get_by_text("About this model", exact=True).click()  # one click away: the within-corpus figure is there
    assert OTHER in page.inner_text("#model-info")
    assert page.locator("#confusion img").count() == 1
    page.click("#model-choice input")
    page.click(f"#model-choice li[role=option][aria-label^='{DEFAULT} — UA']")
    wait_for_result(page, DEFAULT, second)  # back again: the first model was kept loaded
    assert sorted(probabilities(page)) == sorted(labels_of(DEFAULT, request))


def test_a_file_that_is_not_audio_gets_a_message(page, tmp_path):
    bogus = tmp_path / "notes.wav"
    bogus.write_text("this is not a recording\n" * 100)
    upload(page, bogus)
    toast = page.get_by_text("could not be read as audio")
    toast.first.wait_for(timeout=WAIT_MS)
    assert "notes.wav" in page.inner_text("body") and "Traceback" not in page.inner_text("body")
    upload(page, recording("03a01Wa.wav"))  # the server keeps serving
    wait_for_result(page, DEFAULT)
    assert "Traceback" not in log_of_this_test()


def test_live_microphone_updates_every_second_while_speaking(page, request):
    import re
    import time

    page.click("#live-input button.record-button")  # Chromium's fake device plays the recording, looped
    notes, deadline = [], time.time() + WAIT_MS / 1000
    while time.time() < deadline:
        note = page.inner_text("#result-note")
        heard = re.search(r"Live · .* model " + DEFAULT + r" · (\d+) s heard", note)
        if heard and (not notes or note != notes[-1]):
            notes.append(note)
        if heard and int(heard.group(1)) >= 5:
            break
        time.sleep(0.2)
    assert len(notes) >= 3, notes  # several updates while speaking, not one at the end
    shown = probabilities(page)
    assert sorted(shown) == sorted(labels_of(DEFAULT, request)) and abs(sum(shown.values()) - 1) < 1e-3
    assert page.locator("#timeline").is_visible() and not page.locator("#windows").is_visible()
    page.click("#live-input button.stop-button")
    assert "Traceback" not in log_of_this_test()
