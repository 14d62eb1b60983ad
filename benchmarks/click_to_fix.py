"""Click-to-fix with the standard simulated user, against the brush-disk baseline.

    python benchmarks/click_to_fix.py --isic ../shared/data/isic2018 --ham ../shared/data/ham10000

The first mask is the bundled model's, with no click. Each click goes to the point of the largest
error region (by area) farthest from that region's border: positive where a lesion was missed,
negative where skin was taken; 20 clicks at most. ``ClickSession`` refines around each click; the
baseline paints (or erases) a disk of radius 5 % of the image's longer side at the same point.
Reported per method: NoC@90 (clicks until IoU >= 0.90, 20 when never reached), IoU after 0/1/3/5
clicks, share of images reaching 0.90, and ms per click (this process, same images).
Images: held-out ISIC (the bundled model's validation images, ``heldout.isic_split``'s benchmark
half) and HAM10000 (one image per lesion, ``heldout.ham_split``'s benchmark part).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from click_to_fix_user import next_click  # noqa: E402
from common import save_json  # noqa: E402
from heldout import ham_split, isic_split  # noqa: E402

from napari_skinseg.image_io import read_image, read_mask  # noqa: E402
from napari_skinseg.interactive import ClickSession  # noqa: E402
from napari_skinseg.prediction import Segmenter  # noqa: E402

MAX_CLICKS = 20


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


class Brush:
    """The baseline: each click paints/erases a disk at the click."""

    def __init__(self, mask: np.ndarray, radius_fraction: float = 0.05):
        self.mask = mask.copy()
        self.r = radius_fraction * max(mask.shape)

    def click(self, y: int, x: int, lesion: bool = True) -> np.ndarray:
        h, w = self.mask.shape
        r = int(np.ceil(self.r))
        y0, y1, x0, x1 = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        disk = (yy - y) ** 2 + (xx - x) ** 2 <= self.r ** 2
        self.mask = self.mask.copy()
        self.mask[y0:y1, x0:x1][disk] = lesion
        return self.mask


def run_user(session, truth: np.ndarray) -> tuple[list[float], list[float]]:
    ious, times = [iou(session.mask, truth)], []
    for _ in range(MAX_CLICKS):
        click = next_click(session.mask, truth)
        if click is None:
            ious.append(1.0)
            continue
        t = time.perf_counter()
        session.click(*click[:2], lesion=click[2])
        times.append(time.perf_counter() - t)
        ious.append(iou(session.mask, truth))
    return ious, times


def summarise(curves: list[list[float]], times: list[float]) -> dict:
    curves = np.array(curves)
    reached = curves >= 0.90
    noc = np.where(reached.any(1), reached.argmax(1), MAX_CLICKS)
    return {"n_images": len(curves), "noc90": float(noc.mean()),
            "reached_090": float(reached.any(1).mean()),
            **{f"iou_after_{k}": float(curves[:, k].mean()) for k in (0, 1, 3, 5, 10, 20)},
            "ms_per_click_median": float(np.median(times) * 1000) if times else 0.0,
            "ms_per_click_mean": float(np.mean(times) * 1000) if times else 0.0,
            "ms_per_click_p95": float(np.percentile(times, 95) * 1000) if times else 0.0}


def evaluate(segmenter: Segmenter, pairs: list, brush_radius: float, refiner=None,
             reach: float = 0.15) -> dict:
    ours, brush, t_ours, t_brush, sizes = [], [], [], [], []
    for pair in pairs:
        image = read_image(pair.image)
        truth = read_mask(pair.mask, shape=image.shape[:2])
        prob = segmenter.predict_probability(image)
        session = ClickSession(image, probability=prob, click_model=refiner, reach=reach)
        b = Brush(session.mask, brush_radius)
        curve, t = run_user(session, truth)
        ours.append(curve)
        t_ours += t
        curve, t = run_user(b, truth)
        brush.append(curve)
        t_brush += t
        sizes.append(image.shape[:2])
    return {"image_sizes": sorted({f"{h}x{w}" for h, w in sizes}),
            "click_session": summarise(ours, t_ours), "brush_disk": summarise(brush, t_brush)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--isic", help="ISIC 2018 folder (images/, masks/)")
    parser.add_argument("--ham", help="HAM10000 folder (images/, masks/, manifest.csv)")
    parser.add_argument("--n", type=int, default=100, help="images per source")
    parser.add_argument("--brush-radius", type=float, default=0.05)
    parser.add_argument("--model", default=None, help="segmentation model (default: bundled)")
    parser.add_argument("--click-model", default=None,
                        help="a click-to-fix network (click_model.py) instead of the random walker")
    parser.add_argument("--reach", type=float, default=0.15,
                        help="with --click-model: changes must reach this share of the image's "
                             "longer side around the click")
    parser.add_argument("--engine", default="auto", choices=("auto", "torch", "onnx"),
                        help="what runs the click network (auto: ONNX Runtime where installed)")
    parser.add_argument("--out", default="benchmarks/results/click_to_fix.json")
    args = parser.parse_args()
    segmenter = Segmenter.from_file(args.model, device="cpu")
    refiner = None
    if args.click_model:
        from napari_skinseg.engines import make_click_refiner

        refiner = make_click_refiner(args.click_model, device="cpu", engine=args.engine)
    results = {}
    if args.isic:
        results["isic_heldout"] = evaluate(segmenter, isic_split(args.isic)["benchmark"][:args.n],
                                           args.brush_radius, refiner, args.reach)
    if args.ham:
        results["ham10000"] = evaluate(segmenter, ham_split(args.ham, 150, 150)["benchmark"][:args.n],
                                       args.brush_radius, refiner, args.reach)
    for name, r in results.items():
        for method in ("click_session", "brush_disk"):
            s = r[method]
            print(f"{name:13s} {method:13s} NoC@90 {s['noc90']:5.2f}  IoU 0/1/3/5 "
                  f"{s['iou_after_0']:.3f}/{s['iou_after_1']:.3f}/{s['iou_after_3']:.3f}/"
                  f"{s['iou_after_5']:.3f}  {s['ms_per_click_median']:.1f} ms/click (median)")
    save_json({"command": " ".join(sys.argv), "brush_radius_fraction": args.brush_radius,
               "model": args.model or "bundled", "click_model": args.click_model,
               "reach": args.reach if args.click_model else None,
               "engine": getattr(refiner, "engine", "torch") if refiner else None,
               "max_clicks": MAX_CLICKS, "results": results}, args.out)


if __name__ == "__main__":
    main()
