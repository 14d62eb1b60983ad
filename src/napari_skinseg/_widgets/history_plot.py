"""A matplotlib canvas in the dock: train/validation loss and accuracy/Dice per epoch."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

from ..history import draw_history

PLACEHOLDER = "loss and accuracy curves appear here\nafter the first epoch"


class HistoryPlot(FigureCanvasQTAgg):
    def __init__(self) -> None:
        self.figure_ = Figure(figsize=(3.6, 3.6), dpi=90)
        super().__init__(self.figure_)
        self.setMinimumHeight(300)
        self.history: list = []
        self.draw_history([])

    def draw_history(self, history: list) -> None:
        self.history = list(history)
        if self.history:
            draw_history(self.figure_, self.history, stacked=True)
        else:  # no empty axes before there is anything to plot
            self.figure_.clear()
            self.figure_.text(0.5, 0.5, PLACEHOLDER, ha="center", va="center", color="0.5",
                              fontsize=9)
        self.draw_idle()
