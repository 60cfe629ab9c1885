"""The default model in onnxruntime adapts like PyTorch: the export's embedding output, the head in numpy, on ten
real EmoDB recordings of one speaker, alone and standardised with that speaker's statistics; the app's calibration
to the user's voice (ui/voice.py) and infer.py --normalize with --runtime onnx."""
import csv
import json

import numpy as np
import pytest

from conftest import ROOT

DEFAULT = ROOT / "checkpoints" / (ROOT / "checkpoints" / "default.txt").read_text().strip()
CLOSE = 1e-4  # largest |probability difference| allowed between onnxruntime and PyTorch (float32 both)


@pytest.fixture(scope="module")
def speech(emodb_rows) -> dict:
    """Ten recordings of EmoDB speaker 03 (several emotions), decoded."""
    from data_process import load_audio

    rows = [r for r in emodb_rows if r.speaker == "emodb:03"][:10]
    assert len({r.label for r in rows}) >= 3
    return {"paths": [r.path for r in rows], "clips": [load_audio(r.path) for r in rows]}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A $SER_CACHE holding the default checkpoint's export (made once here), as onnx_recognizer.cached_export names it."""
    from export import export_onnx
    from serving.onnx_recognizer import GRAPH_VERSION, weights_digest

    folder = tmp_path_factory.mktemp("ser_cache")
    path = folder / "onnx" / f"{DEFAULT.resolve().name}-{weights_digest(DEFAULT)}-v{GRAPH_VERSION}.onnx"
    export_onnx(DEFAULT, path)
    return folder


@pytest.fixture(scope="module")
def runtimes(cache) -> dict:
    from serving.recognizer import OnnxScorer, Recognizer

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SER_CACHE", str(cache))
        return {"torch": Recognizer(DEFAULT), "onnx": OnnxScorer(DEFAULT)}


@pytest.fixture(scope="module")
def outputs(runtimes, speech) -> dict:
    return {name: scorer.probabilities_and_embeddings(speech["clips"]) for name, scorer in runtimes.items()}


def test_the_graph_gives_the_embedding_pytorch_gives(runtimes, outputs):
    (torch_probs, torch_vectors), (onnx_probs, onnx_vectors) = outputs["torch"], outputs["onnx"]
    onnx = runtimes["onnx"]
    assert onnx.normalizes and onnx.embedding_dim == runtimes["torch"].embedding_dim == onnx_vectors.shape[1]
    assert np.abs(onnx_vectors - torch_vectors).max() < 1e-4 * np.abs(torch_vectors).max()
    assert np.abs(onnx_probs - torch_probs).max() < CLOSE
    for ours, theirs in zip(onnx.model_statistics(), runtimes["torch"].model_statistics()):
        assert np.array_equal(ours, theirs)  # the checkpoint's float16 buffers, read as float32 by both


def test_both_modes_agree_with_pytorch(runtimes, outputs):
    """Alone (the model's statistics) and adapted (the speaker's, drawn towards the model's as infer.py does)."""
    from adaptation.normalization import shrunk_statistics

    probs = {}
    for name, scorer in runtimes.items():
        vectors = outputs[name][1]
        speaker = shrunk_statistics(vectors, *scorer.model_statistics())
        probs[name] = {"alone": scorer.classify(vectors), "adapted": scorer.classify(vectors, *speaker),
                       "graph": outputs[name][0]}
    for mode in ("alone", "adapted"):
        ours, theirs = probs["onnx"][mode], probs["torch"][mode]
        assert np.array_equal(ours.argmax(1), theirs.argmax(1)), mode
        assert np.abs(ours - theirs).max() < CLOSE, (mode, np.abs(ours - theirs).max())
    assert np.abs(probs["onnx"]["alone"] - probs["onnx"]["graph"]).max() < 1e-5  # the numpy head is the graph's head
    assert np.abs(probs["onnx"]["adapted"] - probs["onnx"]["alone"]).max() > 1e-3  # adapting changes something
    # the same embeddings through both heads: numpy reproduces EmotionClassifier.classify, per-row statistics too
    vectors = outputs["torch"][1]
    rows = (np.repeat(vectors.mean(0, keepdims=True), len(vectors), 0), np.repeat(vectors.std(0, keepdims=True) + 1, len(vectors), 0))
    for stats in ((), rows):
        assert np.abs(runtimes["onnx"].classify(vectors, *stats) - runtimes["torch"].classify(vectors, *stats)).max() < 1e-5


def test_the_calibration_per_mode_is_the_one_pytorch_applies(runtimes, outputs, monkeypatch):
    """A checkpoint with `calibration` per mode (a temperature growing with the clip's novelty when adapted): the
    numpy head divides by the temperature EmotionClassifier.temperature gives, in both modes."""
    from adaptation.normalization import shrunk_statistics

    torch_model, head = runtimes["torch"].model, runtimes["onnx"].runtime.head
    calibration = {"alone": {"intercept": 1.2, "slope": 0.0, "unsure_below": 0.5},
                   "adapted": {"intercept": 0.8, "slope": 0.6, "unsure_below": 0.4}}
    monkeypatch.setattr(torch_model.config, "calibration", calibration, raising=False)
    monkeypatch.setitem(head.config, "calibration", calibration)
    vectors = outputs["torch"][1]
    speaker = shrunk_statistics(vectors, *runtimes["torch"].model_statistics())
    for stats in ((), speaker):
        ours, theirs = runtimes["onnx"].classify(vectors, *stats), runtimes["torch"].classify(vectors, *stats)
        assert np.abs(ours - theirs).max() < 1e-5
    assert runtimes["onnx"].unsure_below(adapted=True) == 0.4 == runtimes["torch"].unsure_below(adapted=True)


def test_recognizer_adapt_and_predict_with_a_speaker_in_onnxruntime(runtimes, speech):
    """Recognizer's adaptation API (adapt, predict(speaker=)) runs the same in onnxruntime."""
    probs = {}
    for name, scorer in runtimes.items():
        speaker = scorer.adapt(speech["clips"][:6])
        probs[name] = np.array([list(scorer.predict(clip, speaker=speaker).probabilities.values())
                                for clip in speech["clips"][6:]])
        assert speaker.count == 6
    assert np.array_equal(probs["onnx"].argmax(1), probs["torch"].argmax(1))
    assert np.abs(probs["onnx"] - probs["torch"]).max() < CLOSE


def test_the_pages_calibration_adapts_in_onnxruntime(runtimes, speech):
    """ui/voice.Voice.judge and the page's scored_windows (the scheduler, the Embedder) with the ONNX scorer."""
    from ui import voice as my_voice
    from ui.callbacks import scored_windows

    assert my_voice.adapts(runtimes["onnx"])
    voices = {name: my_voice.Voice() for name in runtimes}
    judged = {name: [] for name in runtimes}
    for clip in speech["clips"]:
        for name, scorer in runtimes.items():
            vectors = my_voice.embedder(scorer).probabilities([clip])
            judged[name].append(voices[name].judge(scorer, "default", vectors, key=my_voice.digest(clip))[0])
    ours, theirs = np.array(judged["onnx"]), np.array(judged["torch"])
    assert len(voices["onnx"].seen["default"]) == len(speech["clips"])
    assert np.array_equal(ours.argmax(1), theirs.argmax(1)) and np.abs(ours - theirs).max() < CLOSE
    page = my_voice.Voice()
    windows = [scored_windows(runtimes["onnx"], clip, voice=page, model="default", remember=True)[0].probs
               for clip in speech["clips"]]
    assert np.abs(np.array(windows) - ours).max() < CLOSE and len(page.seen["default"]) == len(speech["clips"])


def test_infer_normalize_speaker_with_runtime_onnx(cache, speech, tmp_path, monkeypatch):
    import infer

    monkeypatch.setenv("SER_CACHE", str(cache))
    rows = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / f"{runtime}.csv"
        infer.main(["--runtime", runtime, "--precision", "fp32", "--checkpoint", str(DEFAULT), "--normalize", "speaker",
                    "--speaker_pattern", r"^(\d\d)", "--output", str(out), *speech["paths"]])
        rows[runtime] = list(csv.DictReader(open(out)))
    labels = [k for k in rows["torch"][0] if k not in ("path", "label", "error", "reason")]
    assert [r["label"] for r in rows["onnx"]] == [r["label"] for r in rows["torch"]]
    diff = max(abs(float(a[k]) - float(b[k])) for a, b in zip(rows["onnx"], rows["torch"]) for k in labels)
    assert diff < CLOSE


def test_an_onnx_file_adapts_only_with_its_own_checkpoint_at_hand(cache, speech, tmp_path):
    """An .onnx file finds the head in the folder it was exported from (its metadata), if the weights and config
    there are still those it was exported from; else it judges each clip alone and --normalize is refused."""
    import onnx

    import infer
    from serving.recognizer import OnnxScorer

    graph = next((cache / "onnx").glob("*.onnx"))
    assert OnnxScorer(graph).normalizes
    model = onnx.load(str(graph))
    for changed in (False, True):
        folder = tmp_path / f"changed-{changed}"
        folder.mkdir()
        (folder / "model.safetensors").symlink_to(DEFAULT.resolve() / "model.safetensors")
        config = (DEFAULT / "config.json").read_text()
        if changed:  # another head than the graph's
            config = json.dumps({**json.loads(config), "calibration_temperature": 2.0}, indent=2)
        (folder / "config.json").write_text(config)
        for prop in model.metadata_props:
            if prop.key == "source_folder":
                prop.value = str(folder)
        copy = tmp_path / f"changed-{changed}.onnx"
        onnx.save(model, str(copy))
        scorer = OnnxScorer(copy)
        assert scorer.normalizes is not changed
        assert scorer.probabilities_and_embeddings(speech["clips"][:1])[1].shape == (1, scorer.embedding_dim)
    with pytest.raises(SystemExit, match="standardises nothing"):
        infer.run(None, str(tmp_path / "out.csv"), speech["paths"][:2], scorer=scorer, normalize="folder")



def test_a_cached_graph_whose_folder_moved_adapts_with_the_checkpoint_named(cache, tmp_path):
    """A cached graph (the int8 one load_scorer serves) names the folder it was exported from; after the checkpoint
    moved, that folder is gone, and the caller's own checkpoint gives the head (the app's adaptation stays on)."""
    import onnx

    from serving.recognizer import OnnxScorer

    model = onnx.load(str(next((cache / "onnx").glob("*.onnx"))))
    for prop in model.metadata_props:
        if prop.key == "source_folder":
            prop.value = str(tmp_path / "moved-away")
    copy = tmp_path / "moved.onnx"
    onnx.save(model, str(copy))
    assert not OnnxScorer(copy).normalizes  # the folder it names is gone: each clip judged alone
    assert OnnxScorer(copy, source=DEFAULT).normalizes

def test_auto_runtime_serves_onnx_and_falls_back_to_pytorch(cache, monkeypatch):
    import app
    from serving import recognizer

    assert app.parse_args([]).runtime == "auto"
    monkeypatch.setenv("SER_CACHE", str(cache))
    scorer = recognizer.load_scorer(str(DEFAULT), runtime="auto", precision="fp32", device="cpu", embeddings=True)
    assert scorer.runtime_name == "onnx" and scorer.precision == "fp32" and scorer.normalizes

    def broken(*args, **kwargs):
        raise RuntimeError("the ONNX graph differs from PyTorch")

    monkeypatch.setattr(recognizer, "OnnxScorer", broken)
    fallback = recognizer.load_scorer(str(DEFAULT), runtime="auto", precision="fp32", device="cpu", embeddings=True)
    assert fallback.runtime_name == "torch" and fallback.normalizes
    # auto precision (its int8 graph measured to hold, quantize.py) falls back to float32 too when onnxruntime fails
    fallback = recognizer.load_scorer(str(DEFAULT), runtime="auto", device="cpu", embeddings=True)
    assert fallback.runtime_name == "torch" and fallback.precision == "fp32" and fallback.normalizes
