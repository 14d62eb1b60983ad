"""The ONNX Runtime engine: the same network and the same input transform as the torch engine,
run by onnxruntime on the CPU (faster there; measured in BENCHMARKS.md): :class:`OnnxSegmenter`
segments, :class:`OnnxClickRefiner` runs click-to-fix.

The networks they run come from the cache of prepared exports (:mod:`napari_skinseg.onnx_cache`,
which also makes the int8 copy and decides whether ``auto`` runs it); with the export cached
nothing here imports torch, so `skinseg segment --engine onnx` starts quickly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .click_inputs import ClickRunner
from .config import PostprocessConfig
from .image_io import to_rgb_uint8
from .onnx_cache import build_from_cache, cached_export, cached_int8_export
from .onnx_sessions import cpu_session, is_onnxruntime_error
from .postprocess import postprocess
from .segmentation import Segmentation
from .transforms import network_input, probability_at


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _Metadata:
    """What prediction needs of a model file's metadata, read from the cached JSON."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.size = int(data["size"])
        self.mean, self.std = tuple(data["mean"]), tuple(data["std"])
        self.quality = data.get("quality") or {}
        self.colour_constancy = (data.get("config") or {}).get("colour_constancy", "none")


class OnnxSegmenter:
    """Same interface as :class:`napari_skinseg.prediction.Segmenter` for prediction."""

    def __init__(self, onnx_path: Path, metadata: dict[str, Any], name: str,
                 threads: int | None = None, engine: str = "onnx") -> None:
        self.session = cpu_session(onnx_path, threads, spinning=False)  # folder runs pipeline
        self.onnx_path, self._metadata_dict = onnx_path, metadata
        self.metadata = _Metadata(metadata)
        self.size = self.metadata.size
        self.name = name
        self.engine = engine  # "onnx" (fp32, as torch) or "onnx-int8" (the quantised copy)
        self._per_thread: dict[int, OnnxSegmenter] = {}

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None,
                  int8: bool = False) -> "OnnxSegmenter":
        """The cached export of ``path`` (the bundled model when None), made now if missing;
        ``int8``: its quantised copy (``onnx-int8`` engine)."""
        # The file asked for names it: the cache entry is shared by every file of the same
        # content, and its "source" is whichever of them was exported first.
        return build_from_cache(
            lambda: (cached_int8_export(path, retry_failed=True) if int8 else
                     cached_export(path, "rgb")),
            lambda onnx_path, metadata: cls(onnx_path, metadata,
                                            Path(path if path is not None else
                                                 metadata["source"]).name,
                                            engine="onnx-int8" if int8 else "onnx"))

    def with_threads(self, threads: int) -> "OnnxSegmenter":
        """The same network in a session of ``threads`` threads (kept for reuse). A pipelined
        folder run gives each image in flight its own core: on 2 cores, two images on one
        thread each beat two images fighting over two threads each (BENCHMARKS.md §9)."""
        if threads not in self._per_thread:
            try:
                self._per_thread[threads] = OnnxSegmenter(self.onnx_path, self._metadata_dict,
                                                          self.name, threads, self.engine)
            except Exception as err:  # noqa: BLE001 - filtered by is_onnxruntime_error
                if not is_onnxruntime_error(err):
                    raise
                # The cached export went away since this segmenter was made (the cache emptied
                # or pruned by another run): its own session runs the images, same masks.
                return self
        return self._per_thread[threads]

    def _logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"image": x})[0]

    def predict_probability(self, image: np.ndarray, tta: bool = False) -> np.ndarray:
        """Lesion probability (float32, H x W, the input's size)."""
        rgb = to_rgb_uint8(image)
        return probability_at(self.network_probabilities(self.network_input(rgb, tta)),
                              rgb.shape[:2], tta)

    def network_input(self, rgb: np.ndarray, tta: bool = False) -> np.ndarray:
        """(k, 3, S, S) float32: what the network sees of a uint8 RGB image (transforms.py)."""
        md = self.metadata
        return network_input(rgb, self.size, md.mean, md.std, md.colour_constancy, tta)

    def network_probabilities(self, x: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) float32 lesion probabilities for a batch of network inputs."""
        return _sigmoid(self._logits(x))

    @property
    def quality_calibration(self) -> dict:
        """The review queue's calibration stored in the model file (empty: none)."""
        return self.metadata.quality

    def segment(self, image: np.ndarray, post: PostprocessConfig | None = None, tta: bool = False):
        probability = self.predict_probability(image, tta=tta)
        return Segmentation(probability, postprocess(probability, post))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class OnnxClickRefiner(ClickRunner):
    """:class:`napari_skinseg.click_model.ClickRefiner` run by ONNX Runtime (no torch): image +
    current mask + clicks -> lesion probability at the image's size."""

    engine = "onnx"

    def __init__(self, onnx_path: Path, metadata: dict[str, Any], threads: int | None = None,
                 mirror: bool = True):
        self.session = cpu_session(onnx_path, threads)
        md = _Metadata(metadata)
        self.size, self.mean, self.std = md.size, md.mean, md.std
        self.colour_constancy = md.colour_constancy
        self.mirror = mirror

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "OnnxClickRefiner":
        return build_from_cache(lambda: cached_export(path, "rgb+clicks"), cls)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"image": x})[0]
