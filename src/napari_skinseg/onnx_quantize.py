"""An int8 copy of an exported segmentation network, for the ``onnx-int8`` engine and for ``auto``
on CPUs where it runs faster than fp32 (:func:`napari_skinseg.onnx_cache.int8_preferred`).

ONNX Runtime's static quantisation (QDQ, int8 weights per channel, uint8 activations) needs
example inputs to fix each activation's range. No user data is at hand when a model file is first
used, so the examples are the package's own synthetic lesions: on bundled model v2 they gave the
same agreement with the fp32 network as 64 real ISIC images did (mean mask Dice 0.996 on held-out
ISIC, 0.997 on HAM10000; BENCHMARKS.md §9). Every quantised copy is checked against its fp32
network on other synthetic lesions before it is used, and refused when the masks drift.

Needs onnx and onnxruntime, not torch (it works from the cached fp32 export).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .atomic import TEMP_SUFFIX, atomic_write, atomic_write_text
from .errors import ModelFileError
from .metrics import image_metrics
from .synthetic import make_synthetic_lesion
from .transforms import network_input

CALIBRATION_IMAGES = 32
CHECK_IMAGES = 16
# Mean Dice between the int8 and fp32 masks on the check lesions below which the copy is refused
# (bundled model v2: 0.99+ there, and 0.996 on real held-out images)
MIN_AGREEMENT = 0.98
_CALIBRATION_SEED, _CHECK_SEED = 70_000, 80_000


class QuantisationRefused(ModelFileError):
    """The int8 copy's masks drift from the fp32 network's: the onnx-int8 engine is refused."""

    def __init__(self, agreement: float) -> None:
        self.agreement = agreement
        super().__init__(
            f"int8 quantisation changes this model's masks too much (mean Dice {agreement:.3f} "
            f"against its fp32 network on synthetic lesions, at least {MIN_AGREEMENT} wanted); "
            "use the onnx engine")


class QuantisationFailed(ModelFileError):
    """The quantiser itself failed on this model (an operator it cannot handle, a bug of its
    own): one sentence instead of its traceback."""

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__(f"the int8 copy of this model could not be made ({cause}); "
                         "use the onnx engine")


def _inputs(metadata: dict[str, Any], n: int, seed: int) -> list[np.ndarray]:
    size = int(metadata["size"])
    colour = (metadata.get("config") or {}).get("colour_constancy", "none")
    return [network_input(make_synthetic_lesion((size, size), seed=seed + i)[0], size,
                          metadata["mean"], metadata["std"], colour) for i in range(n)]


def _masks(session, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return [session.run(None, {"image": x})[0][0, 0] > 0 for x in inputs]  # logit > 0: p > 0.5


def mask_agreement(fp32_path: Path, int8_path: Path, metadata: dict[str, Any]) -> float:
    """Mean Dice between the two networks' masks on the check lesions (1 when both are empty)."""
    import onnxruntime as ort

    inputs = _inputs(metadata, CHECK_IMAGES, _CHECK_SEED)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    pairs = zip(*(_masks(ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]),
                         inputs) for p in (fp32_path, int8_path)))
    return float(np.mean([image_metrics(b, a).dice for a, b in pairs]))


_TEMPDIR_LOCK = threading.Lock()


@contextlib.contextmanager
def _scratch_beside(int8_path: Path) -> Iterator[Path]:
    """A scratch folder for the quantiser, in the cache beside ``int8_path`` and named as that
    entry's temporary files (``.<name>.<random>.tmp``), that the quantiser's own temporary
    folders (``ort.quant.*``, ``pre.quant.*``: copies of the model, bigger than it) go in too.
    A run killed midway left them model-sized in /tmp for good; here the next preparation of the
    entry removes them (:func:`napari_skinseg.onnx_cache._preparing`), or pruning after an hour.
    ``tempfile.tempdir`` is the process's: other threads' temporary files made meanwhile land
    here too (one thread quantises at a time; nothing else in the model worker makes any)."""
    with tempfile.TemporaryDirectory(prefix=f".{int8_path.name}.", suffix=TEMP_SUFFIX,
                                     dir=int8_path.parent) as scratch, _TEMPDIR_LOCK:
        before, tempfile.tempdir = tempfile.tempdir, scratch
        try:
            yield Path(scratch)
        finally:
            tempfile.tempdir = before


def quantize_export(fp32_path: Path, int8_path: Path, metadata: dict[str, Any]) -> float:
    """Write the int8 copy of ``fp32_path`` (atomically) and a JSON beside it with its agreement;
    raise :class:`QuantisationRefused` (writing nothing) when its masks drift from the fp32 ones."""
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # the calibration sessions would print a warning per unused constant of the export
    ort.set_default_logger_severity(3)

    class Examples(CalibrationDataReader):
        def __init__(self) -> None:
            self.inputs = iter(_inputs(metadata, CALIBRATION_IMAGES, _CALIBRATION_SEED))

        def get_next(self):
            x = next(self.inputs, None)
            return None if x is None else {"image": x}

    def write(tmp: str) -> None:
        with _scratch_beside(Path(int8_path)) as scratch:
            # the pre-processing the quantiser asks for (it logs a warning without it)
            prepared = str(scratch / "prepared.onnx")
            quant_pre_process(str(fp32_path), prepared, skip_symbolic_shape=True)
            quantize_static(prepared, tmp, Examples(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8)
        agreement = mask_agreement(fp32_path, Path(tmp), metadata)
        if agreement < MIN_AGREEMENT:
            raise QuantisationRefused(agreement)
        checked.append(agreement)

    checked: list[float] = []
    int8_path = Path(int8_path)
    atomic_write(int8_path, write, overwrite=True)
    note = {"agreement": checked[0], "calibration": f"{CALIBRATION_IMAGES} synthetic lesions",
            "check": f"mean mask Dice against fp32 on {CHECK_IMAGES} other synthetic lesions"}
    atomic_write_text(int8_path.with_suffix(".json"), json.dumps(note))
    return checked[0]


def network_ms(fp32_path: Path, int8_path: Path, size: int, rounds: int = 7) -> tuple[float, float]:
    """Median ms of one 1 x 3 x size x size forward of each network on one thread, the two
    alternating (so a busy moment slows both): what the ``auto`` engine's choice rests on. One
    thread, as each image in flight of a folder run gets on a 2-core machine."""
    import time

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                for p in (fp32_path, int8_path)]
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    times: list[list[float]] = [[], []]
    for round_ in range(rounds + 2):
        for session, spent in zip(sessions, times):
            start = time.perf_counter()
            session.run(None, {"image": x})
            if round_ >= 2:  # the first runs plan and allocate
                spent.append((time.perf_counter() - start) * 1000)
    return float(np.median(times[0])), float(np.median(times[1]))
