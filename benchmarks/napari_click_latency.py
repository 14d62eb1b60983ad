"""Click-to-fix as napari runs it: time from a click (a point added) to the updated mask layer.

    xvfb-run -a python benchmarks/napari_click_latency.py --data ../shared/data/isic2018 --n 10

napari first (its canvas shown), then the Segment and Curate docks; each of N held-out ISIC images
(512 x 512) is segmented by the bundled model, then the standard simulated user clicks (at most 10
clicks, benchmarks/click_to_fix.py). Each click is a point added to the clicks layer, as the mouse
adds it, the first one a second (``PERSON_PAUSE_S``) after *Fix with clicks* is pressed, as a
person's would be; timed until the prediction layer holds the new mask, with the Segment dock's
measurements and Curate's status line updated (they run in the same event). Writes
benchmarks/results/napari_click_latency.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import napari  # first, as a person starts it
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from click_to_fix_user import next_click  # noqa: E402  (the standard simulated user, torch-free)
from common import save_json  # noqa: E402  (torch-free)
from common import wait_in_qt as wait  # noqa: E402

PERSON_PAUSE_S = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds between clicks (0: each click as soon as the last is shown)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"
                                             / "napari_click_latency.json"))
    args = parser.parse_args()
    viewer = napari.Viewer()
    wait(lambda: viewer.window._qt_viewer.canvas.native.isVisible())
    from napari_skinseg.image_io import read_image, read_mask

    # The held-out split needs the model file (torch): computed in another process, since torch
    # must never enter napari's.
    code = ("import json, sys; sys.path.insert(0, 'benchmarks'); from heldout import isic_split; "
            f"print(json.dumps([[str(p.image), str(p.mask)] for p in isic_split({args.data!r})['benchmark'][:{args.n}]]))")
    pairs = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1])

    _, segment = viewer.window.add_plugin_dock_widget("napari-skinseg", "Segment")
    _, curate = viewer.window.add_plugin_dock_widget("napari-skinseg", "Curate", tabify=True)
    times = []
    for image_path, mask_path in pairs:
        viewer.layers.clear()
        image = read_image(image_path)
        truth = read_mask(mask_path, shape=image.shape[:2])
        viewer.add_image(image, name="lesion", rgb=True)
        segment.images.value = ["lesion"]
        segment.segment_button.native.click()
        wait(lambda: "lesion prediction" in viewer.layers and segment.worker is None)
        labels = viewer.layers["lesion prediction"]
        viewer.layers.selection.active = labels
        curate.click_fix.start_button.native.click()
        points = viewer.layers["lesion prediction clicks"]
        # a person needs about a second from the button to the first click on the lesion
        pause = time.perf_counter() + PERSON_PAUSE_S
        wait(lambda: time.perf_counter() > pause)
        for _ in range(10):
            click = next_click(labels.data > 0, truth)  # torch-free (numpy, scipy)
            if click is None:
                break
            curate.click_fix.kind.value = curate.click_fix.kind.choices[0 if click[2] else 1]
            if times and args.pause:  # a person's cadence between clicks
                pause = time.perf_counter() + args.pause
                wait(lambda: time.perf_counter() > pause)
            start = time.perf_counter()
            points.add([click[0], click[1]])
            # until the mask is shown: the worker's click network answers asynchronously
            wait(lambda: not curate.click_fix._running and not curate.click_fix._pending)
            times.append(time.perf_counter() - start)
    result = {"command": " ".join(["python", *sys.argv]), "clicks": len(times),
              "pause_before_first_click_s": PERSON_PAUSE_S, "pause_between_clicks_s": args.pause,
              "ms_median": round(statistics.median(times) * 1000, 1),
              "ms_p95": round(float(np.percentile(times, 95)) * 1000, 1),
              "ms_max": round(max(times) * 1000, 1),
              "ms_each": [round(t * 1000, 1) for t in times],
              "torch_in_napari": "torch" in sys.modules}
    print(json.dumps(result, indent=2))
    save_json(result, args.out)
    viewer.close()


if __name__ == "__main__":
    main()
