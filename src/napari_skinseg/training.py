"""The analysis module: train a U-Net and report per epoch.

:func:`train` is a generator. It yields one :class:`EpochReport` per epoch (for live curves),
checks ``cancel()`` between batches, writes the best-on-validation model atomically whenever it
improves, writes a resumable checkpoint after every epoch, and *returns* a
:class:`TrainingResult` (``StopIteration.value``, or napari's ``worker.returned``)::

    gen = train(samples, TrainConfig(epochs=3), "model.pt")
    for report in gen: print(report.line())

or simply ``result = run_training(samples, config, "model.pt")``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Generator, Sequence

import numpy as np
import torch
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn

from . import distributed
from .atomic import remove_stale_temp_files
from .augmentation import augment_batch
from .config import TrainConfig
from .dataset import SampleSet
from .devices import resolve_device
from .generators import drain
from .model import (
    FORMAT,
    ModelFileError,
    SkinSegModel,
    atomic_torch_save,
    load_model,
    read_torch_file,
)
from .reports import BatchProgress, EpochReport
from .transforms import colour_correct, normalise

CHECKPOINT_FORMAT = FORMAT + "-checkpoint"


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite: the run stops, and no such model is saved."""


@dataclass
class TrainingResult:
    model: SkinSegModel
    model_path: Path
    history: list[EpochReport]
    best_epoch: int
    cancelled: bool
    train_names: list[str] = field(default_factory=list)
    val_names: list[str] = field(default_factory=list)


def split_sizes(n: int, val_fraction: float) -> tuple[int, int]:
    """(training, validation) pair counts of :func:`split_indices`: at least one on each side."""
    if n < 2:
        raise ValueError(f"training needs at least 2 image/mask pairs (one for validation); got {n}")
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return n - n_val, n_val


def split_indices(n: int, val_fraction: float, seed: int,
                  train_only: Sequence[bool] | None = None) -> tuple[list[int], list[int]]:
    """Seeded random split with at least one pair on each side.

    Pairs flagged ``train_only`` (masks accepted as a model made them) are never validation
    pairs: scored on its own masks, the model that made them looks better than any retrained
    one. Validation then takes the reviewed pairs the split would take, fewer when fewer are
    reviewed; when none is, the plain split (:func:`split_note` says what that means)."""
    n_val = split_sizes(n, val_fraction)[1]
    order = np.random.default_rng(seed).permutation(n)
    if train_only is not None and any(train_only) and not all(train_only):
        reviewed = [int(i) for i in order if not train_only[i]]
        val = sorted(reviewed[:n_val])
        return sorted(set(range(n)) - set(val)), val
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def split_note(n: int, n_unreviewed: int) -> str | None:
    """A line for the person about pairs accepted without review, or None."""
    if not n_unreviewed:
        return None
    if n_unreviewed >= n:
        return (f"all {n} pairs were accepted without review: the validation figures score the "
                "model on masks a model made, and favour the model that made them")
    return (f"{n_unreviewed} of {n} pairs were accepted without review: they are trained on, "
            "never used for validation")


def checkpoint_path(model_path: str | Path) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".checkpoint.pt")


class _Loss(nn.Module):
    """BCE + Dice on logits (smp's Dice loss)."""

    def __init__(self) -> None:
        super().__init__()
        self.bce = nn.BCEWithLogitsLoss()
        self.dice = DiceLoss(mode="binary", from_logits=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.bce(logits, target) + self.dice(logits, target)


def _lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    if schedule == "cosine" and epochs > 1:
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * epoch / (epochs - 1)))
    return 1.0


def check_init_model(model: SkinSegModel) -> SkinSegModel:
    """Refuse a starting model that is not a segmentation model (a click-to-fix model takes six
    input channels: training it on RGB images failed deep inside torch)."""
    if model.metadata.inputs != "rgb":
        name = model.path.name if model.path else "this model"
        raise ModelFileError(f"{name} is a click-to-fix model, not a segmentation model; start "
                             "from a model trained with skinseg train (or 'bundled')")
    return model


def _start_model(config: TrainConfig, init: str | Path | SkinSegModel | None) -> tuple[SkinSegModel, TrainConfig, str]:
    if init is None:
        return SkinSegModel.new(config), config, "scratch"
    base = check_init_model(init if isinstance(init, SkinSegModel) else load_model(init))
    base_cfg = base.metadata.config
    # Fine-tuning keeps the starting model's architecture, and its colour constancy unless
    # another one is asked for (its weights learnt from colour-corrected images: retraining
    # with the default settings must not feed them uncorrected ones).
    colour = (base_cfg.colour_constancy if config.colour_constancy == "none"
              else config.colour_constancy)
    config = config.replace(encoder=base_cfg.encoder, decoder_channels=base_cfg.decoder_channels,
                            colour_constancy=colour)
    network = copy.deepcopy(base.network)
    model = SkinSegModel(network, copy.deepcopy(base.metadata))
    model.metadata.config = config
    model.metadata.history = []
    # The review queue's calibration was fitted on the starting model's errors, not on this
    # model's: a fine-tuned model falls back to the uncalibrated score until recalibrated.
    model.metadata.quality = {}
    source = str(base.path) if base.path else "model in memory"
    return model, config, source


def _autocast(device: torch.device, precision: str):
    """bfloat16 autocast when asked for (no loss scaling needed, unlike fp16)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=precision == "bf16")


def _evaluate(network: nn.Module, samples: SampleSet, model: SkinSegModel, loss_fn: nn.Module,
              device: torch.device, batch_size: int, precision: str = "fp32") -> dict[str, float]:
    network.eval()
    losses, correct, total, dices, jaccards = [], 0, 0, [], []
    with torch.inference_mode(), _autocast(device, precision):
        for start in range(0, len(samples), batch_size):
            x = normalise(samples.images[start:start + batch_size], model.metadata.mean,
                          model.metadata.std).to(device)
            y = torch.from_numpy(samples.masks[start:start + batch_size]).unsqueeze(1).float().to(device)
            logits = network(x).float()
            losses.append(float(loss_fn(logits, y)) * len(x))
            pred = logits > 0
            truth = y > 0.5
            correct += int((pred == truth).sum())
            total += truth.numel()
            tp = (pred & truth).sum(dim=(1, 2, 3)).float()
            fp = (pred & ~truth).sum(dim=(1, 2, 3)).float()
            fn = (~pred & truth).sum(dim=(1, 2, 3)).float()
            empty = (tp + fp + fn) == 0
            dices += torch.where(empty, 1.0, 2 * tp / (2 * tp + fp + fn).clamp(min=1)).tolist()
            jaccards += torch.where(empty, 1.0, tp / (tp + fp + fn).clamp(min=1)).tolist()
    # Sums over every process's share of the validation pairs: the means of the whole set.
    loss, correct, total, dice, jaccard, n = distributed.sum_values(
        sum(losses), correct, total, sum(dices), sum(jaccards), len(dices))
    return {"loss": loss / n, "accuracy": correct / total, "dice": dice / n, "jaccard": jaccard / n}


def train(samples: SampleSet, config: TrainConfig, out: str | Path, *,
          init: str | Path | SkinSegModel | None = None,
          cancel: Callable[[], bool] | None = None,
          on_batch: Callable[[BatchProgress], None] | None = None,
          resume: bool = False,
          val_samples: SampleSet | None = None,
          train_only: Collection[str] = (),
          sources: list[str] | None = None,
          yield_batches: bool = False) -> Generator[EpochReport | BatchProgress, None, TrainingResult]:
    """Train on ``samples`` (split by ``config.val_fraction`` unless ``val_samples`` is given;
    the names in ``train_only`` are never validation pairs, see :func:`split_indices`).

    ``out`` receives the best model so far, replacing a file of that name as ``torch.save`` would
    (``skinseg train`` and the docks refuse an existing model before calling this); ``<out>.checkpoint.pt`` the state after each epoch,
    which ``resume=True`` continues from (same data and settings), and which is removed once
    training completes. With ``yield_batches=True`` a :class:`BatchProgress` is yielded after
    every batch as well (for progress bars that must not wait a whole epoch).
    """
    config.validate()
    out = Path(out)
    cancel = cancel or (lambda: False)
    device = distributed.local_device(resolve_device(config.device))
    if val_samples is None:
        train_idx, val_idx = split_indices(len(samples), config.val_fraction, config.seed,
                                           [name in train_only for name in samples.names])
        train_set, val_set = samples.subset(train_idx), samples.subset(val_idx)
    else:
        if len(samples) < 1 or len(val_samples) < 1:
            raise ValueError("training and validation sets must each hold at least one pair")
        train_set, val_set = samples, val_samples
    if not train_set.masks.any():
        raise ValueError("no lesion pixels in any training mask: paint the lesion (label > 0) "
                         "before training")
    if train_set.masks.all():
        raise ValueError("every pixel of every training mask is lesion: the masks leave no skin to "
                         "learn from (are they inverted, or all 255?); lesion must be > 0 and "
                         "skin 0")

    model, config, started_from = _start_model(config, init)
    if config.colour_constancy != "none":  # part of the model's input transform
        train_set = SampleSet(colour_correct(train_set.images, config.colour_constancy),
                              train_set.masks, train_set.names)
        val_set = SampleSet(colour_correct(val_set.images, config.colour_constancy),
                            val_set.masks, val_set.names)
    network = model.network.to(device).to(memory_format=torch.channels_last)
    trained = distributed.wrap(network, device)  # DDP under torchrun; saved is always `network`
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate,
                                 weight_decay=config.weight_decay)
    loss_fn = _Loss().to(device)
    generator = torch.Generator().manual_seed(config.seed)
    meta = model.metadata
    meta.started_from = started_from
    meta.data = {"n_train": len(train_set), "n_val": len(val_set), "sources": sources or [],
                 "train_lesion_fraction": train_set.lesion_fraction,
                 "val_names": val_set.names,
                 "unreviewed_names": [n for n in samples.names if n in train_only]}
    meta.world_size = distributed.world_size()
    history: list[EpochReport] = []
    best_score, best_epoch, best_state = -math.inf, 0, None
    start_epoch = 1

    ckpt = checkpoint_path(out)
    for owned in (out, ckpt) if distributed.is_main() else ():
        remove_stale_temp_files(owned)  # temporary files of a process killed while writing them
    if resume and ckpt.exists():
        try:
            state = read_torch_file(ckpt, what="checkpoint", expected_format=CHECKPOINT_FORMAT)
        except ModelFileError as err:  # damaged outside this program (writes are atomic)
            raise ModelFileError(f"{err}; delete {ckpt.name} to start again, or train without "
                                 "--resume and with --overwrite") from None
        saved_cfg = TrainConfig.from_dict(json.loads(state["config"])).replace(
            epochs=config.epochs, device=config.device, precision=config.precision)
        if saved_cfg != config:
            changed = "; ".join(f"{name} {old!r} there, {new!r} now"
                                for name, old in saved_cfg.to_dict().items()
                                if old != (new := config.to_dict()[name]))
            raise ValueError(f"{ckpt.name} was written with other settings ({changed}); "
                             "resume with the same settings or delete the checkpoint")
        if state["val_names"] != val_set.names or state["n_train"] != len(train_set):
            raise ValueError(f"{ckpt.name} was written for other data; resume on the same data")
        if state.get("world_size", 1) != meta.world_size:
            raise ValueError(f"{ckpt.name} was written by {state.get('world_size', 1)} training "
                             f"process(es), this run has {meta.world_size}; resume with as many")
        network.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        history = [EpochReport(**h) for h in state["history"]]
        best_score, best_epoch = state["best_score"], state["best_epoch"]
        best_state = state["best_state"]
        start_epoch = len(history) + 1
        meta.started_from = state["started_from"]

    def save(status: str, state_dict: dict, epoch_of_model: int) -> None:
        meta.history = [h.as_dict() for h in history]
        meta.best_epoch = epoch_of_model
        meta.epochs_completed = len(history)
        meta.status = status
        meta.created = _dt.datetime.now().isoformat(timespec="seconds")
        best = next((h for h in history if h.epoch == epoch_of_model), None)
        meta.metrics = ({"val_loss": best.val_loss, "val_accuracy": best.val_accuracy,
                         "val_dice": best.val_dice, "val_jaccard": best.val_jaccard,
                         "train_loss": best.train_loss, "train_accuracy": best.train_accuracy}
                        if best else {})
        snapshot = SkinSegModel(copy.deepcopy(network).cpu(), meta)
        snapshot.network.load_state_dict(state_dict)
        if distributed.is_main():  # the other processes hold the same weights
            snapshot.save(out)
        return snapshot

    def diverged(where: str, value: float, lr: float) -> None:
        kept = ""
        if best_state is not None and best_epoch >= 1:
            save("diverged", best_state, best_epoch)
            kept = (f"; the best model before that (epoch {best_epoch}) is kept in {out.name}, "
                    "marked 'diverged'")
        raise TrainingDiverged(
            f"training stopped {where}: the loss is {value} (not a finite number), so the "
            f"weights can only get worse; lower the learning rate (now {lr:g}) and train again"
            + (kept or "; no model was saved"))

    per_process = distributed.shard_size(len(train_set))
    batches = math.ceil(per_process / config.batch_size)
    if config.size < 64:
        # At size 32 the deepest features are 1x1: batch norm cannot train on a batch of one
        # image (torch: "Expected more than 1 value per channel" at the end of an epoch).
        if config.batch_size == 1 or per_process == 1:
            raise ValueError("at size 32 batch normalisation cannot learn from a batch of one "
                             "image: use a batch size of 2 or more with at least 2 training "
                             "pairs, or size 64")
        if per_process % config.batch_size == 1:
            batches -= 1  # the epoch's last image is left out (another one each epoch)
    val_share = distributed.local_share(val_set)
    # On a GPU the training pairs live on the device (uint8: 200 kB per 256² pair) and are
    # augmented there, so each batch costs no host-to-device copy; a CPU uses them in place.
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    images_src = torch.from_numpy(train_set.images)
    masks_src = torch.from_numpy(train_set.masks)
    if on_gpu:
        images_src, masks_src = images_src.to(device), masks_src.to(device)
    # Reading a number back from a GPU waits for all queued work; the divergence check does it
    # every few batches there (every batch on a CPU, where it costs nothing).
    check_every = 8 if on_gpu else 1
    t_start = time.perf_counter()
    cancelled = False
    for epoch in range(start_epoch, config.epochs + 1):
        lr = config.learning_rate * _lr_factor(config.lr_schedule, epoch - 1, config.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        network.train()
        t0 = time.perf_counter()
        # The same seeded order on every process; each trains on its own share of it.
        order = distributed.shard(torch.randperm(len(train_set), generator=generator).tolist())
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        total, seen = 0, 0
        for b in range(batches):
            if distributed.any_rank(cancel()):
                cancelled = True
                break
            idx = sorted(order[b * config.batch_size:(b + 1) * config.batch_size])
            rows = torch.tensor(idx, device=images_src.device)
            x = images_src[rows].permute(0, 3, 1, 2).float().div_(255.0)
            y = masks_src[rows].unsqueeze(1).float()
            if config.augment:
                x, y = augment_batch(x, y, generator)
            x = normalise(x, meta.mean, meta.std).to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with _autocast(device, config.precision):
                logits = trained(x)
            logits = logits.float()
            loss = loss_fn(logits, y)
            if (b + 1) % check_every == 0 or b + 1 == batches:
                if distributed.any_rank(not math.isfinite(loss.item())):
                    diverged(f"at epoch {epoch}, batch {b + 1}", loss.item(), lr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                loss_sum += loss.detach().double() * len(idx)
                correct += ((logits > 0) == (y > 0.5)).sum()
                total += y.numel()
                seen += len(idx)
            progress = BatchProgress(epoch, b + 1, batches, time.perf_counter() - t_start)
            if on_batch:
                on_batch(progress)
            if yield_batches:
                yield progress
        if cancelled:
            break
        distributed.sync_buffers(network)
        loss_sum, correct, total, seen = distributed.sum_values(float(loss_sum), int(correct),
                                                                total, seen)
        val = _evaluate(network, val_share, model, loss_fn, device, max(config.batch_size, 4),
                        config.precision)
        if not (math.isfinite(val["loss"]) and math.isfinite(loss_sum)):
            diverged(f"in the validation of epoch {epoch}", val["loss"], lr)
        score = val["dice"] - 1e-6 * val["loss"]  # ties on Dice go to the lower loss
        improved = score > best_score
        report = EpochReport(epoch=epoch, epochs=config.epochs, train_loss=loss_sum / seen,
                             val_loss=val["loss"], train_accuracy=correct / total,
                             val_accuracy=val["accuracy"], val_dice=val["dice"],
                             val_jaccard=val["jaccard"], seconds=time.perf_counter() - t0,
                             learning_rate=lr, best=improved)
        history.append(report)
        if improved:
            best_score, best_epoch = score, epoch
            best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        # The checkpoint first, then the model: a kill between the two leaves a checkpoint that
        # --resume continues from (it holds the best weights too), never a model without one.
        if distributed.is_main():
            atomic_torch_save({"format": CHECKPOINT_FORMAT, "version": 1,
                               "config": json.dumps(config.to_dict()),
                               "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
                               "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                               "history": [h.as_dict() for h in history], "best_score": best_score,
                               "best_epoch": best_epoch, "best_state": best_state,
                               "val_names": val_set.names, "n_train": len(train_set),
                               "world_size": meta.world_size,
                               "started_from": meta.started_from}, ckpt)
        if improved:
            save("in progress", best_state, best_epoch)
        yield report

    if best_state is None:
        # Cancelled before the first epoch ended: keep the current weights so a model exists.
        best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    final = save("cancelled" if cancelled else "complete", best_state, best_epoch)
    if not cancelled and ckpt.exists() and distributed.is_main():
        ckpt.unlink()
    # The other processes do not read rank 0's file, which another node may not even see.
    result_model = load_model(out) if distributed.is_main() else final
    return TrainingResult(model=result_model, model_path=out, history=history, best_epoch=best_epoch,
                          cancelled=cancelled, train_names=train_set.names, val_names=val_set.names)


def run_training(samples: SampleSet, config: TrainConfig, out: str | Path,
                 on_epoch: Callable[[EpochReport], None] | None = None, **kwargs) -> TrainingResult:
    """Run :func:`train` to the end and return its result (``on_epoch`` sees each report)."""
    def on_item(item) -> None:
        if on_epoch and isinstance(item, EpochReport):
            on_epoch(item)

    return drain(train(samples, config, out, **kwargs), on_item)


__all__ = ["EpochReport", "BatchProgress", "TrainingResult", "TrainingDiverged", "train",
           "run_training", "split_indices", "split_sizes", "checkpoint_path", "ModelFileError"]
