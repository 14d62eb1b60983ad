"""Take the README screenshots the way a person meets the plugin: napari first, then the docks.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot.py docs

Writes docs/screenshot_segment.png, docs/screenshot_curate.png, docs/screenshot_review_click.png
and docs/screenshot_train.png
(a 1600 x 1000 window: the docks scroll, so they fit a 1080-pixel screen).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import napari  # first: the canvas's OpenGL is loaded before anything of the plugin
import numpy as np
from qtpy.QtWidgets import QApplication


def wait(condition, timeout=600):
    start = time.time()
    while not condition():
        QApplication.processEvents()
        time.sleep(0.05)
        if time.time() - start > timeout:
            raise TimeoutError


def settle():
    for _ in range(30):
        QApplication.processEvents()
        time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--workdir", default="/tmp/skinseg-screenshot")
    args = parser.parse_args()
    out, work = Path(args.out_dir), Path(args.workdir) / str(int(time.time()))
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    from napari_skinseg.synthetic import make_synthetic_lesion, write_synthetic_dataset

    # Segment: the bundled model on the sample, with the measurements.
    viewer.open_sample("napari-skinseg", "synthetic_lesion")
    _, segment = viewer.window.add_plugin_dock_widget("napari-skinseg", "Segment")
    segment.images.value = ["synthetic lesion"]
    segment.segment_button.native.click()
    wait(lambda: "synthetic lesion prediction" in viewer.layers and segment.worker is None)
    viewer.layers["synthetic lesion prediction"].contour = 3
    viewer.reset_view()
    settle()
    viewer.screenshot(out / "screenshot_segment.png", canvas_only=False)

    # Curate: a folder of new images; one corrected and saved, the next one open for correcting,
    # and a retraining on the curated pairs with both models' Dice on the same pairs.
    viewer.layers.clear()
    source, _ = write_synthetic_dataset(work / "new_images", 8, (384, 384), seed=41)
    curated = work / "curated"
    write_synthetic_dataset(curated, 6, (256, 256), seed=42)
    _, curate = viewer.window.add_plugin_dock_widget("napari-skinseg", "Curate", tabify=True)
    curate.curated_dir.value, curate.source_dir.value = curated, source
    curate.retraining.epochs.value = 4
    curate.retraining.retrain_button.native.click()
    controller = curate.retraining.controller
    wait(lambda: controller.summary is not None and not controller.running)
    curate.next_button.native.click()
    wait(lambda: curate.worker is None and len(viewer.layers) == 2)
    labels = viewer.layers[-1]
    labels.paint((60, 60), 1)  # a correction with the brush: shown as unsaved
    viewer.reset_view()
    settle()
    viewer.screenshot(out / "screenshot_curate.png", canvas_only=False)

    # The review queue and click-to-fix: the worst image first (by predicted Dice), two clicks.
    viewer.layers.clear()
    curate._opened, curate.visited, curate.position = None, [], -1
    curate.queue.order.value = "worst first (predicted Dice)"
    wait(lambda: curate.worker is None and len(curate.queue.predicted) > 0)
    curate.next_button.native.click()
    wait(lambda: curate.worker is None and len(viewer.layers) == 2)
    labels = viewer.layers[-1]
    curate.click_fix.start_button.native.click()
    points = viewer.layers[-1]
    ys, xs = np.nonzero(labels.data)
    if len(ys):
        points.add([int(ys.mean()), int(xs.max()) + 12])  # "lesion here", just outside the mask
    fixed = lambda: not curate.click_fix._running and not curate.click_fix._pending  # noqa: E731
    wait(fixed)  # each click is answered by the worker's click-to-fix network
    curate.click_fix.kind.value = curate.click_fix.kind.choices[1]
    points.add([10, 10])  # "this is skin"
    wait(fixed)
    viewer.reset_view()
    settle()
    viewer.screenshot(out / "screenshot_review_click.png", canvas_only=False)

    # Train: fine-tuning on Image + Labels layers, live curves, the command that repeats it.
    viewer.layers.clear()
    for i in range(6):
        image, mask = make_synthetic_lesion((256, 256), seed=30 + i)
        viewer.add_image(image, name=f"train{i}", rgb=True, visible=i == 0)
        viewer.add_labels(mask.astype(np.uint8), name=f"train{i} mask", visible=i == 0)
    _, train = viewer.window.add_plugin_dock_widget("napari-skinseg", "Train", tabify=True)
    train.labels_layers.value = [f"train{i} mask" for i in range(6)]
    train.epochs.value, train.size.value, train.learning_rate.value = 6, 192, "0.0003"
    train.start_from.value = "bundled model"
    train.output.value = work / "demo.pt"
    train.start_button.native.click()
    wait(lambda: not train.controller.running)
    viewer.reset_view()
    settle()
    viewer.screenshot(out / "screenshot_train.png", canvas_only=False)
    print(f"saved screenshots in {out}")
    viewer.close()


if __name__ == "__main__":
    main()
