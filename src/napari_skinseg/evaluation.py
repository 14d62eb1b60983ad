"""Compare a folder of predicted masks with a folder of true masks (ISIC 2018 Task 1 metrics).

Every true mask is accounted for: it is scored, or counted as *missing* (no prediction, or one
that cannot be read), so means are never silently taken over only the images that happen to have
a prediction.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import atomic_write_text
from .csv_cells import escape_cell
from .destinations import require_folder
from .image_io import ImageReadError, read_mask
from .metrics import METRIC_NAMES, ImageMetrics, image_metrics, mean_metrics
from .pairs import (
    MASK_SUFFIX,
    MASK_SUFFIXES,
    Skipped,
    find_mask_of_id,
    image_id_of_mask,
    is_mask_name,
    is_result_extra,
    list_images,
    mask_filename,
    masks_folder,
)


@dataclass
class Evaluation:
    rows: list[tuple[str, ImageMetrics]] = field(default_factory=list)
    #: files that are neither scored nor missing: predictions without a true mask, other files
    skipped: list[Skipped] = field(default_factory=list)
    #: true masks without a usable prediction (none, or unreadable), with the reason
    missing: list[Skipped] = field(default_factory=list)
    #: true masks that cannot be read themselves
    unreadable_truth: list[Skipped] = field(default_factory=list)
    truth_dir: Path | None = None

    @property
    def n_truth(self) -> int:
        return len(self.rows) + len(self.missing) + len(self.unreadable_truth)

    @property
    def means(self) -> dict[str, float]:
        return mean_metrics([m for _, m in self.rows])

    @property
    def complete(self) -> bool:
        """Every true mask was scored."""
        return not self.missing and not self.unreadable_truth

    def csv_text(self) -> str:
        """One header line, one row per scored image (no summary row; see :attr:`means`)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["id", *METRIC_NAMES])
        for name, m in self.rows:
            writer.writerow([escape_cell(name), *(f"{getattr(m, k):.6f}" for k in METRIC_NAMES)])
        return buffer.getvalue()

    def write_csv(self, path: str | Path, overwrite: bool = True) -> Path:
        return atomic_write_text(path, self.csv_text(), overwrite=overwrite)


def _truth_masks(truth_dir: Path) -> tuple[dict[str, Path], list[Skipped]]:
    """Id -> true-mask file. When any file follows a mask naming convention
    (``<id>_segmentation.png``), only such files are masks (the folder may hold the images too)."""
    files, skipped = list_images(truth_dir, "true-mask folder")
    named = [p for p in files if is_mask_name(p)]
    masks: dict[str, Path] = {}
    # two masks for one id: the ISIC name wins, as in find_mask (MASK_SUFFIXES' order)
    rank = {suffix: i for i, suffix in enumerate(MASK_SUFFIXES)}
    for path in sorted(named or files, key=lambda p: min(
            rank[s] for s in MASK_SUFFIXES if p.stem.endswith(s))):
        first = masks.setdefault(image_id_of_mask(path), path)
        if first != path:  # e.g. a_mask.png beside a_segmentation.png: say which one counts
            skipped.append(Skipped(path, f"a second true mask for '{image_id_of_mask(path)}'; "
                                         f"{first.name} is the one used"))
    return masks, skipped


def _size_mismatch(pred_path: Path, pred, truth) -> str:
    (ph, pw), (th, tw) = pred.shape, truth.shape
    text = f"prediction {pred_path.name} is {pw}x{ph} but the true mask is {tw}x{th}"
    if (ph, pw) == (tw, th):
        text += (" (width and height swapped: is one of them in the stored orientation of an "
                 "EXIF-rotated photo? skinseg's masks follow the image as viewers show it)")
    return text


def evaluate_folders(pred_dir: str | Path, truth_dir: str | Path) -> Evaluation:
    """Every true mask against its prediction (``<id>_segmentation.png`` or ``<id>.png`` in
    ``pred_dir``); ``truth_dir`` may be a pair folder (its ``masks/`` is used).

    Raises ``ValueError`` when both are the same folder, or when no true mask has a prediction
    (with a hint about the names expected).
    """
    pred_dir = require_folder(pred_dir, "predictions folder")
    truth_dir = masks_folder(require_folder(truth_dir, "true-mask folder"))
    if pred_dir.resolve() == truth_dir.resolve():
        raise ValueError(f"the predictions and the true masks are the same folder ({pred_dir}); "
                         "give the results folder of `skinseg segment` first, then the folder "
                         "of true masks")
    truths, skipped = _truth_masks(truth_dir)
    result = Evaluation(skipped=skipped, truth_dir=truth_dir)
    used: set[Path] = set()
    for image_id, truth_path in sorted(truths.items()):
        try:
            truth = read_mask(truth_path)
        except ImageReadError as err:
            result.unreadable_truth.append(Skipped(truth_path, str(err)))
            continue
        pred_path = find_mask_of_id(image_id, pred_dir)
        if pred_path is None:
            result.missing.append(Skipped(truth_path, f"no prediction {mask_filename(image_id)} "
                                                      f"in {pred_dir}"))
            continue
        used.add(pred_path)
        try:
            pred = read_mask(pred_path)
        except ImageReadError as err:
            result.missing.append(Skipped(truth_path, f"prediction unreadable: {err}"))
            continue
        if pred.shape != truth.shape:
            result.missing.append(Skipped(truth_path, _size_mismatch(pred_path, pred, truth)))
            continue
        result.rows.append((image_id, image_metrics(pred, truth)))
    preds, _ = list_images(pred_dir, "predictions folder")
    for pred_path in preds:
        if pred_path not in used and not is_result_extra(pred_path):
            result.skipped.append(Skipped(pred_path, f"no true mask for it in {truth_dir}"))
    if not result.rows:
        if not truths:
            raise ValueError(f"{truth_dir} holds no true masks")
        unusable = [s for s in result.unreadable_truth + result.missing
                    if not s.reason.startswith("no prediction")]
        if unusable:  # named right, but unreadable or of another size: say that, not the names
            raise ValueError(f"none of the {len(truths)} true masks in {truth_dir} could be "
                             f"scored against {pred_dir}: "
                             + "; ".join(str(s) for s in unusable[:3])
                             + (f"; and {len(unusable) - 3} more" if len(unusable) > 3 else ""))
        example = next(iter(sorted(truths)))
        found = [p.name for p in preds if not is_result_extra(p)][:3]
        raise ValueError(
            f"none of the {len(truths)} true masks in {truth_dir} has a readable prediction in "
            f"{pred_dir}: predictions must be named after the true mask's id, "
            f"<id>{MASK_SUFFIX}.png (e.g. {mask_filename(example)}) or <id>.png"
            + (f"; found {', '.join(found)}" if found else "; it holds no masks"))
    return result
