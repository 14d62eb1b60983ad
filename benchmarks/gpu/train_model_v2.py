"""Bundled model v2: train on ISIC 2018 + HAM10000 (packed by pack_data.py) within a time budget.

    python benchmarks/gpu/train_model_v2.py DATA.npz --out model.pt --seconds 330 \
        [--size 256] [--batch 32] [--colour-constancy shades_of_gray] [--init bundled]

Validation: the bundled model's 419 ISIC validation images (never trained on). The number of
epochs is chosen from a timed warm-up so the cosine schedule ends inside the budget; if the
estimate was too optimistic, the run is stopped at the deadline and keeps its best model.
The recipe is the same :func:`napari_skinseg.training.train` that ``skinseg train`` runs.
``--init bundled`` starts from the model bundled now; the bundled v2 was started from v1
(``--init skinseg_isic2018.pt``, see MODEL_CARD.md for getting that file from git).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import packed  # noqa: E402

from napari_skinseg.bundled import bundled_model_path  # noqa: E402
from napari_skinseg.config import TrainConfig  # noqa: E402
from napari_skinseg.model import load_model  # noqa: E402
from napari_skinseg.training import train  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seconds", type=float, default=330)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--colour-constancy", default="none")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--init", default="bundled", help="'bundled', 'none' or a model file")
    p.add_argument("--device", default="cuda")
    p.add_argument("--max-epochs", type=int, default=60)
    p.add_argument("--log", type=Path, default=None)
    p.add_argument("--barrier", default=None, help="folder where runs sharing the GPU meet")
    p.add_argument("--parties", type=int, default=1)
    args = p.parse_args()
    t0 = time.time()
    deadline = t0 + args.seconds
    parts = packed.load(args.data)
    train_set = packed.concat(parts["isic_train"], parts["ham_train"])
    val_set = parts["isic_val"]
    init = None if args.init == "none" else (bundled_model_path() if args.init == "bundled"
                                             else args.init)
    if init is not None:
        encoder = load_model(init).metadata.config.encoder
    else:
        encoder = TrainConfig().encoder
    base = TrainConfig(encoder=encoder, size=args.size, batch_size=args.batch,
                       learning_rate=args.lr, lr_schedule="cosine", device=args.device,
                       precision=args.precision, colour_constancy=args.colour_constancy, seed=0)
    if args.size != train_set.images.shape[1]:
        raise SystemExit("--size must equal the packed size")

    packed.wait_for_peers(args.barrier, args.out.stem, args.parties)
    # Timed warm-up: one short epoch on a slice tells how many epochs fit the budget (its
    # batch rate after the first few batches, under the same load as the real run).
    probe = train_set.subset(range(min(len(train_set), 40 * args.batch)))
    stamps = []
    warm = train(probe, base.replace(epochs=1), args.out.with_suffix(".probe.pt"), init=init,
                 val_samples=val_set.subset(range(min(32, len(val_set)))), yield_batches=True)
    for item in warm:
        if hasattr(item, "batch") and item.batch > 4:
            stamps.append(item.elapsed)
    per_image = ((stamps[-1] - stamps[0]) / ((len(stamps) - 1) * args.batch)
                 if len(stamps) > 2 else 0.01)
    left = deadline - time.time() - 20  # saving and the final evaluation
    # each epoch: the training pairs, a validation pass (about a third of a training image's
    # cost per image) and the checkpoint; 0.85: a margin for a busier GPU later on
    epoch_cost = (per_image * (len(train_set) + 0.35 * len(val_set)) + 1.0) / 0.85
    epochs = int(max(1, min(args.max_epochs, left // epoch_cost)))
    config = base.replace(epochs=epochs)
    print(f"[v2 {args.out.name}] {len(train_set)} train / {len(val_set)} val pairs; "
          f"{per_image * 1000:.2f} ms per image in the warm-up -> {epochs} epochs", flush=True)
    log = {"args": {k: str(v) for k, v in vars(args).items()}, "epochs_planned": epochs,
           "n_train": len(train_set), "n_val": len(val_set), "history": []}
    gen = train(train_set, config, args.out, init=init, val_samples=val_set,
                cancel=lambda: time.time() > deadline,
                sources=["isic2018 (1,675 training pairs)",
                         f"ham10000 ({len(parts['ham_train'])} lesions outside the held-out ones)"])
    try:
        while True:
            report = next(gen)
            log["history"].append(report.as_dict())
            print(f"[v2 {args.out.name}] {report.line()}", flush=True)
    except StopIteration as stop:
        result = stop.value
    log["cancelled_at_deadline"] = result.cancelled
    log["best_epoch"] = result.best_epoch
    log["seconds"] = time.time() - t0
    model = result.model
    half = args.out.with_name(args.out.stem + ".fp16.pt")
    model.save(half, half=True)
    log["metrics"] = model.metadata.metrics
    print(f"[v2 {args.out.name}] done: best epoch {result.best_epoch}, "
          f"{json.dumps(model.metadata.metrics)}", flush=True)
    if args.log:
        args.log.write_text(json.dumps(log, indent=1))


if __name__ == "__main__":
    torch.manual_seed(0)
    np.random.seed(0)
    main()
