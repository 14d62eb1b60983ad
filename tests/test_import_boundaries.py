"""What each side may import: napari's side never torch; the core never Qt or napari."""

from __future__ import annotations

import json
import subprocess
import sys

WIDGET_MODULES = ["napari_skinseg._widgets." + m for m in (
    "train_widget", "segment_widget", "curate_widget", "model_choice", "measurements_panel",
    "training_controller", "review_queue", "retrain_on_curated", "jobs", "session", "layers",
    "fields")] + ["napari_skinseg._sample_data"]
CORE_MODULES = ["napari_skinseg." + m for m in (
    "config", "image_io", "pairs", "dataset", "transforms", "model", "training", "prediction",
    "postprocess", "metrics", "measurements", "evaluation", "folder_segmentation", "cli",
    "worker_jobs", "worker_process", "worker_client", "reports", "synthetic", "history",
    "distributed")]


def imported_after(modules: list[str]) -> set[str]:
    code = (f"import importlib, json, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted({k.split('.')[0] for k in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout))


def test_the_napari_side_never_imports_torch():
    top = imported_after(WIDGET_MODULES)
    assert "napari" in top
    assert not top & {"torch", "torchvision", "triton", "segmentation_models_pytorch", "timm"}


def test_the_core_never_imports_qt_or_napari():
    top = imported_after(CORE_MODULES)
    assert "torch" in top
    assert not top & {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy"}
