"""export.py: the ONNX graph of a committed checkpoint scores real speech as PyTorch does, and infer.py runs it."""
import csv
import json

import numpy as np
import pytest

from conftest import ROOT, SHARED, require

DEFAULT = (ROOT / "checkpoints" / "default.txt").read_text().strip()
SOURCES = {DEFAULT: ROOT / "checkpoints" / DEFAULT, "cnn1d-light": ROOT / "tests" / "checkpoints" / "cnn1d-light"}


@pytest.fixture(scope="module")
def speech(emodb_rows) -> dict:
    """Real recordings: three EmoDB WAVs and a RAVDESS FLAC, each alone and all joined into one long recording."""
    from data.corpora import read_corpus
    from data_process import load_audio

    require(SHARED / "corpora" / "ravdess", "the RAVDESS corpus")
    paths = [r.path for r in emodb_rows[:3]] + [read_corpus("ravdess")[0].path]
    clips = [load_audio(p) for p in paths]
    return {"paths": paths, "clips": clips + [np.concatenate(clips * 3)]}  # the last: 3 windows of 10 s


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """The default checkpoint and the light CNN, exported once for the module."""
    from export import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    return {name: export_onnx(SOURCES[name], folder / f"{name}.onnx") for name in SOURCES}


@pytest.mark.parametrize("name", [DEFAULT, "cnn1d-light"])
def test_onnxruntime_scores_real_speech_as_pytorch(name, exported, speech):
    from serving.recognizer import Recognizer
    from serving.onnx_recognizer import OnnxRecognizer

    torch_model, onnx_model = Recognizer(SOURCES[name]), OnnxRecognizer(exported[name])
    assert onnx_model.labels == torch_model.labels
    expected = np.stack([list(torch_model.predict(clip)[0].values()) for clip in speech["clips"]])
    got = onnx_model.probabilities(speech["clips"])  # the graph windows the long clip itself
    by_window = list(onnx_model.predict(speech["clips"][-1])[0].values())  # windows cut outside, as infer.py does
    long = speech["clips"][-1]  # the graph's own windows are whole (no voice-activity step, which infer.py adds)
    whole_windows = torch_model.probabilities([long[s:e] for s, e in torch_model.spans(len(long))]).mean(axis=0)
    graph_expected = np.concatenate([expected[:-1], whole_windows[None]])
    for ours, theirs in ((got, graph_expected), ([by_window], expected[-1:])):
        assert np.array_equal(np.argmax(ours, axis=1), np.argmax(theirs, axis=1))
        assert np.abs(np.asarray(ours) - theirs).max() < 1e-3, np.abs(np.asarray(ours) - theirs).max()
    tiny = speech["clips"][0][:150]  # shorter than an STFT frame: padded in the graph as in PyTorch
    assert np.abs(onnx_model.probabilities([tiny]) - torch_model.probabilities([tiny])).max() < 1e-3


def test_graph_interface_for_quantisation(exported, speech):
    """One fp32 graph: input waveform (batch, samples), outputs probabilities (batch, labels) first, then the pooled
    embedding (batch, features); labels in metadata."""
    import onnx
    import onnxruntime

    graph = onnx.load(str(exported["cnn1d-light"]))
    (inp,), (out, embedding) = graph.graph.input, graph.graph.output
    assert (inp.name, out.name, embedding.name) == ("waveform", "probabilities", "embedding")
    assert [d.dim_param for d in inp.type.tensor_type.shape.dim] == ["batch", "samples"]
    assert inp.type.tensor_type.elem_type == out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert embedding.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    meta = {p.key: p.value for p in graph.metadata_props}
    id2label = json.loads((ROOT / "tests" / "checkpoints" / "cnn1d-light" / "config.json").read_text())["id2label"]
    assert json.loads(meta["labels"]) == [id2label[str(i)] for i in range(len(id2label))]
    assert meta["sampling_rate"] == "16000" and float(meta["max_seconds"]) == 10.0
    session = onnxruntime.InferenceSession(str(exported["cnn1d-light"]))
    a, b = (speech["clips"][0][:20000], speech["clips"][1][:20000])
    together = session.run(None, {"waveform": np.stack([a, b])})[0]  # a batch of equal-length clips
    alone = np.concatenate([session.run(None, {"waveform": c[None]})[0] for c in (a, b)])
    assert np.abs(together - alone).max() < 1e-5


def test_infer_runtime_onnx_writes_the_same_labels(exported, speech, tmp_path):
    from serving.recognizer import Recognizer

    import infer

    out = tmp_path / "out.csv"
    infer.main(["--runtime", "onnx", "--checkpoint", str(exported["cnn1d-light"]), "--output", str(out), *speech["paths"]])
    rows = list(csv.DictReader(open(out)))
    recognizer = Recognizer(ROOT / "tests" / "checkpoints" / "cnn1d-light")
    expected = [max(p := recognizer.predict(c)[0], key=p.get) for c in speech["clips"][:4]]
    assert [r["path"] for r in rows] == speech["paths"] and [r["label"] for r in rows] == expected


def test_a_checkpoint_folder_is_exported_once_and_cached(exported, tmp_path, monkeypatch):
    import export
    from serving.onnx_recognizer import OnnxRecognizer

    calls = []
    monkeypatch.setattr(export, "export_onnx", lambda folder, path: calls.append(folder) or
                        path.parent.mkdir(parents=True) or path.write_bytes(exported["cnn1d-light"].read_bytes()))
    monkeypatch.setenv("SER_CACHE", str(tmp_path))
    first = OnnxRecognizer(ROOT / "tests" / "checkpoints" / "cnn1d-light")
    assert list((tmp_path / "onnx").glob("cnn1d-light-*.onnx")) == [first.path] and first.labels[0] == "angry"
    assert OnnxRecognizer(ROOT / "tests" / "checkpoints" / "cnn1d-light").path == first.path and len(calls) == 1


def test_backbones_without_an_onnx_form_are_refused_clearly(tmp_path):
    from export import export_onnx
    from models import EmotionClassifier, EmotionConfig

    config = EmotionConfig(backbone="keyseg_cnn_bilstm", image_model="resnet-tiny", lstm_hidden=8, projector_dim=8,
                           id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})
    EmotionClassifier(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="keyseg_cnn_bilstm.*K-means"):
        export_onnx(tmp_path, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    import models
    from export import NOT_EXPORTABLE

    assert set(models.BACKBONES) - set(NOT_EXPORTABLE) == {"cnn1d", "whisper"}  # each other one says why not


def test_transformers_format_keeps_the_weights_and_adds_the_code(tmp_path):
    from export import export_transformers

    source = ROOT / "tests" / "checkpoints" / "cnn1d-light"
    folder = export_transformers(source, tmp_path / "copy")
    assert (folder / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForAudioClassification"] == "classifier.EmotionClassifier"
    assert config["dtype"] == json.loads((source / "config.json").read_text())["dtype"]
    assert {"classifier.py", "configuration.py", "audio_pipeline.py"} <= {p.name for p in folder.glob("*.py")}


def test_int8_graph_of_the_default_model_against_float32_on_real_clips(exported, tmp_path):
    """quantize.py's default recipe: the encoder's linear layers int8 but layers 0-2's and every fc2, the front end and
    head float32; on real clips of three corpora it must answer close to float32 (the 99 % bound itself is measured by
    `python -m serving.quantize` on 600 clips in two sets and two modes and recorded in the checkpoint's int8.json)."""
    import onnx

    from serving import quantize
    from data_process import load_audio
    from serving.onnx_recognizer import OnnxRecognizer

    graph = onnx.load(str(exported[DEFAULT]))
    layers = json.loads((ROOT / "checkpoints" / DEFAULT / "config.json").read_text())["encoder_config"]["encoder_layers"]
    assert len(quantize.scoped_nodes(graph, quantize.RECIPES["dynamic"].scopes)) == 6 * layers  # q k v out fc1 fc2
    assert len(quantize.scoped_nodes(graph, quantize.RECIPES["dynamic_fc1"].scopes)) == layers
    kept = quantize.RECIPES[quantize.DEFAULT_RECIPE]
    assert len(quantize.scoped_nodes(graph, kept.scopes, kept.keep)) == 5 * (layers - 3)  # layers 0-2 and fc2 kept
    int8_path = quantize.quantize(exported[DEFAULT], tmp_path / "int8.onnx")
    assert int8_path.stat().st_size < 0.85 * exported[DEFAULT].stat().st_size  # 65 of 84 MB: 6 M weights int8
    fp32, int8 = OnnxRecognizer(exported[DEFAULT]), OnnxRecognizer(int8_path)
    assert int8.labels == fp32.labels and int8.window_seconds == fp32.window_seconds
    assert {p.key: p.value for p in onnx.load(str(int8_path)).metadata_props}["precision"] == "int8"
    rows = quantize.real_clips(ROOT / "checkpoints" / DEFAULT, 30)
    clips = [load_audio(r.path) for r in rows]
    a, b = fp32.probabilities(clips), int8.probabilities(clips)
    assert len({r.corpus for r in rows}) >= 3
    # close, not equal (quantize.py measures the drift bound on 600 clips: 0.001 mean |difference| for the default)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.9 and np.abs(a - b).mean() < 0.01
    assert np.abs(a - b).max() > 0  # it is another graph: int8 arithmetic, not a copy of float32
