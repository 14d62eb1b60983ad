"""Train dock widget: a U-Net from Image + Labels layers or from a folder of curated pairs.

The training itself runs in the model worker (see ``training_controller``); this dock only
collects the settings, saves layer pairs to disk so the run can be repeated, and shows progress.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
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
from ..image_io import pair_arrays, write_image, write_mask
from ..pairs import PairFolder, pair_folders, unique_ids
from .fields import (
    DockContainer,
    chosen_path,
    follow,
    follow_layer_names,
    model_in_use_line,
    plain_error,
    required_folder,
)
from .jobs import fetch_devices
from .layers import image_array, image_for_labels, image_id, labels_array
from .session import SESSION
from .status_label import status_label
from .training_controller import TrainingController

LAYERS, FOLDER = "Image + Labels layers", "folder of curated pairs"
SCRATCH, BUNDLED, IN_USE, FILE = "scratch", "bundled model", "model in use", "model file"
DEFAULT_HOME = Path.home() / "napari-skinseg"


def default_model_path() -> Path:
    return DEFAULT_HOME / "models" / f"model-{dt.datetime.now():%Y%m%d-%H%M%S}.pt"


def free_path(path: Path) -> Path:
    """``path``, or ``<stem>-2.pt``, ``<stem>-3.pt``, ... : never an existing file, nor one whose
    checkpoint or layer-pair folder (``<stem>_data``, left by an earlier run) exists."""
    candidate, i = path, 2
    while (candidate.exists() or candidate.with_name(candidate.name + ".checkpoint.pt").exists()
           or candidate.with_name(candidate.stem + "_data").exists()):
        candidate, i = path.with_name(f"{path.stem}-{i}{path.suffix}"), i + 1
    return candidate


class TrainWidget(DockContainer):
    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self.viewer = viewer
        defaults = TrainConfig()
        self.source = RadioButtons(label="train on", choices=[LAYERS, FOLDER], value=LAYERS)
        self.labels_layers = Select(label="labels layers", choices=self._labels_choices,
                                    tooltip="Each Labels layer is paired with its image by name "
                                            "('<image> prediction' / '<image> mask') or by size")
        self.labels_layers.native.setMaximumHeight(90)
        self.folder = FileEdit(label="curated folder", mode="d",
                               tooltip="A folder with images/ and masks/ (<id>_segmentation.png)")
        self.device = ComboBox(label="device", choices=list(SESSION.devices), value="auto",
                               tooltip="only devices that work on this machine are listed")
        self.epochs = SpinBox(label="epochs", value=defaults.epochs, min=1, max=1000)
        self.advanced = CheckBox(label="more settings", value=False)
        self.batch_size = SpinBox(label="batch size", value=defaults.batch_size, min=1, max=128)
        self.learning_rate = LineEdit(label="learning rate", value=str(defaults.learning_rate))
        self.size = ComboBox(label="working size", choices=[128, 192, 256, 320, 384, 448, 512],
                             value=defaults.size)
        self.val_fraction = FloatSpinBox(label="validation fraction", value=defaults.val_fraction,
                                         min=0.05, max=0.5, step=0.05)
        self.seed = SpinBox(label="seed", value=defaults.seed, min=0, max=2**31 - 1)
        self.augment = CheckBox(label="augmentation", value=defaults.augment)
        self.start_from = ComboBox(label="start from", choices=self._start_choices,
                                   value=BUNDLED if has_bundled_model() else SCRATCH)
        self.init_file = FileEdit(label="starting model", mode="r", filter="*.pt", visible=False)
        self.output = FileEdit(label="save model as", mode="w", filter="*.pt",
                               value=default_model_path())
        self.start_button = PushButton(text="Start training")
        self.status = status_label("")
        self.model_line = model_in_use_line()
        self.command = TextEdit(label="repeat headless", value="", visible=False)
        self.command.native.setReadOnly(True)
        self.command.native.setMaximumHeight(64)
        self.controller = TrainingController(self._set_running, self._set_status)
        self._advanced_widgets = [self.batch_size, self.learning_rate, self.size,
                                  self.val_fraction, self.seed, self.augment]
        self.extend([self.source, self.labels_layers, self.folder, self.device, self.epochs,
                     self.start_from, self.init_file, self.advanced, *self._advanced_widgets,
                     self.output, self.start_button, self.status, self.controller,
                     self.model_line, self.command])

        self.source.changed.connect(self._update_visibility)
        self.start_from.changed.connect(self._update_visibility)
        self.advanced.changed.connect(self._update_visibility)
        self.start_button.changed.connect(self._start_or_cancel)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.reset_choices)
        follow_layer_names(viewer, self.labels_layers)
        follow(SESSION.model.changed, self, lambda *_: self.reset_choices())
        self._update_visibility()
        fetch_devices(self.device)

    # -- state -------------------------------------------------------------------------------
    def _labels_choices(self, _widget=None) -> list[str]:
        return [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]

    def _start_choices(self, _widget=None) -> list[str]:
        choices = [SCRATCH] + ([BUNDLED] if has_bundled_model() else [])
        if not SESSION.model.is_bundled:  # only once a model other than the bundled one is in use
            choices.append(IN_USE)
        return choices + [FILE]

    def _update_visibility(self, *_):
        from_layers = self.source.value == LAYERS
        self.labels_layers.visible = from_layers
        self.folder.visible = not from_layers
        self.init_file.visible = self.start_from.value == FILE
        for widget in self._advanced_widgets:
            widget.visible = self.advanced.value

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
        if choice == IN_USE:
            return SESSION.model.path or bundled_model_path()
        if choice == FILE:
            path = chosen_path(self.init_file)
            if path is None or not path.is_file():
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
            show_error(f"cannot start training: {plain_error(err)}")
            self._set_status(f"cannot start training: {plain_error(err)}")

    def _output_path(self) -> Path:
        out = chosen_path(self.output) or default_model_path()
        if out.is_dir():
            out = out / default_model_path().name
        if out.suffix != ".pt":
            out = out.with_suffix(".pt")
        out = free_path(out)  # never overwrite an earlier model
        self.output.value = out
        return out

    def start(self) -> None:
        config = self.config()
        init = self._init_model()
        if self.source.value == LAYERS:
            pairs = self._layer_pairs()  # checked before anything is written
            out = self._output_path()
            data = self._export_layer_pairs(pairs, out)
            images_dir, masks_dir = data.images, data.masks
            sources = [f"napari layers, saved to {data.root}"]
        else:
            folder = required_folder(self.folder, "folder of curated pairs")
            images_dir, masks_dir = pair_folders(folder)
            sources = [str(folder)]
            out = self._output_path()
        # The command a person can paste: absolute paths, and its own --out so it runs verbatim
        # next to this run's model.
        repeat_out = free_path(out.with_name(out.stem + "-repeat.pt"))
        self.command.value = config.cli_command(str(images_dir.absolute()), str(masks_dir.absolute()),
                                                str(repeat_out), init=str(init) if init else None)
        self.command.visible = True
        self.controller.start(images_dir, masks_dir, config, out, init=init, sources=sources)

    def _layer_pairs(self) -> list[tuple]:
        names = list(self.labels_layers.value)
        if not names:
            raise ValueError("select at least one Labels layer (paint the lesion on a Labels layer "
                             "over its image)")
        pairs = []
        for name in names:
            layer = self.viewer.layers[name]
            image_layer = image_for_labels(self.viewer, layer)
            image, mask = pair_arrays(image_array(image_layer), labels_array(layer), name)
            if not mask.any():
                raise ValueError(f"no lesion painted in '{name}': paint the lesion (label > 0) first")
            pairs.append((image, mask, image_id(image_layer)))
        if len(pairs) == 1:
            raise ValueError("one pair is not enough: training holds one pair out for validation, "
                             "so select at least two Labels layers")
        return pairs

    @staticmethod
    def _export_layer_pairs(pairs: list[tuple], out: Path) -> PairFolder:
        """Save the pairs beside the model, so the run can be repeated from the command line and
        the data is kept with the model."""
        data = PairFolder(out.with_name(out.stem + "_data"))
        # layers of one name, or names that become one id (a, a?), each get a file of their own
        ids = unique_ids([stem for _, _, stem in pairs])
        for (image, label, _), stem in zip(pairs, ids):
            write_image(data.image_path(stem), image)
            write_mask(data.mask_path(stem), label > 0)
        return data
