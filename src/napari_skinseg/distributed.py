"""Data-parallel training over several processes started by ``torchrun``.

``torchrun --nproc_per_node N -m napari_skinseg.cli train ...`` starts N copies of the command;
each finds ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in its environment. :func:`setup` joins
them in one process group (gloo on CPUs, nccl on CUDA GPUs, one GPU per process), and
:func:`napari_skinseg.training.train` then trains one model: every process takes its
:func:`shard` of each epoch's batch order, DistributedDataParallel averages the gradients, and
the validation sums are added up over the processes (:func:`all_reduce_sum`), so every process
sees the same numbers. Only the main process (rank 0) writes files or prints.

Without torchrun (or with one process) every helper here is a no-op answering as a single
process would, and nothing heavy is imported: torch is imported only inside the functions that
need a process group, which exists only after :func:`setup`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any


def launched() -> bool:
    """Whether this process is one of several started by torchrun."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _group():
    """``torch.distributed`` when a process group is running, else None."""
    if "torch" not in sys.modules:  # nothing imported torch, so no group can exist
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    dist = _group()
    return dist.get_world_size() if dist else 1


def rank() -> int:
    dist = _group()
    return dist.get_rank() if dist else 0


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if _group() else 0


def setup(device: str = "auto") -> str:
    """Join the torchrun processes in one group; returns the backend (``gloo`` or ``nccl``).

    ``device`` is the training device setting: CUDA uses nccl with GPU ``LOCAL_RANK`` for this
    process, anything else gloo on the CPU. Call :func:`teardown` when done.
    """
    import torch
    import torch.distributed as dist

    from .devices import resolve_device

    kind = resolve_device(device).type
    if kind == "mps":
        raise ValueError("training on several processes needs --device cpu or cuda, not mps")
    backend = "nccl" if kind == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return backend


def teardown() -> None:
    dist = _group()
    if dist:
        dist.destroy_process_group()


def local_device(device):
    """The ``torch.device`` this process trains on: with CUDA, its own GPU (``LOCAL_RANK``)."""
    if _group() and device.type == "cuda":
        import torch

        return torch.device("cuda", local_rank())
    return device


def wrap(network, device):
    """``network`` in DistributedDataParallel when several processes train, else itself."""
    if world_size() == 1:
        return network
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_sum(tensor):
    """``tensor`` summed over the processes, in place (and returned); itself for one process."""
    dist = _group()
    if dist and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def sum_values(*values: float) -> list[float]:
    """Plain numbers summed over the processes (float64: counts stay exact up to 2**53)."""
    if world_size() == 1:
        return list(values)
    import torch

    return all_reduce_sum(torch.tensor(values, dtype=torch.float64, device=_reduce_device())).tolist()


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on any process: all processes take the same branch (stop on a
    cancel or a non-finite loss seen by one of them) instead of waiting for each other."""
    if world_size() == 1:
        return bool(flag)
    return sum_values(float(bool(flag)))[0] > 0


def barrier() -> None:
    dist = _group()
    if dist and dist.get_world_size() > 1:
        dist.barrier()


def sync_buffers(network) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics): each process updated
    them with its own last batch, and validation and the saved model must use the same ones."""
    dist = _group()
    if dist and dist.get_world_size() > 1:
        for buffer in network.buffers():
            dist.broadcast(buffer, src=0)


def _reduce_device():
    # nccl reduces only CUDA tensors; gloo only CPU ones.
    dist = _group()
    if dist and dist.get_backend() == "nccl":
        import torch

        return torch.device("cuda", torch.cuda.current_device())
    return "cpu"


def shard(indices: Sequence[Any], drop: bool = True, rank_: int | None = None,
          size: int | None = None) -> list[Any]:
    """This process's share of ``indices`` (every ``size``-th item from its rank on).

    With ``drop=True`` (training) every process gets the same number of items, which DDP needs
    (a process with a batch more would wait for the others forever): the last
    ``len(indices) % size`` items are left out (the order is reshuffled every epoch, so other
    pairs are left out each time), and when there are fewer items than processes they are
    repeated. With ``drop=False`` (validation, no collective per batch) the shares cover
    ``indices`` exactly and may differ by one item.
    """
    items = list(indices)
    r = rank() if rank_ is None else rank_
    n = world_size() if size is None else size
    if n == 1:
        return items
    if drop:
        if len(items) < n:
            items = (items * n)[:n]
        items = items[: len(items) - len(items) % n]
    return items[r::n]


def shard_size(n: int) -> int:
    """How many of ``n`` training items each process gets (see :func:`shard`)."""
    return len(shard(range(n)))


def local_share(samples):
    """This process's share of a validation :class:`~napari_skinseg.dataset.SampleSet`."""
    return samples if world_size() == 1 else samples.subset(shard(range(len(samples)), drop=False))


@contextlib.contextmanager
def quiet_unless_main() -> Iterator[None]:
    """Silence this process's output unless it is the main one: N processes print one log."""
    if is_main():
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), \
            contextlib.redirect_stderr(null):
        yield
