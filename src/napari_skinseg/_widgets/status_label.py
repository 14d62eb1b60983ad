"""A word-wrapping label for status lines, so long messages never widen a dock widget."""

from __future__ import annotations

from magicgui.widgets import Label
from qtpy.QtWidgets import QSizePolicy


def status_label(text: str = "") -> Label:
    label = Label(value=text)
    label.native.setWordWrap(True)
    label.native.setMinimumWidth(50)
    label.native.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
    return label
