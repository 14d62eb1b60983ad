"""Helpers shared by the benchmark scripts (data subsets, machine description, evaluation).

Importing it does not import torch, so the benchmarks that play napari (which must stay
torch-free, as napari's process does) use it too."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_skinseg.image_io import read_image, read_mask
from napari_skinseg.metrics import image_metrics, mean_metrics
from napari_skinseg.pairs import Pair, find_pairs

if TYPE_CHECKING:
    from napari_skinseg.prediction import Segmenter


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        torch_text = f"torch {version('torch')}"
    except PackageNotFoundError:
        torch_text = "no torch"
    torch = sys.modules.get("torch")  # its threads, where this process uses it
    if torch is not None:
        torch_text += f" ({torch.get_num_threads()} threads)"
    return f"{cpu}, {os.cpu_count()} cores, {torch_text}, Python {sys.version.split()[0]}"


def last_images(data: str | Path, n: int) -> list[Path]:
    """The last ``n`` JPEGs of ``data/images`` by name (the folder-run benchmarks' input)."""
    return sorted((Path(data) / "images").glob("*.jpg"))[-n:]


def wait_in_qt(condition, timeout: float = 300.0) -> None:
    """Let Qt's event loop run until ``condition()`` holds (napari benchmarks)."""
    from qtpy.QtWidgets import QApplication

    app, start = QApplication.instance(), time.perf_counter()
    while not condition():
        app.processEvents()
        time.sleep(0.001)
        if time.perf_counter() - start > timeout:
            raise TimeoutError


def all_pairs(data: str | Path) -> list[Pair]:
    data = Path(data)
    return find_pairs(data / "images", data / "masks").pairs


def random_subset(pairs: list[Pair], n: int, seed: int = 0) -> list[Pair]:
    """The same seeded choice as `skinseg train --limit N --seed S`."""
    chosen = np.random.default_rng(seed).permutation(len(pairs))[:n]
    return [pairs[i] for i in sorted(chosen)]


def evaluate_pairs(segmenter: Segmenter, pairs: list[Pair], tta: bool = False) -> dict[str, float]:
    """ISIC metrics per image at the mask's original size, averaged."""
    rows = []
    for pair in pairs:
        image = read_image(pair.image)
        truth = read_mask(pair.mask, shape=image.shape[:2])
        rows.append(image_metrics(segmenter.segment(image, tta=tta).mask, truth))
    return mean_metrics(rows)


def linked_folder(images, folder: str | Path) -> Path:
    """``folder`` holding symbolic links to ``images`` (an input folder made of a subset)."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    for image in images:
        (folder / Path(image).name).symlink_to(Path(image).resolve())
    return folder


def save_json(data: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"date": dt.date.today().isoformat(), "machine": machine(), **data}
    path.write_text(json.dumps(data, indent=1))
    print(f"results in {path}")


def bundled_val_pairs(pairs: list[Pair]) -> list[Pair] | None:
    """The pairs the bundled model was validated on (never trained on), or None without it."""
    from napari_skinseg.bundled import bundled_model_path, has_bundled_model
    from napari_skinseg.model import load_model

    if not has_bundled_model():
        return None
    names = set(load_model(bundled_model_path()).metadata.data.get("val_names", []))
    return [p for p in pairs if p.name in names]
