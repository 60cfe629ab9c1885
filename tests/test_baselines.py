"""Tests of the reference baselines on a small real subset of EmoDB (shared corpora)."""
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark import baselines  # noqa: E402
from data.corpora import corpora_root, read_corpus  # noqa: E402
from data_process import AudioError, make_folds  # noqa: E402

EMOTIONS = ("angry", "neutral", "sad")
TRAIN_SPEAKERS, TEST_SPEAKERS = ("emodb:03", "emodb:08", "emodb:09"), ("emodb:10", "emodb:11")


@pytest.fixture(scope="module")
def rows():
    """Return the EmoDB utterances of 5 speakers and 3 emotions (about 130 files)."""
    if not (corpora_root() / "emodb").is_dir():
        reason = f"shared corpora not found at {corpora_root()} (set SER_CORPORA)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    wanted = set(TRAIN_SPEAKERS + TEST_SPEAKERS)
    return [r for r in read_corpus("emodb") if r.speaker in wanted and r.label in EMOTIONS]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ser_cache")


@pytest.mark.parametrize("feature, dim", [("egemaps", 88), ("mfcc_chroma_mel", 180)])
def test_feature_dimensions(rows, cache, feature, dim):
    features = baselines.extract([r.path for r in rows[:3]], feature, cache_dir=cache, progress=False)
    assert features.shape == (3, dim)
    assert np.all(np.isfinite(features))


def test_cache_hit_is_identical_and_faster(rows, tmp_path):
    paths = [r.path for r in rows[:6]]
    start = time.perf_counter()
    first = baselines.extract(paths, "egemaps", cache_dir=tmp_path, progress=False)
    miss_s, start = time.perf_counter() - start, time.perf_counter()
    second = baselines.extract(paths, "egemaps", cache_dir=tmp_path, progress=False)
    hit_s = time.perf_counter() - start
    np.testing.assert_array_equal(first, second)
    assert hit_s < miss_s, (hit_s, miss_s)
    assert len(list((tmp_path / "features" / "egemaps").glob("*.npy"))) == len(set(paths))


def test_unreadable_file_is_named(rows, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(AudioError, match="broken.wav"):
        baselines.extract([rows[0].path, str(broken)], "egemaps", cache_dir=tmp_path, progress=False)


@pytest.mark.parametrize("name", sorted(baselines.BASELINES))
def test_baseline_beats_chance_on_unseen_speakers(rows, cache, name):
    labels, speakers = [r.label for r in rows], [r.speaker for r in rows]
    folds = make_folds(labels, speakers, "fixed", test_speakers=list(TEST_SPEAKERS))
    assert set(np.array(speakers)[folds[0]["test"]]) == set(TEST_SPEAKERS)
    reports = baselines.evaluate(name, rows, folds, cache_dir=cache, progress=False)
    assert len(reports) == 1
    report = reports[0]
    assert report["labels"] == sorted(EMOTIONS)
    assert report["n"] == len(folds[0]["test"])
    assert report["ua"] > 1 / len(EMOTIONS) + 0.15, report  # chance is 1/3; observed about 0.9
    for key in ("fit_s", "predict_s", "extract_s", "audio_s", "rtf"):
        assert report[key] > 0, key
    assert report["rtf"] < 1  # both baselines are far faster than real time
