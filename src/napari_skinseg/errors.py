"""Exceptions that callers catch without importing torch (the CLI's ONNX path, napari's side)."""

from __future__ import annotations

import os
from pathlib import Path


class ModelFileError(ValueError):
    """A model file that is missing, truncated, corrupt or not a napari-skinseg model."""


def check_model_file(path: str | os.PathLike, what: str = "model file") -> Path:
    """``path`` as a Path when it is a file; else a ModelFileError that says what it is instead
    (a folder, nothing, an empty name)."""
    if not str(path).strip():
        raise ModelFileError(f"no {what} given")
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{what} {path} is a folder; choose the .pt file inside it")
    if not path.is_file():
        raise ModelFileError(f"{what} {path} does not exist")
    return path


class DeviceError(RuntimeError):
    """The requested device does not exist or does not work on this machine."""
