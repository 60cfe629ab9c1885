"""Training the way Hugging Face users expect: a dataset with its own splits and any label names, the user's
evaluation and checkpoint strategies, --push_to_hub (checked offline), and `accelerate launch` on two CPU processes."""
import csv
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
from huggingface_hub import HfApi, ModelCard, RepoUrl, hf_api

import train
from config import evaluation_settings, given_flags, parse_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CNN = ["--backbone", "cnn1d", "--cnn_first_stride", "4", "--pooling", "max", "--per_device_train_batch_size", "8",
            "--crop_seconds", "1.5", "--disable_tqdm", "true", "--learning_rate", "3e-3"]
AROUSAL = {"angry": "high", "happy": "high", "fearful": "high", "neutral": "mid", "sad": "low", "boredom": "low"}
LEVELS = ["low", "mid", "high"]  # the dataset's ClassLabel order


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, emodb_rows):
    """A save_to_disk DatasetDict of real EmoDB speech labelled by arousal (low/mid/high), with its own splits:
    train = speakers 08 and 09 (8 clips per level), test = speaker 03 (4 per level); audio cells are file paths."""
    datasets = pytest.importorskip("datasets")

    def split(speakers, per_level):
        picked = []
        for level in LEVELS:
            picked += [r for r in emodb_rows if r.speaker in speakers and AROUSAL.get(r.label) == level][:per_level]
        table = {"file": [r.path for r in picked], "arousal": [LEVELS.index(AROUSAL[r.label]) for r in picked],
                 "who": [r.speaker.split(":")[1] for r in picked]}
        return datasets.Dataset.from_dict(table).cast_column("arousal", datasets.ClassLabel(names=LEVELS))

    folder = tmp_path_factory.mktemp("hf") / "emodb_arousal"
    splits = datasets.DatasetDict(train=split({"emodb:08", "emodb:09"}, 8), test=split({"emodb:03"}, 4))
    splits.save_to_disk(str(folder))
    return folder


DATASET_FLAGS = ["--audio_column_name", "file", "--label_column_name", "arousal", "--eval_split_name", "test"]


class RecordingTrainer(train.Trainer):
    made: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        RecordingTrainer.made.append(self)


def test_hf_dataset_end_to_end_with_steps_and_push(tmp_path, dataset, monkeypatch):
    """Train on the train split, evaluate every 2 steps on the test split, keep the best checkpoint as asked,
    save the arousal labels, infer with them, show them in the app, and push the final checkpoint (offline)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(train, "Trainer", RecordingTrainer)
    uploads = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: uploads.update(repo=repo_id, **kw)
                        or RepoUrl(f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(HfApi, "_validate_yaml", lambda self, content, **kw: uploads.update(card=content))
    monkeypatch.setattr(hf_api, "is_xet_available", lambda: False)  # one commit: its operations are the files
    monkeypatch.setattr(HfApi, "create_commit", lambda self, repo_id, operations, **kw: uploads.update(
        commit_repo=repo_id, files=sorted(op.path_in_repo for op in operations)))
    out = tmp_path / "arousal"
    result = train.main(["--dataset_name", str(dataset), *DATASET_FLAGS, "--speaker_column_name", "who",
                         "--num_train_epochs", "2", "--eval_strategy", "steps", "--eval_steps", "2",
                         "--load_best_model_at_end", "true", "--push_to_hub", "true",
                         "--hub_model_id", "me/ser-arousal", "--output_dir", str(out), *TINY_CNN])

    # the dataset's own splits: 24 training clips, the 12 test clips evaluated and tested, never re-split
    assert result["protocol"] == "dataset_splits" and result["labels"] == ["high", "low", "mid"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sizes"] == {"train": 24, "val": 12, "test": 12}
    assert metrics["test"]["n"] == 12 and set(metrics["test"]["recall"]) == {"high", "low", "mid"}
    assert metrics["test"]["test_speakers"] == ["hf:03"] and "eval split" in metrics["kept"]
    trainer = RecordingTrainer.made[-1]
    assert trainer.args.eval_strategy == "steps" and trainer.args.save_strategy == "steps"  # as asked, not epochs
    evaluated = [h["step"] for h in trainer.state.log_history if "eval_ua" in h]
    assert evaluated == [2, 4, 6]  # 3 steps per epoch, 2 epochs
    assert trainer.args.load_best_model_at_end and trainer.state.best_metric == max(
        h["eval_ua"] for h in trainer.state.log_history if "eval_ua" in h)

    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "high", "1": "low", "2": "mid"}
    clips = [row["path"] for row in csv.DictReader(open(out / "predictions.csv"))][:3]
    scored = tmp_path / "scored.csv"
    subprocess.run([sys.executable, "infer.py", "--checkpoint", str(out), "--output", str(scored), *clips], cwd=ROOT,
                   check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    rows = list(csv.DictReader(open(scored)))
    assert list(rows[0])[:5] == ["path", "label", "high", "low", "mid"]
    assert all(r["label"] in ("high", "low", "mid") for r in rows) and len(rows) == 3

    from ui.callbacks import analyse
    from ui.model_store import ModelStore
    store = ModelStore(tmp_path)  # the app's view of the run folder: its labels are the model's
    assert store.info("arousal").labels == ["high", "low", "mid"]
    assert set(analyse(clips[0], "arousal", store).probabilities) == {"high", "low", "mid"}

    # --push_to_hub: the final best checkpoint with its code and card, nothing of the resume state or local paths
    assert uploads["repo"] == uploads["commit_repo"] == "me/ser-arousal"
    files = uploads["files"]
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "metrics.json"} <= set(files)
    assert {f"{target.split('.')[0]}.py" for target in config["auto_map"].values()} == {"configuration.py",
                                                                                        "classifier.py"}
    assert {"configuration.py", "classifier.py", "cnn1d.py", "pooling.py"} <= set(files)  # the code auto_map loads
    assert not [f for f in files if f.startswith("checkpoint-") or f in ("predictions.csv", "test_logits.npz")]
    card = ModelCard(uploads["card"])
    assert card.data.pipeline_tag == "audio-classification" and "UA" in card.text
    assert result["pushed_to"] == "https://huggingface.co/me/ser-arousal"


@pytest.mark.parametrize("flags, message", [
    (["--val_speakers", "0", "--eval_strategy", "steps"], r"--eval_strategy steps needs a validation set, and this run "
                                                          r"has none"),
    (["--protocol", "all", "--load_best_model_at_end", "true"], "--load_best_model_at_end true needs a validation set"),
    (["--val_speakers", "1", "--eval_strategy", "steps", "--save_strategy", "epoch"],
     r"--save_strategy epoch and --eval_strategy steps differ"),
    (["--val_speakers", "1", "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "true"],
     "needs --eval_strategy epoch or steps, not no"),
    (["--val_speakers", "1", "--eval_strategy", "no", "--load_best_model_at_end", "true"], "requires the save and eval strategy to match"),
    (["--dataset_name", "x/y", "--protocol", "loso"], "--protocol do not apply .* use --corpus hf=NAME"),
    (["--dataset_name", "x/y", "--corpus", "emodb"], "--corpus do not apply"),
    (["--push_to_hub", "true"], "--push_to_hub pushes one final checkpoint, and --protocol loso trains one per fold"),
    (["--push_to_hub", "true", "--protocol", "all", "--hub_strategy", "every_save"],
     "pushes the final best checkpoint"),
])
def test_settings_that_cannot_hold_are_refused_before_any_work(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        train.main(["--corpus", f"folder={tmp_path / 'never_read'}", "--output_dir", str(tmp_path), *flags])


def test_evaluation_and_checkpoint_defaults_follow_the_data():
    def settings(argv, has_val, val_is_test=False):
        _, _, targs = parse_args(argv)
        return targs, evaluation_settings(targs, given_flags(argv), has_val, val_is_test)

    targs, chosen = settings([], True)  # a validation set: every epoch, keep the best UA
    assert chosen == dict(eval_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="ua",
                          greater_is_better=None)
    assert settings([], False)[1]["eval_strategy"] == "no"  # none: no evaluation
    assert settings([], True, val_is_test=True)[1]["load_best_model_at_end"] is False  # never chosen on the test split
    targs, chosen = settings(["--eval_strategy", "steps", "--eval_steps", "50"], True)
    assert (targs.save_strategy, targs.save_steps, chosen["eval_strategy"]) == ("steps", 50, "steps")  # saves follow
    targs, chosen = settings(["--metric_for_best_model", "loss"], True)
    assert chosen["metric_for_best_model"] == "loss" and chosen["greater_is_better"] is False
    assert settings(["--eval_strategy", "no"], True)[1]["load_best_model_at_end"] is False  # honoured: last weights


def test_dataset_labels_and_splits_are_checked(tmp_path, dataset):
    common = ["--dataset_name", str(dataset), "--audio_column_name", "file", "--label_column_name", "arousal",
              "--output_dir", str(tmp_path), *TINY_CNN]
    with pytest.raises(ValueError, match=r"no split\(s\) \['validation'\]; has \['test', 'train'\] \(choose them with "
                                         r"--train_split_name, --eval_split_name\)"):
        train.main(common)
    with pytest.raises(ValueError, match=r"--labels: unknown label\(s\) \['excited'\]: in neither the data nor the "
                                         r"merges; the labels of the data are: high, low, mid"):
        train.main([*common, "--eval_split_name", "test", "--labels", "excited", "high"])
    with pytest.raises(ValueError, match="both 'train'"):
        train.main([*common, "--eval_split_name", "train"])
    argv = [*common, "--eval_split_name", "test", "--merge", "mid:Not High,Low:not high", "--labels", "NOT HIGH"]
    rows, tested = train.read_data(parse_args(argv)[0], 0)
    assert {r.label for r in rows} == {"Not High"} and len(rows) == 24 and len(tested) == 8  # the first spelling


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_accelerate_launch_runs_two_cpu_processes(tmp_path, dataset):
    """`accelerate launch --num_processes 2 --cpu train.py ...` as the README shows it: two DDP processes."""
    out = tmp_path / "ddp"
    accelerate = shutil.which("accelerate") or pytest.fail("the accelerate command is not installed")
    cmd = [accelerate, "launch", "--num_processes", "2", "--cpu", "--main_process_port", str(free_port()),
           "train.py", "--dataset_name", str(dataset), *DATASET_FLAGS, "--num_train_epochs", "1",
           "--log_level", "info", "--output_dir", str(out), *TINY_CNN]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "Total train batch size (w. parallel, distributed & accumulation) = 16" in log  # 8 per process x 2
    assert json.loads((out / "metrics.json").read_text())["test"]["n"] == 12 and (out / "model.safetensors").exists()
