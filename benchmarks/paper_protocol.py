"""The paper's Table 1 protocol: N random images, 4:1 split, 10 epochs, batch size 2, Adam.

    python benchmarks/paper_protocol.py --data ../shared/data/isic2018 --counts 30 100 --sizes 256 512
    python benchmarks/paper_protocol.py --data ... --init bundled     # start from the bundled model

Reports the last epoch's training/validation accuracy and loss and the mean seconds per epoch (the
paper's columns), plus validation Dice / Jaccard / thresholded Jaccard computed per image at the
mask's original size with the best model. When a bundled model exists, the N images are drawn
from its validation split (images it never trained on), for both starting points. Note: our loss is BCE + Dice (the paper's is BCE), so
the loss columns are not comparable in absolute terms.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    all_pairs,
    bundled_val_pairs,
    evaluate_pairs,
    random_subset,
    save_json,
)

from napari_skinseg.bundled import bundled_model_path  # noqa: E402
from napari_skinseg.config import TrainConfig  # noqa: E402
from napari_skinseg.dataset import samples_from_pairs  # noqa: E402
from napari_skinseg.prediction import Segmenter  # noqa: E402
from napari_skinseg.training import run_training  # noqa: E402

PAPER = {  # Table 1 of the paper: accuracy, val accuracy, loss, val loss, s/epoch
    30: ("setting 1 (CPU)", 0.8495, 0.8137, 0.3253, 0.3874, 312),
    100: ("setting 3 (2 GPUs)", 0.9085, 0.9536, 0.2812, 0.1776, 1188),
}


def run(pairs, n, size, init, epochs, seed):
    subset = random_subset(pairs, n, seed)
    samples = samples_from_pairs(subset, size)
    config = TrainConfig(size=size, epochs=epochs, batch_size=2, seed=seed, val_fraction=0.2,
                         device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        result = run_training(samples, config, Path(tmp) / "m.pt", init=init,
                              on_epoch=lambda r: print("   ", r.line(), flush=True))
        segmenter = Segmenter(result.model, device="cpu")
        val_pairs = [p for p in subset if p.name in set(result.val_names)]
        metrics = evaluate_pairs(segmenter, val_pairs)
    last = result.history[-1]
    return {"n": n, "size": size, "init": "bundled" if init else "scratch",
            "accuracy": last.train_accuracy, "val_accuracy": last.val_accuracy,
            "loss": last.train_loss, "val_loss": last.val_loss,
            "seconds_per_epoch": sum(h.seconds for h in result.history) / len(result.history),
            "best_epoch": result.best_epoch, "val_dice": metrics["dice"],
            "val_jaccard": metrics["jaccard"], "val_threshold_jaccard": metrics["threshold_jaccard"]}


def table(rows) -> str:
    lines = ["| images | size | start | accuracy | val accuracy | loss | val loss | s/epoch | val Dice | val Jaccard | val thr. Jaccard |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['size']} | {r['init']} | {r['accuracy']:.4f} | {r['val_accuracy']:.4f} | "
                     f"{r['loss']:.4f} | {r['val_loss']:.4f} | {r['seconds_per_epoch']:.1f} | "
                     f"{r['val_dice']:.4f} | {r['val_jaccard']:.4f} | {r['val_threshold_jaccard']:.4f} |")
    for n, (name, acc, vacc, loss, vloss, sec) in PAPER.items():
        lines.append(f"| {n} | 512 | paper, {name} | {acc} | {vacc} | {loss} | {vloss} | {sec} | – | – | – |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with images/ and masks/")
    parser.add_argument("--counts", type=int, nargs="+", default=[30, 100])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--init", choices=["scratch", "bundled"], default="scratch")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/paper_protocol.json")
    args = parser.parse_args()
    pairs = all_pairs(args.data)
    unseen = bundled_val_pairs(pairs)
    if unseen:
        # Draw from images the bundled model never trained on, so that the runs that start from
        # it and the runs from scratch see the same, new images.
        print(f"drawing from the {len(unseen)} images of the bundled model's validation split")
        pairs = unseen
    init = bundled_model_path() if args.init == "bundled" else None
    rows = []
    for n in args.counts:
        for size in args.sizes:
            print(f"{n} images at {size}x{size}, from {args.init}", flush=True)
            rows.append(run(pairs, n, size, init, args.epochs, args.seed))
    print(table(rows))
    save_json({"command": " ".join(sys.argv), "rows": rows, "table": table(rows)}, args.out)


if __name__ == "__main__":
    main()
