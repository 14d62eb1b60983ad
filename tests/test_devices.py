import pytest
import torch

from napari_skinseg.devices import DeviceError, available_devices, resolve_device


def test_cpu_and_auto_always_work():
    assert available_devices()[:2] == ("auto", "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in available_devices()


def test_unknown_or_missing_devices_give_clear_errors():
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if "cuda" not in available_devices():
        with pytest.raises(DeviceError, match="not available on this machine"):
            resolve_device("cuda")
