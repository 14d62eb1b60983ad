"""Compare a folder of predicted masks with a folder of true masks (ISIC 2018 Task 1 metrics)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from .image_io import ImageReadError, read_mask
from .metrics import METRIC_NAMES, ImageMetrics, image_metrics, mean_metrics
from .pairs import Skipped, find_mask, id_of_mask, list_images


@dataclass
class Evaluation:
    rows: list[tuple[str, ImageMetrics]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def means(self) -> dict[str, float]:
        return mean_metrics([m for _, m in self.rows])

    def write_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", *METRIC_NAMES])
            for name, m in self.rows:
                writer.writerow([name, *(f"{getattr(m, k):.6f}" for k in METRIC_NAMES)])
            writer.writerow(["mean", *(f"{self.means[k]:.6f}" for k in METRIC_NAMES)])
        return path


def evaluate_folders(pred_dir: str | Path, truth_dir: str | Path) -> Evaluation:
    """Every prediction (``<id>_segmentation.png`` or ``<id>.png``) against its truth."""
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    if not truth_dir.is_dir():
        raise FileNotFoundError(f"{truth_dir} is not a folder")
    preds, skipped = list_images(pred_dir)
    result = Evaluation(skipped=skipped)
    for pred_path in preds:
        stem = pred_path.stem
        image_id = id_of_mask(pred_path)
        if image_id is None and stem.endswith(("_overlay", "_probability")):
            continue  # other outputs of `skinseg segment`
        image_id = image_id or stem
        truth_path = find_mask(Path(image_id), truth_dir)
        if truth_path is None:
            result.skipped.append(Skipped(pred_path, f"no true mask for {image_id} in {truth_dir}"))
            continue
        try:
            truth = read_mask(truth_path)
            pred = read_mask(pred_path, shape=truth.shape)
        except ImageReadError as err:
            result.skipped.append(Skipped(pred_path, str(err)))
            continue
        result.rows.append((image_id, image_metrics(pred, truth)))
    if not result.rows:
        raise ValueError(f"no prediction in {pred_dir} has a matching mask in {truth_dir}")
    return result
