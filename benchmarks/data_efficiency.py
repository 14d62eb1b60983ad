"""Validation Dice after training on 25 / 50 / 100 / 200 / 400 images, from scratch vs from the
bundled model, on one fixed validation subset.

    python benchmarks/data_efficiency.py --data ../shared/data/isic2018

The validation subset is 200 images of the bundled model's own validation split (never trained
on). Training images come from the rest of that split while it lasts (new to the bundled model,
as a user's images would be); the 400-image set also needs images from the bundled model's
training split and is marked so. Every run takes the same number of optimisation steps per image
count (``epochs = max(5, ceil(budget / n))``) with a cosine schedule. Writes a JSON and a PNG plot.
"""

from __future__ import annotations

import argparse
import math
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
from napari_skinseg.model import load_model  # noqa: E402
from napari_skinseg.prediction import Segmenter  # noqa: E402
from napari_skinseg.training import run_training  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--counts", type=int, nargs="+", default=[25, 50, 100, 200, 400])
    parser.add_argument("--val-size", type=int, default=200)
    parser.add_argument("--budget", type=int, default=1200, help="training images seen per run (at least 5 epochs)")
    parser.add_argument("--size", type=int, default=None, help="working size (default: the bundled model's)")
    parser.add_argument("--out", default="benchmarks/results/data_efficiency.json")
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG from --out")
    args = parser.parse_args()
    if args.replot:
        import json

        data = json.loads(Path(args.out).read_text())
        plot(data["rows"], data["bundled_as_is"]["dice"], Path(args.out).with_suffix(".png"))
        return

    pairs = all_pairs(args.data)
    unseen = bundled_val_pairs(pairs)
    if not unseen:
        sys.exit("this benchmark compares against the bundled model, and none is installed")
    bundled = load_model(bundled_model_path())
    size = args.size or bundled.metadata.size
    val = random_subset(unseen, args.val_size, seed=0)
    val_names = {p.name for p in val}
    fresh = [p for p in unseen if p.name not in val_names]
    seen = [p for p in pairs if p.name not in {q.name for q in unseen}]
    val_samples = samples_from_pairs(val, size)
    base_metrics = evaluate_pairs(Segmenter(bundled, device="cpu"), val)
    print(f"bundled model as is: Dice {base_metrics['dice']:.4f}", flush=True)
    rows = []
    for n in args.counts:
        pool = fresh if n <= len(fresh) else fresh + random_subset(seen, n - len(fresh), seed=3)
        subset = random_subset(pool, n, seed=1)
        samples = samples_from_pairs(subset, size)
        epochs = max(5, math.ceil(args.budget / n))
        for start in ("scratch", "bundled"):
            config = TrainConfig(size=size, epochs=epochs, batch_size=8, lr_schedule="cosine",
                                 learning_rate=1e-3 if start == "scratch" else 3e-4, device="cpu")
            with tempfile.TemporaryDirectory() as tmp:
                result = run_training(samples, config, Path(tmp) / "m.pt", val_samples=val_samples,
                                      init=bundled if start == "bundled" else None)
                metrics = evaluate_pairs(Segmenter(result.model, device="cpu"), val)
            seconds = sum(h.seconds for h in result.history)
            rows.append({"n": n, "start": start, "epochs": epochs, "dice": metrics["dice"],
                         "jaccard": metrics["jaccard"], "threshold_jaccard": metrics["threshold_jaccard"],
                         "train_seconds": seconds, "includes_bundled_training_images": n > len(fresh)})
            print(f"{n:4d} images from {start:8s}: Dice {metrics['dice']:.4f}  thr. Jaccard "
                  f"{metrics['threshold_jaccard']:.4f}  ({epochs} epochs, {seconds:.0f} s)", flush=True)
    plot(rows, base_metrics["dice"], Path(args.out).with_suffix(".png"))
    save_json({"command": " ".join(sys.argv), "size": size, "val_size": len(val),
               "bundled_as_is": base_metrics, "rows": rows}, args.out)


def plot(rows, base_dice, path):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 3.6), dpi=100)
    ax = figure.subplots()
    for start, marker in (("scratch", "o-"), ("bundled", "s-")):
        pts = [(r["n"], r["dice"]) for r in rows if r["start"] == start]
        ax.plot(*zip(*pts), marker, label=f"from {start}")
    ax.axhline(base_dice, color="grey", ls="--", label="bundled model, no fine-tuning")
    ax.set_xscale("log")
    ax.minorticks_off()  # log-scale minor labels would overlap the image counts
    ax.set_xticks([r["n"] for r in rows if r["start"] == "scratch"])
    ax.set_xticklabels([str(r["n"]) for r in rows if r["start"] == "scratch"])
    ax.set_xlabel("training images")
    ax.set_ylabel("validation Dice (original size)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


if __name__ == "__main__":
    main()
