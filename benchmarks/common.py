"""Helpers shared by the benchmark scripts (data subsets, machine description, evaluation)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from napari_skinseg.image_io import read_image, read_mask
from napari_skinseg.metrics import image_metrics, mean_metrics
from napari_skinseg.pairs import Pair, find_pairs
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
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {sys.version.split()[0]}")


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
