"""What segmenting one image gives, whichever engine ran the network (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Segmentation:
    probability: np.ndarray  # float32 (H, W) in [0, 1], original size
    mask: np.ndarray  # bool (H, W), original size
