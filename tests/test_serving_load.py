"""Twenty requests at once through the app's /predict function get the answers they get alone (the default model).

The requests share the app's model workers (ui/scheduler.py) as the page's do: in onnxruntime (what app.py serves
by default) two calls run side by side, one thread each; in PyTorch waiting clips of different lengths are
batched into one call, their padding masked. Real EmoDB clips of several lengths, each asked alone first.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.ui_helpers import recording

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = (ROOT / "checkpoints" / "default.txt").read_text().strip()
CLIENTS = 20
CLIPS = ["03a01Wa.wav", "03a04Ta.wav", "08a01Ab.wav", "16b10Lb.wav", "03b02Tb.wav",
         "09b03Fd.wav", "11a02Ld.wav", "13a05Ea.wav", "14b01Na.wav", "15a07Nc.wav"]  # 1.5-5 s, several speakers
SAME = 1e-5  # largest difference in a probability between an answer under load and the clip's answer alone


def _store(runtime: str):
    from serving.recognizer import load_scorer
    from ui.model_store import ModelStore

    return ModelStore(ROOT / "checkpoints", loader=lambda folder: load_scorer(
        folder, runtime=runtime, precision="fp32", device="cpu", embeddings=True))


def _ask(predict, path: Path) -> dict[str, float]:
    label = predict(str(path), DEFAULT)[1]
    return dict(label)


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_twenty_requests_at_once_get_their_answers_alone(runtime, monkeypatch):
    from serving.onnx_recognizer import usable_cores
    from ui import callbacks

    monkeypatch.setenv("SER_ONNX_THREADS", "1")  # as app.py serves: one thread a call, a call per core
    paths = [recording(name) for name in CLIPS]
    store = _store(runtime)
    scorer = store.get(DEFAULT)
    assert getattr(scorer, "runtime_name", "torch") == runtime
    predict = callbacks.predict_endpoint(store)
    alone = {path: _ask(predict, path) for path in paths}  # each request alone, one after another
    assert len({max(a, key=a.get) for a in alone.values()}) >= 2  # the clips get different answers
    calls = callbacks.SCHEDULER.calls
    jobs = [paths[i % len(paths)] for i in range(CLIENTS)]
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(lambda path: _ask(predict, path), jobs, timeout=120))
    for path, answer in zip(jobs, answers):
        assert sorted(answer) == sorted(alone[path])
        assert max(abs(answer[k] - alone[path][k]) for k in answer) < SAME, path.name
    made = callbacks.SCHEDULER.calls - calls
    if runtime == "torch":  # waiting requests were batched: fewer calls than requests
        assert made < CLIENTS
    else:  # one request a call, two side by side on 2 cores
        assert made == CLIENTS and scorer.parallel_calls == usable_cores()
