"""Train dock widget: a U-Net from Image + Labels layers or from a folder of curated pairs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    LineEdit,
    PushButton,
    RadioButtons,
    Select,
    SpinBox,
    TextEdit,
)
from napari.layers import Labels
from napari.utils.notifications import show_error

from ..bundled import bundled_model_path, has_bundled_model
from ..config import TrainConfig
from ..dataset import samples_from_arrays, samples_from_folders
from ..devices import available_devices
from ..image_io import write_image, write_mask
from .history_plot import HistoryPlot
from .layers import image_array, image_for_labels, image_id, labels_array
from .state import MODEL
from .status_label import status_label
from .training_controller import TrainingController

LAYERS, FOLDER = "Image + Labels layers", "folder of curated pairs"
SCRATCH, BUNDLED, CURRENT, FILE = "scratch", "bundled model", "last trained model", "model file"
DEFAULT_HOME = Path.home() / "napari-skinseg"


def default_model_path() -> Path:
    return DEFAULT_HOME / "models" / f"model-{dt.datetime.now():%Y%m%d-%H%M%S}.pt"


def pair_folders(folder: Path) -> tuple[Path, Path]:
    """``folder/images`` + ``folder/masks`` when present, else one folder holding both."""
    if (folder / "images").is_dir() and (folder / "masks").is_dir():
        return folder / "images", folder / "masks"
    return folder, folder


class TrainWidget(Container):
    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self.viewer = viewer
        defaults = TrainConfig()
        self.source = RadioButtons(label="train on", choices=[LAYERS, FOLDER], value=LAYERS)
        self.labels_layers = Select(label="labels layers", choices=self._labels_choices,
                                    tooltip="Each Labels layer is paired with its image by name "
                                            "('<image> prediction' / '<image> mask') or by size")
        self.folder = FileEdit(label="curated folder", mode="d",
                               tooltip="A folder with images/ and masks/ (<id>_segmentation.png)")
        self.device = ComboBox(label="device", choices=list(available_devices()), value="auto")
        self.epochs = SpinBox(label="epochs", value=defaults.epochs, min=1, max=1000)
        self.batch_size = SpinBox(label="batch size", value=defaults.batch_size, min=1, max=128)
        self.learning_rate = LineEdit(label="learning rate", value=str(defaults.learning_rate))
        self.size = ComboBox(label="working size", choices=[128, 192, 256, 320, 384, 448, 512],
                             value=defaults.size)
        self.val_fraction = FloatSpinBox(label="validation fraction", value=defaults.val_fraction,
                                         min=0.05, max=0.5, step=0.05)
        self.seed = SpinBox(label="seed", value=defaults.seed, min=0, max=2**31 - 1)
        self.augment = CheckBox(label="augmentation", value=defaults.augment)
        starts = [SCRATCH, BUNDLED, CURRENT, FILE] if has_bundled_model() else [SCRATCH, CURRENT, FILE]
        self.start_from = ComboBox(label="start from", choices=starts,
                                   value=BUNDLED if has_bundled_model() else SCRATCH)
        self.init_file = FileEdit(label="starting model", mode="r", filter="*.pt", visible=False)
        self.output = FileEdit(label="save model as", mode="w", filter="*.pt",
                               value=default_model_path())
        self.start_button = PushButton(text="Start training")
        self.status = status_label("")
        self.command = TextEdit(label="repeat headless", value="")
        self.command.native.setReadOnly(True)
        self.command.native.setMaximumHeight(70)
        self.extend([self.source, self.labels_layers, self.folder, self.device, self.epochs,
                     self.batch_size, self.learning_rate, self.size, self.val_fraction, self.seed,
                     self.augment, self.start_from, self.init_file, self.output, self.start_button,
                     self.status, self.command])
        self.plot = HistoryPlot()
        self.native.layout().addWidget(self.plot)
        self.controller = TrainingController(self.plot, self._set_running, self._set_status)

        self.source.changed.connect(self._update_visibility)
        self.start_from.changed.connect(self._update_visibility)
        self.start_button.changed.connect(self._start_or_cancel)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.reset_choices)
        self._update_visibility()

    # -- state -------------------------------------------------------------------------------
    def _labels_choices(self, _widget=None) -> list[str]:
        return [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]

    def _update_visibility(self, *_):
        from_layers = self.source.value == LAYERS
        self.labels_layers.visible = from_layers
        self.folder.visible = not from_layers
        self.init_file.visible = self.start_from.value == FILE

    def _set_running(self, running: bool) -> None:
        self.start_button.text = "Cancel" if running else "Start training"

    def _set_status(self, text: str) -> None:
        self.status.value = text

    # -- actions -----------------------------------------------------------------------------
    def config(self) -> TrainConfig:
        try:
            lr = float(self.learning_rate.value)
        except ValueError:
            raise ValueError(f"learning rate must be a number (got {self.learning_rate.value!r})") from None
        return TrainConfig(epochs=self.epochs.value, batch_size=self.batch_size.value,
                           learning_rate=lr, size=int(self.size.value),
                           val_fraction=round(self.val_fraction.value, 4), seed=self.seed.value,
                           augment=self.augment.value, device=self.device.value)

    def _init_model(self) -> Path | None:
        choice = self.start_from.value
        if choice == BUNDLED:
            return bundled_model_path()
        if choice == CURRENT:
            if MODEL.path is None:
                raise ValueError("no model trained in this session yet; start from scratch or a file")
            return MODEL.path
        if choice == FILE:
            path = Path(self.init_file.value)
            if not path.is_file():
                raise ValueError("choose the model file to start from")
            return path
        return None

    def _start_or_cancel(self, *_):
        if self.controller.running:
            self.controller.cancel()
            return
        try:
            self.start()
        except Exception as err:  # noqa: BLE001 - shown to the user, never a traceback
            show_error(f"cannot start training: {err}")
            self._set_status(f"cannot start training: {err}")

    def start(self) -> None:
        config = self.config()
        init = self._init_model()
        out = Path(self.output.value)
        if out.suffix != ".pt":
            out = out.with_suffix(".pt")
        if out.exists():
            out = default_model_path()  # never overwrite an earlier model
            self.output.value = out
        if self.source.value == LAYERS:
            data_dir = self._export_layer_pairs(out)
            images_dir, masks_dir = data_dir / "images", data_dir / "masks"
            sources = [f"napari layers, saved to {data_dir}"]
        else:
            folder = Path(self.folder.value)
            if not folder.is_dir():
                raise ValueError("choose the folder of curated pairs")
            images_dir, masks_dir = pair_folders(folder)
            sources = [str(folder)]
        self.command.value = config.cli_command(str(images_dir), str(masks_dir), str(out),
                                                init=str(init) if init else None)
        self.controller.start(lambda: samples_from_folders(images_dir, masks_dir, config.size),
                              config, out, init=init, sources=sources)

    def _export_layer_pairs(self, out: Path) -> Path:
        """Check the chosen layers and save them as pairs beside the model, so the run can be
        repeated from the command line and the data is kept with the model."""
        names = list(self.labels_layers.value)
        if not names:
            raise ValueError("select at least one Labels layer (paint the lesion on a Labels layer "
                             "over its image)")
        images, labels, ids = [], [], []
        for name in names:
            layer = self.viewer.layers[name]
            image_layer = image_for_labels(self.viewer, layer)
            image, label = image_array(image_layer), labels_array(layer)
            samples_from_arrays([image], [label], size=32, names=[name])  # validates the pair
            if not (label > 0).any():
                raise ValueError(f"no lesion painted in '{name}': paint the lesion (label > 0) first")
            images.append(image)
            labels.append(label)
            ids.append(image_id(image_layer))
        if len(images) == 1:
            raise ValueError("one pair is not enough: training holds one pair out for validation, "
                             "so select at least two Labels layers")
        data_dir = out.with_name(out.stem + "_data")
        for i, (image, label, stem) in enumerate(zip(images, labels, ids)):
            stem = stem if ids.count(stem) == 1 else f"{stem}_{i}"
            write_image(data_dir / "images" / f"{stem}.png", image)
            write_mask(data_dir / "masks" / f"{stem}_segmentation.png", label > 0)
        return data_dir
