"""A matplotlib canvas in the dock: train/validation loss and accuracy/Dice per epoch."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

from ..history import draw_history


class HistoryPlot(FigureCanvasQTAgg):
    def __init__(self) -> None:
        self.figure_ = Figure(figsize=(4.2, 2.4), dpi=90)
        super().__init__(self.figure_)
        self.setMinimumHeight(220)
        self.history: list = []
        self.draw_history([])

    def draw_history(self, history: list) -> None:
        self.history = list(history)
        draw_history(self.figure_, self.history)
        self.draw_idle()
