"""Training augmentation on a batch: flips, 90-degree rotations and colour jitter.

Dermoscopy has no up or down, so all eight flips/rotations are valid; colour jitter covers the
differences between dermoscopes and lighting. Driven by a seeded ``torch.Generator``.
"""

from __future__ import annotations

import torch


def augment_batch(images: torch.Tensor, masks: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """images: (N, 3, H, W) float in [0, 1]; masks: (N, 1, H, W). Returns new tensors."""
    out_images, out_masks = [], []
    for image, mask in zip(images, masks):
        flip, k = torch.randint(0, 2, (1,), generator=generator), torch.randint(0, 4, (1,), generator=generator)
        if flip:
            image, mask = image.flip(-1), mask.flip(-1)
        if k:
            image, mask = torch.rot90(image, int(k), (-2, -1)), torch.rot90(mask, int(k), (-2, -1))
        out_images.append(image)
        out_masks.append(mask)
    images, masks = torch.stack(out_images), torch.stack(out_masks)
    return colour_jitter(images, generator), masks


def colour_jitter(images: torch.Tensor, generator: torch.Generator, brightness: float = 0.2,
                  contrast: float = 0.2, saturation: float = 0.2) -> torch.Tensor:
    n = images.shape[0]

    def factor(strength: float) -> torch.Tensor:
        return (1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * strength).to(images.dtype)

    images = images * factor(brightness)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * factor(contrast) + mean
    gray = images.mean(dim=1, keepdim=True)
    images = (images - gray) * factor(saturation) + gray
    return images.clamp_(0, 1)
