"""Checkpoints carry their code: they load with transformers alone, outside the project, and score as the project does."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SHARED, require

CHECKPOINTS = sorted(p.parent.name for p in (ROOT / "checkpoints").glob("*/config.json"))

# Runs with `python -I` (no project, no PYTHONPATH, no user site) from a folder outside the project: only
# torch, transformers and the audio libraries. Prints one JSON object of probabilities per way of loading.
OUTSIDE = """
import json, sys
import numpy as np, soundfile as sf, torch
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline

folder, project, files = sys.argv[1], sys.argv[2], sys.argv[3:]
assert not any(p.startswith(project) or p in ("", ".") for p in sys.path), sys.path
classify = pipeline("audio-classification", model=folder, trust_remote_code=True)
model = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True).eval()
extractor = AutoFeatureExtractor.from_pretrained(folder)
labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

def ordered(scores):
    found = {s["label"]: s["score"] for s in scores}
    return [found[label] for label in labels]

arrays = [sf.read(f, dtype="float32")[0] for f in files]
long = np.concatenate(arrays * 6)  # past the 30 s a Whisper encoder takes in one go
with torch.no_grad():
    direct = [torch.softmax(model(**extractor(a, sampling_rate=16000, return_tensors="pt")).logits, -1)[0].tolist()
              for a in arrays]
print(json.dumps({
    "labels": labels,
    "model_module": type(model).__module__,
    "pipeline_path": [ordered(classify(f, top_k=None)) for f in files],
    "pipeline_array": [ordered(classify(a, top_k=None)) for a in arrays],
    "pipeline_long": ordered(classify(long, top_k=None)),
    "model_array": direct,
}))
"""


@pytest.fixture(scope="module")
def recordings(emodb_rows) -> list[str]:
    """Two real 16 kHz recordings: an EmoDB WAV and a RAVDESS FLAC."""
    from data.corpora import read_corpus

    require(SHARED / "corpora" / "ravdess", "the RAVDESS corpus")
    return [emodb_rows[0].path, read_corpus("ravdess")[0].path]


def test_models_import_nothing_from_the_project():
    """models/ is copied into checkpoints: an absolute import of a project module would fail elsewhere."""
    project = {p.stem for p in ROOT.glob("*.py")} | {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    for path in (ROOT / "models").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            assert not {n.split(".")[0] for n in names if n} & project, f"{path.name} imports {names}"


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_committed_checkpoint_loads_outside_the_project(name, recordings, tmp_path):
    folder = ROOT / "checkpoints" / name
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-I", "-c", OUTSIDE, str(folder), str(ROOT), *recordings], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["model_module"].startswith("transformers_modules."), got["model_module"]  # the checkpoint's own code

    from data_process import load_audio
    from serving.recognizer import Recognizer

    recognizer = Recognizer(folder)
    assert got["labels"] == recognizer.labels
    clips = [load_audio(path) for path in recordings]
    expected = recognizer.probabilities(clips)
    for key in ("pipeline_path", "pipeline_array", "model_array"):
        np.testing.assert_allclose(got[key], expected, atol=1e-5, err_msg=key)
    long = np.concatenate(clips * 6)
    assert len(long) > 30 * 16000
    expected_long = np.array(list(recognizer.predict(long)[0].values()))  # the project's windows, averaged
    np.testing.assert_allclose(got["pipeline_long"], expected_long, atol=1e-5)


def test_a_new_checkpoint_carries_new_modules_and_config_fields(tmp_path):
    """What save_pretrained copies follows models/'s relative imports, and config fields need no list."""
    from models import EmotionClassifier, EmotionConfig

    config = EmotionConfig(backbone="cnn1d", cnn_first_stride=4, projector_dim=8, id2label={0: "a", 1: "b"},
                           label2id={"a": 0, "b": 1}, some_new_field=0.5)
    EmotionClassifier(config).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["some_new_field"] == 0.5
    imported = set()
    for path in (ROOT / "models").glob("*.py"):  # every module a model file imports relatively
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                imported.add(node.module)
    assert imported <= {p.stem for p in tmp_path.glob("*.py")}, imported - {p.stem for p in tmp_path.glob("*.py")}
