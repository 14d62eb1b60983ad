"""ONNX Runtime sessions: how a network file is opened on the CPU, and whether an error came from
ONNX Runtime itself. The cache (:mod:`napari_skinseg.onnx_cache`: it checks that a cached
network loads before quantising it, and makes one that does not again) and the engine
(:mod:`napari_skinseg.onnx_engine`: it runs them) both need these; in a module of their own,
the engine imports the cache and the cache never imports the engine.
"""

from __future__ import annotations

import os
from pathlib import Path


def cpu_session(onnx_path: Path, threads: int | None, spinning: bool = True):
    """An ONNX Runtime CPU session. ``spinning=False``: its threads sleep between runs instead of
    busy-waiting for the next one, leaving the cores to the threads that read, clean up and
    write other images in a pipelined folder run (2 cores: 27.3 -> 21.8 ms per image, while a
    lone call gets ~10 % slower; BENCHMARKS.md §9)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or min(os.cpu_count() or 1, 8)
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def is_onnxruntime_error(err: BaseException) -> bool:
    """An error raised by ONNX Runtime itself (its load errors share no base class)."""
    return type(err).__module__.startswith("onnxruntime")


def can_load(onnx_path: Path) -> bool:
    """Whether ONNX Runtime can load the cached network ``onnx_path``."""
    try:
        cpu_session(onnx_path, threads=1)
    except Exception as err:  # noqa: BLE001 - filtered by is_onnxruntime_error
        if not is_onnxruntime_error(err):
            raise
        return False
    return True

