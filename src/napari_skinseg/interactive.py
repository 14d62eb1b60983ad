"""Click-to-fix: correct a predicted lesion mask with a few clicks and boxes.

    from napari_skinseg.interactive import ClickSession
    s = ClickSession(image)                 # bundled model; or model="model.pt" / a Segmenter
    s.click(120, 200, lesion=True)          # "lesion missed here" -> the updated mask
    s.click(40, 30, lesion=False)           # "this is skin"
    s.box(100, 150, 260, 330)               # re-segment inside a box (runs the network once)
    s.undo()

Each click changes the mask only in a window around it (see :mod:`napari_skinseg.click_refine`);
the stored probability map is the model's, so clicks need no network and cost tens of ms. Pass
``probability=`` (an H x W map, e.g. from the model worker) to use a session without torch.

With a click-to-fix network (:mod:`napari_skinseg.click_model`; the package ships one, used by
default when the session runs the segmentation model itself) each click runs that network on the
image, the current mask and all clicks so far instead; its answer is taken only where it changed
the mask in regions that reach the click (``reach``, a share of the image's longer side), so a
click never alters a part of the mask far from it. Sessions given ``probability=`` stay torch-free
and use the random walker unless ``click_model=`` names a network; a caller that runs the network
elsewhere (napari's model worker) passes its answer to :meth:`ClickSession.apply_proposal`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .click_refine import Click, RefineParams, refine_click
from .config import PostprocessConfig
from .image_io import to_rgb_uint8
from .postprocess import postprocess


# A lesion click takes the network's uncertain pixels as lesion too (0.35): chosen on the
# calibration half of the held-out ISIC images (NoC@90 1.72 against 1.85 at 0.5; 0.25/0.75 and
# 0.35/0.65 were no better), benchmarks/click_to_fix.py measures the other half.
LESION_CLICK_THRESHOLD, SKIN_CLICK_THRESHOLD = 0.35, 0.5


def proposal_threshold(lesion: bool) -> float:
    """Probability above which a click-to-fix network's pixel counts as lesion for this click."""
    return LESION_CLICK_THRESHOLD if lesion else SKIN_CLICK_THRESHOLD


def keep_changes_near(mask: np.ndarray, proposal: np.ndarray, point: tuple[int, int],
                      reach: float) -> np.ndarray:
    """``mask`` with the connected changes of ``proposal`` that come within ``reach`` pixels of
    ``point``; changes farther away are dropped."""
    from scipy import ndimage

    changed = mask != proposal
    if not changed.any():
        return mask.copy()
    labels, n = ndimage.label(changed)
    y, x = point
    h, w = mask.shape
    r = int(np.ceil(reach))
    y0, y1, x0, x1 = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
    yy, xx = np.ogrid[y0:y1, x0:x1]
    near = (yy - y) ** 2 + (xx - x) ** 2 <= reach ** 2
    keep = np.unique(labels[y0:y1, x0:x1][near & (labels[y0:y1, x0:x1] > 0)])
    out = mask.copy()
    accepted = np.isin(labels, keep)
    out[accepted] = proposal[accepted]
    return out


class ClickSession:
    """One image being corrected; ``mask`` is the current boolean mask at the image's size."""

    def __init__(self, image: np.ndarray, model: Any = None, *,
                 probability: np.ndarray | None = None, post: PostprocessConfig | None = None,
                 params: RefineParams | None = None, device: str = "cpu",
                 click_model: Any = "auto", reach: float = 0.15):
        self.image = to_rgb_uint8(image)
        self.reach = reach
        self._refiner = None
        if isinstance(click_model, str) and click_model == "auto":
            from .bundled import bundled_click_model_path

            # a session that runs the network anyway uses the click network too
            click_model = bundled_click_model_path() if probability is None else None
        if isinstance(click_model, (str, os.PathLike)):
            from .engines import make_click_refiner

            click_model = make_click_refiner(click_model, device=device)
        self._refiner = click_model  # a ClickRefiner / OnnxClickRefiner, or None
        self.params = params or RefineParams()
        self.post = post
        self._segmenter = None
        self._model = model
        self._device = device
        if probability is None:
            probability = self.segmenter.predict_probability(self.image)
        probability = np.asarray(probability, dtype=np.float32)
        if probability.shape != self.image.shape[:2]:
            raise ValueError(f"probability is {probability.shape} but the image is "
                             f"{self.image.shape[:2]}")
        self.probability = probability
        self.mask = postprocess(probability, post)
        self.clicks: list[Click] = []
        self._history: list[tuple[np.ndarray, np.ndarray, list[Click]]] = []

    @property
    def segmenter(self):
        """The network, loaded on first need (the bundled model unless ``model`` was given)."""
        if self._segmenter is None:
            from .prediction import Segmenter

            if isinstance(self._model, Segmenter):
                self._segmenter = self._model
            elif self._model is None or isinstance(self._model, (str, os.PathLike)):
                self._segmenter = Segmenter.from_file(self._model, device=self._device)
            else:  # a SkinSegModel
                self._segmenter = Segmenter(self._model, device=self._device)
        return self._segmenter

    def _push(self) -> None:
        self._history.append((self.mask.copy(), self.probability, list(self.clicks)))

    def click(self, y: int, x: int, lesion: bool = True) -> np.ndarray:
        """Add a positive (``lesion=True``) or negative click at pixel (y, x); returns the mask."""
        c = self._check(y, x, lesion)
        if self._refiner is not None:
            probability = self._refiner.probability(self.image, self.mask,
                                                    self.clicks_with(y, x, lesion))
            return self.apply_proposal(y, x, lesion, probability > proposal_threshold(lesion))
        self._push()
        self.mask = refine_click(self.image, self.probability, self.mask, c, self.clicks,
                                 self.params)
        self.clicks.append(c)
        return self.mask

    @property
    def uses_network(self) -> bool:
        """Whether clicks run a click-to-fix network here (else the random walker)."""
        return self._refiner is not None

    def _check(self, y: float, x: float, lesion: bool) -> Click:
        """The click at the pixel under (y, x): pixel i spans i - 0.5 to i + 0.5, as in napari
        (a point at 10.7 is in pixel 11, not 10)."""
        h, w = self.mask.shape
        with np.errstate(invalid="ignore"):
            py, px = np.round(float(y)), np.round(float(x))
        if not (0 <= py < h and 0 <= px < w):
            raise ValueError(f"click ({y}, {x}) is outside the {h} x {w} image")
        return Click(int(py), int(px), bool(lesion))

    def clicks_with(self, y: int, x: int, lesion: bool = True) -> list[tuple[int, int, bool]]:
        """The clicks so far plus this one, as a click-to-fix network takes them."""
        c = self._check(y, x, lesion)
        return [(k.y, k.x, k.lesion) for k in (*self.clicks, c)]

    def apply_proposal(self, y: int, x: int, lesion: bool, proposal: np.ndarray) -> np.ndarray:
        """Take a click-to-fix network's mask for the click at (y, x) (computed here or by the
        model worker from :meth:`clicks_with` and :attr:`mask`): only its changes in the click's
        direction (added lesion for a lesion click, removed for a skin click) that reach the
        click are kept; the click becomes part of the session (undo removes it)."""
        c = self._check(y, x, lesion)
        proposal = np.array(proposal, dtype=bool)
        if proposal.shape != self.mask.shape:
            raise ValueError(f"the proposal is {proposal.shape}, not {self.mask.shape}")
        self._push()
        # A lesion click only adds lesion, a skin click only removes it: the network's other
        # changes are not what the person asked for (they once erased half a lesion).
        proposal = proposal | self.mask if c.lesion else proposal & self.mask
        proposal[c.y, c.x] = c.lesion  # the person's word at the clicked pixel is final
        self.mask = keep_changes_near(self.mask, proposal, (c.y, c.x),
                                      self.reach * max(self.mask.shape))
        self.clicks.append(c)
        return self.mask

    def box(self, y0: int, x0: int, y1: int, x1: int, margin: float = 0.1) -> np.ndarray:
        """Re-segment inside the box: the crop (plus ``margin``) goes through the network at its
        working size, and its largest lesion inside the box replaces the mask there."""
        crop, inner = self.box_regions(y0, x0, y1, x1, margin)
        cy0, cy1, cx0, cx1 = crop
        return self.apply_box(crop, inner,
                              self.segmenter.predict_probability(self.image[cy0:cy1, cx0:cx1]))

    def box_regions(self, y0: int, x0: int, y1: int, x1: int, margin: float = 0.1
                    ) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
        """``(crop, box)`` as (y0, y1, x0, x1): the crop the network sees (the box plus
        ``margin``, inside the image) and the box itself, clipped to the image."""
        h, w = self.mask.shape
        y0, y1 = sorted((int(np.clip(y0, 0, h)), int(np.clip(y1, 0, h))))
        x0, x1 = sorted((int(np.clip(x0, 0, w)), int(np.clip(x1, 0, w))))
        if y1 - y0 < 2 or x1 - x0 < 2:
            raise ValueError("the box must be at least 2 x 2 pixels inside the image")
        my, mx = int((y1 - y0) * margin), int((x1 - x0) * margin)
        crop = (max(0, y0 - my), min(h, y1 + my), max(0, x0 - mx), min(w, x1 + mx))
        return crop, (y0, y1, x0, x1)

    def apply_box(self, crop: tuple[int, int, int, int], box: tuple[int, int, int, int],
                  crop_probability: np.ndarray) -> np.ndarray:
        """Put the network's probabilities for ``crop`` (computed anywhere, e.g. by the model
        worker) into the box; the mask changes inside the box only."""
        cy0, cy1, cx0, cx1 = crop
        y0, y1, x0, x1 = box
        if np.shape(crop_probability) != (cy1 - cy0, cx1 - cx0):
            raise ValueError(f"the crop's probabilities are {np.shape(crop_probability)}, "
                             f"not {(cy1 - cy0, cx1 - cx0)}")
        self._push()
        prob = self.probability.copy()
        inner = np.asarray(crop_probability, dtype=np.float32)[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]
        prob[y0:y1, x0:x1] = inner
        self.probability = prob
        self.mask = self.mask.copy()
        self.mask[y0:y1, x0:x1] = postprocess(inner, self.post)
        return self.mask

    def undo(self) -> np.ndarray:
        """Go back one click or box; returns the mask (unchanged when nothing is left to undo)."""
        if self._history:
            self.mask, self.probability, self.clicks = self._history.pop()
        return self.mask

    @property
    def can_undo(self) -> bool:
        return bool(self._history)
