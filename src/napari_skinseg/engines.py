"""Choosing the engine that runs the network for prediction: torch, or ONNX Runtime on the CPU.

``auto`` takes ONNX Runtime where it is installed and the device is the CPU (it ran the bundled
network about twice as fast as eager torch on 2 cores, BENCHMARKS.md), torch otherwise (GPUs).
``onnx-int8`` is ONNX Runtime on a quantised copy of the network: about 1.4x faster again on a
CPU with int8 instructions, its masks agreeing with fp32's at mean Dice 0.996 on held-out real
images (0.9956 ISIC, 0.9965 HAM10000) and as close to the experts'. ``auto`` on a CPU runs it
where it measured clearly faster than fp32 (:func:`onnx_cache.int8_preferred`), fp32 ONNX
elsewhere; ``onnx`` always runs fp32 (torch's masks). Training always uses torch.
"""

from __future__ import annotations

import os
import shutil
import warnings

ENGINES = ("auto", "torch", "onnx", "onnx-int8")


def resolve_engine(engine: str = "auto", device: str = "auto") -> str:
    from .onnx_engine import onnx_available

    engine = (engine or "auto").lower()
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    device = (device or "auto").lower()
    if engine.startswith("onnx"):
        if not onnx_available():
            raise ValueError(f"the {engine} engine needs onnxruntime: pip install onnxruntime")
        if device not in ("auto", "cpu"):
            raise ValueError(f"the {engine} engine runs on the CPU; use --engine torch for {device}")
        return engine
    if engine == "torch":
        return "torch"
    # auto: a GPU goes to torch; without one (no NVIDIA driver tool on the PATH), ONNX Runtime.
    gpu_likely = shutil.which("nvidia-smi") is not None or os.environ.get("CUDA_VISIBLE_DEVICES")
    if device == "cpu" or (device == "auto" and not gpu_likely):
        return "onnx" if onnx_available() else "torch"
    return "torch"


class EngineFallbackWarning(UserWarning):
    """``auto`` chose ONNX Runtime but could not use it, so torch runs the network."""


def _onnx_unless_it_fails(engine: str, make_onnx, name: str):
    """``make_onnx()``; when ``engine`` is ``auto`` and the export cannot be written (a read-only
    or full cache folder) or ONNX Runtime cannot load it, None with a warning, so that torch
    takes over: the default never fails where torch would work. An explicit ``onnx`` engine
    raises the error."""
    from .onnx_cache import CACHE_ENV, OnnxRuntimeFailed

    try:
        return make_onnx()
    except (OSError, OnnxRuntimeFailed) as err:
        if (engine or "auto").lower() != "auto":
            raise
        if isinstance(err, OnnxRuntimeFailed):  # a broken install: the cache folder is not it
            why, advice = f"it cannot load the model's export ({err.cause})", ""
        else:  # the cache folder; unless the error asks for CACHE_ENV already (no home folder)
            why = str(err)
            advice = "" if CACHE_ENV in why else (f" Set {CACHE_ENV} to a writable folder for the "
                                                  "faster engine.")
        warnings.warn(f"ONNX Runtime not used for {name}: {why}; torch runs it instead (slower on "
                      f"the CPU).{advice}", EngineFallbackWarning, stacklevel=3)
        return None


def _int8_pays(model) -> bool:
    """``auto``'s choice between the int8 and fp32 ONNX networks (after the fp32 export is
    cached): :func:`onnx_cache.int8_preferred` (False for a refused copy); fp32 with a warning
    when the copy cannot be made (no quantiser, a full disk), for fp32 works."""
    from .onnx_cache import int8_preferred

    try:
        return int8_preferred(model)
    except Exception as err:  # noqa: BLE001 - auto never fails for want of the faster copy
        from .onnx_cache import OnnxRuntimeFailed
        from .onnx_quantize import QuantisationFailed

        # their own sentences end in advice (use the onnx / torch engine) that auto follows
        cause = err.cause if isinstance(err, (QuantisationFailed, OnnxRuntimeFailed)) else err
        warnings.warn(f"the int8 copy of the model was not used ({cause}); fp32 ONNX Runtime runs "
                      "it", EngineFallbackWarning, stacklevel=3)
        return False


def make_segmenter(model=None, device: str = "auto", engine: str = "auto"):
    """A Segmenter (torch) or OnnxSegmenter for the model file ``model`` (None: bundled)."""
    chosen = resolve_engine(engine, device)
    if chosen.startswith("onnx"):
        from .onnx_cache import cached_export
        from .onnx_engine import OnnxSegmenter

        def make_onnx():
            int8 = chosen == "onnx-int8"
            if (engine or "auto").lower() == "auto":
                cached_export(model)  # its OSError (cache not writable) hands over to torch
                int8 = _int8_pays(model)
            return OnnxSegmenter.from_file(model, int8=int8)

        segmenter = _onnx_unless_it_fails(engine, make_onnx, "the segmentation model")
        if segmenter is not None:
            return segmenter
    from .prediction import Segmenter

    return Segmenter.from_file(model, device=device)


def make_reviewer(segmenter, model=None):
    """What makes the review queue's views for ``segmenter``'s masks: the segmenter itself, or
    for the int8 copy its fp32 network (same model file ``model``, None: bundled), because the
    quality calibration stored in the model was fitted on fp32 views."""
    if getattr(segmenter, "engine", "") != "onnx-int8":
        return segmenter
    from .onnx_engine import OnnxSegmenter

    return OnnxSegmenter.from_file(model)


def click_model_path(model=None):
    """The click-to-fix model file ``model`` (None: the bundled one); ModelFileError when there
    is none."""
    from .bundled import bundled_click_model_path
    from .errors import ModelFileError, check_model_file

    if model:
        return check_model_file(model, "click-to-fix model")
    path = bundled_click_model_path()
    if path is None or not path.is_file():
        raise ModelFileError("no click-to-fix model is installed")
    return path


def make_click_refiner(model=None, device: str = "cpu", engine: str = "auto"):
    """A click-to-fix network runner (``.probability(image, mask, clicks)``) for the model file
    ``model`` (None: the bundled click model): ONNX Runtime on the CPU where available (3x
    faster per click than torch there, BENCHMARKS.md), else torch."""
    path = click_model_path(model)
    if resolve_engine(engine, device).startswith("onnx"):  # clicks stay fp32 (a lone image)
        from .onnx_engine import OnnxClickRefiner

        refiner = _onnx_unless_it_fails(engine, lambda: OnnxClickRefiner.from_file(path),
                                        "the click-to-fix model")
        if refiner is not None:
            return refiner
    from .click_model import ClickRefiner
    from .model import load_model

    return ClickRefiner(load_model(path), device=device)
