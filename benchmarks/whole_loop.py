"""The whole correction loop, played by a simulated person adapting the tool to new images.

    python benchmarks/whole_loop.py --isic ../shared/data/isic2018 --ham ../shared/data/ham10000

For a pool of images the bundled model never trained on: choose N images to correct, either worst
first by predicted Dice (the review queue) or in folder order; correct each with simulated clicks
(the standard user of benchmarks/click_to_fix.py, until IoU >= 0.90 or 20 clicks; the click-to-fix
network as napari uses it, or ``--clicks random-walker``) and count the clicks; fine-tune the bundled model on the N corrected pairs as Curate's *Retrain on curated*
does (its settings, 3e-4 constant, 10 epochs, 4:1 split); re-segment the rest of the pool with it.
Reported per N and order: clicks spent, mean Dice of the whole pool before (the bundled model's
masks) and after (corrected masks for the N, the new model's for the rest), and of the rest alone.
Pools: HAM10000 (other clinics and dermoscopes; one image per lesion) and held-out ISIC images.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from click_to_fix import MAX_CLICKS, iou, next_click  # noqa: E402
from common import save_json  # noqa: E402
from heldout import ham_split, isic_split  # noqa: E402

from napari_skinseg.bundled import bundled_model_path  # noqa: E402
from napari_skinseg.config import FINE_TUNE_LEARNING_RATE as FINE_TUNE_LR  # noqa: E402
from napari_skinseg.dataset import samples_from_arrays  # noqa: E402
from napari_skinseg.image_io import read_image, read_mask  # noqa: E402
from napari_skinseg.interactive import ClickSession  # noqa: E402
from napari_skinseg.metrics import image_metrics  # noqa: E402
from napari_skinseg.model import load_model  # noqa: E402
from napari_skinseg.prediction import Segmenter  # noqa: E402
from napari_skinseg.review import estimate_quality  # noqa: E402
from napari_skinseg.training import run_training  # noqa: E402


def correct_with_clicks(image, probability, truth, refiner=None) -> tuple[np.ndarray, int]:
    session = ClickSession(image, probability=probability, click_model=refiner)
    for clicks in range(MAX_CLICKS + 1):
        if iou(session.mask, truth) >= 0.90:
            return session.mask, clicks
        if clicks == MAX_CLICKS:
            break
        click = next_click(session.mask, truth)
        if click is None:
            return session.mask, clicks
        session.click(*click[:2], lesion=click[2])
    return session.mask, MAX_CLICKS


def run_pool(name: str, pairs: list, ns: list[int], epochs: int, work: Path,
             refiner=None) -> dict:
    bundled = Segmenter.from_file(None, device="cpu")
    base_config = load_model(bundled_model_path()).metadata.config
    images = [read_image(p.image) for p in pairs]
    truths = [read_mask(p.mask, shape=im.shape[:2]) for im, p in zip(images, pairs)]
    probs = [bundled.predict_probability(im) for im in images]
    masks = [pr > 0.5 for pr in probs]
    dice_before = np.array([image_metrics(m, t).dice for m, t in zip(masks, truths)])
    predicted = np.array([estimate_quality(bundled, im, mask=m).predicted_dice
                          for im, m in zip(images, masks)])
    print(f"{name}: {len(pairs)} images, bundled Dice {dice_before.mean():.4f}", flush=True)
    orders = {"worst first": list(np.argsort(predicted, kind="stable")),
              "folder order": list(range(len(pairs)))}
    corrected_cache: dict[int, tuple[np.ndarray, int]] = {}
    rows = []
    for order_name, order in orders.items():
        for n in ns:
            chosen = order[:n]
            for i in chosen:
                if i not in corrected_cache:
                    corrected_cache[i] = correct_with_clicks(images[i], probs[i], truths[i],
                                                             refiner)
            clicks = sum(corrected_cache[i][1] for i in chosen)
            config = base_config.replace(epochs=epochs, lr_schedule="constant", device="cpu",
                                         learning_rate=FINE_TUNE_LR)
            samples = samples_from_arrays([images[i] for i in chosen],
                                          [corrected_cache[i][0] for i in chosen], config.size,
                                          names=[pairs[i].name for i in chosen])
            result = run_training(samples, config, work / f"{name}-{order_name[:5]}-{n}.pt",
                                  init=bundled_model_path())
            tuned = Segmenter(result.model, device="cpu")
            rest = [i for i in range(len(pairs)) if i not in set(chosen)]
            rest_after = np.array([image_metrics(tuned.predict_probability(images[i]) > 0.5,
                                                 truths[i]).dice for i in rest])
            pool_after = np.concatenate([
                [image_metrics(corrected_cache[i][0], truths[i]).dice for i in chosen], rest_after])
            row = {"pool": name, "order": order_name, "n_corrected": n, "clicks": clicks,
                   "clicks_per_image": clicks / n,
                   "pool_dice_before": float(dice_before.mean()),
                   "pool_dice_after": float(pool_after.mean()),
                   "rest_dice_before": float(dice_before[rest].mean()),
                   "rest_dice_after": float(rest_after.mean()),
                   "rest_failures_before": int((dice_before[rest] < 0.8).sum()),
                   "rest_failures_after": int((rest_after < 0.8).sum())}
            rows.append(row)
            print(row, flush=True)
    return {"n_images": len(pairs), "bundled_dice": float(dice_before.mean()), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--isic", help="ISIC 2018 pair folder")
    parser.add_argument("--ham", help="HAM10000 pair folder")
    parser.add_argument("--pool", type=int, default=120)
    parser.add_argument("--n", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--clicks", choices=("network", "random-walker"), default="network",
                        help="what fixes each click: the bundled click-to-fix network (as napari "
                             "does) or the random walker (its fallback)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "whole_loop.json"))
    args = parser.parse_args()
    refiner = None
    if args.clicks == "network":
        from napari_skinseg.engines import make_click_refiner

        refiner = make_click_refiner(None, device="cpu")
    results = {"command": " ".join(["python", *sys.argv]), "pool": args.pool,
               "epochs": args.epochs, "clicks": args.clicks,
               "bundled_model": bundled_model_path().name, "pools": {}}
    with tempfile.TemporaryDirectory() as tmp:
        if args.ham:
            pairs = ham_split(args.ham, 300, args.pool)["benchmark"]
            results["pools"]["ham10000"] = run_pool("ham10000", pairs, args.n, args.epochs, Path(tmp),
                                                    refiner)
        if args.isic:
            pairs = isic_split(args.isic)["benchmark"][: args.pool]
            results["pools"]["isic_heldout"] = run_pool("isic_heldout", pairs, args.n, args.epochs,
                                                        Path(tmp), refiner)
    save_json(results, args.out)


if __name__ == "__main__":
    main()
