"""The segmentation module: every image of a folder into a Results folder.

:func:`segment_folder` is a generator that yields one :class:`ImageOutcome` per input file (so a
GUI can show progress) and returns a :class:`FolderReport`. Unreadable files are reported and
skipped.

Reruns complete what is missing: an image whose mask exists keeps that mask (a person may have
corrected it) and gets only the outputs it lacks (overlay drawn from the mask on disk, probability
map, measurement row); ``overwrite=True`` replaces everything. Every file is written atomically and
never replaces one that appeared meanwhile, so two runs into one folder both finish: the first
writes each file, the other keeps it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Generator

import numpy as np
from skimage import morphology, segmentation

from .config import PostprocessConfig
from .destinations import WriteError, check_output_folder, require_folder
from .image_io import ImageReadError, mask_to_uint8, read_image, read_mask, write_image
from .measurements import (
    made_with_pixel_size,
    measure_lesion,
    merge_measurements_csv,
    read_measurements_csv,
)
from .pairs import (
    images_subfolder_hint,
    is_mask_name,
    is_result_extra,
    list_images,
    mask_filename,
    overlay_filename,
    probability_filename,
    split_same_ids,
)

if TYPE_CHECKING:  # torch only for the type: the ONNX engine runs folders without torch
    from .prediction import Segmenter

OVERLAY_COLOUR = (0, 255, 0)
MEASUREMENTS_CSV = "measurements.csv"


@dataclass
class ImageOutcome:
    path: Path
    status: str  # "written", "completed" (mask kept, missing outputs added), "exists", "failed", "skipped"
    message: str = ""
    outputs: list[Path] = field(default_factory=list)
    mask: np.ndarray | None = None
    image: np.ndarray | None = None


@dataclass
class FolderReport:
    written: list[ImageOutcome] = field(default_factory=list)
    completed: list[ImageOutcome] = field(default_factory=list)
    existing: list[ImageOutcome] = field(default_factory=list)
    failed: list[ImageOutcome] = field(default_factory=list)
    skipped: list[ImageOutcome] = field(default_factory=list)  # not images, or mask files
    measured: int = 0  # rows added to the measurements table
    remeasured: int = 0  # rows replaced: they were made with another pixel size

    def add(self, outcome: ImageOutcome) -> None:
        {"written": self.written, "completed": self.completed, "exists": self.existing,
         "failed": self.failed, "skipped": self.skipped}[outcome.status].append(outcome)

    def summary(self, overwrite_hint: str = "use --overwrite") -> str:
        """One line; ``overwrite_hint`` says how to replace kept outputs where this is shown."""
        parts = [f"{len(self.written)} segmented"]
        if self.completed:
            parts.append(f"{len(self.completed)} completed (mask kept, missing outputs added)")
        if self.existing:
            parts.append(f"{len(self.existing)} kept because their outputs exist ({overwrite_hint})")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped (not images)")
        return ", ".join(parts)


FAST_PNG_LEVEL = 1  # zlib level for overlays and probability maps (lossless either way)


def overlay_outline(image: np.ndarray, mask: np.ndarray, colour=OVERLAY_COLOUR) -> np.ndarray:
    """The image with the lesion outline drawn on it, thick enough to see on large images."""
    edges = segmentation.find_boundaries(mask, mode="inner")
    width = max(1, round(max(mask.shape) / 400))
    if width > 1:
        # dilation, not binary_dilation (deprecated in scikit-image 0.26, gone in 0.28)
        edges = morphology.dilation(edges, morphology.disk(width // 2 + 1)) & (mask | edges)
    out = image.copy()
    out[edges] = colour
    return out


def output_paths(results_dir: Path, stem: str, overlay: bool, probabilities: bool) -> dict[str, Path]:
    paths = {"mask": results_dir / mask_filename(stem)}
    if overlay:
        paths["overlay"] = results_dir / overlay_filename(stem)
    if probabilities:
        paths["probability"] = results_dir / probability_filename(stem)
    return paths


def check_folders(input_dir: Path, results_dir: Path) -> str | None:
    """Raise for folder choices that would mix outputs with inputs or cannot be written; return
    a note for safe ones."""
    input_dir, results_dir = Path(input_dir), Path(results_dir)
    require_folder(input_dir, "input folder")
    if input_dir.resolve() == results_dir.resolve():
        raise ValueError(f"the results folder must differ from the input folder ({input_dir}): "
                         "masks written there would be mixed with the images")
    check_output_folder(results_dir)
    if input_dir.resolve() in results_dir.resolve().parents:
        return (f"note: the results folder is inside the input folder; sub-folders are not read "
                f"as input, so {results_dir.name}/ is never segmented itself")
    return None


def default_workers(segmenter=None) -> int:
    """Images in flight when the user does not say: the cores, at most 4, on the CPU (the network
    competes for them); on a CUDA GPU more (twice the cores, at most 32), since the threads mostly
    wait on files and on the GPU, and their inputs are batched into one forward (prediction.py)."""
    cores = os.cpu_count() or 1
    device = getattr(segmenter, "device", None)
    if getattr(device, "type", None) == "cuda":
        return min(32, 2 * cores)
    return min(4, cores)


def segment_folder(input_dir: str | Path, results_dir: str | Path, segmenter: Segmenter,
                   post: PostprocessConfig | None = None, *, tta: bool = False,
                   overwrite: bool = False, overlay: bool = False, probabilities: bool = False,
                   keep_arrays: bool = False,
                   after_each: Callable[[ImageOutcome], None] | None = None,
                   measurements: str | Path | bool | None = None,
                   pixel_size_mm: float | None = None, workers: int = 1,
                   ) -> Generator[ImageOutcome, None, FolderReport]:
    """Segment every image of ``input_dir`` into ``results_dir`` (see the module's docstring).

    ``workers`` > 1 pipelines the run: that many images are read, segmented, cleaned up and
    written at once on threads (decoding, ONNX Runtime/torch and most of Pillow, numpy and
    scikit-image release the GIL), with the same outputs, in the same order, under the same
    skip/resume rules as one at a time.

    ``measurements``: a CSV file (``True``: ``results_dir/measurements.csv``) that gets one row
    of lesion descriptors per image with a mask; rows already there are kept unless
    ``overwrite``, or unless they were made with another ``pixel_size_mm``: those are measured
    again from the masks on disk (which are kept), so the table never mixes pixel sizes. The
    rows are added when the run ends, also when it is interrupted.
    """
    input_dir, results_dir = Path(input_dir), Path(results_dir)
    if pixel_size_mm is not None and not (np.isfinite(pixel_size_mm) and pixel_size_mm > 0):
        raise ValueError(f"pixel size must be a positive number of millimetres (got {pixel_size_mm})")
    check_folders(input_dir, results_dir)
    csv_path = (results_dir / MEASUREMENTS_CSV if measurements is True
                else Path(measurements) if measurements else None)
    measured_ids, stale_ids = set(), set()  # rows to keep; rows made with another pixel size
    if csv_path is not None and not overwrite:
        for row in read_measurements_csv(csv_path):
            fits = made_with_pixel_size(row, pixel_size_mm)
            (measured_ids if fits else stale_ids).add(row["id"])
    images, not_images = list_images(input_dir, "input folder")
    images, clashes = split_same_ids(images)
    if workers > 1 and hasattr(segmenter, "with_threads"):  # ONNX Runtime: a core per image
        segmenter = segmenter.with_threads(max(1, (os.cpu_count() or 1) // workers))
    report = FolderReport()
    for skipped in not_images:
        outcome = ImageOutcome(skipped.path, "skipped", skipped.reason)
        report.add(outcome)
        yield outcome
    for clash in clashes:  # an image that is not segmented: failed, so the exit code says so
        outcome = ImageOutcome(clash.path, "failed", str(clash))
        report.add(outcome)
        yield outcome
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError.from_os_error(results_dir, err) from None
    rows: list[dict] = []

    def save_rows(failing: bool) -> None:
        if not rows:
            return
        try:
            _, report.measured = merge_measurements_csv(rows, csv_path, replace=overwrite,
                                                        replace_ids=stale_ids)
            report.remeasured += sum(row["id"] in stale_ids for row in rows)
        except OSError:
            if not failing:
                raise
            # The run is already failing (most likely the same full disk): that error is the
            # one to report, and the rerun measures these images again.
        rows.clear()

    def one(path: Path) -> tuple[ImageOutcome, dict | None]:
        want_row = csv_path is not None and (overwrite or path.stem not in measured_ids)
        return _segment_one(path, results_dir, segmenter, post, tta, overwrite, overlay,
                            probabilities, want_row, pixel_size_mm)

    try:
        for outcome, row in _in_order(one, images, workers):
            if row is not None:
                rows.append(row)
            if after_each:
                after_each(outcome)
            if not keep_arrays:
                outcome.mask = outcome.image = None
            report.add(outcome)
            yield outcome
    except BaseException:  # interrupted (Ctrl-C, a cancelled worker) or failing: keep the rows
        save_rows(failing=True)
        raise
    save_rows(failing=False)
    if not images:
        raise ValueError(f"no images found in {input_dir}"
                         + (f" ({len(not_images)} other files)" if not_images else "")
                         + images_subfolder_hint(input_dir))
    return report


def _in_order(work: Callable, items: list, workers: int):
    """``work(item)`` for each item, ``workers`` at a time, results in the items' order; a
    bounded look-ahead keeps memory flat, and pending work is dropped if the caller stops."""
    if workers <= 1:
        yield from map(work, items)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="skinseg-segment")
    pending: deque = deque()
    try:
        it = iter(items)
        for item in itertools.islice(it, 2 * workers):
            pending.append(pool.submit(work, item))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(it, 1):
                pending.append(pool.submit(work, item))
            yield result
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)


def _segment_one(path: Path, results_dir: Path, segmenter: Segmenter, post, tta, overwrite,
                 overlay, probabilities, want_row=False, pixel_size_mm=None
                 ) -> tuple[ImageOutcome, dict | None]:
    if is_mask_name(path):
        return ImageOutcome(path, "skipped", "named like a mask, not segmented"), None
    if is_result_extra(path):  # an earlier run's <id>_overlay.png / <id>_probability.png
        return ImageOutcome(path, "skipped", "named like an overlay or probability map of a "
                                             "results folder, not segmented"), None
    outputs = output_paths(results_dir, path.stem, overlay, probabilities)
    todo = dict(outputs) if overwrite else {k: p for k, p in outputs.items() if not p.exists()}
    if not todo and not want_row:
        return ImageOutcome(path, "exists", f"{outputs['mask'].name} exists; kept (use --overwrite)"), None
    try:
        image = read_image(path)
    except ImageReadError as err:
        return ImageOutcome(path, "failed", str(err)), None
    seg = None
    if "mask" in todo or "probability" in todo:
        try:
            seg = segmenter.segment(image, post, tta=tta)
        except (RuntimeError, MemoryError) as err:  # e.g. out of memory on a GPU
            return ImageOutcome(path, "failed", f"{path.name}: segmentation failed: {err}"), None
    kept_mask = "mask" not in todo
    if kept_mask:  # the mask on disk is the truth now: a person may have corrected it
        try:
            mask = read_mask(outputs["mask"], shape=image.shape[:2])
        except ImageReadError as err:
            return ImageOutcome(path, "failed", f"the existing mask cannot be used ({err}); "
                                "delete it or pass --overwrite"), None
    else:
        mask = seg.mask
    written = []
    for kind, out in todo.items():
        if kind == "mask":
            data = mask_to_uint8(mask)
        elif kind == "overlay":
            data = overlay_outline(image, mask)
        else:
            data = np.clip(np.rint(seg.probability * 255), 0, 255).astype(np.uint8)
        try:
            # overlays (photographs) and probability maps compress slowly at Pillow's default
            # level: level 1 writes a 512² overlay in 14 ms instead of 58 ms, 22 % larger
            write_image(out, data, overwrite=overwrite,
                        png_compress_level=None if kind == "mask" else FAST_PNG_LEVEL)
        except FileExistsError:
            continue  # another run wrote it meanwhile: theirs is kept
        written.append(out)
    row = None
    if want_row:
        with contextlib.suppress(ValueError):
            row = {"id": path.stem, **measure_lesion(mask, image, pixel_size_mm)}
    if not written:
        status = "exists"
        message = f"{outputs['mask'].name} exists; kept (use --overwrite)"
    elif kept_mask:
        status = "completed"
        message = f"{outputs['mask'].name} kept; added " + ", ".join(p.name for p in written)
    else:
        status, message = "written", ""
    return ImageOutcome(path, status, message, written, mask, image), row
