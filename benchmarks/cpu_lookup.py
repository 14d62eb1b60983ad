"""The CPU folder run before and after session 6's two clean-ups outside the network, in one
process: the colour correction and normalisation as one lookup per channel
(``transforms.network_input``, instead of resize -> Shades of Gray -> float normalisation), and
the post-processing confined to the lesion's bounding box (``postprocess.postprocess``, instead
of labelling the whole image twice). Both give the same numbers, so the masks must be
byte-identical; the earlier code is kept below as the baseline.

    python benchmarks/cpu_lookup.py --data ../shared/data/isic2018 --n 100

Folder runs as ``skinseg segment`` runs them (bundled model, masks only, ``default_workers``
images in flight): fp32 ONNX before, fp32 ONNX now, and the int8 copy now (``--engine
onnx-int8``), alternating, three rounds each, best round kept. Writes
benchmarks/results/cpu_lookup.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from skimage import measure

sys.path.insert(0, str(Path(__file__).parent))
from common import linked_folder, save_json  # noqa: E402
from heldout import isic_split  # noqa: E402

import napari_skinseg.onnx_engine as onnx_engine  # noqa: E402
from napari_skinseg.config import PostprocessConfig  # noqa: E402
from napari_skinseg.engines import make_segmenter  # noqa: E402
from napari_skinseg.folder_segmentation import default_workers, segment_folder  # noqa: E402
from napari_skinseg.generators import drain  # noqa: E402
from napari_skinseg.postprocess import fill_holes  # noqa: E402
from napari_skinseg.transforms import flip_views, normalise_array, working_rgb  # noqa: E402


def network_input_before(rgb, size, mean, std, colour_constancy="none", tta=False):
    return flip_views(normalise_array(working_rgb(rgb, size, colour_constancy)[None], mean, std),
                      3 if tta else 1)


def postprocess_before(probability, config=None):
    config = config or PostprocessConfig()  # the bundled default: no min_size step
    mask = np.asarray(probability) > config.threshold
    if config.keep == "largest" and mask.any():
        labels = measure.label(mask, connectivity=2)
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(sizes.argmax())
    return fill_holes(mask) if config.fill_holes else mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="ISIC 2018 folder (images/, masks/)")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu_lookup.json"))
    args = parser.parse_args()
    pairs = isic_split(args.data)["benchmark"][: args.n]
    fp32 = make_segmenter(None, engine="onnx")
    int8 = make_segmenter(None, engine="onnx-int8")
    workers = default_workers(fp32)
    now = (onnx_engine.network_input, onnx_engine.postprocess)
    variants = {"fp32, before": (fp32, (network_input_before, postprocess_before)),
                "fp32, now (onnx)": (fp32, now), "int8, now (onnx-int8)": (int8, now)}
    ms: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        folder = linked_folder([p.image for p in pairs], Path(tmp) / "in")
        for round_ in range(3):
            for i, (name, (seg, (inputs, post))) in enumerate(variants.items()):
                onnx_engine.network_input, onnx_engine.postprocess = inputs, post
                start = time.perf_counter()
                drain(segment_folder(folder, Path(tmp) / f"{i}-{round_}", seg, workers=workers))
                ms[name].append((time.perf_counter() - start) / len(pairs) * 1000)
        onnx_engine.network_input, onnx_engine.postprocess = now
        before, after = (sorted((Path(tmp) / f"{i}-0").glob("*.png")) for i in (0, 1))
        identical = sum(a.read_bytes() == b.read_bytes() for a, b in zip(before, after))
    best = {name: min(v) for name, v in ms.items()}
    base = best["fp32, before"]
    result = {"command": " ".join(["python", *sys.argv]), "n_images": len(pairs),
              "workers": workers, "folder_ms_per_image_rounds": ms,
              "folder_ms_per_image_best": best,
              "speedup_vs_before": {name: base / v for name, v in best.items()},
              "fp32_masks_byte_identical_to_before": f"{identical} of {len(before)}"}
    print(result)
    save_json(result, args.out)


if __name__ == "__main__":
    main()
