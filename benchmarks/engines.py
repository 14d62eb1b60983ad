"""ONNX Runtime against eager torch for prediction, in one process on the same images.

    python benchmarks/engines.py --data ../shared/data/isic2018 --n 100

Held-out ISIC images (the bundled model never trained on them): masks of both engines compared
(Dice per image); folder segmentation end to end (read, network, post-processing, mask written)
per image with each engine, alternating; the bare network at the working size (192 x 192, batch 1)
with each engine, and its GFLOP/s against the same run's fp32 sgemm rate.
Writes benchmarks/results/engines.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import linked_folder, save_json  # noqa: E402
from heldout import isic_split  # noqa: E402
from speed import forward_flops, sgemm_gflops  # noqa: E402

from napari_skinseg.engines import make_segmenter  # noqa: E402
from napari_skinseg.folder_segmentation import segment_folder  # noqa: E402
from napari_skinseg.generators import drain  # noqa: E402
from napari_skinseg.image_io import read_image  # noqa: E402
from napari_skinseg.transforms import normalise_array, resize_rgb  # noqa: E402


def bare_ms(run, x, repeats=200) -> float:
    for _ in range(10):
        run(x)
    t = time.perf_counter()
    for _ in range(repeats):
        run(x)
    return (time.perf_counter() - t) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--baseline", default=None,
                        help="another model file whose ONNX folder run is timed in the same "
                             "rounds (e.g. the previous bundled model)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "engines.json"))
    args = parser.parse_args()
    pairs = isic_split(args.data)["benchmark"][: args.n]
    onnx = make_segmenter(args.model, engine="onnx")
    eager = make_segmenter(args.model, device="cpu", engine="torch")
    engines = [("onnx", onnx), ("torch", eager)]
    if args.baseline:
        engines.append(("onnx_baseline", make_segmenter(args.baseline, engine="onnx")))
    dices = []
    for p in pairs:
        image = read_image(p.image)
        a, b = onnx.segment(image).mask, eager.segment(image).mask
        dices.append(1.0 if not (a.any() or b.any()) else 2 * (a & b).sum() / (a.sum() + b.sum()))
    with tempfile.TemporaryDirectory() as tmp:
        folder = linked_folder([p.image for p in pairs], Path(tmp) / "in")
        per_image = {name: [] for name, _ in engines}
        for round_ in range(2):  # alternate, so both engines see the same machine state
            for name, seg in engines:
                t = time.perf_counter()
                drain(segment_folder(folder, Path(tmp) / f"{name}{round_}", seg))
                per_image[name].append((time.perf_counter() - t) / len(pairs) * 1000)
    size = onnx.size
    small = resize_rgb(read_image(pairs[0].image), (size, size))
    x = normalise_array(small[None], onnx.metadata.mean, onnx.metadata.std)
    network = eager.network
    xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)

    def run_torch(inp):
        with torch.inference_mode():
            network(inp)

    ms = {"onnx": bare_ms(onnx._logits, x), "torch": bare_ms(run_torch, xt)}
    flops = forward_flops(network.float(), size)
    sgemm = sgemm_gflops()
    result = {
        "command": " ".join(["python", *sys.argv]), "n_images": len(pairs),
        "model": args.model or "bundled", "working_size": size,
        "colour_constancy": onnx.metadata.colour_constancy,
        "mask_dice_onnx_vs_torch": {"mean": float(np.mean(dices)), "min": float(np.min(dices))},
        "folder_ms_per_image": {k: min(v) for k, v in per_image.items()},
        "folder_speedup_onnx": min(per_image["torch"]) / min(per_image["onnx"]),
        "network_ms": ms, "network_speedup_onnx": ms["torch"] / ms["onnx"],
        "network_gflop": flops / 1e9, "sgemm_gflops_per_s": sgemm,
        "fraction_of_sgemm": {k: flops / (v / 1000) / 1e9 / sgemm for k, v in ms.items()},
    }
    if args.baseline:
        result["baseline"] = args.baseline
        result["folder_ratio_vs_baseline"] = (min(per_image["onnx"])
                                              / min(per_image["onnx_baseline"]))
    print(result)
    save_json(result, args.out)


if __name__ == "__main__":
    main()
