"""Lesion descriptors of a prediction/corrected Labels layer: its `features`, a table, a CSV."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, PushButton, Table
from napari.layers import Labels
from napari.utils.notifications import show_error, show_info

from ..measurements import DISCLAIMER, measure_lesion, write_measurements_csv
from .layers import image_array, image_for_labels, image_id, labels_array
from .status_label import status_label


def _show(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


class MeasurementsPanel(Container):
    """Measures the chosen Labels layer, and again after every paint/erase stroke."""

    def __init__(self, viewer) -> None:
        self.viewer = viewer
        self.layer = ComboBox(label="measure layer", choices=self._labels_choices, nullable=True)
        self.pixel_size = FloatSpinBox(label="pixel size (mm, 0 = unknown)", value=0.0, min=0.0,
                                       max=10.0, step=0.001)
        self.table = Table(value={"descriptor": [], "value": []})
        self.table.native.setMinimumHeight(160)
        self.csv_path = FileEdit(label="export to", mode="w", filter="*.csv")
        self.export_button = PushButton(text="Export measurements CSV")
        self.note = status_label(DISCLAIMER)
        super().__init__(widgets=[self.layer, self.pixel_size, self.table, self.csv_path,
                                  self.export_button, self.note], labels=True)
        self._watched: set[int] = set()
        self.layer.changed.connect(lambda *_: self.refresh())
        self.pixel_size.changed.connect(lambda *_: self.refresh())
        self.export_button.changed.connect(self.export)

    def _labels_choices(self, _widget=None) -> list[str]:
        return [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]

    def watch(self, layer: Labels) -> None:
        """Measure ``layer`` now and after each correction of it."""
        if id(layer) not in self._watched:
            self._watched.add(id(layer))
            layer.events.paint.connect(lambda *_: self.measure(layer))
            layer.events.data.connect(lambda *_: self.measure(layer))
        self.reset_choices()
        self.measure(layer)
        self.layer.value = layer.name

    def measure(self, layer: Labels) -> dict | None:
        try:
            image = image_array(image_for_labels(self.viewer, layer))
            mask = labels_array(layer) > 0
            pixel = self.pixel_size.value or None
            row = measure_lesion(mask, image if image.shape[:2] == mask.shape else None, pixel)
        except Exception as err:  # noqa: BLE001 - measuring must never break painting
            self.note.value = f"cannot measure '{layer.name}': {err}"
            return None
        layer.features = pd.DataFrame([{"index": 1, **row}])
        if self.layer.value == layer.name:
            self._fill_table(row)
        return row

    def refresh(self) -> None:
        name = self.layer.value
        if name and name in self.viewer.layers:
            self.measure(self.viewer.layers[name])  # fills the table for the chosen layer

    def _fill_table(self, row: dict) -> None:
        keys = [k for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))]
        self.table.value = {"descriptor": keys, "value": [_show(row[k]) for k in keys]}
        self.note.value = DISCLAIMER

    def export(self, *_) -> Path | None:
        """Write the descriptors of every measured Labels layer to the chosen CSV."""
        path = Path(self.csv_path.value)
        if str(self.csv_path.value) in ("", ".") or path.is_dir():
            show_error("choose a CSV file to export to")
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
                rows.append({"id": name, **row})
        if not rows:
            show_error("nothing measured yet: segment an image first")
            return None
        try:
            write_measurements_csv(rows, path, overwrite=False)
        except FileExistsError as err:
            show_error(str(err))
            return None
        show_info(f"measurements of {len(rows)} lesion(s) written to {path}")
        return path
