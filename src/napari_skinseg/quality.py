"""Predicted quality of a mask: the Dice it is expected to have against an expert's mask.

Torch-free, so napari's side and the review writers can use it. The inputs are what the model
gives cheaply (:func:`napari_skinseg.tta.predict_views`): the lesion probability under the eight
flips/rotations of the image, at the model's working size, and the mask being judged.

:func:`quality_features` turns them into a few numbers (agreement between the views, uncertainty
along the border, shape cues); a :class:`QualityModel` maps those to a predicted Dice with a
ridge regression on the logit of Dice followed by a monotone (isotonic) calibration, both fitted
on images the segmentation model never trained on and stored in the model file's metadata
(``ModelMetadata.quality``). A model file without a calibration falls back to the *uncalibrated*
score: the mean Dice between the mask and each test-time view (``tta_dice``), which ranks images
reasonably but is optimistic as a Dice estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .postprocess import postprocess

# The features a calibration may use; the order is the order of the stored coefficients.
FEATURE_NAMES = (
    "tta_dice",            # mean Dice between the mask and each view's mask (the plain score)
    "tta_dice_min",        # worst of those
    "soft_dice",           # Dice between the mask and the mean probability (soft)
    "border_entropy",      # mean binary entropy of the mean probability along the mask border
    "uncertain_fraction",  # pixels with mean probability in 0.2..0.8, per mask pixel
    "view_std",            # mean standard deviation across views, near the mask
    "inside_confidence",   # mean probability inside the mask
    "outside_lesion",      # probability mass outside the mask, per mask pixel
    "components",          # number of thresholded components (before keeping the largest)
    "dropped_fraction",    # thresholded area that post-processing dropped, per mask pixel
    "area_fraction",       # mask area / image area
    "edge_fraction",       # share of the image border covered by the mask
    "solidity",            # mask area / convex hull area
    "empty",               # 1 when the mask is empty
)
# The features a new calibration uses: the agreement and uncertainty cues. The shape cues
# (components, dropped_fraction, area_fraction, edge_fraction, empty) made the fit worse in
# 10-fold cross-validation on the calibration images (ISIC Spearman 0.705 -> 0.738, AUROC for
# Dice < 0.80 0.859 -> 0.905 without them; benchmarks/review_queue.py reports it).
CALIBRATION_FEATURES = ("tta_dice", "tta_dice_min", "soft_dice", "border_entropy",
                        "uncertain_fraction", "view_std", "inside_confidence", "outside_lesion",
                        "solidity")
UNCALIBRATED = "uncalibrated: mean Dice between the mask and its flip/rotation test-time views"


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.count_nonzero(a & b)) / s


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def _solidity(mask: np.ndarray) -> float:
    if not mask.any():
        return 0.0
    from skimage.morphology import convex_hull_image

    hull = convex_hull_image(mask)
    return float(mask.sum() / max(hull.sum(), 1))


def quality_features(views: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Features of one image from its test-time views ``(V, S, S)`` (view 0 = plain prediction)
    and the mask under review at the same size (default: the post-processed plain prediction)."""
    views = np.asarray(views, dtype=np.float32)
    if views.ndim != 3 or len(views) < 2:
        raise ValueError(f"need at least two views as (V, H, W), got shape {views.shape}")
    mask = postprocess(views[0]) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != views.shape[1:]:
        raise ValueError(f"mask is {mask.shape} but the views are {views.shape[1:]}")
    mean = views.mean(0)
    area = int(mask.sum())
    norm = max(area, 1)
    view_masks = views > 0.5
    dices = [_dice(mask, v) for v in view_masks[1:]]
    ring = ndimage.binary_dilation(mask, iterations=3) & ~ndimage.binary_erosion(mask, iterations=3)
    near = ndimage.binary_dilation(mask, iterations=8)
    raw = views[0] > 0.5
    labels, n_comp = ndimage.label(raw)
    sizes = np.bincount(labels.ravel())[1:] if n_comp else np.zeros(0)
    n_big = int((sizes >= 0.001 * raw.size).sum())
    edge = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    return {
        "tta_dice": float(np.mean(dices)),
        "tta_dice_min": float(np.min(dices)),
        "soft_dice": float(2 * (mean * mask).sum() / (mean.sum() + area + 1e-6)),
        "border_entropy": float(_entropy(mean[ring]).mean()) if ring.any() else 1.0,
        "uncertain_fraction": float(((mean > 0.2) & (mean < 0.8)).sum() / norm),
        "view_std": float(views.std(0)[near].mean()) if near.any() else 0.0,
        "inside_confidence": float(mean[mask].mean()) if area else 0.0,
        "outside_lesion": float(mean[~mask].sum() / norm),
        "components": float(n_big),
        "dropped_fraction": float((raw & ~mask).sum() / norm),
        "area_fraction": float(area / mask.size),
        "edge_fraction": float(edge.mean()),
        "solidity": _solidity(mask),
        "empty": float(area == 0),
    }


def _design(features: list[dict[str, float]] | dict[str, float], names) -> np.ndarray:
    """The regression's inputs: features with a few monotone transforms, one row per image."""
    rows = [features] if isinstance(features, dict) else features
    cols = []
    for name in names:
        x = np.array([r[name] for r in rows], dtype=np.float64)
        if name in ("tta_dice", "tta_dice_min", "soft_dice", "inside_confidence", "solidity"):
            x = np.log(np.clip(1 - x, 1e-3, 1))  # spread the values close to 1
        elif name in ("uncertain_fraction", "outside_lesion", "dropped_fraction", "components"):
            x = np.log1p(np.clip(x, 0, 1e3))
        cols.append(x)
    return np.stack(cols, axis=1)


def _logit(d: np.ndarray) -> np.ndarray:
    d = np.clip(d, 0.02, 0.995)
    return np.log(d / (1 - d))


def _isotonic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool-adjacent-violators: knots (x, y) of the increasing step fit of y on x."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    blocks: list[list[float]] = []  # [sum_y, count, x_min, x_max]
    for xi, yi in zip(xs, ys):
        blocks.append([yi, 1, xi, xi])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            s, c, _, x1 = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
            blocks[-1][3] = x1
    kx = np.array([(b[2] + b[3]) / 2 for b in blocks])
    ky = np.array([b[0] / b[1] for b in blocks])
    return kx, ky


@dataclass
class QualityModel:
    """Features -> predicted Dice. ``coef``/``intercept`` act on standardised design columns;
    ``knots_x``/``knots_y`` are the monotone calibration from the linear score to Dice."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    knots_x: np.ndarray
    knots_y: np.ndarray
    info: dict

    def score(self, features: list[dict[str, float]] | dict[str, float]) -> np.ndarray:
        """The linear score (higher = better mask), before calibration."""
        z = (_design(features, self.features) - self.mean) / self.scale
        return z @ self.coef + self.intercept

    def predict(self, features: list[dict[str, float]] | dict[str, float]) -> np.ndarray:
        """Predicted Dice in 0..1 for each feature row. Between knots the calibration is linear,
        and a tiny share of the linear score breaks ties, so ranking never collapses to steps."""
        s = self.score(features)
        cal = np.interp(s, self.knots_x, self.knots_y)
        tie = 1e-3 * (1 / (1 + np.exp(-s)) - 0.5)
        return np.clip(cal + tie, 0.0, 1.0)

    @classmethod
    def fit(cls, features: list[dict[str, float]], dice: np.ndarray,
            names: tuple[str, ...] = CALIBRATION_FEATURES, ridge: float = 30.0,
            knots: int = 16, info: dict | None = None) -> QualityModel:
        """Ridge regression of logit(Dice) on the standardised features, then isotonic
        calibration of the linear score against Dice (both on the given images)."""
        X = _design(features, names)
        mean, scale = X.mean(0), X.std(0)
        scale[scale < 1e-9] = 1.0
        Z = (X - mean) / scale
        y = _logit(np.asarray(dice, dtype=np.float64))
        n = len(y)
        A = Z.T @ Z + ridge * np.eye(Z.shape[1])
        coef = np.linalg.solve(A, Z.T @ (y - y.mean()))
        intercept = float(y.mean())
        s = Z @ coef + intercept
        kx, ky = _isotonic(s, np.asarray(dice, dtype=np.float64))
        # Keep at most `knots` points of the step fit, at quantiles of the score: a smoother,
        # smaller calibration in which no knot stands for a single image.
        qx = np.unique(np.quantile(s, np.linspace(0, 1, knots)))
        kx, ky = qx, np.interp(qx, kx, ky)
        return cls(tuple(names), mean, scale, coef, intercept, kx, ky,
                   {"n_fit": n, "ridge": ridge, "knots": len(kx), **(info or {})})

    def to_dict(self) -> dict:
        return {"kind": "ridge-logit+isotonic", "features": list(self.features),
                "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept,
                "knots_x": self.knots_x.tolist(), "knots_y": self.knots_y.tolist(),
                "info": self.info}

    @classmethod
    def from_dict(cls, d: dict) -> QualityModel:
        if d.get("kind") != "ridge-logit+isotonic":
            raise ValueError(f"unknown quality calibration {d.get('kind')!r}")
        arr = lambda k: np.asarray(d[k], dtype=np.float64)
        return cls(tuple(d["features"]), arr("mean"), arr("scale"), arr("coef"),
                   float(d["intercept"]), arr("knots_x"), arr("knots_y"), dict(d.get("info", {})))


def predicted_dice(features: dict[str, float], calibration: dict | None) -> tuple[float, bool]:
    """``(predicted Dice, calibrated?)`` for one image; without a calibration (an empty or
    missing ``ModelMetadata.quality``) the uncalibrated score ``tta_dice`` is returned.

    An empty mask is predicted Dice 0: a dermoscopy image of a lesion data set shows a lesion,
    so a mask without one is wrong, and the first to review. The views' agreement would call it
    good (no view finds anything either), and the calibration never met one (none of its 559
    images got an empty mask)."""
    if features.get("empty"):
        return 0.0, bool(calibration)
    if calibration:
        return float(QualityModel.from_dict(calibration).predict(features)[0]), True
    return float(features["tta_dice"]), False
