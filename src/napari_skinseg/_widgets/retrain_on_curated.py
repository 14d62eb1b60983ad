"""Curate's Retrain on curated: fine-tune a model on the curated folder's pairs.

It starts from the model in use (or the bundled one) with that model's settings and a lower,
constant learning rate; the TrainingController runs the training and decides whether the new
model replaces the one in use.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable

from magicgui.widgets import ComboBox, PushButton, SpinBox
from napari.utils.notifications import show_warning

from ..bundled import bundled_model_path, has_bundled_model
from ..config import FINE_TUNE_LEARNING_RATE, TrainConfig
from ..pairs import PairFolder
from .jobs import JobRunner, run_job
from .session import SESSION
from .training_controller import TrainingController

BASE, IN_USE = "bundled model", "model in use"
FINE_TUNE_LR = FINE_TUNE_LEARNING_RATE


class RetrainOnCurated:
    """The retraining widgets (placed by the dock) and what the button does.

    ``folder``: the curated folder (raises ValueError when none is chosen); ``count``: counts
    its pairs and shows the count; ``set_status``: the dock's status line; ``guard``: wraps an
    action so that its error is shown, not raised.
    """

    def __init__(self, folder: Callable[[], PairFolder], count: Callable[[], int],
                 set_status: Callable[[str], None], guard: Callable) -> None:
        self._folder, self._count, self._set_status, self._guard = folder, count, set_status, guard
        self.start_from = ComboBox(label="retrain from", choices=[BASE, IN_USE], value=IN_USE,
                                   tooltip="bundled: fine-tune the bundled model; in use: "
                                           "continue from the model Segment and Curate use")
        self.epochs = SpinBox(label="epochs", value=10, min=1, max=1000)
        self.retrain_button = PushButton(text="Retrain on curated")
        self.controller = TrainingController(self._set_running, set_status)
        self._preparing: JobRunner | None = None  # reading the starting model before a retraining
        self.retrain_button.changed.connect(self._retrain_or_cancel)

    @property
    def widgets(self) -> list:
        return [self.start_from, self.epochs, self.retrain_button, self.controller]

    def _set_running(self, running: bool) -> None:
        self.retrain_button.text = "Cancel" if running else "Retrain on curated"

    def _retrain_or_cancel(self, *_):
        if self.controller.running:
            self.controller.cancel()
            return
        if self._preparing is not None and self._preparing.running:  # reading the model's settings
            show_warning("retraining is starting; one moment")
            return
        self._guard(self.retrain)()

    def retrain(self) -> None:
        n = self._count()
        if n < 2:
            raise ValueError(f"retraining needs at least 2 curated pairs (have {n}): save more "
                             "corrected masks first")
        folder = self._folder()
        if self.start_from.value == IN_USE and SESSION.model.path is not None:
            init = SESSION.model.path
        else:
            init = bundled_model_path() if has_bundled_model() else None
        out = folder.root / "models" / f"retrained-{dt.datetime.now():%Y%m%d-%H%M%S}.pt"
        self._set_status(f"retraining on {n} curated pairs from {init.name if init else 'scratch'} ...")

        def start(info):
            # Fine-tuning: the starting model's settings, a lower constant rate, so a few
            # curated pairs adjust the model instead of overwriting it (as in
            # benchmarks/data_efficiency.py).
            config = info["config"].replace(epochs=self.epochs.value, lr_schedule="constant",
                                            device="auto", learning_rate=FINE_TUNE_LR)
            self.controller.start(folder.images, folder.masks, config, out, init=init,
                                  sources=[str(folder.root)])

        if init is None:
            start({"config": TrainConfig(epochs=self.epochs.value)})
            return
        self._preparing = run_job("model_info", {"model": str(init)}, returned=start,
                                  failed=lambda message: self._set_status(f"cannot retrain: {message}"))
