"""Make trained frozen-encoder checkpoints head-only, sharing one copy of their encoder (models/shared_encoder.py).

    python scripts/share_encoder.py checkpoints/whisper-base-max-pool [more checkpoints...]
    python scripts/share_encoder.py --encoders checkpoints/encoders/whisper-base checkpoints/NAME

Each checkpoint's model.safetensors keeps only the head (a few kB to a few MB); its config.json names the encoder
folder (relative) and the SHA-256 of its weights. The encoder folder is written from the first checkpoint when it
has no weights yet; any later checkpoint must carry exactly the same encoder, else it is refused. The checkpoint's
code files are refreshed from models/ (the code that loads a head-only checkpoint travels with it), and its int8.json
(quantize.py), if any, is re-keyed to the new files: the model computes exactly what it computed before.
A checkpoint that is already head-only gets its code refreshed only.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_ENCODERS = {"whisper": ROOT / "checkpoints" / "encoders" / "whisper-base"}


def refresh_code(checkpoint: Path) -> None:
    """Copy models/'s modules (every one a checkpoint carries: all but __init__.py) into `checkpoint`."""
    for code in sorted((ROOT / "models").glob("*.py")):
        if code.name != "__init__.py":
            shutil.copyfile(code, checkpoint / code.name)


def share(checkpoint: Path, encoders: Path | None = None) -> Path:
    from models.shared_encoder import split_checkpoint
    from serving.quantize import weights_digest

    config = json.loads((checkpoint / "config.json").read_text())
    if not config.get("shared_encoder"):
        encoders = encoders or DEFAULT_ENCODERS.get(config.get("backbone"))
        if encoders is None:
            raise SystemExit(f"{checkpoint}: no default encoder folder for backbone {config.get('backbone')!r}: "
                             "give --encoders")
        split_checkpoint(checkpoint, encoders)
    refresh_code(checkpoint)
    if (checkpoint / "settings.json").is_file() and (checkpoint / "metrics.json").is_file():
        from reports.model_card import rewrite

        rewrite(checkpoint)  # the card says where the encoder is
    int8 = checkpoint / "int8.json"
    if int8.is_file():
        figures = json.loads(int8.read_text())
        figures["weights"] = weights_digest(checkpoint)
        int8.write_text(json.dumps(figures, indent=2) + "\n")
    size = (checkpoint / "model.safetensors").stat().st_size
    print(f"{checkpoint}: head-only ({size / 1e3:.0f} kB), shares {json.loads((checkpoint / 'config.json').read_text())['shared_encoder']}")
    return checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--encoders", type=Path, default=None,
                        help="the shared encoder folder (default for Whisper: checkpoints/encoders/whisper-base)")
    args = parser.parse_args(argv)
    for checkpoint in args.checkpoints:
        share(checkpoint, args.encoders)


if __name__ == "__main__":
    main()
