"""Training one model with DistributedDataParallel over processes started by torchrun."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_skinseg import distributed
from napari_skinseg.dataset import samples_from_folders
from napari_skinseg.model import load_model
from napari_skinseg.synthetic import write_synthetic_dataset
from napari_skinseg.training import _evaluate, _Loss, checkpoint_path, split_indices, train

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.parametrize("n", [0, 1, 2, 5, 8, 11])
@pytest.mark.parametrize("size", [2, 3])
def test_shards_are_disjoint_equal_and_cover_the_order(n, size):
    order = list(torch.randperm(n, generator=torch.Generator().manual_seed(n)).tolist())
    shares = [distributed.shard(order, rank_=r, size=size) for r in range(size)]
    assert len({len(s) for s in shares}) == 1  # equal: no process waits for a batch more
    taken = [i for s in shares for i in s]
    if n >= size:
        assert len(set(taken)) == len(taken)  # disjoint
        assert len(taken) == n - n % size and set(taken) <= set(order)  # all but the remainder
    else:
        assert set(taken) == set(order) and len(shares[0]) == min(n, 1)  # repeated to one each
    # Validation shares: no drop, cover the order exactly.
    val = [distributed.shard(order, drop=False, rank_=r, size=size) for r in range(size)]
    assert sorted(i for s in val for i in s) == sorted(order)


def test_a_single_process_is_untouched():
    assert not distributed.launched() and distributed.world_size() == 1 and distributed.is_main()
    assert distributed.shard([3, 1, 2]) == [3, 1, 2] and distributed.shard_size(7) == 7
    assert distributed.sum_values(1.5, 2) == [1.5, 2] and distributed.any_rank(False) is False
    code = "import sys, napari_skinseg.distributed; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert done.stdout.strip() == "False", done.stderr  # nothing heavy without torchrun


def test_resume_needs_the_same_number_of_processes(tmp_path, tiny_samples, tiny_config):
    out = tmp_path / "m.pt"
    gen = train(tiny_samples, tiny_config.replace(epochs=2), out)
    next(gen)
    gen.close()
    ckpt = checkpoint_path(out)
    state = torch.load(ckpt, weights_only=True)
    assert state["world_size"] == 1
    torch.save({**state, "world_size": 2}, ckpt)
    with pytest.raises(ValueError, match="written by 2 training process"):
        next(train(tiny_samples, tiny_config.replace(epochs=2), out, resume=True))


def test_torchrun_two_processes_train_one_model(tmp_path):
    data = tmp_path / "data"
    write_synthetic_dataset(data, 10, (64, 64), seed=4)
    run = tmp_path / "run"
    out = run / "model.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "napari_skinseg.cli", "train", str(data), "--out", str(out), "--size", "64",
               "--epochs", "2", "--batch-size", "2", "--device", "cpu",
               "--decoder-channels", "32,16,16,8,8"]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.count("done; best model") == 1 and "2 processes (DDP)" in done.stdout  # rank 0 only
    # Rank 0's files and nothing else: no second model, no checkpoint, no stray temporary files.
    assert sorted(p.name for p in run.iterdir()) == ["model.pt", "model_curves.png", "model_history.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "run"]

    model = load_model(out)  # the unwrapped network's weights: no "module." prefixes
    meta = model.metadata
    assert meta.world_size == 2 and meta.status == "complete" and meta.epochs_completed == 2
    assert meta.data["n_train"] == 8 and meta.data["n_val"] == 2  # the full split, not a share
    assert len(meta.history) == 2
    assert all(math.isfinite(h[k]) for h in meta.history for k in ("train_loss", "val_loss", "val_dice"))

    # The validation numbers summed over the two processes' shares are the whole set's.
    samples = samples_from_folders(data / "images", data / "masks", 64)
    val_idx = split_indices(len(samples), 0.2, 0)[1]
    val_set = samples.subset(val_idx)
    assert val_set.names == meta.data["val_names"]
    alone = _evaluate(model.network, val_set, model, _Loss(), torch.device("cpu"), 4)
    best = meta.history[meta.best_epoch - 1]
    assert alone["loss"] == pytest.approx(best["val_loss"], rel=1e-4)
    assert alone["accuracy"] == pytest.approx(best["val_accuracy"], rel=1e-4)
    assert alone["dice"] == pytest.approx(best["val_dice"], abs=1e-4)
