"""``keep="largest"`` against keeping every piece at least a share of the largest one's area, on
the plain predictions the review-queue benchmarks cached (``review_queue.py --cache``).

    python benchmarks/split_lesions.py --isic ../shared/data/isic2018 --ham ../shared/data/ham10000
        --cache /tmp/skinseg_views

For every held-out image in the cache (ISIC validation images, HAM10000 lesions the bundled model
never trained on), view 0 (the plain probability at the working size) is resized to the image's
size and cleaned up with each rule; Dice, Jaccard and thresholded Jaccard against the expert's
mask, and how many masks each rule changes, for the better or the worse. Share 1.0 is the old
rule (the largest piece only). Writes benchmarks/results/split_lesions.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import measure

sys.path.insert(0, str(Path(__file__).parent))
from common import all_pairs, save_json  # noqa: E402

from napari_skinseg.image_io import read_mask  # noqa: E402
from napari_skinseg.metrics import image_metrics  # noqa: E402
from napari_skinseg.postprocess import fill_holes  # noqa: E402

SHARES = (1.0, 0.7, 0.5, 0.3, 0.1)


def keep_pieces(probability: np.ndarray, share: float) -> np.ndarray:
    """Threshold 0.5, keep every 8-connected piece of at least ``share`` x the largest's area,
    fill holes (the default clean-up with the share as a parameter)."""
    mask = probability > 0.5
    if not mask.any():
        return mask
    labels = measure.label(mask, connectivity=2)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return fill_holes((sizes >= share * sizes.max())[labels])


def compare(store: dict, pairs: dict) -> dict:
    names = [n for n in store if n in pairs]
    scores = {share: [] for share in SHARES}
    for name in names:
        truth = read_mask(pairs[name].mask)
        h, w = truth.shape
        view = store[name]["views"][0].astype(np.float32)
        probability = np.asarray(Image.fromarray(view).resize((w, h), Image.BILINEAR))
        for share in SHARES:
            m = image_metrics(keep_pieces(probability, share), truth)
            scores[share].append((m.dice, m.jaccard))
    base = np.array(scores[1.0])
    out = {"n": len(names)}
    for share, rows in scores.items():
        a = np.array(rows)
        out[f"share {share}"] = {
            "dice": float(a[:, 0].mean()), "jaccard": float(a[:, 1].mean()),
            "thresholded_jaccard": float(np.where(a[:, 1] < 0.65, 0, a[:, 1]).mean()),
            "changed": int((np.abs(a[:, 0] - base[:, 0]) > 1e-9).sum()),
            "better": int((a[:, 0] > base[:, 0] + 1e-9).sum()),
            "worse": int((a[:, 0] < base[:, 0] - 1e-9).sum())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--isic", required=True)
    parser.add_argument("--ham", required=True)
    parser.add_argument("--cache", type=Path, required=True,
                        help="review_queue.py's --cache folder (views_isic.npy, views_ham.npy)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "split_lesions.json"))
    args = parser.parse_args()
    result = {"command": " ".join(["python", *sys.argv])}
    for source, data in (("isic", args.isic), ("ham", args.ham)):
        store = np.load(args.cache / f"views_{source}.npy", allow_pickle=True).item()
        result[source] = compare(store, {p.name: p for p in all_pairs(data)})
        print(source, result[source], flush=True)
    save_json(result, args.out)


if __name__ == "__main__":
    main()
