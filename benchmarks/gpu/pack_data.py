"""Pack a training copy of the data small enough to travel to a GPU machine (≤ ~45 MB).

    python benchmarks/gpu/pack_data.py ISIC_DIR HAM_DIR OUT.npz [--size 256] [--ham 2600]

- ISIC 2018: every pair, re-encoded as JPEG (quality 85) at SIZE²; ``isic_val`` are the bundled
  model's 419 validation names (never trained on), ``isic_train`` the other 1,675.
- HAM10000: one image per lesion, from lesions *outside* the held-out ones that the review-queue,
  click and whole-loop benchmarks use (heldout.py's seeded lesion order; the first
  ``--ham-reserved`` lesions stay out), at most ``--ham`` of them; its 256² JPEGs are kept as they
  are when SIZE is 256.
Masks are stored as packed bits. The data is CC BY-NC 4.0: the file must never be committed.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import all_pairs, bundled_val_pairs  # noqa: E402
from heldout import SEED  # noqa: E402

from napari_skinseg.image_io import read_image, read_mask  # noqa: E402


def jpeg_bytes(path: Path, size: int) -> bytes:
    raw = path.read_bytes()
    with Image.open(io.BytesIO(raw)) as im:
        if im.size == (size, size) and im.format == "JPEG" and im.mode == "RGB":
            return raw
    rgb = read_image(path)
    buf = io.BytesIO()
    Image.fromarray(rgb).resize((size, size), Image.BILINEAR).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def mask_bits(path: Path, size: int) -> np.ndarray:
    mask = read_mask(path)
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.BILINEAR)
    return np.packbits(np.asarray(small) >= 128)


def pack(pairs, size: int, prefix: str, out: dict) -> None:
    blobs = [jpeg_bytes(p.image, size) for p in pairs]
    out[f"{prefix}_jpeg"] = np.frombuffer(b"".join(blobs), np.uint8)
    out[f"{prefix}_offsets"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    out[f"{prefix}_masks"] = np.stack([mask_bits(p.mask, size) for p in pairs])
    out[f"{prefix}_names"] = np.array([p.name for p in pairs])
    print(f"{prefix}: {len(pairs)} pairs, {out[f'{prefix}_jpeg'].nbytes / 1e6:.1f} MB of JPEG")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("isic", type=Path)
    parser.add_argument("ham", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--ham", dest="n_ham", type=int, default=2600)
    parser.add_argument("--ham-reserved", type=int, default=1500)
    args = parser.parse_args()

    isic = all_pairs(args.isic)
    val = bundled_val_pairs(isic)
    val_names = {p.name for p in val}
    train = [p for p in isic if p.name not in val_names]

    lesion = {r["id"]: r["lesion_id"] for r in csv.DictReader(open(args.ham / "manifest.csv"))}
    by_lesion: dict[str, list] = {}
    for p in all_pairs(args.ham):
        by_lesion.setdefault(lesion[p.name], []).append(p)
    keys = sorted(by_lesion)
    order = np.random.default_rng(SEED).permutation(len(keys))  # heldout.ham_split's order
    ham = [by_lesion[keys[i]][0] for i in order[args.ham_reserved:args.ham_reserved + args.n_ham]]

    out: dict = {"size": np.array(args.size)}
    pack(train, args.size, "isic_train", out)
    pack(val, args.size, "isic_val", out)
    pack(sorted(ham, key=lambda p: p.name), args.size, "ham_train", out)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
