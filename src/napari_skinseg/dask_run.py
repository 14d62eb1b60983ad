"""Segmenting an archive on a Dask cluster: ``skinseg segment IN OUT --dask SCHEDULER``.

Work goes out in chunks of files; each Dask worker reads its images from and writes its outputs to
the shared paths itself (nothing but file names and short status lines travels). Every chunk is
idempotent — an image whose outputs exist is skipped, as in a rerun — so when a worker dies, Dask
runs its chunk again elsewhere and nothing is lost or written twice differently; the result is the
one a single-process run gives. ``SCHEDULER`` is a ``tcp://host:port`` address, or ``local`` /
``local:N`` for a LocalCluster of N worker processes on this machine.

dask.distributed is an optional dependency: ``pip install "napari-skinseg[distributed]"``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .config import PostprocessConfig
from .folder_segmentation import FolderReport, ImageOutcome, _segment_one, check_folders
from .pairs import images_subfolder_hint, list_images, split_same_ids

# One loaded segmenter per worker process, reused by every chunk it runs.
_SEGMENTERS: dict[tuple, object] = {}


def _segmenter(model: str | None, engine: str):
    key = (model, engine)
    if key not in _SEGMENTERS:
        from .engines import make_segmenter, resolve_engine

        # the engine as asked: auto picks int8 or fp32 ONNX on each worker's own CPU
        on_cpu = resolve_engine(engine, "cpu").startswith("onnx")
        _SEGMENTERS[key] = make_segmenter(model, device="cpu" if on_cpu else "auto", engine=engine)
    return _SEGMENTERS[key]


def segment_chunk(paths: list[str], results_dir: str, model: str | None, engine: str,
                  post: PostprocessConfig | None, tta: bool, overwrite: bool, overlay: bool,
                  probabilities: bool) -> list[tuple[str, str, str]]:
    """Run on a Dask worker: segment these files; ``(file, status, message)`` for each."""
    segmenter = _segmenter(model, engine)
    out = []
    for path in map(Path, paths):
        outcome, _ = _segment_one(path, Path(results_dir), segmenter, post, tta, overwrite,
                                  overlay, probabilities)
        out.append((str(path), outcome.status, outcome.message))
    return out


def parse_scheduler(text: str) -> tuple[str, int | str]:
    """``("local", n_workers)`` or ``("address", "tcp://host:port")``; a clear error otherwise."""
    text = text.strip()
    if text == "local" or text.startswith("local:"):
        n = text.partition(":")[2] or str(min(4, os.cpu_count() or 1))
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"--dask {text}: the number of local workers must be a positive "
                             "whole number (local:N)")
        return "local", int(n)
    if "://" not in text and ":" in text:
        text = "tcp://" + text
    if not text.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        raise ValueError(f"--dask {text}: give a scheduler address (tcp://host:port) or local[:N]")
    return "address", text


def segment_with_dask(input_dir: str | Path, results_dir: str | Path, scheduler: str,
                      model: str | None = None, engine: str = "auto",
                      post: PostprocessConfig | None = None, *, tta: bool = False,
                      overwrite: bool = False, overlay: bool = False, probabilities: bool = False,
                      chunk: int = 16,
                      on_progress: Callable[[int, int], None] | None = None) -> FolderReport:
    """Segment every image of ``input_dir`` on a Dask cluster (see the module's docstring)."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ValueError('--dask needs dask.distributed: pip install "napari-skinseg[distributed]"'
                         ) from None
    from .engines import resolve_engine

    kind, where = parse_scheduler(scheduler)
    input_dir, results_dir = Path(input_dir), Path(results_dir)
    check_folders(input_dir, results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    resolve_engine(engine, "cpu")  # an unknown or unusable engine fails here, not on a worker
    images, not_images = list_images(input_dir, "input folder")
    if not images:
        raise ValueError(f"no images found in {input_dir}{images_subfolder_hint(input_dir)}")
    images, clashes = split_same_ids(images)
    report = FolderReport()
    for skipped in not_images:
        report.add(ImageOutcome(skipped.path, "skipped", skipped.reason))
    for clash in clashes:
        report.add(ImageOutcome(clash.path, "failed", str(clash)))
    chunks = [[str(p) for p in images[i:i + chunk]] for i in range(0, len(images), chunk)]
    cluster = (LocalCluster(n_workers=where, threads_per_worker=1, processes=True,
                            dashboard_address=None) if kind == "local" else None)
    try:
        with Client(cluster if cluster is not None else where) as client:
            futures = client.map(segment_chunk, chunks, results_dir=str(results_dir),
                                 model=model, engine=engine, post=post, tta=tta,
                                 overwrite=overwrite, overlay=overlay,
                                 probabilities=probabilities, pure=False)
            done = 0
            for future in as_completed(futures):
                for path, status, message in future.result():
                    report.add(ImageOutcome(Path(path), status, message))
                    done += 1
                if on_progress is not None:
                    on_progress(done, len(images))
    finally:
        if cluster is not None:
            cluster.close()
    return report
