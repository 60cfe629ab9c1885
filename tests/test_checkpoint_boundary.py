"""The checkpoints folder is a boundary: symlinks out of it are refused, messages show no server path.

Also the app's address from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT and the /predict API's own description.
"""
import shutil
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from ui import callbacks
from ui.model_store import ModelStore, public_message

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "checkpoints" / "cnn1d-light"  # committed, small


@pytest.fixture
def root(tmp_path) -> Path:
    """A checkpoints folder with one good checkpoint and a secret file beside (outside) it."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    shutil.copytree(SOURCE, folder / "good")
    (tmp_path / "secret.txt").write_text("root:x:0:0:secret\n")
    return folder


def test_symlinks_out_of_the_folder_are_refused(root):
    secret = root.parent / "secret.txt"
    shutil.copytree(SOURCE, root / "card-to-secret")
    (root / "card-to-secret" / "README.md").unlink()
    (root / "card-to-secret" / "README.md").symlink_to(secret)
    shutil.copytree(SOURCE, root.parent / "elsewhere")
    (root / "linked-from-outside").symlink_to(root.parent / "elsewhere", target_is_directory=True)
    shutil.copytree(SOURCE, root / "weights-outside")
    shutil.move(root / "weights-outside" / "model.safetensors", root.parent / "weights.safetensors")
    (root / "weights-outside" / "model.safetensors").symlink_to(root.parent / "weights.safetensors")
    (root / "alias").symlink_to(root / "good", target_is_directory=True)  # a link that stays inside is fine

    store = ModelStore(root)
    assert sorted(store.checkpoints) == ["alias", "good"]
    assert sorted(store.refused) == ["card-to-secret", "linked-from-outside", "weights-outside"]
    assert any("card-to-secret" in e and "README.md" in e for e in store.preload())  # said in the server log
    for name in store.refused:
        with pytest.raises(gr.Error):
            callbacks.load_model(store, name)
    assert "secret" not in store.model_card("alias")

    # a file swapped for a link after the listing is not read either, nor the checkpoint loaded
    listed = ModelStore(root)
    (root / "good" / "README.md").unlink()
    (root / "good" / "README.md").symlink_to(secret)
    (root / "good" / "confusion.png").unlink()
    (root / "good" / "confusion.png").symlink_to(secret)
    assert "secret" not in store.model_card("good") and "no model card" in store.model_card("good")
    image = store.confusion_image("good")  # drawn from metrics.json instead
    assert image is None or image.size[0] > 100
    with pytest.raises(gr.Error, match="links outside the checkpoints folder"):
        callbacks.load_model(listed, "good")


def test_broken_checkpoint_messages_name_it_not_its_path(root, tmp_path):
    shutil.copytree(SOURCE, root / "broken")
    (root / "broken" / "model.safetensors").write_bytes(b"\0" * 100)
    store = ModelStore(root)
    with pytest.raises(gr.Error) as caught:
        callbacks.load_model(store, "broken")
    message = caught.value.message
    assert "'broken' could not be loaded" in message and str(tmp_path) not in message and "/" not in message
    empty = ModelStore(tmp_path / "nothing-here")
    with pytest.raises(gr.Error) as caught:
        callbacks.predict((16_000, np.zeros(16_000, np.float32)), None, empty)
    assert str(tmp_path) not in caught.value.message and "nothing-here" in caught.value.message
    assert str(tmp_path) not in callbacks.model_panel(empty, None)[0]


def test_public_message_hides_paths():
    folder = Path("/srv/app/checkpoints/mine")
    text = "OSError: /srv/app/checkpoints/mine/model.safetensors is broken; see /usr/lib/python3/x.py, line 3"
    assert public_message(text, folder, "mine") == "OSError: mine/model.safetensors is broken; see x.py, line 3"


def test_server_address_from_the_environment_and_flags_win(monkeypatch):
    import app

    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "9123")
    args = app.parse_args([])
    assert (args.host, args.port) == ("0.0.0.0", 9123)
    args = app.parse_args(["--host", "127.0.0.1", "--port", "8000"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    monkeypatch.delenv("GRADIO_SERVER_NAME")
    monkeypatch.delenv("GRADIO_SERVER_PORT")
    assert (app.parse_args([]).host, app.parse_args([]).port) == ("127.0.0.1", 7860)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "http")
    with pytest.raises(SystemExit):
        app.parse_args([])


def test_predict_api_has_its_own_description():
    from ui.layout import build

    info = build(ModelStore(ROOT / "checkpoints")).get_api_info()["named_endpoints"]["/predict"]
    assert info["description"].startswith("Score a speech recording")
    assert "partial" not in info["description"]
    assert [p["parameter_name"] for p in info["parameters"]] == ["audio", "model"]
