"""Training augmentation on a batch: flips, 90-degree rotations and colour jitter.

Dermoscopy has no up or down, so all eight flips/rotations are valid; colour jitter covers the
differences between dermoscopes and lighting. Driven by a seeded ``torch.Generator``.
"""

from __future__ import annotations

import torch


def augment_batch(images: torch.Tensor, masks: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """images: (N, 3, H, W) float in [0, 1]; masks: (N, 1, H, W), on any device (the random
    numbers come from the CPU ``generator``; the work is done where the tensors are, a few
    whole-batch operations rather than one per image). Returns new tensors."""
    n = images.shape[0]
    flips = torch.randint(0, 2, (n,), generator=generator).bool()
    turns = torch.randint(0, 4, (n,), generator=generator)
    images, masks = images.clone(), masks.clone()
    if flips.any():
        sel = flips.nonzero()[:, 0].to(images.device)
        images[sel] = images[sel].flip(-1)
        masks[sel] = masks[sel].flip(-1)
    for k in (1, 2, 3):  # square images: a quarter turn keeps the shape
        if (turns == k).any():
            sel = (turns == k).nonzero()[:, 0].to(images.device)
            images[sel] = torch.rot90(images[sel], k, (-2, -1))
            masks[sel] = torch.rot90(masks[sel], k, (-2, -1))
    return colour_jitter(images, generator), masks


def colour_jitter(images: torch.Tensor, generator: torch.Generator, brightness: float = 0.2,
                  contrast: float = 0.2, saturation: float = 0.2) -> torch.Tensor:
    n = images.shape[0]

    def factor(strength: float) -> torch.Tensor:
        return (1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * strength).to(
            device=images.device, dtype=images.dtype)

    images = images * factor(brightness)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * factor(contrast) + mean
    gray = images.mean(dim=1, keepdim=True)
    images = (images - gray) * factor(saturation) + gray
    return images.clamp_(0, 1)
