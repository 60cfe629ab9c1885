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


def tiny_graph(path, weight: float = 1.0):
    """Write a one-MatMul ONNX graph (a stand-in for an int8 graph: only its weights' digest matters here)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((2, 2), weight, np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w])
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.fixture
def int8_graph(tmp_path, monkeypatch):
    """The graph quantize.cached_int8 hands out, whatever the recipe."""
    path = tiny_graph(tmp_path / "int8.onnx")
    monkeypatch.setattr(quantize, "cached_int8", lambda folder, recipe=None: path)
    return path


def write_verdict(folder, meets: bool, faster: bool = True, recipe: str = "dynamic_ffn", graph=None) -> None:
    (folder / quantize.VERDICT).write_text(json.dumps({"recipe": recipe, "meets_bound": meets, "faster": faster,
                                                       "use_int8": meets and faster, "agreement": 0.995,
                                                       "weights": quantize.weights_digest(folder),
                                                       "graph_weights": quantize.graph_digest(graph) if graph else None}))


def test_auto_runs_int8_only_where_a_measurement_on_these_weights_meets_the_bound(checkpoint, int8_graph):
    assert quantize.choose(checkpoint, "auto") == ("fp32", None)  # never measured
    write_verdict(checkpoint, meets=False, graph=int8_graph)
    assert quantize.choose(checkpoint, "auto") == ("fp32", None)
    write_verdict(checkpoint, meets=True, faster=False, graph=int8_graph)  # no gain: float32 stays
    assert quantize.choose(checkpoint, "auto") == ("fp32", None)
    write_verdict(checkpoint, meets=True, graph=int8_graph)
    assert quantize.choose(checkpoint, "auto") == ("int8", "dynamic_ffn")
    assert quantize.choose(checkpoint, "fp32") == ("fp32", None)
    (checkpoint / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes() + b" ")
    assert quantize.verdict(checkpoint) is None  # retrained weights: the old figures no longer count
    assert quantize.choose(checkpoint, "auto") == ("fp32", None)
    assert quantize.choose(checkpoint, "int8") == ("int8", quantize.DEFAULT_RECIPE)  # forced, unmeasured
    assert quantize.choose("owner/hub-model", "auto") == ("fp32", None)
    with pytest.raises(ValueError, match="precision"):
        quantize.choose(checkpoint, "fp16")


def test_the_drift_check_reads_its_measurement_and_refuses_a_graph_whose_weights_changed(checkpoint, int8_graph,
                                                                                          capsys):
    """The stored measurement names the digest of the int8 graph it was taken on: another graph (a new export, a
    recalibrated static recipe, another onnxruntime's rounding) is not served by auto until measured again."""
    write_verdict(checkpoint, meets=True, graph=int8_graph)
    found = quantize.verdict(checkpoint)
    assert found["graph_weights"] == quantize.graph_digest(int8_graph)
    assert quantize.drift_check(checkpoint, found) is None
    assert quantize.choose(checkpoint, "auto") == ("int8", "dynamic_ffn")
    tiny_graph(int8_graph, weight=1.001)  # same names and shapes, other weights
    assert "not those measured" in quantize.drift_check(checkpoint, found)
    assert quantize.choose(checkpoint, "auto") == ("fp32", None)
    assert "measure again" in capsys.readouterr().err
    write_verdict(checkpoint, meets=True, graph=None)  # a measurement without a graph digest counts for nothing
    assert quantize.choose(checkpoint, "auto") == ("fp32", None)


def test_the_shipped_default_measurement_covers_every_set_and_mode():
    """The default checkpoint's int8.json is quantize.measure's: both sets (its own head; leave-one-corpus-out heads)
    and both modes, and its verdict follows from those figures and the bound."""
    found = json.loads((ROOT / "checkpoints" / "whisper-base-std-linear" / quantize.VERDICT).read_text())
    figures = [found[group][mode] for group in ("training", "loco") for mode in ("alone", "adapted")]
    second = found.get("second_look", {})  # benchmark/int8_drift.py: the other half of the sampled clips
    figures += [second[group][mode] for group in ("training", "loco") for mode in ("alone", "adapted") if second]
    assert found["meets_bound"] == all(quantize.meets(f) for f in figures)
    assert found["use_int8"] == (found["meets_bound"] and found["faster"])
    assert found["recipe"] in quantize.RECIPES and len(found["graph_weights"]) == 16
    assert found["weights"] == quantize.weights_digest(ROOT / "checkpoints" / "whisper-base-std-linear")
    assert all(f["clips"] >= 300 for f in figures)


def test_load_scorer_follows_the_choice(checkpoint, tmp_path, monkeypatch):
    """int8 runs the int8 graph in onnxruntime (a stand-in here: test_export.py runs the real one); embeddings
    (where the adapted mode was not measured to hold) and --precision fp32 keep float32 PyTorch."""
    from serving import recognizer
    from serving.recognizer import load_scorer

    class StandIn:  # what would run: (path, runtime, the checkpoint an ONNX graph's head comes from)
        def __init__(self, path, runtime, source=None):
            self.path, self.runtime, self.source = path, runtime, source

    graph = tiny_graph(tmp_path / "dynamic_ffn.onnx")
    monkeypatch.setattr(quantize, "cached_int8", lambda folder, recipe: graph)
    monkeypatch.setattr(recognizer, "OnnxScorer", lambda path, batch_size, source: StandIn(path, "onnx", source))
    monkeypatch.setitem(recognizer.RUNTIMES, "torch", lambda folder, device, batch_size: StandIn(folder, "torch"))
    plain = load_scorer(str(checkpoint), device="cpu")
    assert plain.runtime == "torch" and plain.precision == "fp32"
    write_verdict(checkpoint, meets=True, graph=graph)
    chosen = load_scorer(str(checkpoint), device="cpu")
    assert chosen.runtime == "onnx" and chosen.precision == "int8" and chosen.path.name == "dynamic_ffn.onnx"
    assert chosen.source == str(checkpoint)  # the cached graph's head: this checkpoint, wherever it was exported from
    # embeddings (adapting to a speaker): int8 only where the measurement covers the adapted mode
    assert load_scorer(str(checkpoint), device="cpu", embeddings=True).precision == "fp32"
    found = quantize.verdict(checkpoint)
    adapted = {"alone": {"agreement": 0.995, "ua_lost": 0.0}, "adapted": {"agreement": 0.995, "ua_lost": 0.001}}
    (checkpoint / quantize.VERDICT).write_text(json.dumps({**found, "training": adapted, "loco": adapted}))
    assert quantize.holds_adapted(checkpoint)
    assert load_scorer(str(checkpoint), device="cpu", embeddings=True).precision == "int8"
    (checkpoint / quantize.VERDICT).write_text(json.dumps({**found, "training": adapted,
                                                           "loco": {**adapted, "adapted": {"agreement": 0.98,
                                                                                           "ua_lost": 0.0}}}))
    assert not quantize.holds_adapted(checkpoint)
    assert load_scorer(str(checkpoint), device="cpu", embeddings=True).precision == "fp32"
    assert load_scorer(str(checkpoint), precision="fp32", device="cpu").precision == "fp32"


def test_unweighted_accuracy_is_the_mean_recall_over_known_classes():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    truth = ["a", "b", "b", "c"]  # c is not a label of the model: left out
    assert quantize.unweighted_accuracy(probs, truth, ["a", "b"]) == pytest.approx((1 + 0.5) / 2)
