"""Lesion descriptors of a prediction/corrected Labels layer: its `features`, a table, a CSV.

Every prediction layer is measured when it appears (from Segment or from Curate's Next image) and
again after every change of its data: paint, erase, fill, undo and redo. Measuring runs on a thread
(a 6000 x 8000 mask takes seconds), so painting never waits for it; one measurement per layer runs
at a time, and a mask changed meanwhile is measured again when it ends.
"""

from __future__ import annotations

from pathlib import Path
from weakref import WeakKeyDictionary

import pandas as pd
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    PushButton,
    Table,
)
from napari.layers import Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QStyledItemDelegate

from ..measurements import (
    DISCLAIMER,
    display_rows,
    measure_lesion,
    write_measurements_csv,
)
from .fields import chosen_path, follow_layer_names, shrinkable
from .layers import (
    AUTO_HASH_KEY,
    image_array,
    image_for_labels,
    image_id,
    labels_array,
    mask_hash,
)
from .status_label import status_label

MEASURED_HASH_KEY = "skinseg_measured_hash"
MEASURE_DELAY_MS = 200


class MeasurementsPanel(Container):
    """Measures the chosen Labels layer, and again after every correction of it."""

    def __init__(self, viewer) -> None:
        self.viewer = viewer
        # layer names can be long (file names): elided, so the dock keeps napari's width
        self.layer = shrinkable(ComboBox(label="measure layer", choices=self._labels_choices,
                                         nullable=True))
        self.pixel_size = FloatSpinBox(label="pixel size (mm, 0 = unknown)", value=0.0, min=0.0,
                                       max=10.0, step=0.001,
                                       tooltip="one pixel size for every measured layer: measure "
                                               "and export images of another camera or size "
                                               "separately")
        self.table = Table(value={"descriptor": [], "value": []})
        self.table.native.setMinimumHeight(240)
        self.table.native.verticalHeader().setVisible(False)
        # Qt's plain delegate: magicgui's re-formats anything number-like to 4 decimals.
        self.table.native.setItemDelegate(QStyledItemDelegate(self.table.native))
        self.csv_path = FileEdit(label="export to", mode="w", filter="*.csv")
        self.export_button = PushButton(text="Export measurements CSV")
        self.note = status_label(DISCLAIMER)
        super().__init__(widgets=[self.layer, self.pixel_size, self.table, self.csv_path,
                                  self.export_button, self.note], labels=True)
        # Keyed by the layer itself (weakly): an id() can be reused by a later layer.
        self._timers: WeakKeyDictionary = WeakKeyDictionary()
        self._running: WeakKeyDictionary = WeakKeyDictionary()  # layer -> its measuring thread
        self._again: WeakKeyDictionary = WeakKeyDictionary()  # layer -> forced, asked meanwhile
        self.layer.changed.connect(lambda *_: self.refresh())
        self.pixel_size.changed.connect(lambda *_: self._remeasure_all())
        self.export_button.changed.connect(self.export)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(lambda *_: self.reset_choices())
        follow_layer_names(viewer, self.layer)
        for layer in viewer.layers:
            self._on_inserted(layer=layer)

    def _labels_choices(self, _widget=None) -> list[str]:
        return [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]

    def _on_inserted(self, event=None, layer=None) -> None:
        layer = layer if layer is not None else event.value
        self.reset_choices()
        if isinstance(layer, Labels) and AUTO_HASH_KEY in layer.metadata:  # ours
            self.watch(layer)

    def watch(self, layer: Labels) -> None:
        """Measure ``layer`` now and after each change of its data (undo included)."""
        if layer not in self._timers:
            # Measured once the person pauses (MEASURE_DELAY_MS), not inside each stroke or click:
            # the mask on screen must update first.
            timer = QTimer()
            timer.setSingleShot(True)
            timer.setInterval(MEASURE_DELAY_MS)
            timer.timeout.connect(lambda: self.measure(layer))
            self._timers[layer] = timer
            layer.events.set_data.connect(lambda *_: timer.start())
        self.reset_choices()
        self.layer.value = layer.name
        layer.metadata.pop(MEASURED_HASH_KEY, None)
        self._timers[layer].start()  # right after the layer is shown, not before

    def measure(self, layer: Labels, force: bool = False) -> None:
        """Measure ``layer``'s mask on a thread; its features and the table follow."""
        if layer not in self.viewer.layers:
            return
        if layer in self._running:  # measured again, with the newest mask, when this one ends
            self._again[layer] = self._again.get(layer, False) or force
            return
        current = mask_hash(layer.data)
        if not force and layer.metadata.get(MEASURED_HASH_KEY) == current:
            return  # set_data also fires when nothing changed (redraws)
        try:
            image = image_array(image_for_labels(self.viewer, layer))
            mask = labels_array(layer) > 0  # a copy: the brush changes layer.data in place
        except Exception as err:  # noqa: BLE001 - measuring must never break painting
            self.note.value = f"cannot measure '{layer.name}': {err}"
            return
        pixel = self.pixel_size.value or None
        worker = create_worker(measure_lesion, mask,
                               image if image.shape[:2] == mask.shape else None, pixel,
                               _start_thread=False)
        worker.returned.connect(lambda row: self._measured(layer, current, pixel, row))
        worker.errored.connect(lambda err: self._failed(layer, err))
        worker.finished.connect(lambda: self._ended(layer))
        self._running[layer] = worker
        worker.start()

    def _measured(self, layer: Labels, mask_hash_: int, pixel: float | None, row: dict) -> None:
        if layer not in self.viewer.layers or pixel != (self.pixel_size.value or None):
            return  # closed, or the pixel size changed meanwhile (a forced measurement follows)
        layer.metadata[MEASURED_HASH_KEY] = mask_hash_
        layer.features = pd.DataFrame([{"index": 1, **row}])
        if self.layer.value == layer.name:
            self._fill_table(row)

    def _failed(self, layer: Labels, err: Exception) -> None:
        self.note.value = f"cannot measure '{layer.name}': {err}"

    def _ended(self, layer: Labels) -> None:
        self._running.pop(layer, None)
        if layer in self._again:
            self.measure(layer, force=self._again.pop(layer))

    def _remeasure_all(self) -> None:
        """A new pixel size: every measured layer again, so an export never mixes units."""
        for layer in list(self._timers):
            self.measure(layer, force=True)
        self.refresh()

    def refresh(self, force: bool = False) -> None:
        name = self.layer.value
        if name and name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if force or layer.metadata.get(MEASURED_HASH_KEY) != mask_hash(layer.data):
                self.measure(layer, force=True)
            elif "area_px" in getattr(layer.features, "columns", []):
                self._fill_table(layer.features.iloc[0].drop("index").to_dict())

    def _fill_table(self, row: dict) -> None:
        names, values = display_rows(row)
        self.table.value = {"descriptor": names, "value": values}
        table = self.table.native
        table.resizeColumnsToContents()
        self.note.value = DISCLAIMER

    def export(self, *_) -> Path | None:
        """Write the descriptors of every measured Labels layer to the chosen CSV."""
        path = chosen_path(self.csv_path)
        if path is None or path.is_dir():
            show_error("choose a CSV file to export to")
            return None
        if self._running:
            show_error(f"still measuring {len(self._running)} layer(s); export again in a moment")
            return None
        rows = []
        for layer in self.viewer.layers:
            if isinstance(layer, Labels) and "area_px" in getattr(layer.features, "columns", []):
                row = layer.features.iloc[0].to_dict()
                row.pop("index", None)
                try:
                    name = image_id(image_for_labels(self.viewer, layer))
                except ValueError:
                    name = layer.name
                # two layers can belong to one image (a prediction, a mask opened by Curate):
                # the layer tells their rows apart
                rows.append({"id": name, "layer": layer.name, **row})
        if not rows:
            show_error("nothing measured yet: segment an image first")
            return None
        try:
            write_measurements_csv(rows, path, overwrite=False, extra_fields=("layer",))
        except (FileExistsError, OSError) as err:
            show_error(str(err))
            return None
        show_info(f"measurements of {len(rows)} lesion(s) written to {path}")
        return path
