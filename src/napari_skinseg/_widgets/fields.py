"""Small pieces every dock uses: reading path fields, the model-in-use line, asking questions."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from magicgui.widgets import ComboBox, Container, FileEdit, Label, Select

from .layers import layer_key
from .session import SESSION
from .status_label import status_label


def chosen_path(field: FileEdit) -> Path | None:
    """The path in a FileEdit, or None when the field is empty.

    An empty FileEdit reads as ``Path(".")`` - the folder napari was started from - which must
    never stand in for "nothing chosen".
    """
    text = str(field.value).strip() if field.value is not None else ""
    if text in ("", "."):
        return None
    return Path(text).expanduser().absolute()


def required_folder(field: FileEdit, what: str) -> Path:
    path = chosen_path(field)
    if path is None:
        raise ValueError(f"choose the {what} first")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file; choose the {what} (a folder)")
    if not path.is_dir():
        raise ValueError(f"the {what} {path} does not exist")
    return path


def follow(signal, widget, callback: Callable[..., None]) -> None:
    """Connect ``callback`` to a session-wide signal for as long as ``widget`` exists.

    The session outlives every dock (a dock can be closed and opened again), so a callback
    whose widget is gone disconnects itself instead of touching a deleted Qt object.
    """
    def relay(*args):
        try:
            callback(*args)
        except RuntimeError as err:
            if "deleted" not in str(err):
                raise
            signal.disconnect(relay)

    signal.connect(relay)
    widget.native.destroyed.connect(lambda *_: signal.disconnect(relay, missing_ok=True))


def follow_layer_names(viewer, choice) -> None:
    """Keep a list of layer names (a Select or ComboBox) true when a layer is renamed: the new
    name takes the old one's place among the choices and in what is chosen. (napari resets a
    dock's choices on a rename first, which drops the old name from what is chosen.)"""
    chosen: dict[int, str] = {}  # the chosen layers (by identity) and the names they had

    def layers() -> dict:
        return {layer_key(layer): layer for layer in viewer.layers}

    def remember(*_) -> None:
        now, value = layers(), choice.value
        names = set(value) if isinstance(value, (list, tuple)) else {value}
        # dropped by the reset during a rename, not by the person: still chosen
        renamed = {key: name for key, name in chosen.items()
                   if key in now and now[key].name != name}
        chosen.clear()
        chosen.update({key: layer.name for key, layer in now.items() if layer.name in names})
        chosen.update(renamed)

    def rename(*_) -> None:
        try:
            now = layers()
            names = [now[key].name for key in chosen if key in now]
            choice.reset_choices()
            names = [name for name in names if name in choice.choices]
            if isinstance(choice, Select):
                choice.value = names
            elif names:
                choice.value = names[0]
        except RuntimeError as err:  # the dock was closed
            if "deleted" not in str(err):
                raise

    def watch(layer) -> None:
        layer.events.name.connect(rename)

    for layer in viewer.layers:
        watch(layer)
    viewer.layers.events.inserted.connect(lambda event: watch(event.value))
    choice.changed.connect(remember)
    remember()


def model_in_use_line() -> Label:
    """A status line that always names the model Segment and Curate use."""
    line = status_label(SESSION.model.describe())
    follow(SESSION.model.changed, line, lambda model: setattr(line, "value", model.describe()))
    return line


def shrinkable(combo: ComboBox, chars: int = 8) -> ComboBox:
    """A combo box as narrow as ``chars`` characters (longer choices are elided, and shown in
    full in its list): a combo as wide as its longest choice made the Curate dock wider than
    napari's dock, so its right edge, the Save & next button included, was cut off."""
    from qtpy.QtWidgets import QComboBox

    combo.native.setSizeAdjustPolicy(
        QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.native.setMinimumContentsLength(chars)
    return combo


def ask_yes_no(message: str) -> bool:
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(None, "napari-skinseg", message,
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


SAVE, DISCARD, STAY = "save", "discard", "stay"


def ask_save_discard(message: str) -> str:
    """Unsaved corrections: save them, discard them, or stay on this image."""
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox(QMessageBox.Icon.Warning, "napari-skinseg", message)
    save = box.addButton("Save and go on", QMessageBox.ButtonRole.AcceptRole)
    discard = box.addButton("Discard corrections", QMessageBox.ButtonRole.DestructiveRole)
    stay = box.addButton("Stay here", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(stay)
    box.exec()
    clicked = box.clickedButton()
    return SAVE if clicked is save else DISCARD if clicked is discard else STAY


class DockContainer(Container):
    """A dock's top container that scrolls, so every dock fits a 1080-pixel screen.

    napari docks a magicgui widget's ``.native``, which for a scrollable container is the inner
    widget (not the scroll area); here ``.native`` is the scroll area itself.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(scrollable=True, **kwargs)
        from qtpy.QtCore import Qt

        self.root_native_widget.setMinimumHeight(200)
        # A narrow dock scrolls sideways too, rather than cutting its content off.
        self.root_native_widget.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)

    @property
    def native(self):
        return self.root_native_widget


def plain_error(err: BaseException) -> str:
    """One sentence for a notification. Expected problems (bad input, files) keep their message;
    anything else is a bug: its traceback goes to the terminal, not into the person's face."""
    if isinstance(err, (ValueError, OSError)):
        return str(err) or type(err).__name__
    import sys
    import traceback

    traceback.print_exception(err, file=sys.stderr)
    return (f"something unexpected went wrong ({type(err).__name__}); the details were printed "
            "in the terminal napari was started from")
