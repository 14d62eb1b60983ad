"""One training run in the model worker, driving a progress bar, a live plot and the decision
whether the new model replaces the one in use. Used by the Train and Curate docks.

A new model replaces the model in use only after it was validated, and only when it scores at
least as well as the model in use on the same validation pairs; otherwise the person sees both
numbers and may switch with "Use the new model".
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from magicgui.widgets import Container, ProgressBar, PushButton
from napari.utils import progress
from napari.utils.notifications import show_info, show_warning

from ..config import TrainConfig
from ..reports import BatchProgress, EpochReport, PairNotes, TrainingSummary
from .history_plot import HistoryPlot
from .jobs import JobRunner, run_job
from .session import SESSION
from .status_label import status_label


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def adoption(summary: TrainingSummary, chosen_meanwhile: str | None = None) -> tuple[bool, str]:
    """Whether the new model should replace the model in use, and the sentence that says why.
    ``chosen_meanwhile``: the model put in use while it trained (by the person, or another
    training), which it was not compared with and does not replace by itself."""
    name = Path(summary.model_path).name
    if not summary.validated:
        return False, (f"{name} stopped before its first validation, so it was never measured: "
                       "kept on disk, not used")
    how = "cancelled; " if summary.cancelled else ""
    new = f"{name}: val Dice {summary.val_dice:.3f}"
    pairs = f"on the same {len(summary.val_names)} validation pair(s)"
    old = f"{summary.baseline_name}: {summary.baseline_dice:.3f}" \
        if summary.baseline_dice is not None else ""
    if chosen_meanwhile is not None:
        return False, (f"{how}{new}{f' vs {old} {pairs}' if old else ''}; {chosen_meanwhile}, "
                       "put in use while it trained, stays in use (\"Use the new model\" "
                       "switches anyway)")
    if summary.baseline_dice is None:
        return True, f"{how}{new}; now in use"
    if summary.val_dice >= summary.baseline_dice:
        return True, f"{how}{new} vs {old} {pairs}; the new model is now in use"
    return False, (f"{how}{new} vs {old} {pairs}; {summary.baseline_name} stays in use "
                   "(\"Use the new model\" switches anyway)")


class TrainingController(Container):
    """Progress bar, live plot, result line and the "Use the new model" button of a dock."""

    def __init__(self, on_running: Callable[[bool], None], on_status: Callable[[str], None]) -> None:
        self.progress_bar = ProgressBar(value=0, min=0, max=1, visible=False)
        self.result_line = status_label("")
        self.use_new = PushButton(text="Use the new model", visible=False)
        super().__init__(widgets=[self.progress_bar, self.result_line, self.use_new], labels=False)
        self.plot = HistoryPlot()
        self.native.layout().addWidget(self.plot)
        self.on_running, self.on_status = on_running, on_status
        self.runner: JobRunner | None = None
        self.summary: TrainingSummary | None = None
        self._bar: progress | None = None
        self._history: list[EpochReport] = []
        self._epochs = 0
        self._in_use_at_start: Path | None = None
        self.use_new.changed.connect(self.use_new_model)

    @property
    def running(self) -> bool:
        return self.runner is not None and self.runner.running

    def start(self, images_dir: Path, masks_dir: Path, config: TrainConfig, out: Path,
              init: Path | None = None, sources: list[str] | None = None) -> None:
        self._epochs = config.epochs
        self._in_use_at_start = SESSION.model.path  # what the new model is compared with
        self._history = []
        self.summary = None
        self.plot.draw_history([])
        self.result_line.value = ""
        self.use_new.visible = False
        self.progress_bar.max, self.progress_bar.value = max(config.epochs, 1), 0
        self.progress_bar.label = "reading data"
        self.progress_bar.visible = True
        self._bar = progress(total=config.epochs, desc="training: reading data")
        self.on_running(True)
        kwargs = dict(images_dir=str(images_dir), masks_dir=str(masks_dir), config=config,
                      out=str(out), init=str(init) if init else None, sources=sources,
                      compare=True, baseline=SESSION.model.job_arg)
        self.runner = run_job("train", kwargs, yielded=self._on_event, returned=self._on_summary,
                              failed=lambda message: self.on_status(f"training failed: {message}"),
                              finished=self._finished, patient=True,  # it stops within a batch
                              cancelled=lambda: self.on_status(
                                  "training cancelled: the model worker stopped answering, so "
                                  "it was ended"))

    def cancel(self) -> None:
        if self.runner is not None:
            self.runner.cancel()
            self.on_status("cancelling after the current batch ...")

    def _on_event(self, event) -> None:
        if isinstance(event, str):
            self.on_status(event)
        elif isinstance(event, BatchProgress):
            total = event.batches * self._epochs
            done = (event.epoch - 1) * event.batches + event.batch
            left = f"{_clock(event.elapsed / max(done, 1) * (total - done))} left"
            text = f"epoch {event.epoch}/{self._epochs}, batch {event.batch}/{event.batches}, {left}"
            self.progress_bar.max = total
            self.progress_bar.value = done
            self.progress_bar.label = text
            if self._bar is not None:
                if self._bar.total != total:
                    self._bar.total = total
                self._bar.update(done - self._bar.n)
                self._bar.set_description(f"training epoch {event.epoch}/{self._epochs}, {left}")
        elif isinstance(event, PairNotes):  # the person learns which pairs were left out, and why
            show_warning(event.text())
        elif isinstance(event, EpochReport):
            self._history.append(event)
            self.plot.draw_history(self._history)
            self.on_status(event.line())

    def _on_summary(self, summary: TrainingSummary) -> None:
        self.summary = summary
        SESSION.model.trained.append(Path(summary.model_path))
        model = SESSION.model
        adopt, message = adoption(summary, None if model.path == self._in_use_at_start else
                                  model.path.name if model.path else "the bundled model")
        if adopt:
            self.use_new_model()
        else:
            self.use_new.visible = summary.validated
        if summary.skipped:  # e.g. a curated mask edited by hand; PairNotes named each one
            n = len(summary.skipped)
            message += f"; {n} pair{'s' if n != 1 else ''} left out (see the warning)"
        self.result_line.value = message
        self.on_status(f"training {'cancelled' if summary.cancelled else 'finished'}; "
                       f"saved to {summary.model_path}")
        show_info(message)

    def use_new_model(self, *_) -> None:
        summary = self.summary
        if summary is None:
            return
        # Only validated runs get here (adoption or the button), and those carry val_dice.
        SESSION.model.use(summary.model_path, {
            "name": Path(summary.model_path).name, "status": summary.status,
            "best_epoch": summary.best_epoch, "val_dice": summary.val_dice})
        self.use_new.visible = False

    def _finished(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.progress_bar.visible = False
        self.on_running(False)
