"""Time from clicking *Segment* to the prediction layer, in napari, as a person meets it.

A fresh process starts napari (canvas first), opens the Segment dock and, at once, clicks Segment
on a 512 x 512 image: that first call includes whatever of the model worker's start-up (a new
Python process importing torch and loading the model) is not over yet. Then it clicks again on
other images with the worker warm. Timed from the click to the prediction layer's data being set,
with Qt's event loop running as in napari.

    xvfb-run -a python benchmarks/napari_segment_latency.py --data ../shared/data/isic2018

Without --data it uses synthetic 512 x 512 images. Writes benchmarks/results/napari_segment_latency.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import napari  # first, as a person starts it
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import last_images, save_json  # noqa: E402  (torch-free)
from common import wait_in_qt as wait  # noqa: E402


def images(data: str | None, n: int) -> list[tuple[str, np.ndarray]]:
    from napari_skinseg.image_io import read_image
    from napari_skinseg.synthetic import make_synthetic_lesion

    if data is None:
        return [(f"synthetic {i}", make_synthetic_lesion((512, 512), seed=i)[0]) for i in range(n)]
    paths = last_images(data, n)  # last n: far from the first ones
    return [(p.stem, read_image(p)) for p in paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="a pair folder with images/ (512 x 512 JPEGs); default synthetic")
    parser.add_argument("--warm-runs", type=int, default=10)
    args = parser.parse_args()
    t_launch = time.perf_counter()
    viewer = napari.Viewer()
    wait(lambda: viewer.window._qt_viewer.canvas.native.isVisible())
    pictures = images(args.data, args.warm_runs + 1)
    for name, image in pictures:
        viewer.add_image(image, name=name, rgb=True)
    t_dock = time.perf_counter()
    _, widget = viewer.window.add_plugin_dock_widget("napari-skinseg", "Segment")
    dock_seconds = time.perf_counter() - t_dock

    def click(name: str) -> float:
        widget.images.value = [name]
        start = time.perf_counter()
        widget.segment_button.native.click()
        wait(lambda: f"{name} prediction" in viewer.layers)
        seconds = time.perf_counter() - start
        wait(lambda: widget.worker is None)
        return seconds

    first = click(pictures[0][0])  # at once: the worker is still starting
    warm = [click(name) for name, _ in pictures[1:]]
    from napari_skinseg._widgets.session import SESSION

    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "image": "512x512 " + ("ISIC JPEG" if args.data else "synthetic"),
        "napari_start_seconds": round(t_dock - t_launch, 2),
        "open_dock_seconds": round(dock_seconds, 3),
        "first_click_seconds": round(first, 3),
        "warm_click_median_seconds": round(statistics.median(warm), 4),
        "warm_click_seconds": [round(w, 4) for w in warm],
        "torch_in_napari": "torch" in sys.modules,
        "worker_starts": SESSION.client.starts,
    }
    print(json.dumps(result, indent=2))
    save_json(result, Path(__file__).parent / "results" / "napari_segment_latency.json")
    viewer.close()


if __name__ == "__main__":
    main()
