"""Training history as CSV and as the paper's curves (loss and accuracy, train vs validation)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from .atomic import atomic_write, atomic_write_text

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy",
                   "val_dice", "val_jaccard", "seconds", "learning_rate")


def _rows(history: Sequence[Any]) -> list[dict]:
    return [h if isinstance(h, dict) else h.as_dict() for h in history]


def write_history_csv(history: Sequence[Any], path: str | Path) -> Path:
    """Write atomically (never a half-written or empty file under ``path``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(_rows(history))
    return atomic_write_text(path, buffer.getvalue())


def draw_history(figure, history: Sequence[Any], stacked: bool = False) -> None:
    """Draw loss (left, or top when ``stacked``: for a narrow dock) and accuracy/Dice per epoch
    into a matplotlib Figure."""
    rows = _rows(history)
    figure.clear()
    ax_loss, ax_acc = figure.subplots(2, 1, sharex=True) if stacked else figure.subplots(1, 2)
    epochs = [r["epoch"] for r in rows]
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in rows], "s-", label="validation")
    ax_loss.set_title("loss")
    ax_acc.plot(epochs, [r["train_accuracy"] for r in rows], "o-", label="train accuracy")
    ax_acc.plot(epochs, [r["val_accuracy"] for r in rows], "s-", label="val accuracy")
    ax_acc.plot(epochs, [r["val_dice"] for r in rows], "^--", label="val Dice")
    ax_acc.set_title("accuracy")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small" if stacked else "small")
        if epochs:
            ax.set_xticks(epochs if len(epochs) <= 12 else epochs[:: max(1, len(epochs) // 10)])
    figure.tight_layout()


def plot_history(history: Sequence[Any], path: str | Path) -> Path:
    """Save the training curves as a PNG (no GUI backend needed)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.6), dpi=100)
    draw_history(figure, history)
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
