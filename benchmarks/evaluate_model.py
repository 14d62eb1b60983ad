"""A model's ISIC 2018 Task 1 metrics on its own validation split, and its inference time.

    python benchmarks/evaluate_model.py --data ../shared/data/isic2018 [--model FILE] [--tta]

Metrics are computed per image at the mask's original size, then averaged. Inference time is the
median over ``--runs`` segmentations of one 512x512 image (decoded already), after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import all_pairs, evaluate_pairs, save_json  # noqa: E402

from napari_skinseg.bundled import bundled_model_path  # noqa: E402
from napari_skinseg.image_io import read_image  # noqa: E402
from napari_skinseg.prediction import Segmenter  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/evaluate_model.json")
    args = parser.parse_args()
    path = args.model or bundled_model_path()
    segmenter = Segmenter.from_file(path, device="cpu")
    meta = segmenter.model.metadata
    names = set(meta.data.get("val_names", []))
    pairs = [p for p in all_pairs(args.data) if p.name in names]
    if not pairs:
        sys.exit("the model's validation images are not in --data")
    start = time.perf_counter()
    metrics = evaluate_pairs(segmenter, pairs, tta=args.tta)
    total = time.perf_counter() - start
    image = read_image(pairs[0].image)
    assert image.shape[:2] == (512, 512)
    segmenter.segment(image)  # warm-up
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        segmenter.segment(image)
        times.append(time.perf_counter() - t)
    result = {"model": str(path), "n_val": len(pairs), "tta": args.tta, "metrics": metrics,
              "inference_ms_512_median": statistics.median(times) * 1000,
              "inference_ms_512_all": [t * 1000 for t in times], "evaluation_seconds": total}
    for key, value in metrics.items():
        print(f"{key:18s} {value:.4f}")
    print(f"inference on a 512x512 image: median {result['inference_ms_512_median']:.1f} ms "
          f"over {args.runs} runs")
    save_json({"command": " ".join(sys.argv), **result}, args.out)


if __name__ == "__main__":
    main()
