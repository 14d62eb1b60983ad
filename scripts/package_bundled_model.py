"""Put a trained model into the package as the bundled model (fp16 weights, documented metadata).

    python scripts/package_bundled_model.py runs/bundled/model.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_skinseg.bundled import BUNDLED_MODEL_NAME
from napari_skinseg.model import load_model

TARGET = Path(__file__).resolve().parents[1] / "src" / "napari_skinseg" / "weights" / BUNDLED_MODEL_NAME


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--out", default=str(TARGET))
    args = parser.parse_args()
    model = load_model(args.model)
    meta = model.metadata
    if meta.status != "complete":
        raise SystemExit(f"{args.model} is not a completed training run (status {meta.status})")
    meta.data["sources"] = ["ISIC 2018 Task 1 training images (2,094-pair development subset, "
                            "512x512), CC BY-NC 4.0"]
    meta.data["licence"] = ("Weights trained on ISIC 2018 Task 1 data (CC BY-NC 4.0): for "
                            "non-commercial research use only. See MODEL_CARD.md.")
    out = model.save(args.out, half=True)
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB, best epoch {meta.best_epoch}, "
          f"val Dice {meta.metrics.get('val_dice', float('nan')):.4f}")


if __name__ == "__main__":
    main()
