"""The torch Segmenter batches concurrent callers' inputs into one forward (issue 13): each caller
gets the numbers it would get alone, errors reach every caller, a lone caller runs at once."""

import os
import threading

import numpy as np
import pytest
import torch

from napari_skinseg.folder_segmentation import default_workers, segment_folder
from napari_skinseg.generators import drain
from napari_skinseg.image_io import write_image
from napari_skinseg.prediction import Segmenter

from .conftest import rng_image

SIZES = [(64, 64), (96, 128), (50, 70), (200, 120), (33, 41), (128, 96), (64, 200), (81, 81)]


class GatedNetwork(torch.nn.Module):
    """Holds the first forward until ``wait_for`` requests are queued, so that the rest are
    batched deterministically; records each forward's batch size; optionally fails."""

    def __init__(self, network, segmenter, wait_for, fail=False):
        super().__init__()
        self.network, self.segmenter, self.wait_for, self.fail = network, segmenter, wait_for, fail
        self.batches = []

    def forward(self, x):
        if not self.batches:
            for _ in range(2000):  # at most ~20 s; the queue fills in milliseconds
                if len(self.segmenter._queue) >= self.wait_for:
                    break
                threading.Event().wait(0.01)
        self.batches.append(len(x))
        if self.fail:
            raise RuntimeError("CUDA out of memory (simulated)")
        return self.network(x)


def _in_threads(fn, n):
    results, errors = [None] * n, [None] * n

    def run(i):
        try:
            results[i] = fn(i)
        except Exception as err:  # noqa: BLE001 - handed to the test
            errors[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a caller never returned"
    return results, errors


@pytest.fixture
def segmenter(tiny_model_path):
    return Segmenter.from_file(tiny_model_path, device="cpu")


@pytest.mark.parametrize("tta", [False, True])
def test_concurrent_callers_get_their_own_serial_results(segmenter, tta):
    images = [rng_image((*size, 3), seed=i) for i, size in enumerate(SIZES)]
    serial = [segmenter.predict_probability(im, tta=tta) for im in images]
    gate = GatedNetwork(segmenter.network, segmenter, wait_for=len(images))
    segmenter.network = gate
    batched, errors = _in_threads(lambda i: segmenter.predict_probability(images[i], tta=tta),
                                  len(images))
    assert errors == [None] * len(images)
    assert max(gate.batches) > (3 if tta else 1)  # some inputs really shared a forward
    assert sum(gate.batches) == len(images) * (3 if tta else 1)
    for alone, together, size in zip(serial, batched, SIZES):
        assert together.shape == size and together.dtype == np.float32
        np.testing.assert_allclose(together, alone, atol=1e-5)


def test_max_batch_limits_each_forward(segmenter):
    segmenter.max_batch = 3
    gate = GatedNetwork(segmenter.network, segmenter, wait_for=len(SIZES))
    segmenter.network = gate
    results, errors = _in_threads(
        lambda i: segmenter.predict_probability(rng_image((*SIZES[i], 3), seed=i)), len(SIZES))
    assert errors == [None] * len(SIZES) and all(r.shape == s for r, s in zip(results, SIZES))
    assert max(gate.batches) <= 3 and sum(gate.batches) == len(SIZES)


def test_a_failing_forward_reaches_every_caller_and_the_next_call_works(segmenter):
    network = segmenter.network
    segmenter.network = GatedNetwork(network, segmenter, wait_for=6, fail=True)
    results, errors = _in_threads(lambda i: segmenter.predict_probability(rng_image((40, 50, 3))), 6)
    assert results == [None] * 6
    assert all(isinstance(e, RuntimeError) and "out of memory" in str(e) for e in errors)
    segmenter.network = network  # the batcher is free again
    assert segmenter.predict_probability(rng_image((40, 50, 3))).shape == (40, 50)


def test_a_lone_caller_runs_at_once_and_no_thread_is_left_behind(segmenter):
    before = threading.active_count()
    done = threading.Event()
    worker = threading.Thread(target=lambda: (segmenter.predict_probability(rng_image((70, 90, 3))),
                                              done.set()))
    worker.start()
    worker.join(timeout=30)
    assert done.is_set()
    assert segmenter.predict_probability(rng_image((70, 90, 3)), tta=True).shape == (70, 90)
    assert not segmenter._queue and not segmenter._busy
    assert threading.active_count() == before


def test_folder_run_with_workers_writes_the_masks_of_a_serial_run(tmp_path, segmenter):
    images = tmp_path / "images"
    images.mkdir()
    for i, size in enumerate(SIZES * 2):
        write_image(images / f"img{i:02d}.png", rng_image((*size, 3), seed=10 + i))
    serial = drain(segment_folder(images, tmp_path / "serial", segmenter, probabilities=True))
    piped = drain(segment_folder(images, tmp_path / "piped", segmenter, probabilities=True,
                                 workers=4))
    assert len(serial.written) == len(piped.written) == 2 * len(SIZES)
    for out in sorted((tmp_path / "serial").iterdir()):
        if out.name.endswith("_segmentation.png"):
            assert out.read_bytes() == (tmp_path / "piped" / out.name).read_bytes()


def test_default_workers_grow_on_a_cuda_device(segmenter):
    assert default_workers(segmenter) == default_workers(None) <= 4

    class OnGpu:
        device = torch.device("cuda")

    assert default_workers(OnGpu()) == min(32, 2 * (os.cpu_count() or 1))


def test_gpu_batches_are_padded_to_a_few_sizes():
    from napari_skinseg.prediction import _pad_to_bucket

    for n, bucket in [(1, 1), (2, 2), (3, 4), (5, 8), (33, 64), (64, 64)]:
        x = np.ones((n, 3, 4, 4), np.float32)
        padded = _pad_to_bucket(x)
        assert padded.shape == (bucket, 3, 4, 4)
        np.testing.assert_array_equal(padded[:n], x)  # the real images first, unchanged
        assert not padded[n:].any()
