"""Folder throughput on a GPU (issue 13): the bare network at batch 64 against `segment_folder`
with one image at a time and with many threads whose network inputs are batched.

    PYTHONPATH=src python benchmarks/gpu_throughput.py DATA_DIR --device cuda --n 2000 \
        --out benchmarks/results/gpu_throughput.json

DATA_DIR: any folder of RGB images; N 512 x 512 JPEGs (quality 90) are made from them in a
temporary folder (reused cyclically when there are fewer). Needs torch, numpy, Pillow,
scikit-image, segmentation-models-pytorch and this package; not napari. Every measurement is
guarded: a failure is recorded in the JSON as text and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from napari_skinseg.bundled import bundled_model_path
from napari_skinseg.folder_segmentation import default_workers, segment_folder
from napari_skinseg.model import load_model
from napari_skinseg.prediction import Segmenter

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


def make_images(data_dir: Path, out_dir: Path, n: int, side: int = 512) -> int:
    sources = sorted(p for p in data_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                     and "segmentation" not in p.stem)
    if not sources:
        raise SystemExit(f"no images in {data_dir}")

    def one(i: int) -> None:
        with Image.open(sources[i % len(sources)]) as im:
            im.draft("RGB", (side, side))  # JPEG: decode at a reduced scale, much faster
            im.convert("RGB").resize((side, side), Image.BILINEAR).save(
                out_dir / f"img_{i:05d}.jpg", quality=90)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(one, range(n)))
    return len(sources)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_network(model, device: torch.device, batch: int = 64, seconds: float = 3.0) -> dict:
    network = model.network.to(device).to(memory_format=torch.channels_last).eval()
    size = model.metadata.size
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):  # warm-up: kernels chosen, memory pools filled
            network(x)
        sync(device)
        iters, start = 0, time.perf_counter()
        while True:
            torch.sigmoid(network(x))
            iters += 1
            sync(device)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds or iters >= 200:
                break
    return {"batch": batch, "size": size, "iterations": iters, "seconds": round(elapsed, 3),
            "img_per_s": round(batch * iters / elapsed, 1)}


def folder_run(images: Path, results: Path, segmenter: Segmenter, workers: int) -> dict:
    if results.exists():
        shutil.rmtree(results)
    start = time.perf_counter()
    report = _drain(segment_folder(images, results, segmenter, workers=workers))
    elapsed = time.perf_counter() - start
    n = len(report.written)
    out = {"workers": workers, "images": n, "failed": len(report.failed),
           "seconds": round(elapsed, 3), "img_per_s": round(n / elapsed, 1)}
    if report.failed:
        out["first_failure"] = report.failed[0].message
    return out


def _drain(gen):
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def guarded(results: dict, key: str, fn) -> None:
    try:
        results[key] = fn()
    except Exception as err:  # noqa: BLE001 - recorded, the other measurements still run
        results[key] = {"error": f"{type(err).__name__}: {err}",
                        "traceback": traceback.format_exc(limit=6)}
    print(f"{key}: {json.dumps(results[key])}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("gpu_throughput.json"))
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--serial-max", type=int, default=300,
                        help="images for the workers=1 run (it is the slow one; keeps the run short)")
    parser.add_argument("--budget", type=float, default=80.0,
                        help="seconds after which the remaining folder runs are skipped")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    device = torch.device(args.device)
    results: dict = {
        "torch": torch.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "device": args.device, "n": args.n,
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "torch_threads": torch.get_num_threads(),
    }
    tmp = Path(tempfile.mkdtemp(prefix="skinseg-gpu-bench-"))
    try:
        images = tmp / "images"
        images.mkdir()
        start = time.perf_counter()
        guarded(results, "make_images", lambda: {
            "sources": make_images(args.data_dir, images, args.n),
            "seconds": round(time.perf_counter() - start, 2)})
        model = load_model(bundled_model_path())
        results["model"] = {"file": Path(bundled_model_path()).name, "size": model.metadata.size}
        guarded(results, "bare_network_batch64", lambda: bare_network(model, device))
        segmenter = Segmenter(load_model(bundled_model_path()), device=args.device)
        results["default_workers"] = default_workers(segmenter)
        # warm-up outside the timings: kernels for batch sizes 1.. are chosen on first use
        warm = tmp / "warm"
        warm.mkdir()
        for p in sorted(images.iterdir())[:64]:
            shutil.copy(p, warm / p.name)
        guarded(results, "warm_up", lambda: folder_run(warm, tmp / "warm_out", segmenter, 16))
        serial = images
        if args.serial_max and args.n > args.serial_max:
            serial = tmp / "serial_images"
            serial.mkdir()
            for p in sorted(images.iterdir())[:args.serial_max]:
                shutil.copy(p, serial / p.name)
        guarded(results, "folder_workers_1", lambda: folder_run(serial, tmp / "out_1", segmenter, 1))
        for w in args.workers:
            if time.perf_counter() - t0 > args.budget:
                results[f"folder_workers_{w}"] = {"skipped": f"over the {args.budget:.0f} s budget"}
                continue
            guarded(results, f"folder_workers_{w}",
                    lambda w=w: folder_run(images, tmp / f"out_{w}", segmenter, w))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        results["total_seconds"] = round(time.perf_counter() - t0, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
