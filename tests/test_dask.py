"""Segmenting on a Dask cluster: a scheduler and two worker processes started here, one killed
mid-run; the result must be the one a single-process run gives."""

from __future__ import annotations

import os
import signal

import pytest

from napari_skinseg.dask_run import parse_scheduler, segment_with_dask
from napari_skinseg.engines import make_segmenter
from napari_skinseg.folder_segmentation import segment_folder
from napari_skinseg.generators import drain
from napari_skinseg.synthetic import write_synthetic_dataset

distributed = pytest.importorskip("distributed")


def test_scheduler_addresses():
    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("10.0.0.5:8786") == ("address", "tcp://10.0.0.5:8786")
    with pytest.raises(ValueError, match="positive whole number"):
        parse_scheduler("local:zero")
    with pytest.raises(ValueError, match="scheduler address"):
        parse_scheduler("my cluster")


def test_a_killed_worker_loses_nothing_and_the_result_is_a_single_run(tmp_path, tiny_model_path):
    images, _ = write_synthetic_dataset(tmp_path / "d", 12, (64, 64), seed=21)
    drain(segment_folder(images, tmp_path / "single", make_segmenter(tiny_model_path, engine="onnx"),
                         overlay=True))
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    try:
        with distributed.Client(cluster) as client:
            pids = list(client.run(os.getpid).values())
            killed = []

            def progress(done, total):
                if not killed:  # after the first chunk: kill a worker as a crash would
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(done)

            report = segment_with_dask(images, tmp_path / "dask", cluster.scheduler_address,
                                       model=str(tiny_model_path), engine="onnx", overlay=True,
                                       chunk=2, on_progress=progress)
    finally:
        cluster.close()
    # each image once: written, or (retried after the kill) kept/completed from the first try
    assert killed and not report.failed
    assert len(report.written) + len(report.existing) + len(report.completed) == 12
    single = sorted(p.name for p in (tmp_path / "single").iterdir())
    # A worker killed in the middle of a write can leave its hidden temporary file (.name.*.tmp,
    # never read back); every real output is there and complete.
    visible = sorted(p.name for p in (tmp_path / "dask").iterdir() if not p.name.startswith("."))
    assert visible == single
    for name in single:
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "single" / name).read_bytes()
