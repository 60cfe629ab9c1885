"""quantize.py's choice of precision and recognizer.load_scorer's use of it (the int8 graph itself: test_export.py)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from serving import quantize
from conftest import ROOT

CNN = ROOT / "tests" / "checkpoints" / "cnn1d-light"


@pytest.fixture
def checkpoint(tmp_path):
    return shutil.copytree(CNN, tmp_path / "model")


def write_verdict(folder, meets: bool, faster: bool = True, recipe: str = "dynamic_ffn") -> None:
    (folder / quantize.VERDICT).write_text(json.dumps({"recipe": recipe, "meets_bound": meets, "faster": faster,
                                                       "use_int8": meets and faster, "agreement": 0.995,
                                                       "weights": quantize.weights_digest(folder)}))


def test_auto_runs_int8_only_where_a_measurement_on_these_weights_meets_the_bound(checkpoint):
    assert quantize.choose(checkpoint, "auto") == ("fp32", None)  # never measured
    write_verdict(checkpoint, meets=False)
    assert quantize.choose(checkpoint, "auto") == ("fp32", None)
    write_verdict(checkpoint, meets=True, faster=False)  # no gain: float32 stays
    assert quantize.choose(checkpoint, "auto") == ("fp32", None)
    write_verdict(checkpoint, meets=True)
    assert quantize.choose(checkpoint, "auto") == ("int8", "dynamic_ffn")
    assert quantize.choose(checkpoint, "fp32") == ("fp32", None)
    (checkpoint / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes() + b" ")
    assert quantize.verdict(checkpoint) is None  # retrained weights: the old figures no longer count
    assert quantize.choose(checkpoint, "auto") == ("fp32", None)
    assert quantize.choose(checkpoint, "int8") == ("int8", quantize.DEFAULT_RECIPE)  # forced, unmeasured
    assert quantize.choose("owner/hub-model", "auto") == ("fp32", None)
    with pytest.raises(ValueError, match="precision"):
        quantize.choose(checkpoint, "fp16")


def test_load_scorer_follows_the_choice(checkpoint, tmp_path, monkeypatch):
    """int8 runs the int8 graph in onnxruntime (a stand-in here: test_export.py runs the real one); embeddings
    and --precision fp32 keep float32 PyTorch."""
    from serving import recognizer
    from serving.recognizer import load_scorer

    class StandIn:  # what would run: (path, runtime)
        def __init__(self, path, runtime):
            self.path, self.runtime = path, runtime

    monkeypatch.setattr(quantize, "cached_int8", lambda folder, recipe: tmp_path / f"{recipe}.onnx")
    monkeypatch.setattr(recognizer, "OnnxScorer", lambda path, batch_size: StandIn(path, "onnx"))
    monkeypatch.setitem(recognizer.RUNTIMES, "torch", lambda folder, device, batch_size: StandIn(folder, "torch"))
    plain = load_scorer(str(checkpoint), device="cpu")
    assert plain.runtime == "torch" and plain.precision == "fp32"
    write_verdict(checkpoint, meets=True)
    chosen = load_scorer(str(checkpoint), device="cpu")
    assert chosen.runtime == "onnx" and chosen.precision == "int8" and chosen.path.name == "dynamic_ffn.onnx"
    assert load_scorer(str(checkpoint), device="cpu", embeddings=True).precision == "fp32"
    assert load_scorer(str(checkpoint), precision="fp32", device="cpu").precision == "fp32"


def test_unweighted_accuracy_is_the_mean_recall_over_known_classes():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    truth = ["a", "b", "b", "c"]  # c is not a label of the model: left out
    assert quantize.unweighted_accuracy(probs, truth, ["a", "b"]) == pytest.approx((1 + 0.5) / 2)
