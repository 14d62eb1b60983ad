"""npe2 sample data: a synthetic dermoscopy-like lesion and its exact mask."""

from __future__ import annotations

from .synthetic import make_synthetic_lesion


def synthetic_lesion():
    image, mask = make_synthetic_lesion((512, 512), seed=7)
    return [
        (image, {"name": "synthetic lesion", "rgb": True}, "image"),
        (mask.astype("uint8"), {"name": "synthetic lesion mask", "opacity": 0.4}, "labels"),
    ]
