"""Choosing the model in use (shared by every dock) and the device to run it on."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import ComboBox, Container, FileEdit
from napari.utils.notifications import show_error

from ..engines import ENGINES
from .fields import chosen_path, follow, model_in_use_line
from .jobs import fetch_devices, run_job
from .session import SESSION

BUNDLED, LAST_TRAINED, FILE = "bundled model", "last trained model", "model file"


class ModelChoice(Container):
    """Pick the bundled model, the last model trained in this session (once there is one) or a
    file; the worker checks a chosen file before it becomes the model in use."""

    def __init__(self) -> None:
        self.choice = ComboBox(label="model", choices=self._choices, value=BUNDLED)
        self.file = FileEdit(label="model file", mode="r", filter="*.pt", visible=False)
        self.device = ComboBox(label="device", choices=list(SESSION.devices), value="auto",
                               tooltip="only devices that work on this machine are listed")
        self.engine = ComboBox(label="engine", choices=list(ENGINES), value="auto",
                               tooltip="what runs the network: auto (on a CPU the int8 copy where "
                                       "it is faster here, else onnx), onnx (ONNX Runtime fp32: "
                                       "torch's masks), onnx-int8 (its quantised copy: masks "
                                       "within about 0.4 % Dice of fp32's) or torch")
        self.line = model_in_use_line()
        super().__init__(widgets=[self.choice, self.file, self.device, self.engine, self.line],
                         labels=True)
        self._following = False
        self.choice.changed.connect(self._on_choice)
        self.file.changed.connect(self._on_choice)
        follow(SESSION.model.changed, self, self._follow)
        fetch_devices(self.device)

    def _choices(self, _widget=None) -> list[str]:
        return [BUNDLED] + ([LAST_TRAINED] if SESSION.model.trained else []) + [FILE]

    def _follow(self, model) -> None:
        """Show the session's model in use (it may have been changed by training)."""
        self._following = True
        try:
            self.reset_choices()
            if model.is_bundled:
                self.choice.value = BUNDLED
            elif model.trained and model.path == model.trained[-1]:
                self.choice.value = LAST_TRAINED
            else:
                self.choice.value = FILE
                if chosen_path(self.file) != model.path:
                    self.file.value = model.path
            self.file.visible = self.choice.value == FILE
        finally:
            self._following = False

    def _on_choice(self, *_) -> None:
        if self._following:
            return
        choice = self.choice.value
        self.file.visible = choice == FILE
        if choice == BUNDLED:
            self._check_and_use(None)
        elif choice == LAST_TRAINED and SESSION.model.trained:
            self._check_and_use(SESSION.model.trained[-1])
        elif choice == FILE and chosen_path(self.file) is not None:
            self._check_and_use(chosen_path(self.file))

    def _check_and_use(self, path: Path | None) -> None:
        if path is not None and not path.is_file():
            show_error(f"model file {path} does not exist")
            return
        run_job("model_info", {"model": str(path) if path else None},
                returned=lambda info: SESSION.model.use(path, info),
                failed=lambda message: setattr(self.line, "value",
                                               f"{SESSION.model.describe()} — not changed: {message}"))
