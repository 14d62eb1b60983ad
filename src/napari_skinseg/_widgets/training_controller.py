"""One training run in a thread worker, driving a napari progress bar and a live history plot.

Used by both the Train and the Curate widgets; holds no widgets of its own.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from napari.utils import progress
from napari.utils.notifications import show_info

from ..config import TrainConfig
from ..dataset import SampleSet
from ..training import BatchProgress, EpochReport, TrainingResult, train
from .history_plot import HistoryPlot
from .state import MODEL
from .workers import start_worker


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class TrainingController:
    def __init__(self, plot: HistoryPlot, on_running: Callable[[bool], None],
                 on_status: Callable[[str], None]) -> None:
        self.plot = plot
        self.on_running = on_running
        self.on_status = on_status
        self.worker = None
        self.result: TrainingResult | None = None
        self._cancel = threading.Event()
        self._bar: progress | None = None
        self._history: list[EpochReport] = []
        self._epochs = 0

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, prepare: Callable[[], SampleSet], config: TrainConfig, out: Path,
              init: Path | None = None, sources: list[str] | None = None,
              on_done: Callable[[TrainingResult], None] | None = None) -> None:
        """``prepare`` runs in the worker thread (reading and resizing the pairs)."""
        self._cancel.clear()
        self._epochs = config.epochs
        self._history = []
        self.result = None
        self.plot.draw_history([])

        def body():
            samples = prepare()
            yield f"training on {len(samples)} pairs ..."
            return (yield from train(samples, config, out, init=init, cancel=self._cancel.is_set,
                                     yield_batches=True, sources=sources))

        def returned(result: TrainingResult) -> None:
            self.result = result
            MODEL.set(result.model_path)
            state = "cancelled; best model so far" if result.cancelled else "finished; best model"
            message = f"training {state} (epoch {result.best_epoch}) saved to {result.model_path}"
            self.on_status(message)
            show_info(message)
            if on_done:
                on_done(result)

        self._bar = progress(total=config.epochs, desc="training: reading data")
        self.on_running(True)
        self.worker = start_worker(body, yielded=self._on_event, returned=returned,
                                   finished=self._finished)

    def cancel(self) -> None:
        self._cancel.set()
        self.on_status("cancelling after the current batch ...")

    def _on_event(self, event) -> None:
        if isinstance(event, str):
            self.on_status(event)
        elif isinstance(event, BatchProgress):
            total = event.batches * self._epochs
            done = (event.epoch - 1) * event.batches + event.batch
            if self._bar.total != total:
                self._bar.total = total
            self._bar.update(done - self._bar.n)
            left = event.elapsed / max(done, 1) * (total - done)
            self._bar.set_description(f"training epoch {event.epoch}/{self._epochs}, "
                                      f"{_clock(left)} left")
        elif isinstance(event, EpochReport):
            self._history.append(event)
            self.plot.draw_history(self._history)
            self.on_status(event.line())

    def _finished(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.worker = None
        self.on_running(False)
