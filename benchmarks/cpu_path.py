"""The CPU folder run before and after this session's three speed-ups, in one process: hole
filling by labelling the background once (``postprocess.fill_holes``, instead of scipy's
``binary_fill_holes``), Shades of Gray through a lookup table (``transforms.shades_of_gray``,
instead of float arithmetic on every pixel; the earlier code is kept below as the baseline),
ONNX Runtime threads that sleep between runs instead of spinning
(``onnx_sessions.cpu_session``), and, for runs with ``--overlay``, overlay PNGs written at zlib
level 1 instead of Pillow's default 6.

    python benchmarks/cpu_path.py --data ../shared/data/isic2018 --n 100

The folder run (bundled model, ONNX Runtime, masks only, ``default_workers`` images in flight as
``skinseg segment`` runs it) alternates the variants, three rounds each, and keeps the best round; masks are compared with the baseline's (byte-identical for the
hole filling; the lookup table rounds 0.2 % of pixels one level differently). Writes
benchmarks/results/cpu_path.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from common import linked_folder, save_json  # noqa: E402
from heldout import isic_split  # noqa: E402

import napari_skinseg.folder_segmentation as folder_segmentation  # noqa: E402
import napari_skinseg.postprocess as postprocess  # noqa: E402
import napari_skinseg.transforms as transforms  # noqa: E402
from napari_skinseg.engines import make_segmenter  # noqa: E402
from napari_skinseg.folder_segmentation import default_workers, segment_folder  # noqa: E402
from napari_skinseg.generators import drain  # noqa: E402
from napari_skinseg.image_io import read_mask  # noqa: E402
from napari_skinseg.onnx_cache import cached_export  # noqa: E402
from napari_skinseg.onnx_sessions import cpu_session  # noqa: E402


def float_shades_of_gray(images: np.ndarray, p: int = 6) -> np.ndarray:
    """Shades of Gray as the code computed it before the lookup table (the baseline)."""
    x = np.asarray(images, dtype=np.float32)
    illuminant = np.power(np.mean(np.power(x, p), axis=(-3, -2), keepdims=True), 1.0 / p)
    illuminant = illuminant / np.maximum(np.linalg.norm(illuminant, axis=-1, keepdims=True), 1e-6)
    gain = 1.0 / np.maximum(illuminant * np.sqrt(3.0), 1e-6)
    return np.clip(x * gain + 0.5, 0, 255).astype(np.uint8)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 if not (a.any() or b.any()) else 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu_path.json"))
    args = parser.parse_args()
    pairs = isic_split(args.data)["benchmark"][: args.n]
    segmenter = make_segmenter(None, engine="onnx")  # its threads sleep between runs
    spinning = make_segmenter(None, engine="onnx")
    spinning.session = cpu_session(cached_export(None)[0], None, spinning=True)  # as before
    workers = default_workers(segmenter)
    fast_fill, fast_sog = postprocess.fill_holes, transforms.shades_of_gray
    variants = {
        "before (scipy fill, float Shades of Gray, spinning threads)":
            (ndimage.binary_fill_holes, float_shades_of_gray, spinning),
        "labelled fill": (fast_fill, float_shades_of_gray, spinning),
        "+ lookup-table Shades of Gray": (fast_fill, fast_sog, spinning),
        "+ sleeping ONNX Runtime threads (now)": (fast_fill, fast_sog, segmenter)}
    ms = {name: [] for name in variants}
    agreement = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = linked_folder([p.image for p in pairs], Path(tmp) / "in")
        for round_ in range(3):
            for i, (name, (fill, sog, seg)) in enumerate(variants.items()):
                postprocess.fill_holes, transforms.shades_of_gray = fill, sog
                start = time.perf_counter()
                drain(segment_folder(folder, Path(tmp) / f"{i}-{round_}", seg, workers=workers))
                ms[name].append((time.perf_counter() - start) / len(pairs) * 1000)
        postprocess.fill_holes, transforms.shades_of_gray = fast_fill, fast_sog
        for i, name in enumerate(variants):
            d = [dice(read_mask(m), read_mask(Path(tmp) / f"{i}-0" / m.name))
                 for m in sorted((Path(tmp) / "0-0").glob("*_segmentation.png"))]
            agreement[name] = {"mean_dice_vs_before": float(np.mean(d)), "lowest": float(np.min(d)),
                               "identical_masks": int(sum(x == 1.0 for x in d)), "n": len(d)}
        # with overlays (napari's folder runs write them): Pillow's default level against level 1
        overlay_ms: dict[str, list[float]] = {"default zlib level": [], "level 1 (now)": []}
        for round_ in range(3):
            for name, level in (("default zlib level", None), ("level 1 (now)", 1)):
                folder_segmentation.FAST_PNG_LEVEL = level
                start = time.perf_counter()
                drain(segment_folder(folder, Path(tmp) / f"o{level}-{round_}", segmenter,
                                     workers=workers, overlay=True))
                overlay_ms[name].append((time.perf_counter() - start) / len(pairs) * 1000)
        folder_segmentation.FAST_PNG_LEVEL = 1
        sizes = {name: float(np.mean([f.stat().st_size for f in
                                      (Path(tmp) / f"o{level}-0").glob("*_overlay.png")]))
                 for name, level in (("default zlib level", None), ("level 1 (now)", 1))}
    best = {name: min(v) for name, v in ms.items()}
    base = best[next(iter(best))]
    result = {"command": " ".join(["python", *sys.argv]), "n_images": len(pairs), "workers": workers,
              "folder_ms_per_image_rounds": ms, "folder_ms_per_image_best": best,
              "speedup_vs_before": {name: base / v for name, v in best.items()},
              "masks": agreement,
              "with_overlays_ms_per_image_rounds": overlay_ms,
              "with_overlays_ms_per_image_best": {k: min(v) for k, v in overlay_ms.items()},
              "overlay_png_bytes_mean": sizes}
    print(result)
    save_json(result, args.out)


if __name__ == "__main__":
    main()
