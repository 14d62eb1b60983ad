"""The review queue's eight test-time views on ONNX Runtime against torch, in one process.

    python benchmarks/review_engine.py --data ../shared/data/isic2018 --n 100

``skinseg segment --review`` used to run the views on torch even when ONNX Runtime segmented
(loading torch and a second copy of the network); it now runs them on the segmenting engine.
For held-out ISIC images (the bundled model never trained on them): the predicted Dice from each
engine's views (largest difference), and the time per image of the views + estimate, the two
engines alternating, best of three rounds. Writes benchmarks/results/review_engine.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import save_json  # noqa: E402
from heldout import isic_split  # noqa: E402

from napari_skinseg.engines import make_segmenter  # noqa: E402
from napari_skinseg.image_io import read_image  # noqa: E402
from napari_skinseg.review import estimate_quality  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "review_engine.json"))
    args = parser.parse_args()
    pairs = isic_split(args.data)["benchmark"][: args.n]
    images = [read_image(p.image) for p in pairs]
    engines = {"torch (before)": make_segmenter(None, device="cpu", engine="torch"),
               "onnx (now)": make_segmenter(None, engine="onnx")}
    masks = [engines["onnx (now)"].segment(image).mask for image in images]  # the masks judged
    ms = {name: [] for name in engines}
    predicted = {}
    for _ in range(3):
        for name, seg in engines.items():
            start = time.perf_counter()
            predicted[name] = [estimate_quality(seg, image, mask).predicted_dice
                               for image, mask in zip(images, masks)]
            ms[name].append((time.perf_counter() - start) / len(images) * 1000)
    a, b = (np.array(v) for v in predicted.values())
    best = {name: min(v) for name, v in ms.items()}
    result = {"command": " ".join(["python", *sys.argv]), "n_images": len(images),
              "views_and_estimate_ms_per_image_rounds": ms,
              "views_and_estimate_ms_per_image_best": best,
              "speedup_onnx": best["torch (before)"] / best["onnx (now)"],
              "predicted_dice_max_abs_difference": float(np.abs(a - b).max()),
              "same_order": bool((np.argsort(a, kind="stable") == np.argsort(b, kind="stable")).all())}
    print(result)
    save_json(result, args.out)


if __name__ == "__main__":
    main()
