"""Training throughput: the training loop against a bare train step of the same network.

    python benchmarks/gpu/train_speed.py --device cuda --out train_speed.json

The bare step is forward + loss + backward + Adam step on one batch already on the device, with
no data handling at all; the loop is :func:`napari_skinseg.training.train` (the code behind
``skinseg train`` and napari's Train dock) on in-memory pairs with augmentation. Both run in this
process, on the same network, batch, size and precision; the loop's rate is taken over the second
epoch's batches (the first pays for start-up). Goal (issue 13): the loop at >= 80 % of the bare
step.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_skinseg.config import TrainConfig
from napari_skinseg.dataset import SampleSet
from napari_skinseg.model import SkinSegModel
from napari_skinseg.reports import BatchProgress
from napari_skinseg.training import _autocast, _Loss, train


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_rate(config: TrainConfig, device: torch.device, steps: int) -> float:
    network = SkinSegModel.new(config).network.to(device).to(memory_format=torch.channels_last)
    network.train()
    opt = torch.optim.Adam(network.parameters(), lr=1e-3)
    loss_fn = _Loss().to(device)
    b, s = config.batch_size, config.size
    x = torch.randn(b, 3, s, s, device=device).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(b, 1, s, s, device=device) > 0.7).float()

    def step() -> None:
        with _autocast(device, config.precision):
            logits = network(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * b / (time.perf_counter() - t0)


def synthetic_pairs(n: int, size: int, seed: int = 0) -> SampleSet:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    masks = np.stack([(yy - rng.uniform(0.3, 0.7) * size) ** 2 + (xx - rng.uniform(0.3, 0.7) * size) ** 2
                      < (rng.uniform(0.1, 0.3) * size) ** 2 for _ in range(n)])
    return SampleSet(images, masks, [f"p{i}" for i in range(n)])


def loop_rate(config: TrainConfig, batches: int) -> float:
    n = config.batch_size * batches
    samples = synthetic_pairs(n, config.size)
    val = synthetic_pairs(max(4, config.batch_size), config.size, seed=1)
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        gen = train(samples, config.replace(epochs=2), Path(tmp) / "m.pt", val_samples=val,
                    yield_batches=True)
        for item in gen:
            if isinstance(item, BatchProgress) and item.epoch == 2:
                stamps.append(item.elapsed)
    # the loop reads a number back every few batches, so batch stamps are close to device time
    return (len(stamps) - 1) * config.batch_size / (stamps[-1] - stamps[0])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default="train_speed.json")
    p.add_argument("--settings", default="384x16,256x64",
                   help="size x batch pairs, comma-separated")
    p.add_argument("--batches", type=int, default=40)
    args = p.parse_args()
    device = torch.device(args.device)
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
               else platform.processor() or "cpu", "torch": torch.__version__, "runs": []}
    for setting in args.settings.split(","):
        size, batch = (int(v) for v in setting.split("x"))
        for precision in ("fp32", "bf16"):
            config = TrainConfig(size=size, batch_size=batch, precision=precision,
                                 device=args.device, lr_schedule="constant")
            run = {"size": size, "batch": batch, "precision": precision}
            try:
                run["bare_img_s"] = bare_rate(config, device, steps=args.batches)
                run["loop_img_s"] = loop_rate(config, args.batches)
                run["loop_vs_bare"] = run["loop_img_s"] / run["bare_img_s"]
            except Exception as err:  # record and go on: one setting must not cost the others
                run["error"] = f"{type(err).__name__}: {err}"
            print(json.dumps(run), flush=True)
            results["runs"].append(run)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
