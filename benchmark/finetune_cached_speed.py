"""One training step of the top-2 fine-tuning recipe from audio against from cached inputs, on the same batches.

    OMP_NUM_THREADS=1 nice -n 15 python3 -m benchmark.finetune_cached_speed [--batches 4]

Modes: audio (the whole encoder from audio, float32), cached (the top layers on cached inputs, float32), cached_bf16
(the same under bf16 autocast, as --bf16 true); random batches (padding included) in every mode.
CPU seconds (process time: what the step costs, whatever else the machine runs) and wall seconds per step of 16 clips
(forward and backward, every parameter the recipe trains), written to
benchmark/results/finetune_cached/step_speed.json. Clips are drawn from the training corpora of the ASED-out fold.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import time

import numpy as np
import torch

import train
from benchmark.finetune_cached import RECIPE, RESULTS
from config import parse_args
from data.corpora import read_corpora
from data_process import load_audio
from data.feature_cache import cached_layers
from data.finetune_cache import CachedTopModel, cached_hidden, collate_hidden, frozen_slice


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args(argv)
    dargs, margs, _ = parse_args([a for a in RECIPE if a not in ("--disable_tqdm", "true")])
    rows = [r for r in read_corpora(dargs.corpus, keep=dargs.labels) if r.corpus != "ased"]
    labels = sorted({r.label for r in rows})
    model, extractor = train.build_model(margs, labels, train.models.BACKBONES["whisper"].load_encoder(margs.encoder))
    model.train()
    rng = np.random.default_rng(0)
    batches = [[rows[i] for i in rng.choice(len(rows), 16, replace=False)] for _ in range(args.batches)]
    top, heard = CachedTopModel(model), frozen_slice(model)
    times = {"audio": [], "cached": [], "cached_bf16": []}
    for batch in batches:
        paths, ids = [r.path for r in batch], torch.tensor([labels.index(r.label) for r in batch])
        hidden = cached_hidden(model, extractor, paths, progress=False)[0]
        frozen = cached_layers(model, extractor, paths, progress=False)[0]
        audio = extractor([load_audio(p) for p in paths], sampling_rate=16000, return_tensors="pt",
                          return_attention_mask=True, padding=True)
        for mode in times:
            model.zero_grad()
            cpu, wall = time.process_time(), time.time()
            if mode == "audio":
                loss = model(audio["input_values"], audio["attention_mask"], labels=ids).loss
            else:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "cached_bf16"):  # as --bf16 true
                    loss = top(**collate_hidden([{"hidden_states": h, "frozen_layers": f[heard], "labels": int(i)}
                                                 for h, f, i in zip(hidden, frozen, ids)])).loss
            loss.backward()
            times[mode].append((time.process_time() - cpu, time.time() - wall))
    result = {mode: {"cpu_seconds_per_step": float(np.mean([t[0] for t in v])),
                     "wall_seconds_per_step": float(np.mean([t[1] for t in v]))} for mode, v in times.items()}
    result["cpu_speedup"] = {mode: result["audio"]["cpu_seconds_per_step"] / result[mode]["cpu_seconds_per_step"]
                             for mode in ("cached", "cached_bf16")}
    result.update(batches=args.batches, batch_size=16, threads=torch.get_num_threads(),
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  loadavg=os.getloadavg(), cpus=os.cpu_count())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "step_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
