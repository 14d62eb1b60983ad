"""Finding image/mask pairs in folders (ISIC naming and same-stem naming)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import atomic_write_text, folder_lock
from .destinations import require_folder
from .image_io import is_image_file, write_image, write_mask

# The pair-folder convention (ISIC's): <root>/images/<id>.<ext> + <root>/masks/<id>_segmentation.png.
# Every module that reads or writes pairs or masks takes the names from here.
IMAGES_DIR = "images"
MASKS_DIR = "masks"
MASK_SUFFIX = "_segmentation"
# Pairs of a pair folder whose masks are the model's own, accepted unseen: training uses them,
# validation never does (a model scored on its own masks looks better than any retrained one).
UNREVIEWED_FILE = "accepted_unreviewed.json"
MASK_SUFFIXES = (MASK_SUFFIX, "_mask", "")
# The other outputs `skinseg segment` writes beside each mask in a results folder.
OVERLAY_SUFFIX = "_overlay"
PROBABILITY_SUFFIX = "_probability"


def mask_filename(image_id: str) -> str:
    """``<id>_segmentation.png``: the mask file of an image, in training folders and results."""
    return f"{image_id}{MASK_SUFFIX}.png"


def overlay_filename(image_id: str) -> str:
    """``<id>_overlay.png``: the image with the mask's outline, in a results folder."""
    return f"{image_id}{OVERLAY_SUFFIX}.png"


def probability_filename(image_id: str) -> str:
    """``<id>_probability.png``: the lesion probability map (0-255), in a results folder."""
    return f"{image_id}{PROBABILITY_SUFFIX}.png"


def is_result_extra(path: str | Path) -> bool:
    """True for a results folder's overlays and probability maps (outputs that are not masks)."""
    return Path(path).stem.endswith((OVERLAY_SUFFIX, PROBABILITY_SUFFIX))


def safe_id(name: str) -> str:
    """The file-name-safe id a curated pair of ``name`` (an image's stem or a layer name) is saved
    under: ``c d`` -> ``c_d``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"


def unique_ids(ids: list[str]) -> list[str]:
    """``ids`` with repeats renamed ``<id>_2``, ``<id>_3``, ...: the second ``a`` of
    ``[a, a, a_2]`` becomes ``a_3``, never a name another id has. Compared case-insensitively,
    as the file systems of macOS and Windows compare file names."""
    taken = {i.casefold() for i in ids}  # every given id, and each new name once made
    used: set[str] = set()
    out = []
    for image_id in ids:
        name, n = image_id, 2
        if name.casefold() in used:
            while f"{image_id}_{n}".casefold() in taken:
                n += 1
            name = f"{image_id}_{n}"
            taken.add(name.casefold())
        used.add(name.casefold())
        out.append(name)
    return out


def id_of_mask(path: str | Path) -> str | None:
    """The image id of a ``<id>_segmentation.<ext>`` file, else None."""
    stem = Path(path).stem
    return stem[: -len(MASK_SUFFIX)] if stem.endswith(MASK_SUFFIX) else None


@dataclass(frozen=True)
class PairFolder:
    """A folder of training pairs: ``images/`` and ``masks/`` under one root."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def images(self) -> Path:
        return self.root / IMAGES_DIR

    @property
    def masks(self) -> Path:
        return self.root / MASKS_DIR

    def image_path(self, image_id: str, ext: str = ".png") -> Path:
        return self.images / f"{image_id}{ext}"

    def mask_path(self, image_id: str) -> Path:
        return self.masks / mask_filename(image_id)

    def write(self, image_id: str, image, mask, overwrite: bool = False,
              reviewed: bool = True) -> Path:
        """Write the pair ``image_id`` (the image, then its mask) and return the mask's path. When
        the mask cannot be written (a full disk), an image written here is removed again: no
        image is left without its mask, which would read as a curated pair that exists.

        ``reviewed=False``: the mask is the model's, accepted without a look (Curate's *Accept
        the rest*); it is listed in :data:`UNREVIEWED_FILE` until a person saves the pair."""
        image_path, mask_path = self.image_path(image_id), self.mask_path(image_id)
        new_image = not image_path.exists()
        write_image(image_path, image, overwrite=overwrite)
        try:
            write_mask(mask_path, mask, overwrite=overwrite)
        except BaseException:
            if new_image:
                image_path.unlink(missing_ok=True)
            raise
        self._mark_unreviewed(image_id, not reviewed)
        return mask_path

    @property
    def unreviewed_path(self) -> Path:
        return self.root / UNREVIEWED_FILE

    def unreviewed_ids(self) -> set[str]:
        """Ids of pairs whose masks were accepted as the model made them (none when the list is
        missing or damaged: then every pair counts as reviewed, as before the list existed)."""
        try:
            ids = json.loads(self.unreviewed_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return set()
        return {i for i in ids if isinstance(i, str)} if isinstance(ids, list) else set()

    def _mark_unreviewed(self, image_id: str, unreviewed: bool) -> None:
        if not unreviewed and not self.unreviewed_path.exists():
            return  # the common case: a person saves, nothing was ever accepted unseen
        with folder_lock(self.root):  # two docks or runs accepting into one folder take turns
            ids = self.unreviewed_ids()
            if (image_id in ids) == unreviewed:
                return
            ids = ids | {image_id} if unreviewed else ids - {image_id}
            atomic_write_text(self.unreviewed_path, json.dumps(sorted(ids), indent=0) + "\n")

    def ids(self) -> set[str]:
        """Ids that have a mask file (a curated pair)."""
        if not self.masks.is_dir():
            return set()
        return {i for p in self.masks.glob(f"*{MASK_SUFFIX}.png") if (i := id_of_mask(p))}


def unreviewed_ids(images_dir: str | Path, masks_dir: str | Path) -> set[str]:
    """The pairs accepted without review, when ``images_dir`` and ``masks_dir`` are a pair
    folder's ``images/`` and ``masks/`` (other folders keep no such list)."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    folder = PairFolder(images_dir.parent)
    if images_dir.name != IMAGES_DIR or masks_dir.absolute() != folder.masks.absolute():
        return set()
    return folder.unreviewed_ids()


def masks_folder(folder: str | Path) -> Path:
    """``folder/masks`` when ``folder`` is a pair folder (``images/`` + ``masks/``), else ``folder``."""
    pf = PairFolder(Path(folder))
    return pf.masks if pf.images.is_dir() and pf.masks.is_dir() else pf.root


def pair_folders(folder: str | Path) -> tuple[Path, Path]:
    """``folder/images`` + ``folder/masks`` when both exist, else one folder holding both."""
    pf = PairFolder(Path(folder))
    if pf.images.is_dir() and pf.masks.is_dir():
        return pf.images, pf.masks
    return pf.root, pf.root


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path

    @property
    def name(self) -> str:
        return self.image.stem


@dataclass
class Skipped:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path.name}: {self.reason}"


@dataclass
class PairScan:
    pairs: list[Pair] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def is_mask_name(path: Path) -> bool:
    """True for names that follow a mask convention (``<id>_segmentation.png``, ``<id>_mask.png``)."""
    return path.stem.endswith(tuple(s for s in MASK_SUFFIXES if s))


def image_id_of_mask(path: str | Path) -> str:
    """The image id of a mask file under any accepted naming (``<id>_segmentation``,
    ``<id>_mask`` or the same stem)."""
    stem = Path(path).stem
    for suffix in MASK_SUFFIXES:
        if suffix and stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def images_subfolder_hint(folder: str | Path) -> str:
    """Advice for a folder without images of its own that is a pair folder (``skinseg sample``
    writes one; ``train`` takes it, but ``segment`` reads one flat folder), else ""."""
    images = PairFolder(Path(folder)).images
    if images.is_dir() and any(is_image_file(p) for p in images.iterdir() if p.is_file()):
        return f"; it is a pair folder: give {images}"
    return ""


def list_images(folder: str | Path, what: str = "folder") -> tuple[list[Path], list[Skipped]]:
    """Image files directly in ``folder`` (sorted), and the other files, reported as skipped.

    Sub-folders are not entered, so a Results folder inside the input folder is never read back.
    Hidden files (``.name``: temporary files of writes in progress) are ignored.
    """
    folder = require_folder(folder, what)
    images, skipped = [], []
    for path in sorted(folder.iterdir()):
        if path.is_dir() or path.name.startswith("."):
            continue
        if is_image_file(path):
            images.append(path)
        else:
            skipped.append(Skipped(path, "not an image file"))
    return images, skipped


def split_same_ids(images: list[Path], id_of=None) -> tuple[list[Path], list[Skipped]]:
    """The images whose id (stem) no earlier image of the list has, and the others as skipped:
    ``a.jpg`` and ``a.png`` would write the same ``a_segmentation.png`` (one overwriting or
    silently taking the other's) and pair with the same mask, so only the first is used.
    ``id_of`` gives the id another way: ``curated_id`` for curated pairs, where ``c d.png`` and
    ``c_d.png`` (or two names that differ only in letters outside ASCII) are one pair too."""
    id_of = id_of or (lambda p: p.stem)
    first: dict[str, Path] = {}
    kept, clashes = [], []
    for path in images:
        other = first.setdefault(id_of(path), path)
        if other is path:
            kept.append(path)
        else:
            same = "the same name as" if path.stem == other.stem else "a name that is saved as"
            clashes.append(Skipped(path, f"has {same} {other.name}; both would use "
                                         f"{mask_filename(id_of(path))}, so only {other.name} is "
                                         "used (rename one of them)"))
    return kept, clashes


def curated_id(path: Path) -> str:
    """The id a curated pair of the image file ``path`` is saved under (its stem, made safe)."""
    return safe_id(path.stem)


def find_mask(image: Path, masks_dir: Path) -> Path | None:
    """The mask of ``image`` in ``masks_dir``; its extension in either case (``.png``, ``.PNG``:
    cameras and Windows tools write upper case, and images are accepted in both)."""
    return find_mask_of_id(image.stem, masks_dir, exclude=image)


def find_mask_of_id(image_id: str, masks_dir: Path, exclude: Path | None = None) -> Path | None:
    """The mask of the image id ``image_id`` (a stem: ``a.b`` of ``a.b.jpg``, kept whole) in
    ``masks_dir``, other than ``exclude``; see :func:`find_mask`."""
    for suffix in MASK_SUFFIXES:
        for ext in (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg"):
            for case in (ext, ext.upper()):
                candidate = masks_dir / f"{image_id}{suffix}{case}"
                if candidate.is_file() and (exclude is None
                                            or candidate.resolve() != exclude.resolve()):
                    return candidate
    return None


def choose_pairs(pairs: list[Pair], limit: int | None, seed: int) -> list[Pair]:
    """At most ``limit`` of ``pairs`` (all when None), chosen with ``seed``, in their order
    (``TrainConfig.limit``: the same seed and pairs choose the same ones again)."""
    if limit is None or limit >= len(pairs):
        return list(pairs)
    import numpy as np

    chosen = np.random.default_rng(seed).permutation(len(pairs))[:limit]
    return [pairs[i] for i in sorted(chosen)]


def find_pairs(images_dir: str | Path, masks_dir: str | Path) -> PairScan:
    """Match every image with its mask; images without one are reported as skipped.

    Raises ``FileNotFoundError`` for a missing folder and ``ValueError`` when no pair is found.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    require_folder(masks_dir, "masks folder")
    images, skipped = list_images(images_dir, "images folder")
    images, clashes = split_same_ids(images)
    scan = PairScan(skipped=skipped + clashes)
    for image in images:
        if images_dir.resolve() == masks_dir.resolve() and is_mask_name(image):
            continue  # images and masks share a folder: masks are not images
        mask = find_mask(image, masks_dir)
        if mask is None:
            scan.skipped.append(Skipped(image, f"no mask named {mask_filename(image.stem)} "
                                               f"(or {image.stem}.png) in {masks_dir}"))
        else:
            scan.pairs.append(Pair(image, mask))
    if not scan.pairs:
        detail = "; ".join(str(s) for s in scan.skipped[:3])
        if not detail:
            detail = "the folder holds no images"
            subfolders = sorted(p.name for p in images_dir.iterdir() if p.is_dir())
            if subfolders and images_dir.resolve() == masks_dir.resolve():
                # meant as a pair folder, with other names (masks under labels/, ...)
                detail += (f"; a pair folder holds {IMAGES_DIR}/ and {MASKS_DIR}/, this one "
                           f"{', '.join(n + '/' for n in subfolders[:5])}: rename them, or give "
                           "the images and masks folders")
        raise ValueError(f"no image/mask pairs found in {images_dir} and {masks_dir} ({detail})")
    return scan
