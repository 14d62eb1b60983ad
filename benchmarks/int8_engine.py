"""The ``onnx-int8`` engine and per-image session threads against the fp32 ONNX engine as it ran
before, in one process on the same held-out images.

    python benchmarks/int8_engine.py --isic ../shared/data/isic2018 --ham ../shared/data/ham10000

- Folder run as ``skinseg segment`` runs it (bundled model, masks only, ``default_workers``
  images in flight), three variants alternating, three rounds each, best round kept:
  fp32 with every image's run on the session's full thread pool (before), fp32 with
  cores / workers threads per image (now), and the int8 copy (now, ``--engine onnx-int8``).
- The bare network (1 x 3 x S x S) on 1 and on all threads, fp32 and int8, against the same run's
  fp32 sgemm rate.
- Masks: int8 against fp32 (Dice per image) and both against the experts, on the held-out ISIC
  benchmark half and held-out HAM10000 lesions (``heldout.py``; the bundled model never trained
  on them, and the int8 copy is calibrated on synthetic lesions only).

Writes benchmarks/results/int8_engine.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import linked_folder, save_json  # noqa: E402
from heldout import ham_split, isic_split  # noqa: E402
from speed import forward_flops, sgemm_gflops  # noqa: E402

from napari_skinseg.bundled import bundled_model_path  # noqa: E402
from napari_skinseg.engines import make_segmenter  # noqa: E402
from napari_skinseg.folder_segmentation import default_workers, segment_folder  # noqa: E402
from napari_skinseg.generators import drain  # noqa: E402
from napari_skinseg.image_io import read_image, read_mask  # noqa: E402
from napari_skinseg.metrics import image_metrics, mean_metrics  # noqa: E402
from napari_skinseg.model import load_model  # noqa: E402
from napari_skinseg.onnx_sessions import cpu_session  # noqa: E402
from napari_skinseg.transforms import network_input  # noqa: E402


class SharedThreads:
    """The fp32 segmenter as folder runs used it before: every image on the full thread pool."""

    def __init__(self, segmenter):
        self.inner = segmenter
        self.engine, self.size, self.name = segmenter.engine, segmenter.size, segmenter.name

    def segment(self, image, post=None, tta=False):
        return self.inner.segment(image, post, tta=tta)


def bare_ms(session, x, repeats: int = 100) -> float:
    for _ in range(10):
        session.run(None, {"image": x})
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, {"image": x})
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1000


def masks_compared(fp32, int8, pairs) -> dict:
    agree, rows = [], {"fp32": [], "int8": []}
    for p in pairs:
        image = read_image(p.image)
        truth = read_mask(p.mask, shape=image.shape[:2])
        a, b = fp32.segment(image).mask, int8.segment(image).mask
        agree.append(image_metrics(b, a).dice)
        rows["fp32"].append(image_metrics(a, truth))
        rows["int8"].append(image_metrics(b, truth))
    return {"n": len(pairs), "int8_vs_fp32_dice": {"mean": float(np.mean(agree)),
                                                   "min": float(np.min(agree)),
                                                   "below_0.99": int(sum(d < 0.99 for d in agree))},
            "vs_experts": {k: mean_metrics(v) for k, v in rows.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--isic", required=True)
    parser.add_argument("--ham", required=True)
    parser.add_argument("--n", type=int, default=100, help="images in the timed folder runs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "int8_engine.json"))
    args = parser.parse_args()
    isic = isic_split(args.isic)["benchmark"]
    fp32 = make_segmenter(None, engine="onnx")
    int8 = make_segmenter(None, engine="onnx-int8")
    workers = default_workers(fp32)
    variants = {"fp32, all threads per image (before)": SharedThreads(fp32),
                "fp32, cores / workers threads per image (now, onnx)": fp32,
                "int8 (now, onnx-int8)": int8}
    ms = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        folder = linked_folder([p.image for p in isic[: args.n]], Path(tmp) / "in")
        for round_ in range(3):
            for i, (name, seg) in enumerate(variants.items()):
                start = time.perf_counter()
                drain(segment_folder(folder, Path(tmp) / f"{i}-{round_}", seg, workers=workers))
                ms[name].append((time.perf_counter() - start) / args.n * 1000)
    best = {name: min(v) for name, v in ms.items()}
    base = best[next(iter(best))]

    x = network_input(read_image(isic[0].image), fp32.size, fp32.metadata.mean, fp32.metadata.std,
                      fp32.metadata.colour_constancy)
    cores = os.cpu_count() or 1
    network = {}
    for name, seg in (("fp32", fp32), ("int8", int8)):
        for threads in (1, cores):
            network[f"{name}, {threads} thread(s)"] = bare_ms(cpu_session(seg.onnx_path, threads), x)
    sgemm = sgemm_gflops()
    gflop = forward_flops(load_model(bundled_model_path()).network.float(), fp32.size) / 1e9

    ham = ham_split(args.ham, 150, 150)["benchmark"]
    result = {
        "command": " ".join(["python", *sys.argv]), "n_images_timed": args.n, "workers": workers,
        "folder_ms_per_image_rounds": ms, "folder_ms_per_image_best": best,
        "speedup_vs_before": {name: base / v for name, v in best.items()},
        "network_ms": network, "sgemm_gflops_per_s": sgemm,
        "network_gflop": gflop,
        "fraction_of_sgemm": {k: gflop / (v / 1000) / sgemm for k, v in network.items()},
        "masks_isic_heldout": masks_compared(fp32, int8, isic),
        "masks_ham10000_heldout": masks_compared(fp32, int8, ham),
    }
    print(result)
    save_json(result, args.out)


if __name__ == "__main__":
    main()
