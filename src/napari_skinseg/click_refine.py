"""Refining a lesion mask around one click, without the network (torch-free, fast).

A click says "this is lesion" (positive) or "this is skin" (negative). The mask changes only in a
square window around the click, so a click far from an error never touches the rest of the mask.
Inside the window a random walker (scikit-image) decides each pixel from seeds, on features made
of the image's colour and the model's probability:

- the click itself (a small disk) and earlier clicks in the window seed their class;
- the window's outline seeds what the current mask says there, so the change stays inside;
- the walker runs on the window shrunk to at most ``grid`` pixels a side (speed), and its result
  is enlarged back; only the connected region under the click changes (added for a positive click,
  removed for a negative one).

The window's half-side grows with the distance from the click to the mask's outline (a click deep
inside a missed region or a false lesion gets a larger window), between ``min_window`` and
``max_window`` times the image's longer side.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.color import rgb2lab
from skimage.segmentation import random_walker


@dataclass
class RefineParams:
    window_factor: float = 5.0   # half-window = factor x distance from click to the mask outline
    min_window: float = 0.06     # of the image's longer side
    max_window: float = 0.35
    grid: int = 72               # the walker's grid, pixels per side at most
    beta: float = 90.0           # random-walker edge sensitivity
    prob_weight: float = 2.0     # weight of the model's probability against colour
    click_radius: float = 0.02   # seed disk radius, as a share of the window side
    outline_confidence: float = 0.0  # >0: outline pixels seed only where |p - 0.5| > this


@dataclass(frozen=True)
class Click:
    y: int
    x: int
    lesion: bool


def window_around(shape: tuple[int, int], y: int, x: int, mask: np.ndarray,
                  params: RefineParams) -> tuple[slice, slice]:
    """The square window (clipped to the image) in which a click at (y, x) may change the mask."""
    h, w = shape
    side = max(h, w)
    inside = bool(mask[y, x])
    # Distance from the click to the mask's outline, measured in a local box only (fast).
    r = int(params.max_window * side / params.window_factor) + 2
    y0, y1, x0, x1 = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
    local = mask[y0:y1, x0:x1] if inside else ~mask[y0:y1, x0:x1]
    padded = np.pad(local, 1, constant_values=True)  # the box edge is not an outline
    dist = ndimage.distance_transform_edt(padded)[y - y0 + 1, x - x0 + 1]
    half = int(np.clip(params.window_factor * dist, params.min_window * side,
                       params.max_window * side))
    return slice(max(0, y - half), min(h, y + half + 1)), slice(max(0, x - half), min(w, x + half + 1))


def _shrink(array: np.ndarray, shape: tuple[int, int], resample) -> np.ndarray:
    h, w = shape
    if array.shape[:2] == (h, w):
        return array
    if array.ndim == 3:
        return np.stack([_shrink(array[..., c], shape, resample) for c in range(array.shape[2])], -1)
    return np.asarray(Image.fromarray(array.astype(np.float32)).resize((w, h), resample))


def refine_click(image: np.ndarray, probability: np.ndarray, mask: np.ndarray,
                 click: Click, earlier: list[Click] = (), params: RefineParams | None = None
                 ) -> np.ndarray:
    """The mask after ``click``; ``earlier`` clicks inside the window are kept as seeds."""
    params = params or RefineParams()
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    y, x = int(np.clip(click.y, 0, h - 1)), int(np.clip(click.x, 0, w - 1))
    wy, wx = window_around((h, w), y, x, mask, params)
    win_mask = mask[wy, wx]
    wh, ww = win_mask.shape
    scale = min(1.0, params.grid / max(wh, ww))
    gh, gw = max(4, round(wh * scale)), max(4, round(ww * scale))

    lab = rgb2lab(_shrink(np.asarray(image[wy, wx], dtype=np.float32) / 255.0, (gh, gw),
                          Image.BILINEAR).clip(0, 1))
    prob = _shrink(np.asarray(probability[wy, wx], dtype=np.float32), (gh, gw), Image.BILINEAR)
    colour = (lab - lab.reshape(-1, 3).mean(0)) / (lab.reshape(-1, 3).std(0).mean() + 1e-3)
    features = np.concatenate([colour, params.prob_weight * 3 * prob[..., None]], axis=-1)

    small_mask = _shrink(win_mask.astype(np.float32), (gh, gw), Image.BILINEAR) > 0.5
    seeds = np.zeros((gh, gw), dtype=np.int32)
    outline = np.ones((gh, gw), dtype=bool)
    outline[1:-1, 1:-1] = False
    seeds[outline] = np.where(small_mask[outline], 2, 1)
    if params.outline_confidence > 0:
        seeds[outline & (np.abs(prob - 0.5) <= params.outline_confidence)] = 0
    radius = max(1.0, params.click_radius * max(gh, gw))
    yy, xx = np.mgrid[0:gh, 0:gw]
    for c in [*earlier, click]:
        cy, cx = (c.y - wy.start) * scale, (c.x - wx.start) * scale
        if -radius <= cy < gh + radius and -radius <= cx < gw + radius:
            seeds[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = 2 if c.lesion else 1
    cy, cx = min(gh - 1, int((y - wy.start) * scale)), min(gw - 1, int((x - wx.start) * scale))
    seeds[cy, cx] = 2 if click.lesion else 1

    if (seeds == 1).any() and (seeds == 2).any():
        with warnings.catch_warnings():  # "probability slightly outside [0, 1]": harmless here
            warnings.simplefilter("ignore", UserWarning)
            p_lesion = random_walker(features, seeds, beta=params.beta, mode="cg_j", tol=1e-3,
                                     return_full_prob=True, channel_axis=-1)[1]
    else:  # every seed says the same: the whole window takes the click's class
        p_lesion = np.full((gh, gw), 1.0 if click.lesion else 0.0)
    full = _shrink(p_lesion.astype(np.float32), (wh, ww), Image.BILINEAR) > 0.5
    target = full if click.lesion else ~full
    labels, _ = ndimage.label(target)
    here = labels[y - wy.start, x - wx.start]
    region = labels == here if here else np.zeros_like(target)
    if not here:  # the walker disagreed at the click itself: honour the click with a small disk
        r = max(1.0, params.click_radius * max(wh, ww))
        region = (np.mgrid[0:wh, 0:ww][0] - (y - wy.start)) ** 2 + \
                 (np.mgrid[0:wh, 0:ww][1] - (x - wx.start)) ** 2 <= r ** 2
    out = mask.copy()
    out[wy, wx] = (win_mask | region) if click.lesion else (win_mask & ~region)
    return out
