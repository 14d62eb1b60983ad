"""A pipelined folder run against one image at a time, in one process on the same images.

    python benchmarks/pipeline.py --data ../shared/data/isic2018 --n 100

`segment_folder(..., workers=W)` for W = 1, 2, 3 with each engine, masks and overlays written,
best of two rounds; ms per image end to end. Writes benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import last_images, linked_folder, save_json  # noqa: E402

from napari_skinseg.engines import make_segmenter  # noqa: E402
from napari_skinseg.folder_segmentation import segment_folder  # noqa: E402
from napari_skinseg.generators import drain  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    images = last_images(args.data, args.n)
    results = {"command": " ".join(["python", *sys.argv]), "n_images": len(images), "ms_per_image": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = linked_folder(images, Path(tmp) / "in")
        for engine in ("onnx", "torch"):
            segmenter = make_segmenter(None, device="cpu", engine=engine)
            times: dict[int, list[float]] = {}
            for round_ in range(2):
                for workers in (1, 2, 3):
                    out = Path(tmp) / f"{engine}-{workers}-{round_}"
                    t = time.perf_counter()
                    drain(segment_folder(folder, out, segmenter, overlay=True, workers=workers))
                    times.setdefault(workers, []).append((time.perf_counter() - t) / len(images) * 1000)
            results["ms_per_image"][engine] = {w: min(v) for w, v in times.items()}
            print(engine, results["ms_per_image"][engine], flush=True)
    save_json(results, Path(__file__).parent / "results" / "pipeline.json")


if __name__ == "__main__":
    main()
