"""The review queue's predicted Dice against the true Dice, on images the model never trained on.

    python benchmarks/review_queue.py --isic ../shared/data/isic2018 --ham ../shared/data/ham10000 \
        [--cache /tmp/skinseg_views]

For every image: the bundled model's eight flip/rotation views (``tta.predict_views``), the
post-processed mask of the plain prediction, its true Dice at the image's size, the quality
features. The calibration (``quality.QualityModel``) is fitted on the *calibration* parts of both
sources (``heldout.py``: half of the bundled model's 419 ISIC validation images, 150 HAM10000
lesions plus the 200 reserved ones of ``heldout.ham_reserve``) and measured on the *benchmark*
parts only (the other ISIC half, 150 other lesions):
Spearman between predicted and true Dice, AUROC for finding masks with true Dice < 0.80, and the
mean Dice after correcting (Dice := 1) the 20 % ranked worst, against 20 % at random (expected
value) and the oracle (the truly worst 20 %). Baseline: the plain score ``tta_dice`` (mean Dice
between the mask and its seven other flip/rotation views) and the issue's 3-view version (the
mask against its horizontal and vertical flip predictions). The fitted calibration is written beside the
results (``quality_calibration.json``); ``scripts/add_quality_calibration.py`` puts it into the
bundled model file. ``--cache`` keeps the views between runs (derived from the data: keep it out
of the repository).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from common import save_json  # noqa: E402
from heldout import ham_reserve, ham_split, isic_split  # noqa: E402

from napari_skinseg.postprocess import postprocess  # noqa: E402
from napari_skinseg.quality import (  # noqa: E402
    CALIBRATION_FEATURES, FEATURE_NAMES, QualityModel, quality_features)

THRESHOLD = 0.80
FRACTION = 0.20


def auroc(bad: np.ndarray, risk: np.ndarray) -> float:
    """Area under the ROC curve of ``risk`` for finding ``bad`` (Mann-Whitney, ties halved)."""
    bad = np.asarray(bad, bool)
    if bad.all() or not bad.any():
        return float("nan")
    r = stats.rankdata(risk)
    n1, n0 = bad.sum(), (~bad).sum()
    return float((r[bad].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def queue_metrics(pred: np.ndarray, dice: np.ndarray) -> dict:
    n = len(dice)
    k = int(round(FRACTION * n))
    worst = np.argsort(pred, kind="stable")[:k]
    fixed = dice.copy()
    fixed[worst] = 1.0
    oracle = dice.copy()
    oracle[np.argsort(dice)[:k]] = 1.0
    return {"spearman": float(stats.spearmanr(pred, dice).statistic),
            "auroc_dice_below_080": auroc(dice < THRESHOLD, -pred),
            "mean_dice_after_fixing_worst_20pct": float(fixed.mean()),
            "found_below_080_in_worst_20pct": int((dice[worst] < THRESHOLD).sum()),
            "mean_abs_error": float(np.abs(pred - dice).mean())}


def bootstrap_auroc(dice: np.ndarray, pred: np.ndarray, n: int = 2000) -> list[float]:
    """95 % interval of the AUROC over images resampled with replacement (seeded)."""
    rng = np.random.default_rng(0)
    values = []
    for _ in range(n):
        i = rng.integers(0, len(dice), len(dice))
        a = auroc(dice[i] < THRESHOLD, -pred[i])
        if a == a:  # a resample without both kinds of mask has no AUROC
            values.append(a)
    return [float(v) for v in np.percentile(values, [2.5, 97.5])]


def cross_validated(feats: list[dict], dice: np.ndarray, source: np.ndarray, names, ridge: float,
                    repeats: int = 5, folds: int = 10) -> dict:
    """Spearman and AUROC per source of a calibration fitted and measured by k-fold
    cross-validation on the calibration images alone (how the features were chosen)."""
    scores: dict = {s: [] for s in np.unique(source)}
    for r in range(repeats):
        fold = np.random.default_rng(r).permutation(len(dice)) % folds
        pred = np.zeros(len(dice))
        for f in range(folds):
            train = np.nonzero(fold != f)[0]
            test = np.nonzero(fold == f)[0]
            model = QualityModel.fit([feats[i] for i in train], dice[train], names=names, ridge=ridge)
            pred[test] = model.predict([feats[i] for i in test])
        for s in scores:
            k = source == s
            scores[s].append((stats.spearmanr(pred[k], dice[k]).statistic,
                              auroc(dice[k] < THRESHOLD, -pred[k])))
    return {str(s): {"spearman": float(np.mean(v, 0)[0]), "auroc_dice_below_080": float(np.mean(v, 0)[1])}
            for s, v in scores.items()}


def views_for(pairs: list, cache: Path | None, source: str) -> dict:
    """{name: {"views": (8, S, S) float16, "dice": true Dice at the image's size}}."""
    store: dict = {}
    path = cache / f"views_{source}.npy" if cache else None
    if path and path.exists():
        store = np.load(path, allow_pickle=True).item()
    missing = [p for p in pairs if p.name not in store]
    if missing:
        from PIL import Image

        from napari_skinseg.image_io import read_image, read_mask
        from napari_skinseg.metrics import image_metrics
        from napari_skinseg.postprocess import postprocess
        from napari_skinseg.prediction import Segmenter
        from napari_skinseg.tta import predict_views

        segmenter = Segmenter.from_file(None, device="cpu")
        start = time.perf_counter()
        for i, pair in enumerate(missing):
            image = read_image(pair.image)
            truth = read_mask(pair.mask, shape=image.shape[:2])
            views = predict_views(segmenter, image)
            h, w = image.shape[:2]
            prob = np.asarray(Image.fromarray(views[0]).resize((w, h), Image.BILINEAR))
            store[pair.name] = {"views": views.astype(np.float16),
                                "dice": image_metrics(postprocess(prob), truth).dice}
            if i % 50 == 49 or i == len(missing) - 1:
                print(f"{source}: {i + 1}/{len(missing)} images, "
                      f"{time.perf_counter() - start:.0f} s", flush=True)
                if path:  # saved as it goes: a long run that stops keeps what it did
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.save(path, store, allow_pickle=True)
    return {p.name: store[p.name] for p in pairs}


def three_view_score(views: np.ndarray) -> float:
    """The issue's plain score: mean Dice between the mask and its horizontal/vertical flip views
    (views 4 and 6 of ``tta.VIEWS``)."""
    mask = postprocess(views[0])
    return float(np.mean([2 * (mask & (views[i] > 0.5)).sum() / max(mask.sum() + (views[i] > 0.5).sum(), 1)
                          for i in (4, 6)]))


def table(entries: dict) -> tuple[list[dict], np.ndarray]:
    feats = []
    for e in entries.values():
        views = e["views"].astype(np.float32)
        feats.append({**quality_features(views), "_three_view": three_view_score(views)})
    return feats, np.array([e["dice"] for e in entries.values()])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--isic", required=True, help="ISIC 2018 folder (images/, masks/)")
    parser.add_argument("--ham", required=True, help="HAM10000 folder (images/, masks/, manifest.csv)")
    parser.add_argument("--ham-calibration", type=int, default=150)
    parser.add_argument("--ham-benchmark", type=int, default=150)
    parser.add_argument("--no-ham-reserve", dest="ham_reserve", action="store_false",
                        help="calibrate without the 200 reserved HAM10000 lesions "
                             "(heldout.ham_reserve; with them, cross-validation was better)")
    parser.add_argument("--ridge", type=float, default=30.0)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--out", default="benchmarks/results/review_queue.json")
    args = parser.parse_args()

    isic, ham = isic_split(args.isic), ham_split(args.ham, args.ham_calibration, args.ham_benchmark)
    if args.ham_reserve:  # more calibration lesions, from the part no benchmark measures on
        ham["calibration"] = ham["calibration"] + ham_reserve(args.ham)
    data = {(src, part): table(views_for(split[part], args.cache, src))
            for src, split in (("isic", isic), ("ham", ham)) for part in ("calibration", "benchmark")}
    fit_feats = data["isic", "calibration"][0] + data["ham", "calibration"][0]
    fit_dice = np.concatenate([data["isic", "calibration"][1], data["ham", "calibration"][1]])
    source = np.array(["isic"] * len(data["isic", "calibration"][1])
                      + ["ham"] * len(data["ham", "calibration"][1]))
    feature_choice = {label: cross_validated(fit_feats, fit_dice, source, names, args.ridge)
                      for label, names in (("all_features", FEATURE_NAMES),
                                           ("calibration_features", CALIBRATION_FEATURES))}
    for label, cv in feature_choice.items():
        print(f"10-fold CV on the calibration images, {label}: " + ", ".join(
            f"{s} Spearman {v['spearman']:.3f} AUROC {v['auroc_dice_below_080']:.3f}"
            for s, v in cv.items()))
    model = QualityModel.fit(fit_feats, fit_dice, ridge=args.ridge, info={
        "fitted_on": f"{len(data['isic', 'calibration'][1])} ISIC 2018 validation images of the "
                     f"bundled model + {len(data['ham', 'calibration'][1])} HAM10000 lesions "
                     "(one image each); benchmarks/review_queue.py",
        "target": "Dice of the post-processed plain prediction against the expert mask"})

    results = {}
    for src, label in (("isic", "isic_heldout"), ("ham", "ham10000_lesion_split")):
        feats, dice = data[src, "benchmark"]
        pred = model.predict(feats)
        plain = np.array([f["tta_dice"] for f in feats])
        three = np.array([f["_three_view"] for f in feats])
        k = int(round(FRACTION * len(dice)))
        results[label] = {
            "n_images": len(dice), "mean_dice": float(dice.mean()),
            "share_below_080": float((dice < THRESHOLD).mean()),
            "mean_dice_after_fixing_random_20pct": float(dice.mean() + FRACTION * (1 - dice).mean()),
            "mean_dice_after_fixing_true_worst_20pct": float(np.sort(dice)[k:].sum() / len(dice) + k / len(dice)),
            "predicted_dice": {**queue_metrics(pred, dice),
                               "auroc_95pct_bootstrap": bootstrap_auroc(dice, pred)},
            "plain_tta_dice": {**queue_metrics(plain, dice),
                               "auroc_95pct_bootstrap": bootstrap_auroc(dice, plain)},
            "plain_3_view_dice": queue_metrics(three, dice),
            "per_feature_spearman": {n: float(stats.spearmanr([f[n] for f in feats], dice).statistic)
                                     for n in feats[0] if n[0] != "_" and n != "empty"},
        }
        r = results[label]
        print(f"{label}: n={len(dice)} mean Dice {dice.mean():.3f}, {r['share_below_080']:.0%} < 0.80")
        for name in ("predicted_dice", "plain_tta_dice", "plain_3_view_dice"):
            q = r[name]
            print(f"  {name:15s} Spearman {q['spearman']:.3f}  AUROC {q['auroc_dice_below_080']:.3f}  "
                  f"Dice after fixing worst 20% {q['mean_dice_after_fixing_worst_20pct']:.3f} "
                  f"(random {r['mean_dice_after_fixing_random_20pct']:.3f}, "
                  f"oracle {r['mean_dice_after_fixing_true_worst_20pct']:.3f})  MAE {q['mean_abs_error']:.3f}")
    out = Path(args.out)
    save_json({"command": " ".join(sys.argv), "ridge": args.ridge,
               "features": list(model.features),
               "feature_choice_cross_validated": feature_choice, "results": results}, out)
    calib = out.with_name("quality_calibration.json")
    calib.write_text(json.dumps(model.to_dict(), indent=1))
    print(f"calibration in {calib}")


if __name__ == "__main__":
    main()
