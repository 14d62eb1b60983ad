"""Training with DDP on 2 processes (torchrun, gloo) against 1 process, the same pairs.

    python benchmarks/ddp.py --data ../shared/data/isic2018 --limit 100 --size 128 --epochs 2

Runs `skinseg train` three times on the same seeded subset: one process with the default torch
threads (the cores), one process with one thread, and `torchrun --nproc_per_node 2` with one
thread per process. Reports the seconds per epoch (training + validation, from the model's
history) and the whole command's wall time, best of ``--rounds`` interleaved rounds (other
work on the machine only ever slows a run down). Writes benchmarks/results/ddp.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import save_json  # noqa: E402

from napari_skinseg.model import load_model  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


def run(command: list[str], threads: int | None, out: Path) -> dict:
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    meta = load_model(out).metadata
    seconds = [h["seconds"] for h in meta.history]
    return {"wall_s": wall, "epoch_s": seconds, "mean_epoch_s": sum(seconds) / len(seconds),
            "world_size": meta.world_size, "val_dice": [h["val_dice"] for h in meta.history],
            "n_train": meta.data["n_train"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    train = ["-m", "napari_skinseg.cli", "train", args.data, "--limit", str(args.limit),
             "--size", str(args.size), "--epochs", str(args.epochs),
             "--batch-size", str(args.batch_size), "--device", "cpu"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, launcher, threads in (("1 process, default threads", [sys.executable], None),
                                            ("1 process, 1 thread", [sys.executable], 1),
                                            ("2 processes (DDP), 1 thread each", torchrun, 1)):
                out = Path(tmp) / f"{round_}-{threads}-{len(launcher)}.pt"
                result = run([*launcher, *train, "--out", str(out)], threads, out)
                print(name, result, flush=True)
                if name not in runs or result["mean_epoch_s"] < runs[name]["mean_epoch_s"]:
                    runs[name] = result
    one, ddp = runs["1 process, default threads"], runs["2 processes (DDP), 1 thread each"]
    save_json({"command": " ".join(["python", *sys.argv]), "runs": runs,
               "speedup_ddp_vs_1_process": one["mean_epoch_s"] / ddp["mean_epoch_s"],
               "speedup_ddp_vs_1_thread": runs["1 process, 1 thread"]["mean_epoch_s"]
               / ddp["mean_epoch_s"]},
              Path(__file__).parent / "results" / "ddp.json")


if __name__ == "__main__":
    main()
