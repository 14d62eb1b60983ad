"""Reading the file benchmarks/gpu/pack_data.py writes: uint8 images and bool masks."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from napari_skinseg.dataset import SampleSet


def _decode(blob: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(blob)) as im:
        return np.asarray(im.convert("RGB"))


def load_part(data, prefix: str, threads: int = 8) -> SampleSet:
    jpeg, offsets = data[f"{prefix}_jpeg"], data[f"{prefix}_offsets"]
    size = int(data["size"])
    blobs = [jpeg[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]
    with ThreadPoolExecutor(threads) as pool:
        images = np.stack(list(pool.map(_decode, blobs)))
    masks = np.unpackbits(data[f"{prefix}_masks"], axis=1)[:, :size * size]
    masks = masks.reshape(-1, size, size).astype(bool)
    return SampleSet(images, masks, [str(n) for n in data[f"{prefix}_names"]])


def load(path, parts=("isic_train", "isic_val", "ham_train")) -> dict[str, SampleSet]:
    data = np.load(path)
    return {p: load_part(data, p) for p in parts}


def concat(*sets: SampleSet) -> SampleSet:
    return SampleSet(np.concatenate([s.images for s in sets]),
                     np.concatenate([s.masks for s in sets]),
                     [n for s in sets for n in s.names])


def wait_for_peers(folder, name: str, parties: int, timeout: float = 90.0) -> None:
    """Start together: runs that share one GPU time their warm-ups under the same load."""
    import time
    from pathlib import Path

    if not folder or parties <= 1:
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.ready").touch()
    end = time.time() + timeout
    while len(list(folder.glob("*.ready"))) < parties and time.time() < end:
        time.sleep(0.2)
