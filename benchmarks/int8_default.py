"""The evidence for ``auto`` running the int8 copy on a CPU where it is faster: its masks against
torch's and fp32 ONNX's, against the experts, its review queue, and the folder run's time.

    python benchmarks/int8_default.py --isic ../shared/data/isic2018 --ham ../shared/data/ham10000

Held-out images only (``heldout.py``; the bundled model never trained on them, the int8 copy is
calibrated on synthetic lesions): the 419 ISIC 2018 validation images (both halves) and 300
HAM10000 lesions (other clinics and dermoscopes; both halves). Parts (``--parts``):

- ``masks``: Dice per image between the engines' masks (int8 and fp32 ONNX each against torch,
  the reference every engine must agree with at mean Dice >= 0.995), and each engine's Dice,
  Jaccard and thresholded Jaccard against the experts.
- ``review``: the review queue on the benchmark halves (ISIC 210, HAM10000 150): Spearman and
  AUROC (true Dice < 0.80) of the predicted Dice of fp32's masks on fp32 views, of int8's masks
  on fp32 views (what ``engines.make_reviewer`` does: the calibration was fitted on fp32 views)
  and of int8's masks on int8's own views.
- ``timing``: folder runs as ``skinseg segment`` runs them (masks only, ``default_workers``
  images in flight) on ``--n`` ISIC benchmark images, ``--engine onnx`` (fp32) against
  ``auto``, alternating, three rounds each, best kept. Run it with nothing else on the machine.

Writes benchmarks/results/int8_default.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from common import linked_folder, save_json  # noqa: E402
from heldout import ham_split, isic_split  # noqa: E402
from review_queue import THRESHOLD, auroc  # noqa: E402

from napari_skinseg.engines import make_segmenter  # noqa: E402
from napari_skinseg.folder_segmentation import default_workers, segment_folder  # noqa: E402
from napari_skinseg.generators import drain  # noqa: E402
from napari_skinseg.image_io import read_image, read_mask  # noqa: E402
from napari_skinseg.metrics import image_metrics, mean_metrics  # noqa: E402
from napari_skinseg.review import estimate_quality  # noqa: E402


def _agreement(dices: list[float]) -> dict:
    d = np.asarray(dices)
    return {"mean": float(d.mean()), "min": float(d.min()), "below_0.99": int((d < 0.99).sum())}


def masks(engines: dict, pairs: list) -> dict:
    against_torch = {name: [] for name in engines if name != "torch"}
    experts = {name: [] for name in engines}
    for pair in pairs:
        image = read_image(pair.image)
        truth = read_mask(pair.mask, shape=image.shape[:2])
        got = {name: seg.segment(image).mask for name, seg in engines.items()}
        for name in against_torch:
            against_torch[name].append(image_metrics(got[name], got["torch"]).dice)
        for name, mask in got.items():
            experts[name].append(image_metrics(mask, truth))

    def with_thresholded(rows):
        j = np.array([r.jaccard for r in rows])
        return {**mean_metrics(rows), "thresholded_jaccard": float(np.where(j < 0.65, 0, j).mean())}

    # thresholded Jaccard counts a mask below Jaccard 0.65 as 0: a small change that takes a mask
    # across that line moves the mean by 0.65 / n, so say how many crossed, and which way
    j = {name: np.array([r.jaccard for r in rows]) for name, rows in experts.items()}
    crossed = {name: {"below_0.65_now": int(((v < 0.65) & (j["torch"] >= 0.65)).sum()),
                      "above_0.65_now": int(((v >= 0.65) & (j["torch"] < 0.65)).sum())}
               for name, v in j.items() if name != "torch"}
    return {"n": len(pairs),
            "dice_against_torch": {name: _agreement(v) for name, v in against_torch.items()},
            "against_experts": {name: with_thresholded(v) for name, v in experts.items()},
            "crossing_jaccard_0.65_against_torch": crossed}


def review(segmenter, judge, pairs: list) -> dict:
    """``segmenter``'s masks, their predicted Dice from ``judge``'s views, against the truth."""
    predicted, true = [], []
    for pair in pairs:
        image = read_image(pair.image)
        truth = read_mask(pair.mask, shape=image.shape[:2])
        mask = segmenter.segment(image).mask
        predicted.append(estimate_quality(judge, image, mask).predicted_dice)
        true.append(image_metrics(mask, truth).dice)
    p, d = np.asarray(predicted), np.asarray(true)
    return {"n": len(pairs), "below_080": int((d < THRESHOLD).sum()),
            "spearman": float(stats.spearmanr(p, d).statistic),
            "auroc_dice_below_080": auroc(d < THRESHOLD, -p),
            "mean_abs_error": float(np.abs(p - d).mean())}


def timing(engines: dict, pairs: list) -> dict:
    workers = default_workers(engines["onnx (fp32)"])
    ms = {name: [] for name in engines}
    with tempfile.TemporaryDirectory() as tmp:
        folder = linked_folder([p.image for p in pairs], Path(tmp) / "in")
        for round_ in range(3):
            for i, (name, seg) in enumerate(engines.items()):
                start = time.perf_counter()
                drain(segment_folder(folder, Path(tmp) / f"{i}-{round_}", seg, workers=workers))
                ms[name].append((time.perf_counter() - start) / len(pairs) * 1000)
    best = {name: min(v) for name, v in ms.items()}
    return {"n_images": len(pairs), "workers": workers, "ms_per_image_rounds": ms,
            "ms_per_image_best": best,
            "speedup_auto_vs_fp32": best["onnx (fp32)"] / best["auto"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--isic", required=True)
    parser.add_argument("--ham", required=True)
    parser.add_argument("--parts", default="masks,review,timing")
    parser.add_argument("--n", type=int, default=100, help="images in the timed folder runs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "int8_default.json"))
    args = parser.parse_args()
    parts = args.parts.split(",")
    isic, ham = isic_split(args.isic), ham_split(args.ham, 150, 150)
    auto = make_segmenter(None, device="cpu", engine="auto")
    fp32 = make_segmenter(None, engine="onnx")
    int8 = make_segmenter(None, engine="onnx-int8")
    result = {"command": " ".join(["python", *sys.argv]), "auto_chose": auto.engine}
    if "masks" in parts:
        engines = {"torch": make_segmenter(None, device="cpu", engine="torch"),
                   "onnx (fp32)": fp32, "onnx-int8": int8}
        result["masks_isic_419"] = masks(engines, isic["calibration"] + isic["benchmark"])
        result["masks_ham10000_300"] = masks(engines, ham["calibration"] + ham["benchmark"])
        print(result, flush=True)
    if "review" in parts:
        result["review"] = {
            source: {name: review(seg, judge, pairs) for name, seg, judge in
                     (("fp32 masks, fp32 views", fp32, fp32),
                      ("int8 masks, fp32 views (the product)", int8, fp32),
                      ("int8 masks, int8 views", int8, int8))}
            for source, pairs in (("isic_benchmark_210", isic["benchmark"]),
                                  ("ham10000_benchmark_150", ham["benchmark"]))}
        print(result["review"], flush=True)
    if "timing" in parts:
        result["timing"] = timing({"onnx (fp32)": fp32, "auto": auto}, isic["benchmark"][: args.n])
    print(result)
    save_json(result, args.out)


if __name__ == "__main__":
    main()
