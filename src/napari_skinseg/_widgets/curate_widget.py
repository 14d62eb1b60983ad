"""Curate dock widget: the human-in-the-loop cycle.

Correct a prediction with napari's paint tools -> "Save as training mask" -> "Next image" (opened
and segmented with the current model) -> ... -> "Retrain on curated".
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable

import napari
from magicgui.widgets import ComboBox, Container, FileEdit, PushButton, SpinBox
from napari.layers import Labels
from napari.utils.notifications import show_error, show_info

from ..bundled import bundled_model_path, has_bundled_model
from ..config import PostprocessConfig, TrainConfig
from ..dataset import samples_from_folders
from ..image_io import read_image, write_image, write_mask
from ..pairs import list_images
from .history_plot import HistoryPlot
from .layers import PREDICTION_SUFFIX, image_array, image_for_labels, image_id, labels_array, show_prediction
from .state import CURRENT, MODEL
from .status_label import status_label
from .train_widget import DEFAULT_HOME
from .training_controller import TrainingController
from .workers import start_worker

BASE, CONTINUE = "base model", "current model"
FINE_TUNE_LR = 3e-4


def ask_overwrite(message: str) -> bool:
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(None, "napari-skinseg", message,
                                  QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
    return answer == QMessageBox.Yes


def curated_ids(folder: Path) -> set[str]:
    masks = folder / "masks"
    if not masks.is_dir():
        return set()
    return {p.name[: -len("_segmentation.png")] for p in masks.glob("*_segmentation.png")}


class CurateWidget(Container):
    #: asked before an existing curated pair is replaced; tests replace it
    confirm_overwrite: Callable[[str], bool] = staticmethod(ask_overwrite)

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self.viewer = viewer
        self.curated_dir = FileEdit(label="curated folder", mode="d", value=DEFAULT_HOME / "curated")
        self.labels_layer = ComboBox(label="corrected labels", choices=self._labels_choices)
        self.save_button = PushButton(text="Save as training mask")
        self.source_dir = FileEdit(label="images to curate", mode="d")
        self.next_button = PushButton(text="Next image")
        self.count = status_label("")
        self.start_from = ComboBox(label="retrain from", choices=[BASE, CONTINUE], value=BASE,
                                   tooltip="base: the bundled model (or scratch); current: continue "
                                           "from the last trained model")
        self.epochs = SpinBox(label="epochs", value=10, min=1, max=1000)
        self.retrain_button = PushButton(text="Retrain on curated")
        self.status = status_label("")
        self.extend([self.curated_dir, self.labels_layer, self.save_button, self.source_dir,
                     self.next_button, self.count, self.start_from, self.epochs,
                     self.retrain_button, self.status])
        self.plot = HistoryPlot()
        self.native.layout().addWidget(self.plot)
        self.controller = TrainingController(self.plot, self._set_running, self._set_status)
        self.worker = None
        self.save_button.changed.connect(self._guard(self.save_training_mask))
        self.next_button.changed.connect(self._guard(self.next_image))
        self.retrain_button.changed.connect(self._retrain_or_cancel)
        self.curated_dir.changed.connect(self.update_count)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.reset_choices)
        self.update_count()

    # -- helpers -----------------------------------------------------------------------------
    def _labels_choices(self, _widget=None) -> list[str]:
        labels = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]
        return sorted(labels, key=lambda n: not n.endswith(PREDICTION_SUFFIX))

    def _guard(self, action):
        def run(*_):
            try:
                action()
            except Exception as err:  # noqa: BLE001 - a notification, never a traceback
                show_error(str(err))
                self._set_status(str(err))
        return run

    def _set_status(self, text: str) -> None:
        self.status.value = text

    def _set_running(self, running: bool) -> None:
        self.retrain_button.text = "Cancel" if running else "Retrain on curated"

    @property
    def folder(self) -> Path:
        return Path(self.curated_dir.value)

    def update_count(self, *_) -> int:
        n = len(curated_ids(self.folder))
        self.count.value = f"{n} curated pair{'s' if n != 1 else ''} in {self.folder.name}/"
        return n

    # -- actions -----------------------------------------------------------------------------
    def save_training_mask(self) -> Path | None:
        """Write the image and its corrected mask into the curated folder."""
        if not self.labels_layer.value:
            raise ValueError("no labels layer to save: segment an image or add a Labels layer")
        labels = self.viewer.layers[self.labels_layer.value]
        image_layer = image_for_labels(self.viewer, labels)
        image, mask = image_array(image_layer), labels_array(labels)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"labels '{labels.name}' are {mask.shape[::-1]} but the image is "
                             f"{image.shape[1::-1]}")
        stem = image_id(image_layer)
        image_path = self.folder / "images" / f"{stem}.png"
        mask_path = self.folder / "masks" / f"{stem}_segmentation.png"
        exists = image_path.exists() or mask_path.exists()
        if exists and not self.confirm_overwrite(f"A curated pair '{stem}' exists. Replace it?"):
            self._set_status(f"not saved: '{stem}' kept as it was")
            return None
        write_image(image_path, image, overwrite=exists)
        write_mask(mask_path, mask > 0, overwrite=exists)
        n = self.update_count()
        self._set_status(f"saved {mask_path.name} ({n} curated pairs)")
        show_info(f"saved {stem} as a training pair in {self.folder}")
        return mask_path

    def next_image(self) -> Path | None:
        """Open the next image of the chosen folder without a curated mask and segment it."""
        source = Path(self.source_dir.value)
        if str(self.source_dir.value) in ("", ".") or not source.is_dir():
            raise ValueError("choose the folder of images to curate")
        done = curated_ids(self.folder)
        images, _ = list_images(source)
        todo = [p for p in images if p.stem not in done and not p.stem.endswith("_segmentation")]
        if not todo:
            self._set_status("every image of that folder has a curated mask")
            show_info("every image of that folder has a curated mask")
            return None
        path = todo[0]
        image = read_image(path)
        if path.stem in self.viewer.layers:
            self.viewer.layers.remove(path.stem)
        self.viewer.add_image(image, name=path.stem, rgb=True, metadata={"source_path": str(path)})
        segmenter = MODEL.segmenter(MODEL.resolve(CURRENT))
        self._set_status(f"segmenting {path.name} ({len(todo) - 1} more to curate) ...")

        def body():
            yield segmenter.predict_probability(image)
            return path

        def shown(probability):
            layer = show_prediction(self.viewer, path.stem, probability, PostprocessConfig())
            self.viewer.layers.selection.active = layer
            layer.mode = "paint"
            self.reset_choices()
            self.labels_layer.value = layer.name
            self._set_status(f"correct '{layer.name}' with the brush/eraser, then save it")

        def finished():
            self.worker = None

        self.worker = start_worker(body, yielded=shown, finished=finished)
        return path

    def _retrain_or_cancel(self, *_):
        if self.controller.running:
            self.controller.cancel()
            return
        self._guard(self.retrain)()

    def retrain(self) -> None:
        n = self.update_count()
        if n < 2:
            raise ValueError(f"retraining needs at least 2 curated pairs (have {n}): save more "
                             "corrected masks first")
        if self.start_from.value == CONTINUE and MODEL.path is not None:
            init = MODEL.path
        else:
            init = bundled_model_path() if has_bundled_model() else None
        base_cfg = TrainConfig()
        config = base_cfg.replace(epochs=self.epochs.value)
        if init is not None:
            from ..model import load_model

            # Fine-tuning: a lower rate than from scratch, so a few curated pairs adjust the
            # model instead of overwriting it (benchmarks/data_efficiency.py uses the same).
            config = load_model(init).metadata.config.replace(
                epochs=self.epochs.value, lr_schedule="constant", device="auto", learning_rate=FINE_TUNE_LR)
        out = self.folder / "models" / f"retrained-{dt.datetime.now():%Y%m%d-%H%M%S}.pt"
        folder = self.folder
        self._set_status(f"retraining on {n} curated pairs from {init.name if init else 'scratch'}")
        self.controller.start(lambda: samples_from_folders(folder / "images", folder / "masks", config.size),
                              config, out, init=init, sources=[str(folder)])
