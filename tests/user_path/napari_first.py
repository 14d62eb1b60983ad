"""The path a person takes, in a fresh process: napari and its canvas first, then every dock of
the plugin, then Segment on the sample and one click to fix it through the model worker.
Prints one JSON line of findings; exits 0 when done.

Run by tests/test_user_path.py under the test run's virtual screen; `--kill-worker` also starts a
training, kills the model worker mid-run, and segments again.
"""

from __future__ import annotations

import json
import sys
import time

import napari  # first, as a person starts it: the canvas's OpenGL is loaded before the plugin
import numpy as np
from qtpy.QtWidgets import QApplication

FORBIDDEN = ("torch", "torchvision", "triton", "segmentation_models_pytorch")


def wait(condition, timeout: float = 120.0) -> float:
    app, start = QApplication.instance(), time.perf_counter()
    while not condition():
        app.processEvents()
        time.sleep(0.01)
        if time.perf_counter() - start > timeout:
            raise TimeoutError("waited too long")
    return time.perf_counter() - start


def main() -> int:
    kill_worker = "--kill-worker" in sys.argv
    viewer = napari.Viewer()
    wait(lambda: viewer.window._qt_viewer.canvas.native.isVisible(), 30)
    errors: list[str] = []
    from napari_skinseg._widgets import jobs

    jobs.show_error = errors.append  # notifications, collected
    viewer.open_sample("napari-skinseg", "synthetic_lesion")
    docks = {name: viewer.window.add_plugin_dock_widget("napari-skinseg", name)[1]
             for name in ("Train", "Segment", "Curate")}
    # matplotlib waits for a training's first epoch: its import held the opening dock up
    matplotlib_at_open = "matplotlib" in sys.modules
    segment = docks["Segment"]
    viewer.layers.selection.active = viewer.layers["synthetic lesion"]
    segment.segment_button.native.click()
    seconds = wait(lambda: "synthetic lesion prediction" in viewer.layers and segment.worker is None)
    prediction = viewer.layers["synthetic lesion prediction"]
    truth = viewer.layers["synthetic lesion mask"].data > 0
    mask = prediction.data > 0
    findings = {"segment_seconds": round(seconds, 2), "matplotlib_at_open": matplotlib_at_open,
                "dice": float(2 * (mask & truth).sum() / (mask.sum() + truth.sum())),
                "layers": [layer.name for layer in viewer.layers]}
    if not kill_worker:
        # Click to fix, as a person does: a "lesion here" click just outside the mask; the
        # worker's click network answers and the prediction layer changes (napari stays torch-free).
        curate = docks["Curate"]
        viewer.layers.selection.active = prediction
        curate.click_fix.start_button.native.click()
        points = viewer.layers["synthetic lesion prediction clicks"]
        before = prediction.data.copy()
        ys, xs = np.nonzero(truth & ~mask) if (truth & ~mask).any() else np.nonzero(~mask)
        y, x = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])
        points.add([y, x])
        wait(lambda: not curate.click_fix._running and not curate.click_fix._pending)
        findings["click_pixel_is_lesion"] = bool(prediction.data[y, x] > 0)
        findings["click_changed_pixels"] = int((prediction.data != before).sum())
    if kill_worker:
        train = docks["Train"]
        train.labels_layers.value = ["synthetic lesion mask", "synthetic lesion prediction"]
        train.epochs.value, train.size.value, train.batch_size.value = 100, 128, 1
        train.start_from.value = "scratch"
        train.output.value = sys.argv[-1]
        train.start_button.native.click()
        wait(lambda: train.controller.progress_bar.value >= 1)
        from napari_skinseg._widgets.session import SESSION

        SESSION.client.kill()
        wait(lambda: not train.controller.running)
        findings["after_kill_layers"] = [layer.name for layer in viewer.layers]
        findings["kill_notification"] = errors[-1] if errors else ""
        prediction.data = prediction.data * 0
        segment.confirm_replace = lambda message: True
        segment.segment_button.native.click()
        wait(lambda: segment.worker is None and prediction.data.any())
        findings["segmented_after_kill"] = bool(prediction.data.any())
    wait(lambda: not jobs.RUNNING)
    findings["errors"] = errors
    findings["forbidden_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    print(json.dumps(findings), flush=True)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
