"""Segment dock widget: Image layers -> editable `<image> prediction` Labels layers, and folders.

The network runs in the model worker; thresholding and clean-up stay here (numpy/scikit-image),
so moving the threshold re-applies instantly and never touches a mask corrected by hand.
"""

from __future__ import annotations

from typing import Callable

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from napari.layers import Image, Labels
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning

from ..config import KEEP_MODES, PostprocessConfig
from .fields import (
    DockContainer,
    ask_yes_no,
    chosen_path,
    follow,
    follow_layer_names,
    plain_error,
    required_folder,
)
from .jobs import JobRunner, run_job
from .layers import (
    PROBABILITY_KEY,
    PROBABILITY_SUFFIX,
    image_array,
    image_for_labels,
    layer_key,
    reapply_postprocess,
    show_prediction,
)
from .measurements_panel import MeasurementsPanel
from .model_choice import ModelChoice
from .session import SESSION
from .status_label import status_label

FOLDER, CANCEL_FOLDER = "Segment folder", "Cancel folder run"  # the button while a run goes on
SEGMENT, CANCEL_SEGMENT = "Segment selected images", "Cancel segmentation"  # the same for layers


class PostprocessControls(Container):
    """Threshold and clean-up options; they are the session's settings (Curate uses them too)."""

    def __init__(self) -> None:
        d = SESSION.post.config
        self.threshold = FloatSlider(label="threshold", value=d.threshold, min=0.05, max=0.95, step=0.05)
        self.fill_holes = CheckBox(label="fill holes", value=d.fill_holes)
        self.keep = ComboBox(label="keep", choices=list(KEEP_MODES), value=d.keep,
                             tooltip="largest: one lesion per image (with pieces at least half its size); "
                                     "all: every component")
        self.min_size = SpinBox(label="min size (px)", value=d.min_size, min=0, max=10_000_000)
        self.tta = CheckBox(label="flip TTA", value=False,
                            tooltip="average with flipped copies: slower, slightly smoother")
        super().__init__(widgets=[self.threshold, self.fill_holes, self.keep, self.min_size, self.tta],
                         labels=True)
        for widget in (self.threshold, self.fill_holes, self.keep, self.min_size):
            widget.changed.connect(lambda *_: SESSION.post.set(self.config()))

    def config(self) -> PostprocessConfig:
        return PostprocessConfig(threshold=round(self.threshold.value, 4), fill_holes=self.fill_holes.value,
                                 keep=self.keep.value, min_size=self.min_size.value)


class SegmentWidget(DockContainer):
    #: asked before a prediction corrected by hand is replaced; tests replace it
    confirm_replace: Callable[[str], bool] = staticmethod(ask_yes_no)

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self.viewer = viewer
        self.model = ModelChoice()
        self.images = Select(label="images", choices=self._image_choices,
                             tooltip="none selected: the selected image layer")
        self.images.native.setMaximumHeight(90)
        self.post = PostprocessControls()
        self.probabilities = CheckBox(label="also show probability layer", value=False)
        self.segment_button = PushButton(text=SEGMENT)
        self.input_dir = FileEdit(label="input folder", mode="d")
        self.results_dir = FileEdit(label="results folder", mode="d")
        self.overlay = CheckBox(label="write overlays", value=True)
        self.overwrite = CheckBox(label="overwrite existing", value=False)
        self.folder_button = PushButton(text=FOLDER)
        self.progress_bar = ProgressBar(value=0, min=0, max=1, visible=False)
        self.status = status_label("")
        self.measurements = MeasurementsPanel(viewer)
        folder_box = Container(widgets=[self.input_dir, self.results_dir, self.overlay,
                                        self.overwrite], labels=True)
        self.extend([self.model, Container(widgets=[self.images], labels=True), self.post,
                     Container(widgets=[self.probabilities], labels=False), self.segment_button,
                     folder_box, self.folder_button, self.progress_bar, self.status,
                     self.measurements])
        self.runner: JobRunner | None = None
        self._status_watched: set[int] = set()
        self.segment_button.changed.connect(self._segment_layers)
        self.folder_button.changed.connect(self._segment_folder)
        follow(SESSION.post.changed, self, self._reapply)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.reset_choices)
        follow_layer_names(viewer, self.images)

    @property
    def worker(self):
        """The running job, or None (the name the tests and older code use)."""
        return self.runner if self.runner is not None and self.runner.running else None

    def _image_choices(self, _widget=None) -> list[str]:
        return [layer.name for layer in self.viewer.layers
                if isinstance(layer, Image) and not layer.name.endswith(PROBABILITY_SUFFIX)]

    def _selected_image(self) -> list[str]:
        """The image the person is looking at: the selected image, or the one under the
        selected prediction/mask layer."""
        active = self.viewer.layers.selection.active
        if isinstance(active, Labels):
            try:
                active = image_for_labels(self.viewer, active)
            except ValueError:
                return []
        if isinstance(active, Image) and not active.name.endswith(PROBABILITY_SUFFIX):
            return [active.name]
        return []

    def _busy(self) -> bool:
        if self.worker is not None:
            show_warning("a folder run is going on: wait for it, or press \"Cancel folder run\""
                         if self.folder_button.text == CANCEL_FOLDER
                         else "segmentation is already running")
            return True
        return False

    def _fail(self, message: str) -> None:
        show_error(message)
        self.status.value = message

    def _segment_layers(self, *_):
        if self.worker is not None and self.segment_button.text == CANCEL_SEGMENT:
            # one large image is not interrupted, and a worker may hang: the runner ends it
            self.runner.cancel()
            self.status.value = "cancelling the segmentation ..."
            return
        if self._busy():
            return
        try:
            names = list(self.images.value) or self._selected_image()
            if not names:
                raise ValueError("select an image layer to segment")
            arrays = [(name, image_array(self.viewer.layers[name])) for name in names]
            layers = {name: self.viewer.layers[name] for name in names}  # renamed meanwhile: same layer
        except Exception as err:  # noqa: BLE001
            self._fail(f"cannot segment: {plain_error(err)}")
            return
        with_prob = self.probabilities.value
        self.status.value = (f"segmenting {len(arrays)} image(s) ..."
                             + SESSION.model.first_use_note(self.model.engine.value))
        kept: list[str] = []
        closed: list[str] = []
        dropped: list[str] = []

        def shown(item):
            name, value = item
            if name == "model":  # the worker says which model it used
                if SESSION.model.info is None:
                    SESSION.model.use(SESSION.model.path, value)
                return
            if self.worker is not None and self.worker.cancel_requested:
                dropped.append(name)  # came after Cancel: it must not replace a layer now
                return
            image = layers[name]
            if image not in self.viewer.layers:  # closed while it was segmented: nothing to show
                closed.append(name)
                return
            layer = show_prediction(self.viewer, image.name, value, SESSION.post.config,
                                    with_probability=with_prob, confirm_replace=self.confirm_replace)
            if layer is None:
                kept.append(name)
                self.status.value = f"kept your corrections of '{name}'"
                return
            self.measurements.watch(layer)
            self.status.value = f"{layer.name}: {int((layer.data > 0).sum()):,} lesion pixels"
            if layer_key(layer) not in self._status_watched:  # the line must not go stale after edits
                self._status_watched.add(layer_key(layer))
                layer.events.paint.connect(lambda *_: self._corrected(layer))

        def returned(n):
            done = n - len(kept) - len(closed) - len(dropped)
            text = (f"segmented {done} image(s)" if n == len(arrays) and not dropped else
                    f"segmentation cancelled after {done} of {len(arrays)} image(s)") \
                + (f"; kept the hand corrections of {', '.join(kept)}" if kept else "") \
                + (f"; not shown (closed meanwhile): {', '.join(closed)}" if closed else "")
            show_info(text)
            if kept or closed or dropped or n != 1:
                self.status.value = text

        def finished():
            self.segment_button.text = SEGMENT

        self.segment_button.text = CANCEL_SEGMENT  # before: a synchronous run ends in run_job
        self.runner = run_job("predict", dict(images=arrays, model=SESSION.model.job_arg,
                                              device=self.model.device.value, tta=self.post.tta.value,
                                              engine=self.model.engine.value),
                              yielded=shown, returned=returned, finished=finished,
                              failed=lambda message: setattr(self.status, "value", f"segmentation failed: {message}"),
                              cancelled=lambda: setattr(self.status, "value", "segmentation cancelled"))

    def _corrected(self, layer: Labels) -> None:
        """A stroke (or a click-to-fix) on a layer whose lesion pixels the line shows: the line
        says it was corrected. A line about something else (a folder run) stays."""
        if self.status.value.startswith(f"{layer.name}:"):
            self.status.value = f"{layer.name}: corrected by hand"

    def _reapply(self, post: PostprocessConfig):
        edited = []
        for layer in self.viewer.layers:
            if isinstance(layer, Labels) and PROBABILITY_KEY in layer.metadata:
                if not reapply_postprocess(layer, post):
                    edited.append(layer.name)
        self.status.value = (f"re-thresholded; not changed (edited by hand): {', '.join(edited)}"
                             if edited else "re-thresholded")

    def _segment_folder(self, *_):
        if self.worker is not None and self.folder_button.text == CANCEL_FOLDER:
            self.runner.cancel()  # a folder can hold thousands of images: the person may stop
            self.status.value = "cancelling: the images in flight are finished, then it stops"
            return
        if self._busy():
            return
        try:
            input_dir = required_folder(self.input_dir, "input folder")
            results_dir = chosen_path(self.results_dir)
            if results_dir is None:
                raise ValueError("choose a results folder")
            if results_dir.exists() and not results_dir.is_dir():
                raise ValueError(f"{results_dir} is a file; choose a folder for the results")
        except Exception as err:  # noqa: BLE001
            self._fail(f"cannot segment folder: {plain_error(err)}")
            return
        bar = progress(total=0, desc="segmenting folder")
        self.progress_bar.visible, self.progress_bar.value = True, 0
        failures: list[str] = []

        def step(item):
            if "total" in item:
                bar.total = item["total"]
                self.progress_bar.max = max(item["total"], 1)
                return
            bar.update(1)
            self.progress_bar.value = min(self.progress_bar.value + 1, self.progress_bar.max)
            self.progress_bar.label = item["name"]
            if item["status"] == "failed":
                failures.append(item["message"])
                show_warning(item["message"])

        def finished():
            bar.close()
            self.progress_bar.visible = False
            self.folder_button.text = FOLDER

        def returned(summary):
            self.status.value = summary + (f" (first failure: {failures[0]})" if failures else "")
            show_info(f"{summary}; results in {results_dir}")

        self.status.value = f"segmenting {input_dir} ..."
        self.folder_button.text = CANCEL_FOLDER
        self.runner = run_job("segment_folder", dict(
            input_dir=str(input_dir), results_dir=str(results_dir), model=SESSION.model.job_arg,
            device=self.model.device.value, post=SESSION.post.config, tta=self.post.tta.value,
            overwrite=self.overwrite.value, overlay=self.overlay.value,
            engine=self.model.engine.value),
            yielded=step, returned=returned, finished=finished,
            failed=lambda message: setattr(self.status, "value", f"folder run failed: {message}"),
            patient=True,  # it stops after the images in flight and keeps what it wrote
            cancelled=lambda: setattr(self.status, "value", "folder run cancelled (the model "
                                      "worker stopped answering); outputs written so far are kept"))
