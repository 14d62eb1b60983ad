"""Exceptions that callers catch without importing torch (the CLI's ONNX path, napari's side)."""

from __future__ import annotations


class ModelFileError(ValueError):
    """A model file that is missing, truncated, corrupt or not a napari-skinseg model."""


class DeviceError(RuntimeError):
    """The requested device does not exist or does not work on this machine."""
