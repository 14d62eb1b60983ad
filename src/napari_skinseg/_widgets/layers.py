"""Reading napari layers as the core's arrays, and showing segmentations as layers."""

from __future__ import annotations

import re
import zlib

import numpy as np
from napari.layers import Image, Labels

from ..config import PostprocessConfig
from ..image_io import to_rgb_uint8
from ..postprocess import postprocess

PREDICTION_SUFFIX = " prediction"
LABEL_SUFFIXES = (PREDICTION_SUFFIX, " mask", " labels", "_segmentation", " segmentation")
PROBABILITY_KEY = "skinseg_probability"
AUTO_HASH_KEY = "skinseg_auto_hash"


def image_array(layer: Image) -> np.ndarray:
    """A 2D image layer as H x W x 3 uint8; a clear error for stacks and multiscale data."""
    data = layer.data[0] if layer.multiscale else layer.data
    data = np.asarray(data)
    if data.ndim != (3 if layer.rgb else 2):
        raise ValueError(f"layer '{layer.name}' is not a 2D image (shape {data.shape}); "
                         "napari-skinseg segments single RGB or grayscale images")
    return to_rgb_uint8(data, name=layer.name)


def labels_array(layer: Labels) -> np.ndarray:
    data = np.asarray(layer.data)
    if data.ndim != 2:
        raise ValueError(f"labels layer '{layer.name}' is not 2D (shape {data.shape})")
    return data


def image_for_labels(viewer, labels: Labels) -> Image:
    """The image a labels layer belongs to: by name (`<image> prediction`, `<image> mask`, ...),
    else the only 2D image of the same height and width."""
    images = [layer for layer in viewer.layers if isinstance(layer, Image)]
    for suffix in LABEL_SUFFIXES:
        if labels.name.endswith(suffix):
            match = [im for im in images if im.name == labels.name[: -len(suffix)]]
            if match:
                return match[0]
    shape = np.shape(labels.data)[-2:]
    same = [im for im in images if (im.data.shape[:2] if im.rgb else im.data.shape[-2:]) == shape]
    if len(same) == 1:
        return same[0]
    raise ValueError(f"cannot tell which image belongs to labels layer '{labels.name}': name it "
                     f"'<image name> mask' or keep only one image of its size open")


def image_id(layer: Image) -> str:
    """A file-name-safe id: the source file's stem, else the layer name."""
    source = layer.metadata.get("source_path") or getattr(layer.source, "path", None)
    stem = str(source).replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0] if source else layer.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"


def mask_hash(mask: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())


def show_prediction(viewer, image_name: str, probability: np.ndarray, post: PostprocessConfig,
                    with_probability: bool = False) -> Labels:
    """Add or replace the editable `<image> prediction` labels layer (lesion = 1)."""
    mask = postprocess(probability, post).astype(np.uint8)
    name = image_name + PREDICTION_SUFFIX
    metadata = {PROBABILITY_KEY: probability, AUTO_HASH_KEY: mask_hash(mask)}
    if name in viewer.layers and isinstance(viewer.layers[name], Labels):
        layer = viewer.layers[name]
        layer.data = mask
        layer.metadata.update(metadata)
    else:
        layer = viewer.add_labels(mask, name=name, opacity=0.45, metadata=metadata)
        if image_name in viewer.layers:
            layer.scale = viewer.layers[image_name].scale[-2:]
            layer.translate = viewer.layers[image_name].translate[-2:]
    if with_probability:
        prob_name = image_name + " probability"
        if prob_name in viewer.layers:
            viewer.layers[prob_name].data = probability
        else:
            viewer.add_image(probability, name=prob_name, colormap="magma", opacity=0.5,
                             contrast_limits=(0, 1), visible=False)
    return layer


def reapply_postprocess(layer: Labels, post: PostprocessConfig) -> bool:
    """Re-threshold a prediction layer from its stored probabilities, unless the user edited it.

    Returns False (and changes nothing) for layers with manual corrections.
    """
    probability = layer.metadata.get(PROBABILITY_KEY)
    if probability is None:
        return False
    if mask_hash(layer.data) != layer.metadata.get(AUTO_HASH_KEY):
        return False
    mask = postprocess(probability, post).astype(np.uint8)
    layer.metadata[AUTO_HASH_KEY] = mask_hash(mask)
    layer.data = mask
    return True
