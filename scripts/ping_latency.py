"""How fast a busy model worker answers pings (what napari's watchdog threshold rests on).

    python scripts/ping_latency.py [--hogs 3]

Pings the worker every 0.2 s while it loads and prepares a model for the first time (ONNX export
and int8 quantisation, in a fresh cache), trains, and runs a folder beside a training; ``--hogs``
extra processes spin on the CPU meanwhile. Prints the median, 99th percentile and worst answer
time of each phase. On 2 cores with 3 hogs: 4 ms median, 0.6 s worst (jobs.SILENT_AFTER is 20 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["SKINSEG_CACHE"] = tempfile.mkdtemp(prefix="skinseg-cache-")

from napari_skinseg.config import TrainConfig
from napari_skinseg.synthetic import make_synthetic_lesion, write_synthetic_dataset
from napari_skinseg.worker_client import WorkerClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hogs", type=int, default=0, help="CPU-spinning processes meanwhile")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ping-latency-"))
    client = WorkerClient()
    client.ensure_started()

    def under(label, action):
        stop, latencies = threading.Event(), []

        def ping():
            while not stop.is_set():
                start = time.monotonic()
                client.submit("ping").result()
                latencies.append(time.monotonic() - start)
                stop.wait(0.2)

        thread = threading.Thread(target=ping)
        thread.start()
        start = time.monotonic()
        action()
        took = time.monotonic() - start
        stop.set()
        thread.join()
        latencies.sort()
        print(f"{label}: {took:.1f} s, {len(latencies)} pings, median "
              f"{statistics.median(latencies) * 1000:.1f} ms, p99 "
              f"{latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000:.1f} ms, worst "
              f"{latencies[-1] * 1000:.1f} ms", flush=True)

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hogs)]
    try:
        image = make_synthetic_lesion((512, 512), seed=1)[0]
        images, masks = write_synthetic_dataset(tmp / "data", 12, (256, 256), seed=3)
        config = TrainConfig(size=256, epochs=2, batch_size=2, device="cpu")
        under("idle", lambda: time.sleep(3))
        under("first predict, bundled model (load, ONNX export, int8)",
              lambda: client.submit("predict", images=[("a", image)]).result())
        under("training", lambda: client.submit(
            "train", images_dir=str(images), masks_dir=str(masks), config=config,
            out=str(tmp / "m.pt"), compare=True).result())
        under("first predict, new model (load, ONNX export, int8)", lambda: client.submit(
            "predict", images=[("a", image)], model=str(tmp / "m.pt")).result())

        def both():
            train = client.submit("train", images_dir=str(images), masks_dir=str(masks),
                                  config=config, out=str(tmp / "m2.pt"))
            client.submit("segment_folder", input_dir=str(images), results_dir=str(tmp / "out"),
                          model=str(tmp / "m.pt")).result()
            train.result()

        under("training beside a folder run", both)
    finally:
        for hog in hogs:
            hog.kill()
        client.shutdown()


if __name__ == "__main__":
    main()
