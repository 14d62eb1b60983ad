"""Reading napari layers as the core's arrays, and showing segmentations as layers.

A prediction is an editable Labels layer ``<image> prediction`` (lesion = 1) that remembers the
probabilities it came from and a hash of the mask as the network made it, so the widgets can
tell an untouched prediction from one a person corrected (and one corrected since it was saved).
"""

from __future__ import annotations

import contextlib
import zlib
from typing import Callable

import numpy as np
from napari.layers import Image, Labels

from ..config import PostprocessConfig
from ..image_io import to_rgb_uint8
from ..pairs import safe_id
from ..postprocess import postprocess

PREDICTION_SUFFIX = " prediction"
PROBABILITY_SUFFIX = " probability"
LABEL_SUFFIXES = (PREDICTION_SUFFIX, " mask", " labels", "_segmentation", " segmentation")
PROBABILITY_KEY = "skinseg_probability"
AUTO_HASH_KEY = "skinseg_auto_hash"
SAVED_HASH_KEY = "skinseg_saved_hash"
# The image layer a layer was made for (its napari unique_id, as text): renaming either layer,
# or closing the image while another of its size is open, never pairs a mask with another image.
IMAGE_KEY = "skinseg_image"
# Prediction and ground truth in different colours, so both can be shown at once.
PREDICTION_COLOURS = {None: "transparent", 0: "transparent", 1: "magenta"}


def layer_key(layer) -> int:
    """The identity of the layer itself. napari hands a plugin a new proxy object each time it
    asks for a layer (``viewer.layers.selection.active``, ``viewer.layers[name]``), so ``id()``
    of what the plugin holds differs from one access to the next; the proxy's ``__wrapped__``
    is the layer."""
    return id(getattr(layer, "__wrapped__", layer))


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


def made_for(image: Image) -> dict:
    """The metadata that ties a layer made for ``image`` (prediction, probability, clicks) to it."""
    return {IMAGE_KEY: str(image.unique_id)}


def layers_made_for(viewer, image_uid: str) -> list:
    """The image whose unique id is ``image_uid`` and every layer made for it, whatever their
    names are now."""
    return [layer for layer in viewer.layers if str(layer.unique_id) == image_uid
            or layer.metadata.get(IMAGE_KEY) == image_uid]


def image_for_labels(viewer, labels: Labels) -> Image:
    """The image a labels layer belongs to: the one it was made for, else by name
    (`<image> prediction`, `<image> mask`, ...), else the only 2D image of the same height and
    width (never for a layer made for an image that is closed: that would be a guess)."""
    images = [layer for layer in viewer.layers if isinstance(layer, Image)
              and not layer.name.endswith(PROBABILITY_SUFFIX)]
    image_uid = labels.metadata.get(IMAGE_KEY)
    match = [im for im in images if image_uid is not None and str(im.unique_id) == image_uid]
    if match:
        return match[0]
    for suffix in LABEL_SUFFIXES:
        if labels.name.endswith(suffix):
            match = [im for im in images if im.name == labels.name[: -len(suffix)]]
            if match:
                return match[0]
    if image_uid is not None:
        raise ValueError(f"the image '{labels.name}' was made for is closed: open it again under "
                         "its name, or name this layer '<image name> mask'")
    shape = np.shape(labels.data)[-2:]
    same = [im for im in images if (im.data.shape[:2] if im.rgb else im.data.shape[-2:]) == shape]
    if len(same) == 1:
        return same[0]
    raise ValueError(f"cannot tell which image belongs to labels layer '{labels.name}': name it "
                     f"'<image name> mask' or keep only one image of its size open")


def labels_for_image(viewer, image: Image) -> Labels | None:
    """The prediction (else mask/labels) layer drawn over ``image``, if any: by name, else the
    one made for it (renamed since)."""
    image_uid = str(image.unique_id)

    def belongs(labels) -> bool:  # not a layer made for another image that is open
        try:
            return str(image_for_labels(viewer, labels).unique_id) == image_uid
        except ValueError:
            return False

    for suffix in LABEL_SUFFIXES:
        name = image.name + suffix
        if name in viewer.layers and isinstance(viewer.layers[name], Labels) \
                and belongs(viewer.layers[name]):
            return viewer.layers[name]
    return next((layer for layer in viewer.layers if isinstance(layer, Labels)
                 and layer.metadata.get(IMAGE_KEY) == image_uid), None)


def image_id(layer: Image) -> str:
    """A file-name-safe id: the source file's stem, else the layer name."""
    source = layer.metadata.get("source_path") or getattr(layer.source, "path", None)
    stem = str(source).replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0] if source else layer.name
    return safe_id(stem)


def mask_hash(mask: np.ndarray) -> int:
    """Which pixels are lesion, as a checksum (bits, not bytes: 20 ms for 48 megapixels, not
    180, on napari's main thread after every brush stroke)."""
    mask = np.asarray(mask)
    return zlib.crc32(np.packbits(mask != 0), zlib.crc32(repr(mask.shape).encode()))


def edited_by_hand(layer: Labels) -> bool:
    """True when a prediction layer differs from the mask the network made."""
    auto = layer.metadata.get(AUTO_HASH_KEY)
    return auto is not None and mask_hash(layer.data) != auto


def unsaved_corrections(layer: Labels) -> bool:
    """Corrected by hand and not saved since (saving an untouched prediction is not needed to
    keep anything, so it never counts as unsaved work)."""
    return edited_by_hand(layer) and mask_hash(layer.data) != layer.metadata.get(SAVED_HASH_KEY)


def mark_saved(layer: Labels) -> None:
    layer.metadata[SAVED_HASH_KEY] = mask_hash(layer.data)


def show_prediction(viewer, image_name: str, probability: np.ndarray, post: PostprocessConfig,
                    with_probability: bool = False,
                    confirm_replace: Callable[[str], bool] | None = None) -> Labels | None:
    """Add or replace the editable `<image> prediction` labels layer (lesion = 1), on top.

    A prediction the person corrected by hand is replaced only if ``confirm_replace(message)``
    says yes; otherwise it is kept and None is returned.
    """
    mask = postprocess(probability, post).astype(np.uint8)
    name = image_name + PREDICTION_SUFFIX
    existing = viewer.layers[name] if name in viewer.layers else None
    if isinstance(existing, Labels) and edited_by_hand(existing):
        question = f"'{name}' holds corrections made by hand. Replace them with the new prediction?"
    elif isinstance(existing, Labels) and AUTO_HASH_KEY not in existing.metadata \
            and np.any(existing.data):  # not made here (e.g. opened from a file): maybe by hand
        question = f"'{name}' was not made by the network here. Replace it with the new prediction?"
    else:
        question = None
    if question is not None and (confirm_replace is None or not confirm_replace(question)):
        return None
    metadata = {PROBABILITY_KEY: probability, AUTO_HASH_KEY: mask_hash(mask)}
    image = viewer.layers[image_name] if image_name in viewer.layers else None
    # New layers sit where the image is (a pixel size, an offset, a rotation, ...)
    placement = {} if image is None else placement_of(image)
    tie = {} if image is None else made_for(image)
    metadata.update(tie)
    if with_probability:
        prob_name = image_name + PROBABILITY_SUFFIX
        if prob_name in viewer.layers:
            viewer.layers[prob_name].data = probability
            viewer.layers[prob_name].visible = True
        else:
            viewer.add_image(probability, name=prob_name, colormap="magma", opacity=0.5,
                             contrast_limits=(0, 1), blending="additive", metadata=tie,
                             **placement)
    if isinstance(existing, Labels):
        layer = existing
        layer.metadata.pop(SAVED_HASH_KEY, None)
        layer.data = mask
        layer.metadata.update(metadata)
    else:
        if existing is not None:  # a non-Labels layer took the name: keep it, use a fresh name
            name = _free_name(viewer, name)
        layer = viewer.add_labels(mask, name=name, opacity=0.5, metadata=metadata,
                                  colormap=PREDICTION_COLOURS, **placement)
    bring_to_top(viewer, layer)
    return layer


def placement_of(layer) -> dict:
    """The keyword arguments that put a new 2D layer exactly over ``layer``'s pixels: its scale
    and translation, and for a 2D layer also its rotation, shear and affine transform."""
    placed = dict(scale=layer.scale[-2:], translate=layer.translate[-2:])
    if layer.ndim == 2:
        placed.update(rotate=layer.rotate, shear=layer.shear, affine=layer.affine.affine_matrix)
    return placed


def batched(viewer):
    """One scene-graph update for several layers closed or opened together: otherwise napari
    cleans its scene graph after each removed layer, with a gc.collect that takes 0.2-0.3 s in
    a session with a few images open (napari < 0.6 has no batching: then one by one)."""
    batch = getattr(viewer.layers, "batched_update", None)
    return batch() if batch is not None else contextlib.nullcontext()


def bring_to_top(viewer, layer) -> None:
    """Move ``layer`` to the top of the layer list and make it the one being edited."""
    index = viewer.layers.index(layer)
    if index != len(viewer.layers) - 1:
        viewer.layers.move(index, len(viewer.layers))
    viewer.layers.selection.active = layer


def _free_name(viewer, name: str) -> str:
    i = 2
    while f"{name} {i}" in viewer.layers:
        i += 1
    return f"{name} {i}"


def reapply_postprocess(layer: Labels, post: PostprocessConfig) -> bool:
    """Re-threshold a prediction layer from its stored probabilities, unless the user edited it.

    Returns False (and changes nothing) for layers with manual corrections.
    """
    probability = layer.metadata.get(PROBABILITY_KEY)
    if probability is None or edited_by_hand(layer):
        return False
    mask = postprocess(probability, post).astype(np.uint8)
    layer.metadata[AUTO_HASH_KEY] = mask_hash(mask)
    layer.data = mask
    return True
