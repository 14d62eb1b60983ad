"""Take the README screenshot: the widgets in real use on a synthetic lesion (run under xvfb-run).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot.py docs [--model FILE]

Writes docs/screenshot_segment.png and docs/screenshot_train.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_skinseg._widgets.state import MODEL
from napari_skinseg.synthetic import make_synthetic_lesion


def wait(condition, timeout=300):
    start = time.time()
    while not condition():
        QApplication.processEvents()
        time.sleep(0.05)
        if time.time() - start > timeout:
            raise TimeoutError


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--model", default=None)
    parser.add_argument("--workdir", default="/tmp/skinseg-screenshot")
    args = parser.parse_args()
    if args.model:
        MODEL.set(args.model)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    # A short fine-tuning on six synthetic pairs, so the Train dock shows a real curve.
    for i in range(6):
        image, mask = make_synthetic_lesion((256, 256), seed=30 + i)
        viewer.add_image(image, name=f"train{i}", rgb=True, visible=False)
        viewer.add_labels(mask.astype(np.uint8), name=f"train{i} mask", visible=False)
    _, train = viewer.window.add_plugin_dock_widget("napari-skinseg", "Train")
    train.labels_layers.value = [f"train{i} mask" for i in range(6)]
    train.epochs.value, train.size.value, train.learning_rate.value = 6, 192, "0.0003"
    train.start_from.value = "bundled model"  # fine-tune, as a user with a few new pairs would
    train.output.value = Path(args.workdir) / f"demo-{int(time.time())}.pt"
    train.start_button.native.click()
    wait(lambda: not train.controller.running)
    viewer.open_sample("napari-skinseg", "synthetic_lesion")
    viewer.layers["synthetic lesion mask"].visible = False
    _, segment = viewer.window.add_plugin_dock_widget("napari-skinseg", "Segment", tabify=True)
    segment.images.value = ["synthetic lesion"]
    if args.model:  # segment with the given model, not the short demo training
        MODEL.set(args.model)
    else:
        segment.model.choice.value = "bundled model"
    segment.segment_button.native.click()
    wait(lambda: "synthetic lesion prediction" in viewer.layers and segment.worker is None)
    viewer.layers["synthetic lesion prediction"].contour = 3
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(out / "screenshot_segment.png", canvas_only=False)
    viewer.window._dock_widgets["Train (napari-skinseg)"].raise_()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.screenshot(out / "screenshot_train.png", canvas_only=False)
    print(f"saved screenshots in {out}")


if __name__ == "__main__":
    main()
