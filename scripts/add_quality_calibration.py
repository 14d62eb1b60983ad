"""Store a review-queue calibration in a model file's metadata, keeping the weights bit-identical.

    python scripts/add_quality_calibration.py benchmarks/results/quality_calibration.json \
        [--model src/napari_skinseg/weights/skinseg_isic2018_ham10000.pt]

The file is rewritten atomically: the stored tensors are written back exactly as read (no
fp16 -> fp32 -> fp16 round trip), only ``ModelMetadata.quality`` changes. The calibration is
produced by ``benchmarks/review_queue.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from napari_skinseg.bundled import BUNDLED_MODEL_NAME
from napari_skinseg.model import ModelMetadata, atomic_torch_save, read_torch_file
from napari_skinseg.quality import QualityModel

TARGET = Path(__file__).resolve().parents[1] / "src" / "napari_skinseg" / "weights" / BUNDLED_MODEL_NAME


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("calibration", help="JSON written by benchmarks/review_queue.py")
    parser.add_argument("--model", default=str(TARGET))
    args = parser.parse_args()
    calibration = json.loads(Path(args.calibration).read_text())
    QualityModel.from_dict(calibration)  # refuse anything that would not load
    payload = read_torch_file(args.model)
    before = {k: v.clone() for k, v in payload["state_dict"].items()}
    meta = ModelMetadata.from_json(payload["metadata"])
    meta.quality = calibration
    payload["metadata"] = meta.to_json()
    atomic_torch_save(payload, args.model)
    after = read_torch_file(args.model)["state_dict"]
    same = before.keys() == after.keys() and all(
        before[k].dtype == after[k].dtype and torch.equal(before[k], after[k]) for k in before)
    if not same:
        raise SystemExit("weights changed while rewriting the model file")
    print(f"{args.model}: calibration stored ({calibration['info'].get('n_fit')} images), "
          f"weights bit-identical ({len(after)} tensors)")


if __name__ == "__main__":
    main()
