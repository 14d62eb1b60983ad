"""npe2 sample data: a synthetic dermoscopy-like lesion and its exact mask."""

from __future__ import annotations

from .synthetic import make_synthetic_lesion


def synthetic_lesion():
    image, mask = make_synthetic_lesion((512, 512), seed=7)
    return [
        (image, {"name": "synthetic lesion", "rgb": True}, "image"),
        # ground truth in green; predictions are magenta, so both can be compared on screen
        (mask.astype("uint8"), {"name": "synthetic lesion mask", "opacity": 0.4,
                                "colormap": {None: "transparent", 0: "transparent", 1: "lime"}},
         "labels"),
    ]
