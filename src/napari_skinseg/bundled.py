"""The model shipped inside the package (trained on ISIC 2018 Task 1 and HAM10000; see MODEL_CARD.md)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

BUNDLED_MODEL_NAME = "skinseg_isic2018_ham10000.pt"


class BundledModelMissing(FileNotFoundError):
    """This installation carries no bundled model."""


def bundled_model_path() -> Path:
    """Path of the bundled model file; raises :class:`BundledModelMissing` with advice."""
    path = Path(str(resources.files("napari_skinseg") / "weights" / BUNDLED_MODEL_NAME))
    if not path.is_file():
        raise BundledModelMissing(
            "this installation of napari-skinseg has no bundled model yet; pass a model file "
            "(--model FILE) or train one with `skinseg train IMAGES_DIR MASKS_DIR --out model.pt`")
    return path


def has_bundled_model() -> bool:
    try:
        bundled_model_path()
    except BundledModelMissing:
        return False
    return True


# The click-to-fix network (napari_skinseg.click_model) shipped beside the segmentation model;
# without it, click-to-fix falls back to the random walker (napari_skinseg.click_refine).
BUNDLED_CLICK_MODEL_NAME = "skinseg_click_isic2018.pt"


def bundled_click_model_path() -> Path | None:
    """Path of the bundled click-to-fix model, or None when this installation has none."""
    path = Path(str(resources.files("napari_skinseg") / "weights" / BUNDLED_CLICK_MODEL_NAME))
    return path if path.is_file() else None
