"""The typed settings shared by the Python API, the CLI, the napari widgets and the model file.

A training run is fully described by a :class:`TrainConfig`; the same object is stored in the
saved model's metadata, so a run started in napari can be repeated from the command line with
:meth:`TrainConfig.cli_command`.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from dataclasses import dataclass
from typing import Any

# Encoders known to train in reasonable time on a laptop CPU; any smp encoder name is accepted.
DEFAULT_ENCODER = "mobilenet_v2"
DEFAULT_DECODER_CHANNELS = (128, 64, 32, 16, 8)
# ImageNet statistics: the usual choice for RGB photographs, kept in the model file.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LR_SCHEDULES = ("constant", "cosine")
# "bf16": bfloat16 autocast (fast on recent GPUs; 1.4x slower on the CPUs measured here).
PRECISIONS = ("fp32", "bf16")
# "shades_of_gray": each image's colour cast removed before the network sees it (a known cure
# for differences between dermoscopes); part of the model, applied in training and prediction.
COLOUR_CONSTANCY = ("none", "shades_of_gray")
# Fine-tuning a trained model on a few curated pairs: a lower, constant rate, so the pairs adjust
# the model instead of overwriting it (benchmarks/data_efficiency.py measured it).
FINE_TUNE_LEARNING_RATE = 3e-4
KEEP_MODES = ("largest", "all")


@dataclass
class TrainConfig:
    """Everything that decides how a U-Net is trained.

    Attributes
    ----------
    encoder:
        segmentation-models-pytorch encoder name; built with ``encoder_weights=None``.
    decoder_channels:
        Channels of the five U-Net decoder stages; smaller is faster on a CPU.
    size:
        Working size in pixels: images are resized to ``size`` x ``size`` for the network and
        predictions are resized back to the input's original size.
    epochs, batch_size, learning_rate, weight_decay:
        Adam optimisation settings (the paper: 10 epochs, batch size 2, Adam).
    lr_schedule:
        ``"constant"`` (the paper) or ``"cosine"`` (decays to 1 % of the rate by the last epoch).
    val_fraction:
        Share of the pairs held out for validation (the paper's 4:1 split is 0.2); at least one
        pair is always held out.
    seed:
        Seeds the split, the weight initialisation, the batch order and the augmentation, so the
        same seed on the same data gives the same metrics on a CPU.
    augment:
        Random flips, 90-degree rotations and colour jitter on the training pairs.
    device:
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"``.
    precision:
        ``"fp32"``, or ``"bf16"`` for bfloat16 autocast (for GPUs).
    colour_constancy:
        ``"none"`` or ``"shades_of_gray"`` (Shades of Gray, p = 6, on every image the network
        sees, in training and in prediction).
    limit:
        Train on at most this many of the pairs found, chosen with ``seed`` (None: all), e.g.
        the paper's 100 images; recorded so that the run can be repeated.
    """

    encoder: str = DEFAULT_ENCODER
    decoder_channels: tuple[int, ...] = DEFAULT_DECODER_CHANNELS
    size: int = 256
    epochs: int = 10
    batch_size: int = 2
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    val_fraction: float = 0.2
    seed: int = 0
    augment: bool = True
    device: str = "auto"
    precision: str = "fp32"
    colour_constancy: str = "none"
    limit: int | None = None

    def __post_init__(self) -> None:
        self.decoder_channels = tuple(int(c) for c in self.decoder_channels)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        if self.size < 32 or self.size % 32:
            raise ValueError(f"size must be a multiple of 32 and at least 32 (got {self.size}); "
                             "the U-Net halves the image five times")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1 (got {self.epochs})")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1 (got {self.batch_size})")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning rate must be a positive finite number (got {self.learning_rate})")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight decay must be a finite number, not negative (got {self.weight_decay})")
        if not 0 <= self.seed < 2 ** 64:  # numpy and torch generators take no other seeds
            raise ValueError(f"seed must be a whole number from 0 to 2**64 - 1 (got {self.seed})")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"validation fraction must be between 0 and 1 (got {self.val_fraction})")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES} (got {self.lr_schedule!r})")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS} (got {self.precision!r})")
        if self.colour_constancy not in COLOUR_CONSTANCY:
            raise ValueError(f"colour_constancy must be one of {COLOUR_CONSTANCY} "
                             f"(got {self.colour_constancy!r})")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1 pair (got {self.limit})")
        if len(self.decoder_channels) != 5 or min(self.decoder_channels) < 1:
            raise ValueError("decoder_channels needs five positive numbers "
                             f"(got {self.decoder_channels})")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["decoder_channels"] = list(self.decoder_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build from a dict, ignoring keys this version does not know (newer model files)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def cli_command(self, images_dir: str, masks_dir: str, out: str,
                    init: str | None = None) -> str:
        """The ``skinseg train`` command line that repeats this run headless."""
        default = TrainConfig()
        args = ["skinseg", "train", str(images_dir), str(masks_dir), "--out", str(out),
                "--epochs", str(self.epochs), "--batch-size", str(self.batch_size),
                "--size", str(self.size), "--device", self.device,
                "--val-fraction", str(self.val_fraction), "--seed", str(self.seed),
                "--lr", str(self.learning_rate)]
        if self.encoder != default.encoder:
            args += ["--encoder", self.encoder]
        if self.decoder_channels != default.decoder_channels:
            args += ["--decoder-channels", ",".join(map(str, self.decoder_channels))]
        if self.lr_schedule != default.lr_schedule:
            args += ["--lr-schedule", self.lr_schedule]
        if self.weight_decay != default.weight_decay:
            args += ["--weight-decay", str(self.weight_decay)]
        if self.precision != default.precision:
            args += ["--precision", self.precision]
        if self.colour_constancy != default.colour_constancy:
            args += ["--colour-constancy", self.colour_constancy]
        if not self.augment:
            args.append("--no-augment")
        if self.limit is not None:
            args += ["--limit", str(self.limit)]
        if init:
            args += ["--init", str(init)]
        return shlex.join(args)


@dataclass
class PostprocessConfig:
    """How a probability map becomes a lesion mask (re-applied without running the network).

    threshold: probability above which a pixel is lesion.
    fill_holes: fill holes enclosed by the lesion.
    keep: ``"largest"`` keeps the largest connected lesion (ISIC images show one lesion) and any
        piece at least half its size (one lesion the network split), ``"all"`` keeps every
        component.
    min_size: components smaller than this many pixels (at the original size) are dropped.
    """

    threshold: float = 0.5
    fill_holes: bool = True
    keep: str = "largest"
    min_size: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:  # also refuses NaN
            raise ValueError(f"threshold must be between 0 and 1 (got {self.threshold})")
        if self.keep not in KEEP_MODES:
            raise ValueError(f"keep must be one of {KEEP_MODES} (got {self.keep!r})")
        if self.min_size < 0:
            raise ValueError(f"min_size must not be negative (got {self.min_size})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

