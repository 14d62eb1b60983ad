"""The segmentation module: every image of a folder into a Results folder.

:func:`segment_folder` is a generator that yields one :class:`ImageOutcome` per input file (so a
GUI can show progress) and returns a :class:`FolderReport`. Unreadable files are reported and
skipped; existing outputs are kept unless ``overwrite=True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generator

import numpy as np
from skimage import morphology, segmentation

from .config import PostprocessConfig
from .image_io import ImageReadError, mask_to_uint8, read_image, write_image
from .pairs import is_mask_name, list_images, mask_filename
from .prediction import Segmenter

OVERLAY_COLOUR = (0, 255, 0)


@dataclass
class ImageOutcome:
    path: Path
    status: str  # "written", "exists", "failed", "skipped"
    message: str = ""
    outputs: list[Path] = field(default_factory=list)
    mask: np.ndarray | None = None
    image: np.ndarray | None = None


@dataclass
class FolderReport:
    written: list[ImageOutcome] = field(default_factory=list)
    existing: list[ImageOutcome] = field(default_factory=list)
    failed: list[ImageOutcome] = field(default_factory=list)
    skipped: list[ImageOutcome] = field(default_factory=list)  # not images, or mask files

    def add(self, outcome: ImageOutcome) -> None:
        {"written": self.written, "exists": self.existing, "failed": self.failed,
         "skipped": self.skipped}[outcome.status].append(outcome)

    def summary(self) -> str:
        parts = [f"{len(self.written)} segmented"]
        if self.existing:
            parts.append(f"{len(self.existing)} kept because their outputs exist (use --overwrite)")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped (not images)")
        return ", ".join(parts)


def overlay_outline(image: np.ndarray, mask: np.ndarray, colour=OVERLAY_COLOUR) -> np.ndarray:
    """The image with the lesion outline drawn on it, thick enough to see on large images."""
    edges = segmentation.find_boundaries(mask, mode="inner")
    width = max(1, round(max(mask.shape) / 400))
    if width > 1:
        edges = morphology.binary_dilation(edges, morphology.disk(width // 2 + 1)) & (mask | edges)
    out = image.copy()
    out[edges] = colour
    return out


def output_paths(results_dir: Path, stem: str, overlay: bool, probabilities: bool) -> dict[str, Path]:
    paths = {"mask": results_dir / mask_filename(stem)}
    if overlay:
        paths["overlay"] = results_dir / f"{stem}_overlay.png"
    if probabilities:
        paths["probability"] = results_dir / f"{stem}_probability.png"
    return paths


def check_folders(input_dir: Path, results_dir: Path) -> str | None:
    """Raise for folder choices that would mix outputs with inputs; return a note for safe ones."""
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder {input_dir} does not exist")
    if input_dir.resolve() == results_dir.resolve():
        raise ValueError(f"the results folder must differ from the input folder ({input_dir}): "
                         "masks written there would be mixed with the images")
    if results_dir.exists() and not results_dir.is_dir():
        raise NotADirectoryError(f"results path {results_dir} exists and is not a folder")
    if input_dir.resolve() in results_dir.resolve().parents:
        return (f"note: the results folder is inside the input folder; sub-folders are not read "
                f"as input, so {results_dir.name}/ is never segmented itself")
    return None


def segment_folder(input_dir: str | Path, results_dir: str | Path, segmenter: Segmenter,
                   post: PostprocessConfig | None = None, *, tta: bool = False,
                   overwrite: bool = False, overlay: bool = False, probabilities: bool = False,
                   keep_arrays: bool = False,
                   after_each: Callable[[ImageOutcome], None] | None = None,
                   ) -> Generator[ImageOutcome, None, FolderReport]:
    input_dir, results_dir = Path(input_dir), Path(results_dir)
    check_folders(input_dir, results_dir)
    images, not_images = list_images(input_dir)
    report = FolderReport()
    for skipped in not_images:
        outcome = ImageOutcome(skipped.path, "skipped", skipped.reason)
        report.add(outcome)
        yield outcome
    results_dir.mkdir(parents=True, exist_ok=True)
    for path in images:
        outcome = _segment_one(path, results_dir, segmenter, post, tta, overwrite, overlay,
                               probabilities)
        if after_each:
            after_each(outcome)
        if not keep_arrays:
            outcome.mask = outcome.image = None
        report.add(outcome)
        yield outcome
    if not images:
        raise ValueError(f"no images found in {input_dir}"
                         + (f" ({len(not_images)} other files)" if not_images else ""))
    return report


def _segment_one(path: Path, results_dir: Path, segmenter: Segmenter, post, tta, overwrite,
                 overlay, probabilities) -> ImageOutcome:
    if is_mask_name(path):
        return ImageOutcome(path, "skipped", "named like a mask, not segmented")
    outputs = output_paths(results_dir, path.stem, overlay, probabilities)
    present = [p for p in outputs.values() if p.exists()]
    if present and not overwrite:
        return ImageOutcome(path, "exists", f"{present[0].name} exists; kept (use --overwrite)")
    try:
        image = read_image(path)
    except ImageReadError as err:
        return ImageOutcome(path, "failed", str(err))
    try:
        seg = segmenter.segment(image, post, tta=tta)
    except (RuntimeError, MemoryError) as err:  # e.g. out of memory on a GPU
        return ImageOutcome(path, "failed", f"{path.name}: segmentation failed: {err}")
    write_image(outputs["mask"], mask_to_uint8(seg.mask), overwrite=overwrite)
    if "overlay" in outputs:
        write_image(outputs["overlay"], overlay_outline(image, seg.mask), overwrite=overwrite)
    if "probability" in outputs:
        prob8 = np.clip(np.rint(seg.probability * 255), 0, 255).astype(np.uint8)
        write_image(outputs["probability"], prob8, overwrite=overwrite)
    return ImageOutcome(path, "written", "", list(outputs.values()), seg.mask, image)
