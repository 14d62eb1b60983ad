"""Compare segmentation models on images none of them trained on (issue 11).

    python benchmarks/compare_models.py --isic ../shared/data/isic2018 --ham ../shared/data/ham10000 \
        --model v1=path/to/old.pt --model v2=path/to/new.pt [--tta] [--worst 10]

Sets: the 419 ISIC 2018 validation images of the bundled model (the same names are the
validation set of every model compared here), and 1,000 HAM10000 images, one per lesion, from the
held-out lesions (heldout.ham_split; the v2 training data left these lesions out). Metrics per
image at the original size after the default post-processing (ISIC's: Dice, Jaccard, thresholded
Jaccard, where Jaccard < 0.65 counts 0, sensitivity, specificity), their means, and the failures
(Jaccard < 0.65) with their names; ``--worst N`` writes a contact sheet of each model's N worst
images (outline of the prediction magenta, truth green) into ``--sheets`` (outside the project:
the images are CC BY-NC and are never committed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import all_pairs, bundled_val_pairs, save_json  # noqa: E402
from heldout import ham_split  # noqa: E402

from napari_skinseg.engines import make_segmenter  # noqa: E402
from napari_skinseg.image_io import read_image, read_mask  # noqa: E402
from napari_skinseg.metrics import image_metrics, mean_metrics  # noqa: E402
from napari_skinseg.transforms import resize_rgb  # noqa: E402

FAIL = 0.65


def outline(mask: np.ndarray) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    return find_boundaries(mask, mode="inner")


def tile(image, pred, truth, size=192) -> np.ndarray:
    out = image.copy()
    out[outline(truth)] = (0, 255, 0)
    out[outline(pred)] = (255, 0, 255)
    return resize_rgb(out, (size, size))


def apply_cast(image: np.ndarray, cast) -> np.ndarray:
    """Another dermoscope's colour response, simulated: each channel scaled."""
    if cast is None:
        return image
    return np.clip(image.astype(np.float32) * np.asarray(cast, np.float32), 0, 255).astype(np.uint8)


def run(segmenter, pairs, tta: bool, worst: int, cast=None):
    rows, names, tiles_src = [], [], []
    t0 = time.perf_counter()
    for pair in pairs:
        image = apply_cast(read_image(pair.image), cast)
        truth = read_mask(pair.mask, shape=image.shape[:2])
        pred = segmenter.segment(image, tta=tta).mask
        m = image_metrics(pred, truth)
        rows.append(m)
        names.append(pair.name)
        tiles_src.append((m.jaccard, pair))
    seconds = time.perf_counter() - t0
    jac = np.array([r.jaccard for r in rows])
    summary = {**mean_metrics(rows), "n": len(rows),
               "failures": int((jac < FAIL).sum()),
               "failure_names": [n for n, j in zip(names, jac) if j < FAIL],
               "seconds_per_image": seconds / max(1, len(rows))}
    sheet = None
    if worst:
        chosen = sorted(tiles_src, key=lambda t: t[0])[:worst]
        tiles = []
        for _, pair in chosen:
            image = apply_cast(read_image(pair.image), cast)
            truth = read_mask(pair.mask, shape=image.shape[:2])
            tiles.append(tile(image, segmenter.segment(image, tta=tta).mask, truth))
        sheet = np.concatenate(tiles, axis=1) if tiles else None
    return summary, sheet, {n: float(j) for n, j in zip(names, jac)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--isic", required=True)
    p.add_argument("--ham", required=True)
    p.add_argument("--model", action="append", required=True, help="NAME=PATH ('bundled' as PATH)")
    p.add_argument("--n-ham", type=int, default=1000)
    p.add_argument("--engine", default="onnx")
    p.add_argument("--tta", action="store_true")
    p.add_argument("--worst", type=int, default=0)
    p.add_argument("--cast", default=None,
                   help="R,G,B channel factors applied to every image (a simulated dermoscope "
                        "colour response), e.g. 1.15,1,0.8")
    p.add_argument("--sets", default="isic_val419,ham_heldout")
    p.add_argument("--sheets", default="/tmp/compare_models", help="folder for the contact sheets")
    p.add_argument("--out", default="benchmarks/results/compare_models.json")
    args = p.parse_args()
    sets = {"isic_val419": bundled_val_pairs(all_pairs(args.isic)),
            "ham_heldout": ham_split(args.ham, 300, args.n_ham)["benchmark"]}
    sets = {k: v for k, v in sets.items() if k in args.sets.split(",")}
    cast = [float(v) for v in args.cast.split(",")] if args.cast else None
    results, per_image = {}, {}
    for spec in args.model:
        name, path = spec.split("=", 1)
        segmenter = make_segmenter(None if path == "bundled" else path, device="cpu",
                                   engine=args.engine)
        results[name] = {"path": path}
        for set_name, pairs in sets.items():
            summary, sheet, jac = run(segmenter, pairs, args.tta, args.worst, cast)
            results[name][set_name] = summary
            per_image[f"{name}/{set_name}"] = jac
            print(f"{name:8s} {set_name:12s} dice {summary['dice']:.4f} jaccard "
                  f"{summary['jaccard']:.4f} thr-jaccard {summary['threshold_jaccard']:.4f} "
                  f"sens {summary['sensitivity']:.4f} spec {summary['specificity']:.4f} "
                  f"failures {summary['failures']}/{summary['n']}  "
                  f"{summary['seconds_per_image'] * 1000:.0f} ms/img", flush=True)
            if sheet is not None:
                Path(args.sheets).mkdir(parents=True, exist_ok=True)
                Image.fromarray(sheet).save(Path(args.sheets) / f"{name}_{set_name}_worst.jpg",
                                            quality=85)
    save_json({"command": " ".join(sys.argv), "tta": args.tta, "engine": args.engine,
               "cast": cast,
               "failure_cutoff_jaccard": FAIL, "results": results, "per_image_jaccard": per_image},
              args.out)


if __name__ == "__main__":
    main()
