"""Two more levers for the review queue's quality estimate, judged the way its features were
chosen: 10-fold cross-validation (5 repeats) on the *calibration* images only
(``review_queue.cross_validated``), so the benchmark halves stay unseen.

    python benchmarks/review_features_tried.py --isic ../shared/data/isic2018 \
        --ham ../shared/data/ham10000 --cache /tmp/skinseg_views

1. Colour views: the plain prediction under five colour changes of the image (gamma 0.6 and 1.6,
   contrast 0.6, saturation 0.3, Shades of Gray), with the Dice between the mask and each (mean,
   worst), a soft Dice against their mean, and a soft Dice / uncertain fraction over all 13 views
   as features beside ``quality.CALIBRATION_FEATURES``. Five more network runs per image.
2. More calibration lesions: 1,000 more HAM10000 lesions (300-1,300 of the held-out order, which
   bundled model v2 never trained on and the review benchmark never measures on).

Also prints the plain score's AUROC on the ISIC calibration half. Writes
benchmarks/results/review_features_tried.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from common import save_json  # noqa: E402
from heldout import ham_reserve, ham_split, isic_split  # noqa: E402
from review_queue import auroc, cross_validated, table, views_for  # noqa: E402

import napari_skinseg.quality as quality  # noqa: E402
from napari_skinseg.engines import make_segmenter  # noqa: E402
from napari_skinseg.image_io import read_image, to_rgb_uint8  # noqa: E402
from napari_skinseg.postprocess import postprocess  # noqa: E402
from napari_skinseg.transforms import shades_of_gray  # noqa: E402

COLOUR_FEATURES = ("c_dice", "c_dice_min", "c_soft", "all_soft", "all_uncertain")


def colour_changes(rgb: np.ndarray) -> list[np.ndarray]:
    x = rgb.astype(np.float32) / 255
    mean, grey = x.mean((0, 1), keepdims=True), x.mean(2, keepdims=True)
    changed = [x ** 0.6, x ** 1.6, mean + 0.6 * (x - mean), grey + 0.3 * (x - grey)]
    return [np.clip(c * 255 + 0.5, 0, 255).astype(np.uint8) for c in changed] + [shades_of_gray(rgb)]


def colour_views(segmenter, pairs: list, cache: Path | None, name: str) -> list[np.ndarray]:
    path = cache / f"colour_{name}.npy" if cache else None
    store = np.load(path, allow_pickle=True).item() if path and path.exists() else {}
    for p in pairs:
        if p.name not in store:
            rgb = to_rgb_uint8(read_image(p.image))
            x = np.concatenate([segmenter.network_input(v) for v in colour_changes(rgb)])
            store[p.name] = segmenter.network_probabilities(x)[:, 0].astype(np.float16)
    if path:
        np.save(path, store, allow_pickle=True)
    return [store[p.name].astype(np.float32) for p in pairs]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def colour_features(views: np.ndarray, colours: np.ndarray) -> dict[str, float]:
    mask = postprocess(views[0])
    dices = [_dice(mask, c > 0.5) for c in colours]
    every = np.concatenate([views, colours]).mean(0)
    soft = lambda p: float(2 * (p * mask).sum() / (p.sum() + mask.sum() + 1e-6))  # noqa: E731
    return {"c_dice": float(np.mean(dices)), "c_dice_min": float(np.min(dices)),
            "c_soft": soft(colours.mean(0)), "all_soft": soft(every),
            "all_uncertain": float(((every > 0.2) & (every < 0.8)).sum() / max(mask.sum(), 1))}


def design_with_colour(features, names):
    """quality._design, with the colour features transformed like their geometric twins."""
    rows = [features] if isinstance(features, dict) else features
    cols = []
    for name in names:
        x = np.array([r[name] for r in rows], dtype=np.float64)
        if name in COLOUR_FEATURES[:4]:
            cols.append(np.log(np.clip(1 - x, 1e-3, 1)))
        elif name == "all_uncertain":
            cols.append(np.log1p(np.clip(x, 0, 1e3)))
        else:
            cols.append(_design(rows, (name,))[:, 0])
    return np.stack(cols, axis=1)


_design = quality._design


def summary(cv: dict) -> dict:
    return {s: {"spearman": round(v["spearman"], 3), "auroc": round(v["auroc_dice_below_080"], 3)}
            for s, v in cv.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--isic", required=True)
    parser.add_argument("--ham", required=True)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"
                                             / "review_features_tried.json"))
    args = parser.parse_args()
    isic = isic_split(args.isic)["calibration"]
    ham = ham_split(args.ham, 150, 150)["calibration"] + ham_reserve(args.ham)
    more_ham = ham_split(args.ham, 300, 1000)["benchmark"]
    segmenter = make_segmenter(None, device="cpu")
    base = quality.CALIBRATION_FEATURES
    parts = {}
    for name, pairs, src in (("isic", isic, "isic"), ("ham", ham, "ham"), ("more_ham", more_ham, "ham")):
        entries = views_for(pairs, args.cache, src)
        feats, dice = table(entries)
        if name != "more_ham":
            for f, e, c in zip(feats, entries.values(), colour_views(segmenter, pairs, args.cache, name)):
                f.update(colour_features(e["views"].astype(np.float32), c))
        parts[name] = (feats, dice)
    (fi, di), (fh, dh), (fm, dm) = parts["isic"], parts["ham"], parts["more_ham"]
    source = np.array(["isic"] * len(di) + ["ham"] * len(dh))
    feats, dice = fi + fh, np.concatenate([di, dh])
    result = {"command": " ".join(["python", *sys.argv]),
              "plain_tta_dice_isic_calibration_half": {
                  "spearman": float(stats.spearmanr([f["tta_dice"] for f in fi], di).statistic),
                  "auroc": auroc(di < 0.8, -np.array([f["tta_dice"] for f in fi]))},
              "per_feature_spearman": {
                  s: {n: float(stats.spearmanr([f[n] for f in fs], d).statistic)
                      for n in ("tta_dice", "soft_dice", *COLOUR_FEATURES)}
                  for s, fs, d in (("isic", fi, di), ("ham", fh, dh))}}
    quality._design = design_with_colour
    try:
        result["colour_views_cv"] = {
            label: summary(cross_validated(feats, dice, source, names, 30.0))
            for label, names in (("calibration features (now)", base),
                                 ("+ c_dice", base + ("c_dice",)),
                                 ("+ c_dice, c_dice_min, c_soft", base + COLOUR_FEATURES[:3]),
                                 ("+ all five", base + COLOUR_FEATURES))}
    finally:
        quality._design = _design
    more_source = np.array(["isic"] * len(di) + ["ham"] * (len(dh) + len(dm)))
    result["more_ham_cv"] = {
        f"{label}, ridge {ridge:g}": summary(cross_validated(f, d, s, base, ridge))
        for label, f, d, s in (("350 HAM10000 lesions (now)", feats, dice, source),
                               ("+ 1,000 more", feats + fm, np.concatenate([dice, dm]), more_source))
        for ridge in (30.0, 100.0)}
    print(result)
    save_json(result, args.out)


if __name__ == "__main__":
    main()
