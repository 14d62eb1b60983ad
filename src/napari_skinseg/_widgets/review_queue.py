"""Curate's review queue: which image Next opens, worst first if the person asks, and Accept.

Worst first ranks the images left to curate by predicted Dice (each computed once, by the model
worker), so the masks that most likely need correcting come first. Accept saves the model's masks
of the rest, at or above a chosen predicted Dice, as curated pairs without a look (the folder
remembers them as accepted unseen).

The queue runs its jobs through the Curate dock, which runs one job at a time and says so.
"""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import ComboBox, FloatSpinBox, PushButton
from napari.utils.notifications import show_info

from .fields import chosen_path, shrinkable
from .session import SESSION

FOLDER_ORDER, WORST_FIRST = "folder order", "worst first (predicted Dice)"


class ReviewQueue:
    """The order of the images left to curate, their predicted Dice and accepting the rest.

    ``dock``: the Curate dock. The queue uses its one job at a time (``_busy``, ``_run``), its
    error reporting (``_guard``) and status line, the images left to curate (``_todo``), the
    image open now (``current``) and the curated folder (``folder``, ``update_count``).
    """

    def __init__(self, dock) -> None:
        self.dock = dock
        self.order = shrinkable(ComboBox(
            label="order", choices=[FOLDER_ORDER, WORST_FIRST], value=FOLDER_ORDER,
            tooltip="worst first: the images whose masks most likely need correcting (by "
                    "predicted Dice) come first"))
        self.accept_above = FloatSpinBox(label="accept above", value=0.9, min=0.5, max=0.99,
                                         step=0.01, tooltip="predicted Dice")
        self.accept_button = PushButton(text="Accept the rest above it")
        self.predicted: dict[Path, float | None] = {}  # predicted Dice per image
        self.ranking = False  # the dock's running job ranks the folder (worst first)
        self.after_ranking = None  # what a press during the ranking asked for (Next, Accept)
        self.accept_button.changed.connect(dock._guard(self.accept_rest))
        self.order.changed.connect(lambda *_: dock._guard(self.rank_if_needed)())

    @property
    def worst_first(self) -> bool:
        return self.order.value == WORST_FIRST

    def sort(self, todo: list[Path]) -> list[Path]:
        """``todo`` (in folder order) in the order chosen."""
        if self.worst_first:  # unknown estimates (unreadable files) go last
            todo.sort(key=lambda p: (self.predicted.get(p) is None, self.predicted.get(p) or 0.0))
        return todo

    def after(self, current: Path | None, todo: list[Path]) -> list[Path]:
        """The images Next tries, in turn, when ``current`` is open (``todo`` sorted)."""
        if self.worst_first:
            return [p for p in todo if p != current] + ([current] if current in todo else [])
        if current is not None and current in todo:  # go on, wrap round; this one last
            return todo[todo.index(current) + 1:] + todo[:todo.index(current) + 1]
        if current is not None:
            later = [p for p in todo if p.name > current.name]
            return later + [p for p in todo if p not in later]
        return todo

    def estimate(self, path: Path) -> str:
        value = self.predicted.get(path)
        return f"predicted Dice {value:.2f}; " if value is not None else ""

    def rank_if_needed(self, then=None) -> bool:
        """Worst first needs every image's predicted Dice: computed once per image, by the model
        worker, with a progress line. True when the ranking is complete."""
        dock = self.dock
        if not self.worst_first or chosen_path(dock.source_dir) is None:
            return True
        missing = [p for p in dock._todo() if p not in self.predicted]
        if not missing:
            return True
        if dock._busy(then):
            return False
        dock._set_status(f"ranking {len(missing)} images by predicted Dice ..."
                         + SESSION.model.first_use_note())
        self.ranking, self.after_ranking = True, then

        def got(item):
            self.predicted[Path(item["path"])] = item["predicted_dice"]
            dock._set_status(f"ranking by predicted Dice: {len([p for p in missing if p in self.predicted])}"
                             f"/{len(missing)}")

        ranked: list[bool] = []

        def stopped():
            n = len([p for p in missing if p in self.predicted])
            dock._set_status(f"ranking cancelled after {n} of {len(missing)} images; Next or "
                             "worst first ranks the rest")

        def done(_n):
            if any(p not in self.predicted for p in missing):  # it stopped between images
                stopped()
                return
            dock._set_status(f"ranked {len(missing)} images: worst first")
            ranked.append(True)

        def finished():  # only now is the ranking job no longer "running" (else then() is busy)
            after, self.ranking, self.after_ranking = self.after_ranking, False, None
            if ranked and after is not None:
                dock._guard(after)()

        dock._run("ranking", "review_folder", dict(paths=[str(p) for p in missing],
                                                   model=SESSION.model.job_arg),
                  yielded=got, returned=done, finished=finished, cancelled=stopped,
                  failed=lambda message: dock._set_status(f"cannot rank: {message}"))
        return False

    def accept_rest(self) -> None:
        """Save the model's masks of every remaining image whose predicted Dice is at least the
        chosen value as curated pairs (the one open now is left to the person)."""
        dock = self.dock
        if dock._busy(self.accept_rest):  # one job at a time: Next must know when this image's job is done
            return
        if not self.worst_first:
            self.order.value = WORST_FIRST
        if not self.rank_if_needed(then=self.accept_rest):
            return
        limit = round(self.accept_above.value, 2)
        chosen = [p for p in dock._todo() if p != dock.current
                  and (self.predicted.get(p) or 0.0) >= limit]
        if not chosen:
            dock._set_status(f"no remaining image has a predicted Dice of {limit:.2f} or more")
            return
        folder = dock.folder
        dock._set_status(f"accepting {len(chosen)} images (predicted Dice ≥ {limit:.2f}) ..."
                         + SESSION.model.first_use_note())

        def done(n):
            left = dock.update_count()
            message = (f"accepted {n} image(s) with predicted Dice ≥ {limit:.2f} as curated "
                       f"({left} curated pairs)")
            dock._set_status(message)
            show_info(message)

        dock._run("accepting", "accept_as_curated", dict(
            paths=[str(p) for p in chosen], curated=str(folder.root), model=SESSION.model.job_arg,
            post=SESSION.post.config), returned=done,
            cancelled=lambda: dock._set_status(f"accepting cancelled ({dock.update_count()} "
                                               "curated pairs)"),
            failed=lambda message: dock._set_status(f"cannot accept: {message}"))
