"""Model cards: held-out figures, per-corpus figures, and hand-written limits that survive a rewrite."""
from model_card import write_model_card

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
