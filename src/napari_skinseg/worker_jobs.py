"""The jobs the model worker runs for napari (this is the worker's side: it imports torch).

Each job is a generator function ``job(cancel, **kwargs)``: it yields small items (epoch reports,
batch progress, per-image results) and returns its result. Everything yielded or returned is
plain data, numpy arrays, or a class from :mod:`napari_skinseg.reports` / :mod:`.config`, so that
napari can unpickle it without importing torch.

A ``model`` argument is a model file path, or None for the bundled model.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Generator

import numpy as np

from .bundled import BundledModelMissing, bundled_model_path
from .config import PostprocessConfig, TrainConfig
from .dataset import samples_from_folders
from .destinations import check_output_file, describe_os_error
from .devices import DeviceError, available_devices
from .engines import click_model_path, make_click_refiner, make_reviewer, make_segmenter
from .errors import ModelFileError, check_model_file
from .folder_segmentation import default_workers, segment_folder
from .image_io import ImageReadError, read_image
from .model import load_model
from .pairs import PairFolder, curated_id, list_images, unreviewed_ids
from .prediction import Segmenter, mean_dice
from .reports import PairNotes, TrainingSummary
from .review import estimate_quality
from .training import checkpoint_path, split_note, train

Cancel = Callable[[], bool]

# Segmenters stay loaded between jobs (that is why the worker is long-lived); keyed by file
# identity so a retrained file under the same name is loaded again.
_SEGMENTERS: dict[tuple, Segmenter] = {}
_KEEP_LOADED = 2


def _model_path(model: str | None) -> Path:
    return Path(model) if model else bundled_model_path()


def _file_key(path: Path, *settings) -> tuple:
    """What identifies a loaded model: the file (a retrained file under the same name is a new
    key) and the settings it was loaded with."""
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size, *settings)


def _segmenter(model: str | None, device: str = "auto", engine: str = "auto") -> Segmenter:
    """A loaded segmenter; ``engine`` as in :mod:`napari_skinseg.engines`."""
    path = check_model_file(_model_path(model))
    # the engine as asked: auto (int8 or fp32 ONNX, or torch) and onnx (fp32) load differently
    key = _file_key(path, device, (engine or "auto").lower())
    if key not in _SEGMENTERS:
        while len(_SEGMENTERS) >= _KEEP_LOADED:
            _SEGMENTERS.pop(next(iter(_SEGMENTERS)))
        # the engine as asked: "auto" falls back to torch where ONNX Runtime cannot be used
        _SEGMENTERS[key] = make_segmenter(path, device=device, engine=engine)
    return _SEGMENTERS[key]


def model_info(path: Path, metadata) -> dict[str, Any]:
    """What the widgets show about a model (plain data)."""
    return {"path": str(path), "name": path.name, "status": metadata.status,
            "best_epoch": metadata.best_epoch, "epochs_completed": metadata.epochs_completed,
            "val_dice": metadata.metrics.get("val_dice"), "size": metadata.size,
            "encoder": metadata.config.encoder, "n_train": metadata.data.get("n_train"),
            "created": metadata.created, "config": metadata.config}


def job_devices(cancel: Cancel) -> Generator[Any, None, tuple[str, ...]]:
    """The devices that work in the worker (``auto``, ``cpu``, then ``cuda``/``mps`` if usable)."""
    return available_devices()
    yield  # a generator, like every job


def job_ping(cancel: Cancel) -> Generator[Any, None, bool]:
    """An immediate answer: napari asks it to tell a busy worker from a hung one."""
    return True
    yield


def job_model_info(cancel: Cancel, model: str | None = None) -> Generator[Any, None, dict]:
    """Load a model file (checking it) and describe it."""
    path = _model_path(model)
    return model_info(path, load_model(path).metadata)
    yield


def job_predict(cancel: Cancel, images: list[tuple[str, Any]], model: str | None = None,
                device: str = "auto", tta: bool = False,
                engine: str = "auto") -> Generator[tuple, None, int]:
    """Yield ``(name, probability)`` for each ``(name, image array)``; probabilities at the
    image's own size. The first item is ``("model", info)``."""
    segmenter = _segmenter(model, device, engine)
    if segmenter.engine == "torch":
        info = model_info(_model_path(model), segmenter.model.metadata)
    else:
        data = segmenter.metadata.data
        info = {"path": str(_model_path(model)), "name": segmenter.name, "status": data["status"],
                "val_dice": data.get("val_dice"), "size": data["size"]}
    yield "model", {**info, "engine": segmenter.engine}
    done = 0
    for name, array in images:
        if cancel():
            break
        yield name, segmenter.predict_probability(array, tta=tta)
        done += 1
    return done


_CLICK_REFINERS: dict[tuple, Any] = {}
_CLICK_LOCK = threading.Lock()
_LAST_CLICK_IMAGE: list[np.ndarray] = []


def _click_refiner(click_model: str | None, device: str):
    """The click-to-fix network (the bundled one when ``click_model`` is None), kept loaded."""
    path = click_model_path(click_model)
    key = _file_key(path, device)
    with _CLICK_LOCK:  # jobs run on threads: a click during prepare_clicks must not load twice
        if key not in _CLICK_REFINERS:
            _CLICK_REFINERS.clear()
            _CLICK_REFINERS[key] = make_click_refiner(path, device)
        return _CLICK_REFINERS[key]


def _seen_before(image: np.ndarray) -> np.ndarray:
    """The array of the previous click when this one holds the same pixels: every click sends
    the image anew, and the refiner prepares an image's network input once per array."""
    last = _LAST_CLICK_IMAGE[0] if _LAST_CLICK_IMAGE else None
    if last is not None and last.shape == image.shape and np.array_equal(last, image):
        return last
    _LAST_CLICK_IMAGE[:] = [image]  # one item replaced in place: safe between job threads
    return image


def job_click_refine(cancel: Cancel, image, mask, clicks: list[tuple[int, int, bool]],
                     click_model: str | None = None,
                     device: str = "cpu") -> Generator[Any, None, Any]:
    """A click-to-fix network's mask (bool, the image's size) for ``image`` with its current
    ``mask`` and ``clicks`` ((y, x, lesion) in image pixels, the last one the new click); the
    bundled click model when ``click_model`` is None. napari keeps only the changes that reach
    the click (:meth:`ClickSession.apply_proposal`)."""
    from .interactive import proposal_threshold

    if not clicks:
        raise ValueError("click_refine needs at least one click")
    probability = _click_refiner(click_model, device).probability(_seen_before(image), mask,
                                                                  clicks)
    return probability > proposal_threshold(bool(clicks[-1][2]))
    yield


def job_prepare_clicks(cancel: Cancel, image, mask, click_model: str | None = None,
                       device: str = "cpu") -> Generator[Any, None, Any]:
    """Load the click-to-fix network and run it once on this image (no click), so that the
    person's first click costs what every other click costs instead of the loading (0.5 s)."""
    _click_refiner(click_model, device).probability(_seen_before(image), mask, [])
    return True
    yield


def job_segment_folder(cancel: Cancel, input_dir: str, results_dir: str, model: str | None = None,
                       device: str = "auto", post: PostprocessConfig | None = None,
                       tta: bool = False, overwrite: bool = False, overlay: bool = True,
                       engine: str = "auto") -> Generator[dict, None, str]:
    """Segment every image of a folder into a results folder; one dict per file."""
    segmenter = _segmenter(model, device, engine)
    images, others = list_images(input_dir)
    yield {"total": len(images) + len(others)}
    gen = segment_folder(input_dir, results_dir, segmenter, post, tta=tta, overwrite=overwrite,
                         overlay=overlay, workers=default_workers(segmenter))
    report = None
    while True:
        if cancel():
            return "cancelled; outputs written so far are kept"
        try:
            outcome = next(gen)
        except StopIteration as stop:
            report = stop.value
            break
        yield {"name": outcome.path.name, "status": outcome.status, "message": outcome.message}
    return report.summary(overwrite_hint="tick 'overwrite existing'")  # the Segment dock's box


def job_train(cancel: Cancel, images_dir: str, masks_dir: str, config: TrainConfig, out: str,
              init: str | None = None, sources: list[str] | None = None,
              compare: bool = False, baseline: str | None = None
              ) -> Generator[Any, None, TrainingSummary]:
    """Train (yielding status lines, BatchProgress and EpochReports) and summarise the run.

    With ``compare=True`` the model it would replace (``baseline``; None = the bundled model) is
    measured on the same validation pairs, so the person can choose with both numbers in view.
    """
    # As on the command line: a model that cannot be written (or would replace another) is
    # refused before the pairs are read and an epoch is trained, not when it is first saved.
    if Path(out).exists():
        raise FileExistsError(f"{out} exists; not replacing it: choose another model file")
    check_output_file(out, overwrite=True, what="model file", example="model.pt")
    check_output_file(checkpoint_path(out), overwrite=True, what="checkpoint")
    yield "reading the training pairs ..."
    # What was skipped and why, and odd mask values, reach the dock (not only this process's log)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        samples = samples_from_folders(images_dir, masks_dir, config.size)
    unreviewed = unreviewed_ids(images_dir, masks_dir) & set(samples.names)
    unreviewed_note = split_note(len(samples), len(unreviewed))
    notes = PairNotes(len(samples), [str(s) for s in samples.skipped],
                      list(dict.fromkeys(str(w.message) for w in caught
                                         if issubclass(w.category, UserWarning)))
                      + ([unreviewed_note] if unreviewed_note else []))
    if notes.skipped or notes.warnings:
        yield notes
    skipped = f" ({len(samples.skipped)} skipped)" if samples.skipped else ""
    yield f"training on {len(samples)} pairs{skipped} ..."
    result = yield from train(samples, config, out, init=init, cancel=cancel, yield_batches=True,
                              train_only=unreviewed, sources=sources)
    summary = TrainingSummary(model_path=str(result.model_path), history=result.history,
                              best_epoch=result.best_epoch, cancelled=result.cancelled,
                              status=result.model.metadata.status, val_names=result.val_names,
                              skipped=notes.skipped)
    if summary.validated:
        val = samples.subset([samples.names.index(n) for n in result.val_names])
        summary.val_dice = mean_dice(Segmenter(result.model, config.device), val)
        if compare:
            path = _model_path(baseline)
            yield f"measuring {path.name} on the same {len(val)} validation pairs ..."
            summary.baseline_dice = mean_dice(_segmenter(baseline, config.device, "torch"), val)
            summary.baseline_name = path.name
    return summary


def job_review_folder(cancel: Cancel, paths: list[str], model: str | None = None,
                      device: str = "auto") -> Generator[dict, None, int]:
    """The predicted Dice of the model's mask for each image (the review queue's order).
    Unreadable files are reported as such and go last."""
    segmenter = _segmenter(model, device)
    reviewer = make_reviewer(segmenter, model)
    done = 0
    for path in map(Path, paths):
        if cancel():
            break
        try:
            image = read_image(path)
            # the mask Curate will show, judged on the reviewer's views (fp32 for an int8 copy)
            mask = None if reviewer is segmenter else segmenter.segment(image).mask
            estimate = estimate_quality(reviewer, image, mask, id=path.stem)
        except ImageReadError as err:
            yield {"path": str(path), "predicted_dice": None, "message": str(err)}
            continue
        yield {"path": str(path), "predicted_dice": estimate.predicted_dice,
               "calibrated": estimate.calibrated}
        done += 1
    return done


def job_accept_as_curated(cancel: Cancel, paths: list[str], curated: str, model: str | None = None,
                          device: str = "auto", post: PostprocessConfig | None = None
                          ) -> Generator[dict, None, int]:
    """Segment each image and save it with its mask as a curated pair, never replacing a pair
    that exists (a person may have corrected it)."""
    segmenter = _segmenter(model, device)
    folder = PairFolder(curated)
    accepted = 0
    for path in map(Path, paths):
        if cancel():
            break
        stem = curated_id(path)  # the id Curate saves this image under
        image_path, mask_path = folder.image_path(stem), folder.mask_path(stem)
        if mask_path.exists():  # a pair exists when its mask does
            yield {"path": str(path), "status": "exists"}
            continue
        try:
            image = read_image(path)
        except ImageReadError as err:
            yield {"path": str(path), "status": "failed", "message": str(err)}
            continue
        mask = segmenter.segment(image, post).mask
        # an image without its mask is left from a write cut short (the worker ended between
        # the two files): it is this pair's, and replaced
        folder.write(stem, image, mask, overwrite=image_path.exists(),
                     reviewed=False)  # trained on, never validated on
        accepted += 1
        yield {"path": str(path), "status": "accepted"}
    return accepted


JOBS: dict[str, Callable[..., Generator]] = {
    "review_folder": job_review_folder,
    "accept_as_curated": job_accept_as_curated,
    "click_refine": job_click_refine,
    "prepare_clicks": job_prepare_clicks,
    "devices": job_devices,
    "ping": job_ping,
    "model_info": job_model_info,
    "predict": job_predict,
    "segment_folder": job_segment_folder,
    "train": job_train,
}


def describe_error(err: BaseException) -> str:
    """One sentence for the person; library internals stay in the worker's log."""
    text = (str(err).strip().splitlines() or [""])[0][:300]
    if isinstance(err, MemoryError) or "out of memory" in text.lower():
        return ("out of memory: lower the batch size or the working size, or choose the CPU"
                + (f" ({text})" if text else ""))
    if isinstance(err, OSError) and not isinstance(err, (FileNotFoundError, NotADirectoryError)):
        return describe_os_error(err)  # names the path and the cause, e.g. no space left
    if isinstance(err, (ModelFileError, ImageReadError, DeviceError, BundledModelMissing,
                        ValueError, FileNotFoundError, NotADirectoryError)):
        return text or type(err).__name__
    return f"unexpected {type(err).__name__} in the model worker; the details are in the worker's log"
