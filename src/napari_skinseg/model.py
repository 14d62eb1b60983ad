"""The U-Net and its model file.

A model file is a ``torch.save`` dictionary holding only tensors and plain data:
``{"format": FORMAT, "version": 1, "metadata": <JSON text>, "state_dict": {...}}``. It is read
with ``torch.load(weights_only=True)``, which never executes pickled code, and written atomically
(temporary file, then rename) so an interrupted save never leaves a broken file behind.
"""

from __future__ import annotations

import difflib
import json
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # timm deprecation chatter
    # Imported here, not lazily: importing smp (torchvision, triton) for the first time inside a
    # Qt worker thread crashes the process, so the import must happen on the main thread.
    import segmentation_models_pytorch as smp

from .atomic import atomic_write
from .config import IMAGENET_MEAN, IMAGENET_STD, TrainConfig
from .errors import ModelFileError, check_model_file  # noqa: F401 - ModelFileError re-exported

FORMAT = "napari-skinseg-model"
FORMAT_VERSION = 1



def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__


def _load_failure(path: Path, err: BaseException) -> str:
    is_zip = zipfile.is_zipfile(path)
    # a foreign file (an image, a CSV) fails in the same weights-only unpickler, with
    # "Unsupported operand": only a global, or a PyTorch (zip) file, holds code
    if "Unsupported global" in str(err) or ("weights_only" in str(err) and is_zip):
        return "it holds Python objects or code, which napari-skinseg never runs"
    if not is_zip:
        return ("it is not a PyTorch file at all" if path.stat().st_size and
                not _looks_truncated_zip(path) else "it is empty or truncated")
    return "it is truncated or corrupt"


def _looks_truncated_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"  # starts like a PyTorch (zip) file but ends early


def known_encoders() -> list[str]:
    """The encoder names segmentation-models-pytorch knows (``tu-<timm name>`` works as well)."""
    return sorted(smp.encoders.encoders)


def check_encoder(name: str) -> str:
    """Raise ``ValueError`` for an encoder name smp does not know, suggesting close names."""
    if name in smp.encoders.encoders:
        return name
    if name.startswith("tu-"):
        try:
            import timm

            if timm.is_model(name[3:]) or name[3:] in timm.list_models(name[3:]):
                return name
        except ImportError:  # pragma: no cover - timm is a dependency of smp
            pass
    close = difflib.get_close_matches(name, known_encoders(), n=4, cutoff=0.6)
    hint = (f"did you mean {' or '.join(close)}?" if close else
            f"known encoders include {', '.join(known_encoders()[:8])}, ...")
    raise ValueError(f"unknown encoder {name!r}; {hint} (or any timm model as tu-<name>)")


def non_finite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold NaN or infinite values."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


# What a network takes: an RGB image, or (click-to-fix models, napari_skinseg.click_model) the
# image plus the current mask and the positive and negative click maps.
INPUTS = {"rgb": 3, "rgb+clicks": 6}


def build_unet(config: TrainConfig, in_channels: int = 3) -> nn.Module:
    """An smp U-Net with one output channel (lesion logit) and no downloaded weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return smp.Unet(encoder_name=config.encoder, encoder_weights=None,
                        in_channels=in_channels, classes=1,
                        decoder_channels=config.decoder_channels)


def xavier_init(model: nn.Module) -> nn.Module:
    """Xavier (Glorot) uniform initialisation of every convolution and linear layer, as in the paper."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


@dataclass
class ModelMetadata:
    """Everything needed to use and to reproduce a model, saved beside its weights."""

    config: TrainConfig
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    # Review-queue calibration (features -> predicted Dice, see napari_skinseg.quality); empty
    # when the model has none. Older files lack the key and load with it empty.
    quality: dict[str, Any] = field(default_factory=dict)
    # "rgb" (a segmentation model) or "rgb+clicks" (a click-to-fix model); see INPUTS.
    inputs: str = "rgb"
    best_epoch: int = 0
    epochs_completed: int = 0
    status: str = "complete"  # "complete", "cancelled", "in progress" or "diverged"
    started_from: str = "scratch"
    created: str = ""
    # Processes that trained it together (torchrun, see napari_skinseg.distributed); older
    # files lack the key and load as 1.
    world_size: int = 1

    @property
    def size(self) -> int:
        return self.config.size

    def to_json(self) -> str:
        data = {k: v for k, v in self.__dict__.items() if k != "config"}
        data["config"] = self.config.to_dict()
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> "ModelMetadata":
        data = json.loads(text)
        data["config"] = TrainConfig.from_dict(data["config"])
        known = set(cls.__dataclass_fields__)
        meta = cls(**{k: v for k, v in data.items() if k in known})
        meta.mean, meta.std = tuple(meta.mean), tuple(meta.std)
        return meta


@dataclass
class SkinSegModel:
    """A network together with its metadata."""

    network: nn.Module
    metadata: ModelMetadata
    path: Path | None = None

    @classmethod
    def new(cls, config: TrainConfig) -> "SkinSegModel":
        # Seeded for reproducible weights, inside fork_rng so the caller's global RNG is untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            network = xavier_init(build_unet(config))
        return cls(network, ModelMetadata(config=config))

    def save(self, path: str | os.PathLike, half: bool = False) -> Path:
        """Write atomically; ``half=True`` stores floating weights as fp16 (half the size).

        Weights that are not finite (a diverged training) are never written: ``ValueError``.
        """
        bad = non_finite_tensors(self.network.state_dict())
        if bad:
            raise ValueError(f"not saving {Path(path).name}: {len(bad)} weight tensors hold NaN or "
                             f"infinite values (e.g. {bad[0]}); the training diverged")
        state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in self.network.state_dict().items()}
        payload = {"format": FORMAT, "version": FORMAT_VERSION,
                   "metadata": self.metadata.to_json(), "state_dict": state}
        return atomic_torch_save(payload, path)


def atomic_torch_save(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` through an open file, so a full disk is an ``OSError`` (ENOSPC), not torch's
    cryptic ``RuntimeError``, and atomically (a :class:`WriteError` names the path and cause)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            try:
                torch.save(payload, fh)
            except RuntimeError as err:
                # torch's zip writer, closing after a failed write, raises its own RuntimeError
                # ("unexpected pos ...") over the OSError: the file system's error is the cause.
                cause = err.__context__
                while cause is not None and not isinstance(cause, OSError):
                    cause = cause.__context__
                if cause is None:
                    raise
                raise cause from None

    return atomic_write(path, write)


def read_torch_file(path: str | os.PathLike, what: str = "model file",
                    expected_format: str = FORMAT) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` and clear errors for foreign or broken files."""
    path = check_model_file(path, what)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or pickled-code files
        # torch's own text names internals and, for pickled code, advises switching the safety
        # check off; the person gets the reason in our words instead.
        raise ModelFileError(f"{path.name} is not a readable napari-skinseg {what}: "
                             f"{_load_failure(path, err)}") from None
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        raise ModelFileError(f"{path.name} is a PyTorch file but not a napari-skinseg {what}")
    if payload.get("version", 0) > FORMAT_VERSION:
        raise ModelFileError(f"{path.name} was written by a newer napari-skinseg "
                             f"(format {payload['version']}); please upgrade")
    return payload


def load_model(path: str | os.PathLike) -> SkinSegModel:
    """Load a model file safely; raises :class:`ModelFileError` with the reason."""
    payload = read_torch_file(path)
    try:
        metadata = ModelMetadata.from_json(payload["metadata"])
        if metadata.inputs not in INPUTS:
            raise ValueError(f"unknown network inputs {metadata.inputs!r}")
        network = build_unet(metadata.config, INPUTS[metadata.inputs])
        state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
        network.load_state_dict(state)
        bad = non_finite_tensors(state)
    except (KeyError, TypeError, ValueError, RuntimeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{Path(path).name}: model file does not match its metadata: "
                             f"{_first_line(err)}") from None
    if bad:
        raise ModelFileError(f"{Path(path).name} cannot be used: {len(bad)} of its weight tensors "
                             f"hold NaN or infinite values (e.g. {bad[0]}), so its training "
                             "diverged; train it again with a lower learning rate")
    network.eval()
    return SkinSegModel(network, metadata, Path(path))
