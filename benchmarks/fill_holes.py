"""Hole filling in the clean-up: scipy's ``binary_fill_holes`` against ``postprocess.fill_holes``
(labelling the background once), in the folder run and alone, in one process.

    python benchmarks/fill_holes.py --data ../shared/data/isic2018 --n 100

The folder run (bundled model, ONNX Runtime, masks only) alternates the two, three rounds each;
the masks written must be byte-identical. Writes benchmarks/results/fill_holes.json.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
import time
from pathlib import Path

from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from common import linked_folder, save_json  # noqa: E402
from heldout import isic_split  # noqa: E402

import napari_skinseg.postprocess as postprocess  # noqa: E402
from napari_skinseg.engines import make_segmenter  # noqa: E402
from napari_skinseg.folder_segmentation import segment_folder  # noqa: E402
from napari_skinseg.generators import drain  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fill_holes.json"))
    args = parser.parse_args()
    pairs = isic_split(args.data)["benchmark"][: args.n]
    segmenter = make_segmenter(None, engine="onnx")
    variants = {"scipy binary_fill_holes": ndimage.binary_fill_holes,
                "labelling (postprocess.fill_holes)": postprocess.fill_holes}
    ms = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        folder = linked_folder([p.image for p in pairs], Path(tmp) / "in")
        for round_ in range(3):
            for i, (name, fill) in enumerate(variants.items()):
                postprocess.fill_holes = fill
                start = time.perf_counter()
                drain(segment_folder(folder, Path(tmp) / f"{i}-{round_}", segmenter))
                ms[name].append((time.perf_counter() - start) / len(pairs) * 1000)
        masks = sorted((Path(tmp) / "0-0").glob("*_segmentation.png"))
        identical = all(filecmp.cmp(m, Path(tmp) / "1-0" / m.name, shallow=False) for m in masks)
    postprocess.fill_holes = variants["labelling (postprocess.fill_holes)"]
    best = {name: min(v) for name, v in ms.items()}
    old, new = best.values()
    result = {"command": " ".join(["python", *sys.argv]), "n_images": len(pairs),
              "folder_ms_per_image_rounds": ms, "folder_ms_per_image_best": best,
              "speedup": old / new, "masks_byte_identical": identical and len(masks) == len(pairs)}
    print(result)
    save_json(result, args.out)


if __name__ == "__main__":
    main()
