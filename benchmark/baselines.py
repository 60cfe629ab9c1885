"""Reference systems the benchmark compares against: eGeMAPS + SVM and MFCC/chroma/mel + MLP.

    python -m benchmark.baselines --corpus emodb --protocol loso
    python -m benchmark.baselines --corpus ravdess --protocol speaker_kfold --k 5 --baseline egemaps_svm
"""
from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from data_process import SAMPLE_RATE, audio_digest, load_audio, make_folds
from metrics import classification_report, format_summary, summarize_folds

_SMILE = None  # the openSMILE extractor is built once per process: building it costs ~0.1 s


def egemaps_features(audio: np.ndarray) -> np.ndarray:
    """Return the 88 eGeMAPSv02 functionals of 16 kHz mono `audio` (openSMILE)."""
    global _SMILE
    if _SMILE is None:
        import opensmile

        _SMILE = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                 feature_level=opensmile.FeatureLevel.Functionals)
    return _SMILE.process_signal(audio, SAMPLE_RATE).to_numpy(dtype=np.float32)[0]


def mfcc_chroma_mel_features(audio: np.ndarray) -> np.ndarray:
    """Return the time means of 40 MFCCs, 12 STFT chroma and 128 mel bands (180 values, librosa)."""
    import librosa

    stft = np.abs(librosa.stft(audio))
    mfcc = librosa.feature.mfcc(y=audio, sr=SAMPLE_RATE, n_mfcc=40).mean(axis=1)
    chroma = librosa.feature.chroma_stft(S=stft, sr=SAMPLE_RATE).mean(axis=1)
    mel = librosa.feature.melspectrogram(y=audio, sr=SAMPLE_RATE).mean(axis=1)
    return np.concatenate([mfcc, chroma, mel]).astype(np.float32)


def make_svm(seed: int = 0):
    """Return an unfitted StandardScaler -> RBF SVC (balanced class weights) pipeline."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(StandardScaler(), SVC(kernel="rbf", class_weight="balanced", random_state=seed))


def make_mlp(seed: int = 0):
    """Return an unfitted StandardScaler -> MLP (300 hidden units) pipeline, the popular GitHub recipe."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mlp = MLPClassifier(hidden_layer_sizes=(300,), alpha=0.01, batch_size=256, learning_rate="adaptive",
                        max_iter=500, random_state=seed)
    return make_pipeline(StandardScaler(), mlp)


FEATURES = {"egemaps": egemaps_features, "mfcc_chroma_mel": mfcc_chroma_mel_features}
BASELINES = {"egemaps_svm": ("egemaps", make_svm), "mfcc_mlp": ("mfcc_chroma_mel", make_mlp)}


def feature_cache(cache_dir: str | Path | None, feature: str) -> Path:
    """Return the folder holding the cached `feature` vectors (SER_CACHE or ~/.cache/ser by default)."""
    root = Path(cache_dir or os.environ.get("SER_CACHE") or Path.home() / ".cache" / "ser")
    return root / "features" / feature


def _write_atomic(path: Path, data: bytes) -> None:
    """Return nothing; write `data` to `path` through a temporary file, as others may read the cache."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def extract_timed(paths: Sequence[str | Path], feature: str, cache_dir=None, progress: bool = True):
    """Return (features (N, D), compute seconds per file, audio seconds per file).

    Compute seconds are decoding plus feature extraction. Decoding is timed on every call; on a
    cache hit the extraction time is the one measured when the vector was computed (kept in a
    `.sec` file beside the `.npy`), so a real-time factor does not depend on the cache state.
    """
    from tqdm import tqdm

    function, folder = FEATURES[feature], feature_cache(cache_dir, feature)
    folder.mkdir(parents=True, exist_ok=True)
    vectors, seconds, durations = [], [], []
    for path in tqdm(paths, desc=feature, unit="file", disable=not progress):
        start = time.perf_counter()
        audio = load_audio(path)  # raises AudioError naming the file
        decode_s = time.perf_counter() - start
        npy, sec = folder / f"{audio_digest(audio)}.npy", folder / f"{audio_digest(audio)}.sec"
        if npy.is_file() and sec.is_file():
            vector, extract_s = np.load(npy), float(sec.read_text())
        else:
            start = time.perf_counter()
            vector = function(audio)
            extract_s = time.perf_counter() - start
            buffer = io.BytesIO()
            np.save(buffer, vector)
            _write_atomic(npy, buffer.getvalue())
            _write_atomic(sec, b"%.6f" % extract_s)
        vectors.append(vector)
        seconds.append(decode_s + extract_s)
        durations.append(len(audio) / SAMPLE_RATE)
    return np.stack(vectors), np.array(seconds), np.array(durations)


def extract(paths: Sequence[str | Path], feature: str, cache_dir=None, progress: bool = True) -> np.ndarray:
    """Return the (N, D) matrix of `feature` for the files, cached on disk by audio digest."""
    return extract_timed(paths, feature, cache_dir, progress)[0]


def evaluate(name: str, rows: Sequence, folds: Sequence[dict], cache_dir=None, seed: int = 0,
             progress: bool = True) -> list[dict]:
    """Return one classification_report per fold for baseline `name` on `rows` (with .path, .label).

    Each fold trains on its "train" and "val" utterances and tests on "test". Every report also
    holds fit_s and predict_s (seconds), extract_s (decoding + feature seconds of the fold's test
    files), audio_s (their audio seconds) and rtf = (extract_s + predict_s) / audio_s.
    """
    feature, make_model = BASELINES[name]
    X, seconds, durations = extract_timed([r.path for r in rows], feature, cache_dir, progress)
    labels = sorted({r.label for r in rows})
    y = np.array([labels.index(r.label) for r in rows])
    reports = []
    for fold in folds:
        train, test = np.concatenate([fold["train"], fold["val"]]), fold["test"]
        model, start = make_model(seed), time.perf_counter()
        model.fit(X[train], y[train])
        fit_s, start = time.perf_counter() - start, time.perf_counter()
        predicted = model.predict(X[test])
        report = classification_report(y[test], predicted, labels)
        report.update(fit_s=fit_s, predict_s=time.perf_counter() - start,
                      extract_s=float(seconds[test].sum()), audio_s=float(durations[test].sum()))
        report["rtf"] = (report["extract_s"] + report["predict_s"]) / max(report["audio_s"], 1e-9)
        reports.append(report)
    return reports


def main(argv: Sequence[str] | None = None) -> None:
    """Run the chosen baselines on a corpus under a protocol and print per-fold and mean +- std results."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.baselines",
                                     description="Evaluate the reference baselines (eGeMAPS+SVM, "
                                     "MFCC/chroma/mel+MLP) on a corpus with speaker-aware folds.")
    parser.add_argument("--corpus", default="emodb", help="corpus spec for corpora.read_corpus: emodb, ravdess, urdu")
    parser.add_argument("--protocol", default="loso",
                        help="fold protocol of data_process.make_folds: loso, speaker_kfold, random, loso_session")
    parser.add_argument("--k", type=int, default=5, help="number of speaker folds for speaker_kfold (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds and of the MLP (default 0)")
    parser.add_argument("--baseline", default="all", choices=["all", *BASELINES], help="which baseline to run")
    parser.add_argument("--cache_dir", default=None, help="feature cache root (default: $SER_CACHE or ~/.cache/ser)")
    args = parser.parse_args(argv)

    from data.corpora import read_corpus

    rows = read_corpus(args.corpus)
    folds = make_folds([r.label for r in rows], [r.speaker for r in rows], args.protocol, k=args.k,
                       sessions=[getattr(r, "session", None) for r in rows], seed=args.seed)
    speakers = np.array([r.speaker for r in rows])
    print(f"{args.corpus}: {len(rows)} utterances, {len(set(speakers))} speakers, "
          f"{len({r.label for r in rows})} labels; {args.protocol}: {len(folds)} folds")
    for name in BASELINES if args.baseline == "all" else [args.baseline]:
        reports = evaluate(name, rows, folds, args.cache_dir, seed=args.seed)
        print(f"\n== {name}")
        for i, (fold, r) in enumerate(zip(folds, reports)):
            test_speakers = ",".join(sorted(set(speakers[fold["test"]])))
            print(f"fold {i} [{test_speakers}] n={r['n']} UA {r['ua']:.3f} WA {r['wa']:.3f} F1 {r['macro_f1']:.3f}"
                  f" | fit {r['fit_s']:.2f}s predict {r['predict_s']:.3f}s")
        extract_s, audio_s = sum(r["extract_s"] for r in reports), sum(r["audio_s"] for r in reports)
        n = sum(r["n"] for r in reports)
        summary = summarize_folds(reports)
        print(f"{name}: {format_summary(summary)}")
        print(f"{name}: pooled over folds UA {summary['pooled']['ua']:.3f} WA {summary['pooled']['wa']:.3f}")
        print(f"{name}: extraction {extract_s / max(n, 1) * 1000:.0f} ms/file over {n} test files, "
              f"RTF {(extract_s + sum(r['predict_s'] for r in reports)) / max(audio_s, 1e-9):.4f}")


if __name__ == "__main__":
    main()
