"""Which compute devices work here, and turning a user's choice into a ``torch.device``."""

from __future__ import annotations

import functools

import torch

from .errors import DeviceError  # noqa: F401 - re-exported


def _works(device: str) -> bool:
    try:
        x = torch.ones(8, device=device)
        return float((x * 2).sum().cpu()) == 16.0
    except Exception:
        return False


@functools.lru_cache(maxsize=1)
def available_devices() -> tuple[str, ...]:
    """``auto`` and ``cpu``, plus ``cuda`` / ``mps`` only where a small computation succeeds."""
    devices = ["auto", "cpu"]
    if torch.cuda.is_available() and _works("cuda"):
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available() and _works("mps"):
        devices.append("mps")
    return tuple(devices)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit choice must work or raise DeviceError."""
    name = (name or "auto").strip().lower()
    working = available_devices()
    if name == "auto":
        for candidate in ("cuda", "mps"):
            if candidate in working:
                return torch.device(candidate)
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unknown device {name!r}; choose one of {', '.join(working)}")
    if kind != "cpu" and kind not in working:
        raise DeviceError(f"device {name!r} is not available on this machine "
                          f"(working devices: {', '.join(working)})")
    if kind == "cuda" and ":" in name:
        index = int(name.split(":")[1])
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} does not exist: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)
