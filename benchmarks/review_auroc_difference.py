"""Can the held-out images tell the calibrated predicted Dice from the plain score at all?

    python benchmarks/review_auroc_difference.py --isic ../shared/data/isic2018 \
        --ham ../shared/data/ham10000 [--cache /tmp/skinseg_views]

The same images and views as ``review_queue.py`` (its ``--cache`` is shared), scored with the
calibration the bundled model ships. For each benchmark half: the calibrated estimate's and the
plain score's (mean Dice between the mask and its seven other flip/rotation views) AUROC for
masks with true Dice < 0.80 and Spearman, and a paired bootstrap (images resampled with
replacement, both scores on the same resample) of the calibrated minus the plain figure, with
its 95 % interval: the size of a difference these images can show.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from common import save_json  # noqa: E402
from heldout import ham_split, isic_split  # noqa: E402
from review_queue import THRESHOLD, auroc, table, views_for  # noqa: E402

from napari_skinseg.prediction import Segmenter  # noqa: E402
from napari_skinseg.quality import predicted_dice  # noqa: E402


def paired_bootstrap(dice: np.ndarray, a: np.ndarray, b: np.ndarray, n: int = 5000) -> dict:
    """95 % intervals of AUROC(a) - AUROC(b) and Spearman(a) - Spearman(b), seeded."""
    rng = np.random.default_rng(0)
    d_auroc, d_rho = [], []
    for _ in range(n):
        i = rng.integers(0, len(dice), len(dice))
        bad = dice[i] < THRESHOLD
        if bad.all() or not bad.any():
            continue
        d_auroc.append(auroc(bad, -a[i]) - auroc(bad, -b[i]))
        d_rho.append(stats.spearmanr(a[i], dice[i]).statistic - stats.spearmanr(b[i], dice[i]).statistic)
    return {"auroc_difference_95pct": [float(v) for v in np.percentile(d_auroc, [2.5, 97.5])],
            "auroc_difference_share_above_0": float(np.mean(np.array(d_auroc) > 0)),
            "spearman_difference_95pct": [float(v) for v in np.percentile(d_rho, [2.5, 97.5])],
            "resamples": len(d_auroc)}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--isic", required=True)
    parser.add_argument("--ham", required=True)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--out", default="benchmarks/results/review_auroc_difference.json")
    args = parser.parse_args()
    calibration = Segmenter.from_file(None, device="cpu").quality_calibration
    results = {}
    for label, pairs, source in (
            ("isic_heldout", isic_split(args.isic)["benchmark"], "isic"),
            ("ham10000_lesion_split", ham_split(args.ham, 150, 150)["benchmark"], "ham")):
        feats, dice = table(views_for(pairs, args.cache, source))
        pred = np.array([predicted_dice(f, calibration)[0] for f in feats])
        plain = np.array([f["tta_dice"] for f in feats])
        bad = dice < THRESHOLD
        results[label] = {
            "n_images": len(dice), "n_below_080": int(bad.sum()),
            "calibrated": {"auroc": auroc(bad, -pred),
                           "spearman": float(stats.spearmanr(pred, dice).statistic)},
            "plain": {"auroc": auroc(bad, -plain),
                      "spearman": float(stats.spearmanr(plain, dice).statistic)},
            "calibrated_minus_plain": paired_bootstrap(dice, pred, plain)}
        r = results[label]
        print(f"{label}: {len(dice)} images, {bad.sum()} below 0.80; calibrated AUROC "
              f"{r['calibrated']['auroc']:.3f} Spearman {r['calibrated']['spearman']:.3f}; plain "
              f"{r['plain']['auroc']:.3f} / {r['plain']['spearman']:.3f}; difference 95 %: AUROC "
              f"{r['calibrated_minus_plain']['auroc_difference_95pct']}, Spearman "
              f"{r['calibrated_minus_plain']['spearman_difference_95pct']}", flush=True)
    save_json({"command": " ".join(sys.argv), "results": results}, Path(args.out))


if __name__ == "__main__":
    main()
