"""Rebuild ../shared/models/whisper-base-encoder on a machine that lacks it, from the one copy the repository holds.

    python scripts/gpu/encoder.py CONFIG_FOLDER TARGET_FOLDER

checkpoints/encoders/whisper-base/model.safetensors holds the same float16 tensors as the shared folder's, keyed
without its `model.` prefix; CONFIG_FOLDER holds the shared folder's config.json and preprocessor_config.json (a few
kB, carried beside the corpora). The device tool carries at most 64 MiB a call: one copy of the weights, not two.
"""
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]


def main(config: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(config / name, target / name)
    tensors = load_file(ROOT / "checkpoints" / "encoders" / "whisper-base" / "model.safetensors")
    save_file({f"model.{key}": value for key, value in tensors.items()}, target / "model.safetensors",
              metadata={"format": "pt"})
    print(f"{target}: {len(tensors)} tensors")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
