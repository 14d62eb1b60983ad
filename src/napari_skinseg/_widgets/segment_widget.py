"""Segment dock widget: Image layers -> editable `<image> prediction` Labels layers, and folders."""

from __future__ import annotations

from pathlib import Path

import napari
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSlider, PushButton, Select, SpinBox
from napari.layers import Image, Labels
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning

from ..config import KEEP_MODES, PostprocessConfig
from ..devices import available_devices
from ..folder_segmentation import segment_folder
from ..prediction import Segmenter
from .layers import PROBABILITY_KEY, image_array, reapply_postprocess, show_prediction
from .measurements_panel import MeasurementsPanel
from .state import BUNDLED, CURRENT, FILE, MODEL
from .status_label import status_label
from .workers import start_worker


class PostprocessControls(Container):
    """Threshold and clean-up options; shared by the Segment and Curate widgets."""

    def __init__(self) -> None:
        d = PostprocessConfig()
        self.threshold = FloatSlider(label="threshold", value=d.threshold, min=0.05, max=0.95, step=0.05)
        self.fill_holes = CheckBox(label="fill holes", value=d.fill_holes)
        self.keep = ComboBox(label="keep", choices=list(KEEP_MODES), value=d.keep,
                             tooltip="largest: one lesion per image; all: every component")
        self.min_size = SpinBox(label="min size (px)", value=d.min_size, min=0, max=10_000_000)
        self.tta = CheckBox(label="flip TTA", value=False,
                            tooltip="average with flipped copies: slower, slightly smoother")
        super().__init__(widgets=[self.threshold, self.fill_holes, self.keep, self.min_size, self.tta],
                         labels=True)

    def config(self) -> PostprocessConfig:
        return PostprocessConfig(threshold=round(self.threshold.value, 4), fill_holes=self.fill_holes.value,
                                 keep=self.keep.value, min_size=self.min_size.value)


class ModelChoice(Container):
    def __init__(self) -> None:
        self.choice = ComboBox(label="model", choices=[BUNDLED, CURRENT, FILE], value=CURRENT,
                               tooltip="last trained falls back to the bundled model")
        self.file = FileEdit(label="model file", mode="r", filter="*.pt", visible=False)
        self.device = ComboBox(label="device", choices=list(available_devices()), value="auto")
        super().__init__(widgets=[self.choice, self.file, self.device], labels=True)
        self.choice.changed.connect(lambda v: setattr(self.file, "visible", v == FILE))

    def segmenter(self) -> Segmenter:
        return MODEL.segmenter(MODEL.resolve(self.choice.value, self.file.value), self.device.value)


class SegmentWidget(Container):
    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self.viewer = viewer
        self.model = ModelChoice()
        self.images = Select(label="images", choices=self._image_choices)
        self.post = PostprocessControls()
        self.probabilities = CheckBox(label="also show probability layer", value=False)
        self.segment_button = PushButton(text="Segment selected images")
        self.input_dir = FileEdit(label="input folder", mode="d")
        self.results_dir = FileEdit(label="results folder", mode="d")
        self.overlay = CheckBox(label="write overlays", value=True)
        self.overwrite = CheckBox(label="overwrite existing", value=False)
        self.folder_button = PushButton(text="Segment folder…")
        self.status = status_label("")
        self.measurements = MeasurementsPanel(viewer)
        folder_box = Container(widgets=[self.input_dir, self.results_dir, self.overlay,
                                        self.overwrite], labels=True)
        self.extend([self.model, Container(widgets=[self.images], labels=True), self.post,
                     Container(widgets=[self.probabilities], labels=False), self.segment_button,
                     folder_box, self.folder_button, self.status, self.measurements])
        self.worker = None
        self.segment_button.changed.connect(self._segment_layers)
        self.folder_button.changed.connect(self._segment_folder)
        for widget in (self.post.threshold, self.post.fill_holes, self.post.keep, self.post.min_size):
            widget.changed.connect(self._reapply)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.reset_choices)

    def _image_choices(self, _widget=None) -> list[str]:
        return [layer.name for layer in self.viewer.layers
                if isinstance(layer, Image) and not layer.name.endswith(" probability")]

    def _busy(self) -> bool:
        if self.worker is not None:
            show_warning("segmentation is already running")
            return True
        return False

    def _done(self) -> None:
        self.worker = None

    def _segment_layers(self, *_):
        if self._busy():
            return
        try:
            names = list(self.images.value) or (
                [self.viewer.layers.selection.active.name]
                if isinstance(self.viewer.layers.selection.active, Image) else [])
            if not names:
                raise ValueError("select an image layer to segment")
            arrays = [(name, image_array(self.viewer.layers[name])) for name in names]
            segmenter = self.model.segmenter()
        except Exception as err:  # noqa: BLE001
            show_error(f"cannot segment: {err}")
            self.status.value = f"cannot segment: {err}"
            return
        post, tta, with_prob = self.post.config(), self.post.tta.value, self.probabilities.value
        self.status.value = f"segmenting {len(arrays)} image(s) with {segmenter.name} ..."

        def body():
            for name, array in arrays:
                yield name, segmenter.predict_probability(array, tta=tta)
            return len(arrays)

        def shown(item):
            name, probability = item
            layer = show_prediction(self.viewer, name, probability, post, with_probability=with_prob)
            self.measurements.watch(layer)
            self.status.value = f"{layer.name}: {int(layer.data.sum())} lesion pixels"

        self.worker = start_worker(body, yielded=shown, finished=self._done,
                                   returned=lambda n: show_info(f"segmented {n} image(s)"))

    def _reapply(self, *_):
        post = self.post.config()
        edited = []
        for layer in self.viewer.layers:
            if isinstance(layer, Labels) and PROBABILITY_KEY in layer.metadata:
                if not reapply_postprocess(layer, post):
                    edited.append(layer.name)
        if edited:
            self.status.value = (f"not re-thresholded (edited by hand): {', '.join(edited)}")

    def _segment_folder(self, *_):
        if self._busy():
            return
        try:
            input_dir, results_dir = Path(self.input_dir.value), Path(self.results_dir.value)
            if str(self.input_dir.value) in ("", ".") or not input_dir.is_dir():
                raise ValueError("choose an input folder")
            if str(self.results_dir.value) in ("", "."):
                raise ValueError("choose a results folder")
            segmenter = self.model.segmenter()
            gen = segment_folder(input_dir, results_dir, segmenter, self.post.config(),
                                 tta=self.post.tta.value, overwrite=self.overwrite.value,
                                 overlay=self.overlay.value)
        except Exception as err:  # noqa: BLE001
            show_error(f"cannot segment folder: {err}")
            return
        n_files = sum(1 for p in input_dir.iterdir() if p.is_file())
        bar = progress(total=n_files, desc="segmenting folder")

        def step(outcome):
            bar.update(1)
            if outcome.status == "failed":
                show_warning(outcome.message)

        def finished():
            bar.close()
            self._done()

        def returned(report):
            self.status.value = report.summary()
            show_info(f"{report.summary()}; results in {results_dir}")

        self.worker = start_worker(lambda: (yield from gen), yielded=step, returned=returned,
                                   finished=finished)
