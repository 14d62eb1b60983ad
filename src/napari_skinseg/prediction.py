"""The segmentation module's core: probability map and mask at the image's original size."""

from __future__ import annotations

import os
import threading
from collections import deque
from pathlib import Path

import numpy as np
import torch

from .config import PostprocessConfig
from .dataset import SampleSet
from .devices import resolve_device
from .image_io import to_rgb_uint8
from .metrics import image_metrics
from .model import ModelFileError, SkinSegModel, load_model
from .postprocess import postprocess
from .segmentation import Segmentation
from .transforms import network_input, probability_at


class _Request:
    """One caller's input (k views, CPU) waiting for a batch forward; ``event`` is set when its
    probabilities (or the forward's error) are in, or when it is made the next leader."""

    __slots__ = ("x", "event", "result", "error", "done")

    def __init__(self, x: np.ndarray):
        self.x = x
        self.event = threading.Event()
        self.result = self.error = None
        self.done = False


def _pad_to_bucket(x: np.ndarray) -> np.ndarray:
    """Zero images appended up to the next power of two. cuDNN plans its kernels anew for every
    batch size it meets (a second or so each on an H200), and batches of whatever size happened to
    queue up made a 16-thread GPU folder run slower than one image at a time; buckets keep the
    sizes to a handful. The padding's outputs are never handed out."""
    n = len(x)
    bucket = 1 << (n - 1).bit_length()
    if bucket == n:
        return x
    return np.concatenate([x, np.zeros((bucket - n, *x.shape[1:]), x.dtype)])


class Segmenter:
    """Runs a model on images of any size with torch; thread-safe.

    Concurrent :meth:`predict_probability` calls (the threads of a folder run) share batch
    forwards: the first caller to find the device free leads, takes every input queued by then
    (up to ``max_batch`` views) into one forward, hands each caller its probabilities and makes
    the oldest caller still waiting the next leader. A lone caller leads at once, so it never
    waits, and no background thread exists to leak or keep the interpreter alive.
    """

    engine = "torch"

    def __init__(self, model: SkinSegModel, device: str = "auto", max_batch: int = 64):
        if model.metadata.inputs != "rgb":
            raise ModelFileError(f"{Path(model.path).name if model.path else 'this model'} is a "
                                 "click-to-fix model, not a segmentation model; choose a model "
                                 "trained with skinseg train")
        self.model = model
        self.device = resolve_device(device)
        self.network = model.network.to(self.device).to(memory_format=torch.channels_last).eval()
        self.size = model.metadata.size
        self.max_batch = max(1, int(max_batch))
        self._lock = threading.Lock()
        self._queue: deque[_Request] = deque()
        self._busy = False  # a leader is running (or has been chosen); queued requests wait

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None, device: str = "auto") -> "Segmenter":
        """Load ``path``, or the bundled model when ``path`` is None."""
        if path is None:
            from .bundled import bundled_model_path

            path = bundled_model_path()
        return cls(load_model(path), device=device)

    @property
    def name(self) -> str:
        return Path(self.model.path).name if self.model.path else "model in memory"

    def predict_probability(self, image: np.ndarray, tta: bool = False) -> np.ndarray:
        """Lesion probability (float32, H x W, the input's size) for any image array.

        Everything but the network runs in numpy and Pillow: a folder run calls this from many
        threads at once, and torch's CPU operations, each parallel over all cores, would make
        those threads compete for the cores with torch's own thread pool."""
        rgb = to_rgb_uint8(image)
        return probability_at(self.network_probabilities(self.network_input(rgb, tta)),
                              rgb.shape[:2], tta)

    def network_input(self, rgb: np.ndarray, tta: bool = False) -> np.ndarray:
        """(k, 3, S, S) float32: what the network sees of a uint8 RGB image (transforms.py)."""
        meta = self.model.metadata
        return network_input(rgb, self.size, meta.mean, meta.std, meta.config.colour_constancy, tta)

    def network_probabilities(self, x: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) float32 lesion probabilities for a batch of network inputs."""
        return self._forward(x).numpy()

    @property
    def quality_calibration(self) -> dict:
        """The review queue's calibration stored in the model file (empty: none)."""
        return getattr(self.model.metadata, "quality", None) or {}

    def _forward(self, x: np.ndarray) -> torch.Tensor:
        """sigmoid(network(x)) on the CPU, computed in a batch with other threads' inputs."""
        request = _Request(x)
        with self._lock:
            self._queue.append(request)
            lead = not self._busy
            self._busy = True
        if not lead:
            request.event.wait()
        if not request.done:  # leading (at once, or chosen by the last leader): run one batch
            self._run_batch()
        if request.error is not None:
            raise request.error
        return request.result

    def _run_batch(self) -> None:
        with self._lock:  # the leader's own request is first in the queue, so it is taken
            batch = [self._queue.popleft()]
            views = len(batch[0].x)
            while self._queue and views + len(self._queue[0].x) <= self.max_batch:
                views += len(self._queue[0].x)
                batch.append(self._queue.popleft())
        try:
            x = batch[0].x if len(batch) == 1 else np.concatenate([r.x for r in batch])
            cuda = self.device.type == "cuda"
            if cuda:
                x = _pad_to_bucket(x)
            x = torch.from_numpy(x)
            if cuda:  # page-locked memory lets the copy run asynchronously
                x = x.pin_memory()
            with torch.inference_mode():
                x = x.to(self.device, non_blocking=cuda).contiguous(memory_format=torch.channels_last)
                probs = torch.sigmoid(self.network(x)).float().cpu()  # one copy back per batch
            start = 0
            for r in batch:
                r.result = probs[start:start + len(r.x)]
                start += len(r.x)
        except BaseException as err:  # noqa: BLE001 - e.g. CUDA out of memory: all callers fail
            for r in batch:  # (an interrupt is the leader's own; the others see a RuntimeError)
                r.error = err if isinstance(err, Exception) or r is batch[0] else \
                    RuntimeError(f"the batch forward was interrupted ({type(err).__name__})")
        finally:
            with self._lock:
                if self._queue:
                    nxt = self._queue[0]  # it stays queued and leads the next batch
                else:
                    nxt, self._busy = None, False
            for r in batch:
                r.done = True
                r.x = None
                r.event.set()
            if nxt is not None:
                nxt.event.set()

    def segment(self, image: np.ndarray, post: PostprocessConfig | None = None,
                tta: bool = False) -> Segmentation:
        probability = self.predict_probability(image, tta=tta)
        return Segmentation(probability, postprocess(probability, post))


def mean_dice(segmenter: Segmenter, samples: SampleSet, threshold: float = 0.5) -> float:
    """Mean per-image Dice of ``segmenter`` on pairs (at the pairs' size, no post-processing):
    the one yardstick used to compare two models on the same validation pairs."""
    dices = [image_metrics(segmenter.predict_probability(image) > threshold, mask).dice
             for image, mask in zip(samples.images, samples.masks)]
    return float(np.mean(dices)) if dices else float("nan")
