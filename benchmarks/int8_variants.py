"""Quantisation settings for the ``onnx-int8`` engine against the masks of the fp32 network, on
every held-out real image: can another setting bring the agreement to the 0.995 that the engines
must reach, so that int8 could be the default?

    python benchmarks/int8_variants.py --isic ../shared/data/isic2018 --ham ../shared/data/ham10000

Variants of ``onnx_quantize.quantize_export``'s static QDQ quantisation (the package's setting is
"minmax, 32 synthetic lesions"): percentile or entropy calibration instead of min/max, 128
calibration lesions instead of 32, and the last one or three convolutions (segmentation head,
last decoder block) left in fp32. For each: mean mask Dice against fp32 on the 419 held-out ISIC
images (both halves of ``heldout.isic_split``) and 150 held-out HAM10000 lesions, the same without
the ISIC image that agrees worst, the package's synthetic check, and the bare network's time on
1 and 2 threads. Writes benchmarks/results/int8_variants.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import save_json  # noqa: E402
from heldout import ham_split, isic_split  # noqa: E402
from int8_engine import bare_ms  # noqa: E402

import napari_skinseg.onnx_quantize as onnx_quantize  # noqa: E402
from napari_skinseg.image_io import read_image  # noqa: E402
from napari_skinseg.metrics import image_metrics  # noqa: E402
from napari_skinseg.onnx_cache import cached_export  # noqa: E402
from napari_skinseg.onnx_engine import OnnxSegmenter  # noqa: E402
from napari_skinseg.onnx_sessions import cpu_session  # noqa: E402


def quantised(prepared: str, out: Path, metadata: dict, n_calibration: int = 32,
              method: str = "MinMax", fp32_nodes: tuple[str, ...] = ()) -> Path:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    class Examples(CalibrationDataReader):
        def __init__(self) -> None:
            self.inputs = iter(onnx_quantize._inputs(metadata, n_calibration,
                                                     onnx_quantize._CALIBRATION_SEED))

        def get_next(self):
            x = next(self.inputs, None)
            return None if x is None else {"image": x}

    quantize_static(prepared, str(out), Examples(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, method),
                    nodes_to_exclude=list(fp32_nodes))
    return out


def main() -> None:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.shape_inference import quant_pre_process

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--isic", required=True)
    parser.add_argument("--ham", required=True)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "int8_variants.json"))
    args = parser.parse_args()
    ort.set_default_logger_severity(3)
    fp32_path, metadata = cached_export(None, "rgb")
    split = isic_split(args.isic)
    pairs = split["calibration"] + split["benchmark"] + ham_split(args.ham, 150, 150)["benchmark"]
    n_isic = len(split["calibration"]) + len(split["benchmark"])
    images = [read_image(p.image) for p in pairs]
    fp32 = OnnxSegmenter(fp32_path, metadata, "fp32")
    reference = [fp32.segment(image).mask for image in images]
    x = fp32.network_input(images[0])
    result = {"command": " ".join(["python", *sys.argv]), "n_isic": n_isic,
              "n_ham": len(pairs) - n_isic,
              "fp32_network_ms": {f"{n} thread(s)": bare_ms(cpu_session(fp32_path, n), x) for n in (1, 2)}}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = str(Path(tmp) / "prepared.onnx")
        quant_pre_process(str(fp32_path), prepared, skip_symbolic_shape=True)
        convs = [n.name for n in onnx.load(prepared).graph.node if n.op_type == "Conv"]
        variants = {"minmax, 32 synthetic lesions (the package's)": {},
                    "percentile": {"method": "Percentile"}, "entropy": {"method": "Entropy"},
                    "128 calibration lesions": {"n_calibration": 128},
                    "segmentation head in fp32": {"fp32_nodes": tuple(convs[-1:])},
                    "last three convolutions in fp32": {"fp32_nodes": tuple(convs[-3:])}}
        for i, (name, options) in enumerate(variants.items()):
            path = quantised(prepared, Path(tmp) / f"{i}.onnx", metadata, **options)
            seg = OnnxSegmenter(path, metadata, name, engine="onnx-int8")
            d = np.array([image_metrics(seg.segment(im).mask, ref).dice
                          for im, ref in zip(images, reference)])
            isic, ham = d[:n_isic], d[n_isic:]
            result[name] = {
                "isic_mean_dice_vs_fp32": float(isic.mean()),
                "isic_without_its_worst_image": float(np.sort(isic)[1:].mean()),
                "isic_lowest": float(isic.min()), "ham_mean_dice_vs_fp32": float(ham.mean()),
                "images_below_0.99": int((d < 0.99).sum()),
                "synthetic_check": onnx_quantize.mask_agreement(fp32_path, path, metadata),
                "network_ms": {f"{n} thread(s)": bare_ms(cpu_session(path, n), x) for n in (1, 2)}}
            print(name, result[name], flush=True)
    save_json(result, args.out)


if __name__ == "__main__":
    main()
