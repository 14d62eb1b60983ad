"""Exporting a model file to ONNX for the ONNX Runtime engine (needs torch; done once per file).
Segmentation and click-to-fix models alike: ``"image"`` has the model's input channels."""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path

import torch

from .atomic import atomic_write, atomic_write_text
from .model import INPUTS, load_model

OPSET = 17
# torch.onnx.export keeps global state: two threads exporting at once (the model worker's
# segmentation and click jobs) fail, so exports in one process take turns.
_EXPORT_LOCK = threading.Lock()


def export_onnx(model_path: str | Path, onnx_path: str | Path, meta_path: str | Path) -> Path:
    """Write the network (dynamic batch and image size) and the metadata prediction needs, each
    atomically (a crash never leaves a half-written cache entry)."""
    model = load_model(model_path)  # refuses broken files and non-finite weights
    network = model.network.float().eval()
    size = model.metadata.size
    example = torch.zeros(1, INPUTS[model.metadata.inputs], size, size)

    def write(tmp: str) -> None:
        with _EXPORT_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(network, example, tmp, input_names=["image"], output_names=["logit"],
                              dynamic_axes={"image": {0: "n", 2: "h", 3: "w"},
                                            "logit": {0: "n", 2: "h", 3: "w"}},
                              opset_version=OPSET, dynamo=False)

    onnx_path, meta_path = Path(onnx_path), Path(meta_path)
    atomic_write(onnx_path, write, overwrite=True)
    meta = model.metadata
    data = {"size": size, "mean": list(meta.mean), "std": list(meta.std),
            "status": meta.status, "val_dice": meta.metrics.get("val_dice"),
            "config": meta.config.to_dict(), "quality": getattr(meta, "quality", {}),
            "inputs": meta.inputs, "source": str(model_path), "opset": OPSET}
    atomic_write_text(meta_path, json.dumps(data))
    return onnx_path
