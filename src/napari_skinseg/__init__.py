"""napari-skinseg: skin-lesion segmentation in dermoscopy images with a U-Net.

The core (this package minus ``_widgets``) never imports Qt or napari.
"""

__version__ = "0.1.0"

from .config import PostprocessConfig, TrainConfig
from .metrics import image_metrics, mean_metrics
from .synthetic import make_synthetic_lesion

__all__ = ["TrainConfig", "PostprocessConfig", "image_metrics", "mean_metrics",
           "make_synthetic_lesion", "__version__"]
