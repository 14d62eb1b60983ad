"""Train the click-to-fix network (RITM recipe) from a segmentation model, within a time budget.

    python benchmarks/gpu/train_click_model.py DATA.npz --out click_model.pt --seconds 330 \
        [--base bundled|MODEL.pt] [--size 256] [--batch 32]

Each batch: the segmentation model's mask is the first mask (sometimes a grown or shrunk true
mask instead, for variety); 0-3 earlier clicks are simulated with the network itself (no
gradient), each placed deep inside the larger kind of error (missed lesion -> positive click,
false lesion -> negative click); then one more click and a gradient step on BCE + Dice against the
true mask. Data: ISIC 2018 training pairs + HAM10000 lesions outside the held-out ones (see
pack_data.py); the 419 ISIC validation images only measure (IoU after 1 and 3 clicks).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import packed  # noqa: E402

from napari_skinseg.augmentation import augment_batch  # noqa: E402
from napari_skinseg.bundled import bundled_model_path  # noqa: E402
from napari_skinseg.click_inputs import CLICK_RADIUS  # noqa: E402
from napari_skinseg.click_model import make_click_model  # noqa: E402
from napari_skinseg.model import load_model  # noqa: E402
from napari_skinseg.training import _Loss  # noqa: E402
from napari_skinseg.transforms import colour_correct, normalise  # noqa: E402


def error_depth(err: torch.Tensor, steps: int = 32) -> torch.Tensor:
    """How many 3x3 erosions each error pixel survives (a chessboard distance to the error's
    border, capped): clicks go where it is large, as a person clicks inside a region."""
    depth = torch.zeros_like(err)
    cur = err
    for _ in range(steps):
        depth = depth + cur
        cur = 1 - F.max_pool2d(1 - cur, 3, 1, 1)
    return depth


def add_clicks(pred: torch.Tensor, truth: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
               generator: torch.Generator | None = None) -> None:
    """One simulated click per image (in place), in the larger kind of error; none if no error."""
    b, _, s, _ = pred.shape
    fn, fp = truth & ~pred, pred & ~truth
    positive = fn.sum((1, 2, 3)) >= fp.sum((1, 2, 3))
    err = torch.where(positive[:, None, None, None], fn, fp).float()
    has = err.sum((1, 2, 3)) > 0
    depth = error_depth(err)
    top = depth.amax((1, 2, 3), keepdim=True)
    u = torch.rand(b, 1, 1, 1, device=pred.device, generator=generator) * 0.5 + 0.5
    cand = (depth >= (top * u).clamp(min=1)) & (err > 0)
    weights = cand.flatten(1).float() + 1e-12
    idx = torch.multinomial(weights, 1, generator=generator)[:, 0]
    cy, cx = (idx // s).view(b, 1, 1, 1), (idx % s).view(b, 1, 1, 1)
    yy = torch.arange(s, device=pred.device).view(1, 1, s, 1)
    xx = torch.arange(s, device=pred.device).view(1, 1, 1, s)
    disk = ((yy - cy) ** 2 + (xx - cx) ** 2 <= CLICK_RADIUS ** 2) & has.view(b, 1, 1, 1)
    pos |= disk & positive.view(b, 1, 1, 1)
    neg |= disk & ~positive.view(b, 1, 1, 1)


def perturb(truth: torch.Tensor) -> torch.Tensor:
    """The true mask grown or shrunk by a random amount (another kind of first mask)."""
    k = 2 * int(torch.randint(2, 12, (1,))) + 1
    grown = F.max_pool2d(truth.float(), k, 1, k // 2) > 0
    shrunk = ~(F.max_pool2d((~truth).float(), k, 1, k // 2) > 0)
    return grown if torch.rand(1) < 0.5 else shrunk


def net_input(xn, prev, pos, neg):
    return torch.cat([xn, prev.float(), pos.float(), neg.float()], 1).contiguous(
        memory_format=torch.channels_last)


@torch.no_grad()
def validate(net, base, images, masks, meta, device, clicks=(1, 3), batch=64):
    """Mean IoU at the working size after 1 and 3 simulated clicks (deterministic clicks)."""
    net.eval()
    gen = torch.Generator(device=device).manual_seed(0)
    sums = {c: 0.0 for c in clicks}
    for start in range(0, len(images), batch):
        x = images[start:start + batch].permute(0, 3, 1, 2).float().div(255)
        truth = masks[start:start + batch].unsqueeze(1)
        xn = normalise(x, meta.mean, meta.std)
        with torch.autocast(device.type, torch.bfloat16):
            prev = torch.sigmoid(base(xn).float()) > 0.5
        pos, neg = torch.zeros_like(prev), torch.zeros_like(prev)
        for n in range(1, max(clicks) + 1):
            add_clicks(prev, truth, pos, neg, gen)
            with torch.autocast(device.type, torch.bfloat16):
                prev = net(net_input(xn, prev, pos, neg)).float() > 0
            if n in clicks:
                inter = (prev & truth).sum((1, 2, 3)).float()
                union = (prev | truth).sum((1, 2, 3)).float()
                sums[n] += float(torch.where(union > 0, inter / union.clamp(min=1), 1.0).sum())
    net.train()
    return {f"iou@{c}": sums[c] / len(images) for c in clicks}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--base", default="bundled")
    p.add_argument("--seconds", type=float, default=330)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--device", default="cuda")
    p.add_argument("--log", type=Path, default=None)
    p.add_argument("--val", type=int, default=419)
    p.add_argument("--barrier", default=None, help="folder where runs sharing the GPU meet")
    p.add_argument("--parties", type=int, default=1)
    args = p.parse_args()
    t0 = time.time()
    deadline = t0 + args.seconds - 20  # leave time to validate and save
    device = torch.device(args.device)
    torch.manual_seed(0)
    base_model = load_model(bundled_model_path() if args.base == "bundled" else args.base)
    model = make_click_model(base_model)
    model.metadata.config = model.metadata.config.replace(size=args.size)
    meta = model.metadata
    parts = packed.load(args.data)
    train_set = packed.concat(parts["isic_train"], parts["ham_train"])
    val_set = parts["isic_val"].subset(range(min(args.val, len(parts["isic_val"]))))
    cc = meta.config.colour_constancy
    images = torch.from_numpy(colour_correct(train_set.images, cc)).to(device)
    masks = torch.from_numpy(train_set.masks).to(device)
    val_images = torch.from_numpy(colour_correct(val_set.images, cc)).to(device)
    val_masks = torch.from_numpy(val_set.masks).to(device)
    if images.shape[1] != args.size:
        raise SystemExit("--size must equal the packed size")

    net = model.network.to(device).to(memory_format=torch.channels_last).train()
    base = base_model.network.to(device).to(memory_format=torch.channels_last).eval()
    for param in base.parameters():
        param.requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    loss_fn = _Loss().to(device)
    gen = torch.Generator().manual_seed(0)
    log = {"args": {k: str(v) for k, v in vars(args).items()}, "n_train": len(train_set),
           "n_val": len(val_set), "history": []}
    packed.wait_for_peers(args.barrier, args.out.stem, args.parties)
    log["history"].append({"step": 0, "seconds": time.time() - t0,
                           **validate(net, base, val_images, val_masks, meta, device)})
    print(f"[click] before training: {log['history'][-1]}", flush=True)
    step, t_train, budget = 0, time.time(), deadline - time.time()
    next_val = time.time() + 60
    while time.time() < deadline:
        frac = (time.time() - t_train) / budget
        for group in opt.param_groups:  # cosine over the time budget
            group["lr"] = args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(frac, 1))))
        rows = torch.randint(0, len(images), (args.batch,), generator=gen).to(device)
        x = images[rows].permute(0, 3, 1, 2).float().div_(255)
        y = masks[rows].unsqueeze(1).float()
        x, y = augment_batch(x, y, gen)
        truth = y > 0.5
        xn = normalise(x, meta.mean, meta.std)
        with torch.no_grad():
            with torch.autocast(device.type, torch.bfloat16):
                prev = torch.sigmoid(base(xn).float()) > 0.5
            if torch.rand(1, generator=gen) < 0.25:
                prev = perturb(truth)
            pos, neg = torch.zeros_like(prev), torch.zeros_like(prev)
            for _ in range(int(torch.randint(0, 4, (1,), generator=gen))):
                add_clicks(prev, truth, pos, neg)
                net.eval()
                with torch.autocast(device.type, torch.bfloat16):
                    prev = net(net_input(xn, prev, pos, neg)).float() > 0
                net.train()
            add_clicks(prev, truth, pos, neg)
        with torch.autocast(device.type, torch.bfloat16):
            logits = net(net_input(xn, prev, pos, neg))
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if time.time() > next_val:
            next_val = time.time() + 60
            entry = {"step": step, "seconds": time.time() - t0, "loss": float(loss.detach()),
                     **validate(net, base, val_images[:128], val_masks[:128], meta, device)}
            log["history"].append(entry)
            print(f"[click] {entry}", flush=True)
    final = validate(net, base, val_images, val_masks, meta, device)
    log["history"].append({"step": step, "seconds": time.time() - t0, **final})
    log["images_seen"] = step * args.batch
    print(f"[click] {step} steps ({step * args.batch} images), final: {final}", flush=True)
    model.network = net.float().cpu().eval()
    meta.status = "complete"
    meta.started_from = str(args.base)
    meta.data = {"n_train": len(train_set), "val_names": val_set.names,
                 "sources": ["isic2018 training pairs", "ham10000 lesions outside the held-out"]}
    meta.metrics = {f"val_{k}": v for k, v in final.items()}
    meta.history = log["history"]
    model.save(args.out, half=True)
    if args.log:
        args.log.write_text(json.dumps(log, indent=1))


if __name__ == "__main__":
    main()
