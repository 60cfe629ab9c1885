"""Switching models in the app's model store, and the resident memory each extra head adds (issue 19).

    OMP_NUM_THREADS=1 python scripts/measure_heads.py [--checkpoints checkpoints]

Loads the default, then every other checkpoint one after another, as the app does when the dropdown switches
(ui/callbacks.select_model, no audio), printing each switch's time and the process's resident memory after it
(psutil RSS, after gc and malloc_trim so freed memory is not counted); then switches back to every model (kept
loaded: no load at all), and scores one real EmoDB clip with each. Heads that share an encoder load it once.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def resident_mb() -> float:
    import psutil

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return psutil.Process().memory_info().rss / 2**20


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    args = parser.parse_args(argv)
    import numpy as np
    import torch  # noqa: F401

    from data.corpora import read_corpus
    from data_process import load_audio
    from ui import callbacks
    from ui.model_store import ModelStore

    clip = load_audio(read_corpus("emodb")[0].path)
    base = resident_mb()
    store = ModelStore(args.checkpoints)
    names = [store.default] + [n for n in store.checkpoints if n != store.default]
    print(f"process before any model: {base:.0f} MB resident")
    figures, previous, active = {"loads": []}, base, None
    for name in names:
        start = time.perf_counter()
        store.get(name)  # what the switch loads: the model (its head only, when its encoder is already loaded)
        loading = time.perf_counter() - start
        callbacks.select_model(name, active, None, None, store)
        seconds = time.perf_counter() - start
        now = resident_mb()
        shares = store.info(name).shared_encoder or "its own encoder"
        print(f"switch to {name} (first time, loads it): {seconds:.2f} s, of which loading the model {loading:.2f} s "
              f"(the rest: its panel); resident {now:.0f} MB (+{now - previous:.1f} MB; encoder: {shares})")
        figures["loads"].append({"name": name, "seconds": seconds, "load_seconds": loading, "resident_mb": now,
                                 "added_mb": now - previous})
        previous, active = now, name
    backs = []
    for name in names:
        start = time.perf_counter()
        callbacks.select_model(name, active, None, None, store)
        backs.append(time.perf_counter() - start)
        active = name
    print(f"switch back to a loaded model: {1000 * max(backs):.1f} ms at most over {len(backs)} switches")
    for name in names:
        store.get(name).probabilities([clip])  # warm
        start = time.perf_counter()
        probs = store.get(name).probabilities([clip])
        print(f"score a {len(clip) / 16000:.1f} s EmoDB clip with {name}: {time.perf_counter() - start:.2f} s "
              f"(top: {store.get(name).labels[int(np.argmax(probs[0]))]})")
    extra = [load["added_mb"] for load in figures["loads"][1:]]
    if extra:
        print(f"each extra head: +{np.mean(extra):.1f} MB resident on average, +{max(extra):.1f} MB at most "
              f"(the first model, encoder included: +{figures['loads'][0]['added_mb']:.0f} MB)")
    figures["switch_back_ms_max"] = 1000 * max(backs)
    if store.info(names[-1]).shared_encoder:  # for comparison: the same head with its own copy of the encoder
        import tempfile

        from export import export_transformers
        from serving.recognizer import Recognizer

        with tempfile.TemporaryDirectory() as scratch:
            folder = export_transformers(store.info(names[-1]).path, Path(scratch) / "full")
            before = resident_mb()
            start = time.perf_counter()
            alone = Recognizer(folder)
            alone.probabilities([clip])
            seconds = time.perf_counter() - start
            figures["unshared"] = {"seconds": seconds, "added_mb": resident_mb() - before}
        print(f"for comparison, {names[-1]} exported with its own encoder copy: loads in {seconds:.2f} s, "
              f"+{figures['unshared']['added_mb']:.0f} MB resident")
    return figures


if __name__ == "__main__":
    main()
