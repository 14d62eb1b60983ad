"""Our pipeline against a tutorial-style smp U-Net loop, in the same process, as ratios.

    python benchmarks/speed.py --data ../shared/data/isic2018 --n 48 --size 256

* training images/s: ours (images decoded and resized once, channels_last, compact decoder)
  vs naive (a Dataset that reads and resizes the JPEG in every __getitem__ with scikit-image,
  NCHW, default decoder channels, default threads);
* inference ms/image from the file to the mask at the original size, both ways;
* inference GFLOP/s achieved (FLOPs counted by torch.utils.flop_counter) against the fp32 sgemm
  rate measured in the same run;
* peak memory (max RSS) of `skinseg train` and `skinseg segment`, each in its own process;
* the same model run NCHW and channels_last gives the same masks (results unchanged).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import segmentation_models_pytorch as smp  # noqa: E402
from common import all_pairs, random_subset, save_json  # noqa: E402
from skimage import io as skio  # noqa: E402
from skimage import transform as sktransform  # noqa: E402

from napari_skinseg.config import TrainConfig  # noqa: E402
from napari_skinseg.dataset import samples_from_pairs  # noqa: E402
from napari_skinseg.image_io import read_image  # noqa: E402
from napari_skinseg.metrics import image_metrics  # noqa: E402
from napari_skinseg.model import SkinSegModel  # noqa: E402
from napari_skinseg.prediction import Segmenter  # noqa: E402
from napari_skinseg.training import run_training  # noqa: E402
from napari_skinseg.transforms import normalise, resize_rgb  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


class NaiveDataset(torch.utils.data.Dataset):
    """How a tutorial writes it: decode and resize on every access."""

    def __init__(self, pairs, size):
        self.pairs, self.size = pairs, size

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        image = skio.imread(self.pairs[i].image) / 255.0
        mask = skio.imread(self.pairs[i].mask) > 127
        image = sktransform.resize(image, (self.size, self.size))
        mask = sktransform.resize(mask.astype(float), (self.size, self.size)) > 0.5
        image = (image - MEAN) / STD
        return (torch.tensor(image.transpose(2, 0, 1), dtype=torch.float32),
                torch.tensor(mask[None], dtype=torch.float32))


def naive_train(pairs, size, batch_size, epochs, encoder):
    model = smp.Unet(encoder, encoder_weights=None, classes=1)
    loader = torch.utils.data.DataLoader(NaiveDataset(pairs, size), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = smp.losses.DiceLoss("binary")
    bce = torch.nn.BCEWithLogitsLoss()
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            logits = model(x)
            loss = bce(logits, y) + loss_fn(logits, y)
            loss.backward()
            optimizer.step()
    return len(pairs) * epochs / (time.perf_counter() - start), model


def naive_predict(model, path, size):
    image = skio.imread(path)
    h, w = image.shape[:2]
    x = (sktransform.resize(image / 255.0, (size, size)) - MEAN) / STD
    x = torch.tensor(x.transpose(2, 0, 1)[None], dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        prob = torch.sigmoid(model(x))[0, 0].numpy()
    return sktransform.resize(prob, (h, w)) > 0.5


def sgemm_gflops(n=2048, repeats=10):
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def forward_flops(network, size):
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        network.eval()(x)
    return counter.get_total_flops()


def timed(fn, items, repeats=1):
    times = []
    for _ in range(repeats):
        for item in items:
            t = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def peak_rss_mb(args):
    """Peak resident memory of one `skinseg` command in a fresh process (VmHWM: unlike
    ru_maxrss, it starts afresh at exec and does not inherit this process's peak)."""
    code = ("import sys; from napari_skinseg.cli import main; code = main(sys.argv[1:]); "
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
            "print('PEAK', int(hwm.split()[1]) / 1024); sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    peak = [line for line in out.stdout.splitlines() if line.startswith("PEAK")]
    if not peak:
        raise RuntimeError(out.stderr[-2000:])
    return float(peak[0].split()[1])


def peak_memory(train_pairs, size, batch_size):
    with tempfile.TemporaryDirectory() as tmp:
        img_dir = Path(tmp) / "images"
        msk_dir = Path(tmp) / "masks"
        img_dir.mkdir()
        msk_dir.mkdir()
        for p in train_pairs:
            (img_dir / p.image.name).symlink_to(p.image.resolve())
            (msk_dir / p.mask.name).symlink_to(p.mask.resolve())
        train_mb = peak_rss_mb(["train", str(img_dir), str(msk_dir), "--out", f"{tmp}/m.pt", "--epochs", "1",
                                "--size", str(size), "--batch-size", str(batch_size), "--device", "cpu"])
        segment_mb = peak_rss_mb(["segment", str(img_dir), f"{tmp}/Results", "--model", f"{tmp}/m.pt",
                                  "--device", "cpu"])
    return {"train": train_mb, "segment_folder": segment_mb, "images": len(train_pairs)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--n", type=int, default=48, help="training images")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--infer", type=int, default=20, help="images timed for inference")
    parser.add_argument("--out", default="benchmarks/results/speed.json")
    parser.add_argument("--memory-only", action="store_true",
                        help="only (re)measure peak memory and update --out")
    args = parser.parse_args()
    pairs = all_pairs(args.data)
    train_pairs = random_subset(pairs, args.n, seed=1)
    if args.memory_only:
        data = json.loads(Path(args.out).read_text())
        data["results"]["peak_rss_mb"] = peak_memory(train_pairs, args.size, args.batch_size)
        print(data["results"]["peak_rss_mb"])
        data.pop("date"), data.pop("machine")
        save_json(data, args.out)
        return
    infer_pairs = random_subset(pairs, args.infer, seed=2)
    config = TrainConfig(size=args.size, batch_size=args.batch_size, epochs=args.epochs, device="cpu",
                         val_fraction=0.1)
    encoder = config.encoder
    torch.manual_seed(0)
    print(f"machine threads: {torch.get_num_threads()}", flush=True)

    # Training throughput (ours includes reading the data once; validation time excluded).
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        samples = samples_from_pairs(train_pairs, args.size)
        load_s = time.perf_counter() - t
        result = run_training(samples, config, Path(tmp) / "m.pt")
        n_train = len(result.train_names)
        ours_train_ips = n_train * args.epochs / (load_s + sum(h.seconds for h in result.history))
    naive_ips, naive_model = naive_train(train_pairs, args.size, args.batch_size, args.epochs, encoder)
    print(f"training: ours {ours_train_ips:.2f} img/s, naive {naive_ips:.2f} img/s", flush=True)

    # Inference from file to mask at the original size.
    ours = Segmenter(result.model, device="cpu")
    paths = [p.image for p in infer_pairs]
    ours_ms = timed(lambda p: ours.segment(read_image(p)), paths)
    naive_ms = timed(lambda p: naive_predict(naive_model, p, args.size), paths)
    flops = forward_flops(SkinSegModel.new(config).network, args.size)
    with torch.inference_mode():
        net_only_ms = timed(lambda x: ours.network(x), [torch.randn(1, 3, args.size, args.size)
                                                         .contiguous(memory_format=torch.channels_last)] * 10)
    gflops = flops / (net_only_ms / 1000) / 1e9
    peak = sgemm_gflops()
    print(f"inference: ours {ours_ms:.1f} ms/image, naive {naive_ms:.1f} ms/image; network "
          f"{gflops:.1f} GFLOP/s vs sgemm {peak:.1f} GFLOP/s", flush=True)

    # channels_last against plain NCHW: same weights, same inputs; speed and results.
    net_cl = ours.network
    net_nchw = copy.deepcopy(net_cl).to(memory_format=torch.contiguous_format)
    x = torch.randn(1, 3, args.size, args.size)
    with torch.inference_mode():
        nchw_ms = timed(lambda t: net_nchw(t), [x.contiguous()] * 10)
        cl_ms = timed(lambda t: net_cl(t), [x.contiguous(memory_format=torch.channels_last)] * 10)
    diffs, dices = [], []
    meta = result.model.metadata
    for p in paths[:5]:
        batch = normalise(resize_rgb(read_image(p), (args.size, args.size))[None], meta.mean, meta.std)
        with torch.inference_mode():
            a = torch.sigmoid(net_cl(batch))[0, 0].numpy()
            b = torch.sigmoid(net_nchw(batch.contiguous()))[0, 0].numpy()
        diffs.append(float(np.abs(a - b).max()))
        dices.append(image_metrics(a > 0.5, b > 0.5).dice)

    # Peak memory of the two CLI jobs, each in a fresh process.
    memory = peak_memory(train_pairs, args.size, args.batch_size)
    rows = {"size": args.size, "batch_size": args.batch_size, "encoder": encoder,
            "train_images_per_s": {"ours": ours_train_ips, "naive": naive_ips, "ratio": ours_train_ips / naive_ips},
            "inference_ms_per_image": {"ours": ours_ms, "naive": naive_ms, "ratio": naive_ms / ours_ms},
            "network_ms": net_only_ms, "network_gflop": flops / 1e9, "network_gflops_per_s": gflops,
            "sgemm_gflops_per_s": peak, "fraction_of_sgemm": gflops / peak,
            "peak_rss_mb": memory,
            "channels_last_vs_nchw": {"network_ms_nchw": nchw_ms, "network_ms_channels_last": cl_ms,
                                      "speedup": nchw_ms / cl_ms,
                                      "max_probability_difference": max(diffs),
                                      "mask_dice_min": min(dices)}}
    for key, value in rows.items():
        print(f"{key}: {value}")
    save_json({"command": " ".join(sys.argv), "results": rows}, args.out)


if __name__ == "__main__":
    main()
