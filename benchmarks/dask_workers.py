"""One Dask worker against two, on this machine (LocalCluster), the same images.

    python benchmarks/dask_workers.py --data ../shared/data/isic2018 --n 100

`segment_with_dask` with masks and overlays, ONNX engine, chunks of 8 files; wall time per image
including the cluster's start. Writes benchmarks/results/dask_workers.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import last_images, linked_folder, save_json  # noqa: E402

from napari_skinseg.dask_run import segment_with_dask  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    images = last_images(args.data, args.n)
    ms = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = linked_folder(images, Path(tmp) / "in")
        for workers in (1, 2):
            t = time.perf_counter()
            segment_with_dask(folder, Path(tmp) / f"out{workers}", f"local:{workers}",
                              engine="onnx", overlay=True, chunk=8)
            ms[workers] = (time.perf_counter() - t) / len(images) * 1000
            print(workers, ms[workers], flush=True)
    save_json({"command": " ".join(["python", *sys.argv]), "n_images": len(images),
               "ms_per_image": ms, "speedup_2_vs_1": ms[1] / ms[2]},
              Path(__file__).parent / "results" / "dask_workers.json")


if __name__ == "__main__":
    main()
