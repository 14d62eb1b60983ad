"""What training reports while it runs: small, picklable, torch-free objects.

They cross the process boundary to napari's live plot and progress bar, so this module must never
import torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class EpochReport:
    """The paper's per-epoch figures plus validation Dice/Jaccard (at the working size)."""

    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    train_accuracy: float
    val_accuracy: float
    val_dice: float
    val_jaccard: float
    seconds: float
    learning_rate: float
    best: bool = False

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return (f"epoch {self.epoch}/{self.epochs}  loss {self.train_loss:.4f}  "
                f"acc {self.train_accuracy:.4f}  val_loss {self.val_loss:.4f}  "
                f"val_acc {self.val_accuracy:.4f}  val_dice {self.val_dice:.4f}  "
                f"val_jaccard {self.val_jaccard:.4f}  {self.seconds:.1f} s"
                + ("  *best" if self.best else ""))


@dataclass
class BatchProgress:
    epoch: int
    batch: int
    batches: int
    elapsed: float  # seconds since training started


@dataclass
class PairNotes:
    """What reading the training pairs left out or read with a caveat (skipped pairs with their
    reasons, odd mask values, image scaling), for the person who chose the folders: the model
    worker's training job sends it, and napari's training docks show it as one warning."""

    pairs: int  # pairs read
    skipped: list[str] = field(default_factory=list)  # "<file>: <reason>"
    warnings: list[str] = field(default_factory=list)

    def text(self, most: int = 5) -> str:
        lines = [f"{len(self.skipped)} of {self.pairs + len(self.skipped)} pairs skipped:"] \
            if self.skipped else []
        lines += self.skipped[:most] + ([f"... and {len(self.skipped) - most} more"]
                                        if len(self.skipped) > most else [])
        lines += self.warnings[:most] + ([f"... and {len(self.warnings) - most} more warnings"]
                                         if len(self.warnings) > most else [])
        return "\n".join(lines)


@dataclass
class TrainingSummary:
    """What a finished (or cancelled) training run leaves: the model file and its figures.

    ``validated`` is False when the run stopped before its first validation: such a model was
    never measured and must not replace a model in use.
    """

    model_path: str
    history: list[EpochReport]
    best_epoch: int
    cancelled: bool
    status: str
    val_names: list[str] = field(default_factory=list)
    val_dice: float | None = None
    #: Dice of the model it would replace, on the same validation pairs (None: nothing compared)
    baseline_dice: float | None = None
    baseline_name: str | None = None
    #: the pairs of the training folder that could not be used, as "<file>: <reason>"
    skipped: list[str] = field(default_factory=list)

    @property
    def validated(self) -> bool:
        return self.best_epoch >= 1
