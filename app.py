"""Serve the speech emotion recognition page: record or upload speech, see every emotion's probability.

    python app.py                                   # http://127.0.0.1:7860, models from checkpoints/
    python app.py --host 0.0.0.0 --port 8080 --checkpoints runs/mine --max_seconds 120 --max_upload_mb 50
    GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=8080 python app.py   # the same address; flags win

The model chosen at launch is the one named in CHECKPOINTS/default.txt, else the checkpoint with
the highest held-out UA. Nothing is fetched from the network.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# offline by design: no hub look-ups, no usage statistics
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# torch's OpenMP threads spin while idle by default; on a busy CPU that made a request 3-7x slower
# (measured with benchmark/latency.py on 2 shared cores). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# onnxruntime: one thread a model call, and the model worker runs one call per core side by side
# (ui/scheduler.py): less CPU a clip than one call on every core, and shorter waits under load (docs/serving.md)
os.environ.setdefault("SER_ONNX_THREADS", "1")

ROOT = Path(__file__).resolve().parent
CONCURRENT_REQUESTS = 8  # requests decoding or waiting for the model at once (see main)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    summary, details = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(description=summary, epilog=details,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1",
                        help="address to serve on (0.0.0.0: every interface); default: $GRADIO_SERVER_NAME, "
                             "else 127.0.0.1")
    parser.add_argument("--port", type=int, default=None,
                        help="port to serve on; default: $GRADIO_SERVER_PORT, else 7860")
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"),
                        help="folder whose checkpoint subfolders the page offers; nothing else can be loaded")
    parser.add_argument("--max_seconds", type=float, default=600.0, help="longest audio accepted, in seconds")
    parser.add_argument("--max_upload_mb", type=float, default=200.0,
                        help="largest upload accepted, in MB (a 10-minute 48 kHz stereo WAV is about 110 MB); "
                             "larger files are refused before they are stored")
    parser.add_argument("--precision", choices=["auto", "fp32", "int8"], default="auto",
                        help="auto: a checkpoint's int8 graph (onnxruntime) where its int8.json shows it meets the "
                             "drift bound (serving/quantize.py), for a model that adapts to its user in the adapted mode too, "
                             "else float32; fp32: always float32; int8: int8 regardless")
    parser.add_argument("--runtime", choices=["auto", "torch", "onnx"], default="auto",
                        help="what runs a float32 model: auto (default): onnxruntime for the default checkpoint where "
                             "it exports to ONNX (once, cached in $SER_CACHE/onnx; the calibration to the user's voice "
                             "works there too), PyTorch for the others, which share one encoder in memory; torch: always PyTorch; onnx: always onnxruntime (a checkpoint that does "
                             "not export fails to load)")
    parser.add_argument("--queue_updates", default="1",
                        help="seconds between the queue-position messages sent to waiting pages (default 1); auto: "
                             "Gradio's default, to every waiting page after every finished request (with N waiting, "
                             "N messages a request)")
    args = parser.parse_args(argv)
    if args.queue_updates != "auto":
        try:
            args.queue_updates = float(args.queue_updates)
        except ValueError:
            parser.error(f"--queue_updates {args.queue_updates!r}: a number of seconds, or auto")
    if args.port is None:  # the flag wins over the environment, as with Gradio's own launch()
        port = os.environ.get("GRADIO_SERVER_PORT") or "7860"
        if not port.isdigit():
            parser.error(f"GRADIO_SERVER_PORT={port!r} is not a port number")
        args.port = int(port)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))

    from serving.recognizer import load_scorer
    from ui.layout import build
    from ui.model_store import ModelStore

    def load(folder: Path):
        """The checkpoint's scorer; a model that adapts to its user (ui/voice.py) needs embeddings: float32 on auto,
        in onnxruntime (its export gives them) or PyTorch by --runtime. On --runtime auto only the default runs in
        onnxruntime: an ONNX graph holds its own copy of the encoder, while the other models in PyTorch share one
        (models/shared_encoder.py: a few MB per extra head instead of a graph of 84 MB each)."""
        config = json.loads((Path(folder) / "config.json").read_text())
        adapts = config.get("embedding_norm", "none") not in ("none", None)
        runtime = args.runtime
        if runtime == "auto" and Path(folder).name != store.default and config.get("shared_encoder"):
            runtime = "torch"
        return load_scorer(folder, runtime=runtime, precision=args.precision, device="cpu", embeddings=adapts)

    store = ModelStore(args.checkpoints, loader=load)
    for error in store.preload():
        print(f"warning: checkpoint failed to load: {error}", file=sys.stderr)
    if store.default:
        scorer = store.get(store.default)
        precision, runtime = getattr(scorer, "precision", "fp32"), getattr(scorer, "runtime_name", "torch")
        print(f"{len(store.checkpoints)} checkpoint(s) in {store.root}; default: {store.default} ({precision}, {runtime})")
    else:
        print(f"warning: no loadable checkpoint in {store.root}; the page will say so", file=sys.stderr)
    demo = build(store, args.max_seconds)
    # Requests decode and check their audio side by side, then queue their model calls on the model workers,
    # which serve them in turns (ui/scheduler.py): a long recording no longer holds up everyone else.
    # The limit bounds the audio held in memory at once; further requests wait in Gradio's queue.
    demo.queue(default_concurrency_limit=CONCURRENT_REQUESTS, status_update_rate=args.queue_updates).launch(
        server_name=args.host, server_port=args.port, max_file_size=int(args.max_upload_mb * 1e6),
        footer_links=["api"])


if __name__ == "__main__":
    main()
