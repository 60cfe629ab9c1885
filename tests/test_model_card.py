"""Model cards: held-out figures, per-corpus figures, hand-written limits that survive a rewrite, Hub metadata that
parses back with huggingface_hub, and a usage snippet that runs."""
import ast
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from reports import model_card
from conftest import ROOT
from reports.model_card import corpus_names, licence, write_model_card

SETTINGS = {"model": {"backbone": "whisper", "encoder": "enc", "encoder_mode": "frozen", "layer_mix": "weighted",
                      "pooling": "mean", "cnn_preset": "light"},
            "data": {"corpus": ["emodb", "urdu"], "protocol": "speaker_kfold"}}


def cv_metrics(by_corpus: dict) -> dict:
    pooled = {"confusion": [[3, 1], [0, 4]], "labels": ["angry", "sad"], "ua": 0.875, "wa": 0.875}
    summary = {k: {"mean": 0.8, "std": 0.1} for k in ("ua", "wa", "macro_f1")} | {"pooled": pooled}
    return {"labels": ["angry", "sad"], "protocol": "speaker_kfold", "folds": [{}, {}], "n_speakers": 4,
            "summary": summary, "by_corpus": by_corpus}


def test_card_quotes_cross_validation_and_each_corpus(tmp_path):
    metrics = cv_metrics({"emodb": {"ua": 0.9, "n": 5}, "urdu": {"ua": 0.612, "n": 3}})
    card = write_model_card(tmp_path, SETTINGS, metrics).read_text()
    assert "**UA 0.800 ± 0.100**" in card and "over 2 folds" in card
    assert "emodb 0.900 (5 clips), urdu 0.612 (3 clips)" in card
    assert "| **angry** | 3 | 1 |" in card


def test_rewritten_card_keeps_known_limits(tmp_path):
    metrics = cv_metrics({"emodb": {"ua": 0.9, "n": 5}})
    path = write_model_card(tmp_path, SETTINGS, metrics)
    assert "Per corpus" not in path.read_text()  # one corpus: nothing to split
    path.write_text(path.read_text() + "\n## Known limits\n- trained on actors only\n")
    card = write_model_card(tmp_path, SETTINGS, metrics).read_text()
    assert card.count("## Known limits") == 1 and card.endswith("- trained on actors only\n")


def test_card_metadata_parses_back_with_huggingface_hub(tmp_path):
    from huggingface_hub import ModelCard
    from transformers import WhisperConfig

    whisper_base = WhisperConfig(d_model=512, encoder_layers=6).to_dict()
    (tmp_path / "config.json").write_text(json.dumps({"encoder_config": whisper_base,
                                                      "encoder_name": "../shared/models/whisper-base-encoder"}))
    settings = {**SETTINGS, "model": {**SETTINGS["model"], "encoder": "../shared/models/whisper-base-encoder"}}
    metrics = cv_metrics({"emodb": {"ua": 0.9, "n": 5}, "urdu": {"ua": 0.612, "n": 3}})
    data = ModelCard.load(write_model_card(tmp_path, settings, metrics)).data
    assert data.license == "other" and data.license_name == "research-use-only"  # EmoDB, URDU: research use only
    assert data.base_model == "openai/whisper-base"  # a local copy of the encoder still names the Hub model
    assert data.datasets == ["EmoDB", "URDU"] and data.language == ["de", "ur"]
    assert data.pipeline_tag == "audio-classification" and data.library_name == "transformers"
    assert set(data.metrics) == {"recall", "accuracy", "f1"} and "custom_code" in data.tags
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in data.eval_results}
    assert results[("EmoDB + URDU", "recall")] == 0.8 and results[("EmoDB + URDU", "f1")] == 0.8
    assert results[("URDU", "recall")] == 0.612 and results[("EmoDB", "recall")] == 0.9
    assert all(r.task_type == "audio-classification" for r in data.eval_results)


@pytest.mark.parametrize("corpora, expected", [
    (["ravdess"], {"license": "cc-by-nc-sa-4.0"}),
    (["ravdess", "emotiontts_ko"], {"license": "cc-by-nc-sa-4.0"}),  # one licence: the strictest is itself
    (["ravdess", "ased"], {"license": "other", "license_name": "research-use-only"}),
    (["ravdess", "cremad"], {"license": "other", "license_name": "combined-corpus-licences"}),
    (["csv=/data/m.csv"], {"license": "other", "license_name": "research-use-only"}),  # unknown: not assumed free
])
def test_licence_follows_the_corpora(corpora, expected):
    assert licence(corpus_names({"data": {"corpus": corpora}})) == expected


def test_single_split_results_and_no_base_model_for_a_cnn(tmp_path):
    from huggingface_hub import ModelCard

    settings = {"model": {"backbone": "cnn1d", "encoder": "openai/whisper-base", "pooling": "max", "cnn_preset": "light"},
                "data": {"corpus": ["ravdess"], "protocol": "fixed"}}
    test = {"ua": 0.5, "wa": 0.6, "macro_f1": 0.45, "n": 10, "test_speakers": ["ravdess:01"],
            "confusion": [[3, 2], [2, 3]], "labels": ["angry", "sad"]}
    card = ModelCard.load(write_model_card(tmp_path, settings, {"labels": ["angry", "sad"], "test": test}))
    assert card.data.base_model is None and card.data.language == ["en"]
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {"recall": 0.5, "accuracy": 0.6, "f1": 0.45}
    assert "Held-out test speakers ravdess:01: **UA 0.500**" in card.text


def test_a_section_added_to_the_list_appears_in_the_card(tmp_path, monkeypatch):
    extra = lambda folder, settings, metrics: "## Calibration\nreliability diagram here"  # noqa: E731
    monkeypatch.setattr(model_card, "SECTIONS", [*model_card.SECTIONS, extra])
    card = write_model_card(tmp_path, SETTINGS, cv_metrics({"emodb": {"ua": 0.9, "n": 5}})).read_text()
    assert card.index("## Use") < card.index("## Calibration\nreliability diagram here")


def test_usage_snippet_of_a_committed_card_runs_outside_the_project(tmp_path, emodb_rows):
    """The card's Python block, run as written (a real recording for speech.wav) from the folder that holds the model."""
    folder = tmp_path / "cnn1d-light"
    shutil.copytree(ROOT / "tests" / "checkpoints" / "cnn1d-light", folder)
    model_card.rewrite(folder)
    snippet = re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(), flags=re.S).group(1)
    assert "speech.wav" in snippet and "trust_remote_code=True" in snippet
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    done = subprocess.run([sys.executable, "-I", "-c", snippet.replace("speech.wav", emodb_rows[0].path)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    scores = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert len(scores) == 9 and abs(sum(s["score"] for s in scores) - 1) < 1e-4


def test_emotions_and_the_corpora_that_carry_them():
    from reports.model_card import _emotions

    text = _emotions({"kept": {"angry": {"emodb": 127, "ravdess": 160}, "sad": {"emodb": 62}},
                      "left_out": {"calm": {"ravdess": 160}, "boredom": {"emodb": 81}}})
    assert "| angry | 2 | EmoDB 127, RAVDESS 160 |" in text and "| sad | 1 | EmoDB 62 |" in text
    assert "Left out (`--labels`): boredom (EmoDB 81); calm (RAVDESS 160). Each comes from one corpus only" in text
    assert _emotions(None) == "" and "Left out" not in _emotions({"kept": {"sad": {"emodb": 3}}, "left_out": {}})
