"""Training and inference speed of candidate U-Net encoders on this CPU (random data, no files).

    python benchmarks/encoders.py --size 256 --batch-size 4

This is how the default encoder (mobilenet_v2 with decoder channels 128-64-32-16-8) was chosen.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

warnings.simplefilter("ignore")
import segmentation_models_pytorch as smp  # noqa: E402

CANDIDATES = [
    ("resnet18", (256, 128, 64, 32, 16)),
    ("resnet18", (128, 64, 32, 16, 8)),
    ("resnet34", (128, 64, 32, 16, 8)),
    ("mobilenet_v2", (128, 64, 32, 16, 8)),
    ("efficientnet-b0", (128, 64, 32, 16, 8)),
    ("timm-regnetx_004", (128, 64, 32, 16, 8)),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    size, n = args.size, args.batch_size
    for encoder, decoder in CANDIDATES:
        model = smp.Unet(encoder, encoder_weights=None, classes=1, decoder_channels=decoder)
        model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)
        x = torch.randn(n, 3, size, size).contiguous(memory_format=torch.channels_last)
        y = (torch.rand(n, 1, size, size) > 0.5).float()
        loss_fn = torch.nn.BCEWithLogitsLoss()
        for i in range(5):  # two warm-up steps, three timed
            if i == 2:
                start = time.perf_counter()
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
        train_ips = 3 * n / (time.perf_counter() - start)
        model.eval()
        with torch.inference_mode():
            xi = x[:1]
            model(xi)
            start = time.perf_counter()
            for _ in range(3):
                model(xi)
        infer_ms = (time.perf_counter() - start) / 3 * 1000
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{encoder:18s} {str(decoder):24s} {params:5.1f} M params  train {train_ips:5.2f} img/s  "
              f"inference {infer_ms:4.0f} ms/img", flush=True)


if __name__ == "__main__":
    main()
