"""A matplotlib canvas in the dock: train/validation loss and accuracy/Dice per epoch.

matplotlib is imported when the first epoch is drawn, not when the dock opens: its import alone
held napari up for about half a second when a person opened the Train dock."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

PLACEHOLDER = "loss and accuracy curves appear here after the first epoch"


class HistoryPlot(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setMinimumHeight(300)
        self.history: list = []
        self.canvas = None  # the matplotlib canvas, made for the first epoch
        self.placeholder = QLabel(PLACEHOLDER)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setStyleSheet("color: grey")
        self.placeholder.setWordWrap(True)  # else its text alone widens the dock past napari's
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.placeholder)

    def draw_history(self, history: list) -> None:
        self.history = list(history)
        if self.history and self.canvas is None:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure

            self.canvas = FigureCanvasQTAgg(Figure(figsize=(3.6, 3.6), dpi=90))
            self.layout().addWidget(self.canvas)
        if self.canvas is not None:
            self.canvas.figure.clear()
            if self.history:
                from ..history import draw_history

                draw_history(self.canvas.figure, self.history, stacked=True)
            self.canvas.draw_idle()
        self.placeholder.setVisible(not self.history)
        if self.canvas is not None:
            self.canvas.setVisible(bool(self.history))
