"""Curate dock widget: the human-in-the-loop cycle.

Next image (opened and segmented with the model in use) -> correct the prediction with napari's
paint tools -> Save & next -> ... -> Retrain on curated. A correction is never lost or filed
under another image: saving takes the layer being worked on and names the image it saved; moving
on with unsaved corrections asks first; Previous goes back (to the saved mask, if there is one).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable

import napari
import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning

from ..bundled import bundled_model_path, has_bundled_model
from ..config import FINE_TUNE_LEARNING_RATE, TrainConfig
from ..image_io import ImageReadError, read_image, read_mask
from ..pairs import (PairFolder, curated_id, is_mask_name, is_result_extra, list_images,
                     split_same_ids)
from .click_fix import BOX_SUFFIX, CLICKS_SUFFIX, ClickFixPanel
from .fields import (
    SAVE,
    STAY,
    DockContainer,
    ask_save_discard,
    ask_yes_no,
    chosen_path,
    follow,
    model_in_use_line,
    plain_error,
    required_folder,
    shrinkable,
)
from .jobs import JobRunner, run_job
from .layers import (
    AUTO_HASH_KEY,
    PREDICTION_COLOURS,
    PREDICTION_SUFFIX,
    PROBABILITY_SUFFIX,
    SAVED_HASH_KEY,
    batched,
    bring_to_top,
    image_array,
    image_for_labels,
    image_id,
    labels_array,
    labels_for_image,
    layers_made_for,
    made_for,
    mark_saved,
    mask_hash,
    show_prediction,
    unsaved_corrections,
)
from .session import SESSION
from .status_label import status_label
from .train_widget import DEFAULT_HOME
from .training_controller import TrainingController

BASE, IN_USE = "bundled model", "model in use"
FOLDER_ORDER, WORST_FIRST = "folder order", "worst first (predicted Dice)"
FROM_SAVED_KEY = "skinseg_from_saved_mask"  # a Labels layer Back/Next opened from the curated folder
FINE_TUNE_LR = FINE_TUNE_LEARNING_RATE


class CurateWidget(DockContainer):
    #: asked before an existing curated pair is replaced; tests replace it
    confirm_overwrite: Callable[[str], bool] = staticmethod(ask_yes_no)
    #: asked when moving on with unsaved corrections: "save", "discard" or "stay"
    ask_unsaved: Callable[[str], str] = staticmethod(ask_save_discard)

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self.viewer = viewer
        self.curated_dir = FileEdit(label="curated folder", mode="d", value=DEFAULT_HOME / "curated")
        self.source_dir = FileEdit(label="image folder", mode="d",
                                   tooltip="the folder of images to curate: Next opens them one by one")
        self.model_line = model_in_use_line()
        self.post_line = status_label(SESSION.post.describe())
        self.target = status_label("")
        self.previous_button = PushButton(text="◀ Back")
        self.next_button = PushButton(text="Next ▶")
        self.save_next_button = PushButton(text="Save && next")
        self.save_button = PushButton(text="Save as training mask")
        nav = Container(widgets=[self.previous_button, self.next_button, self.save_next_button],
                        layout="horizontal", labels=False)
        # shown while a job of this dock runs (ranking, segmenting the image, accepting)
        self.cancel_button = PushButton(text="Cancel", visible=False)
        self.count = status_label("")
        self.order = shrinkable(ComboBox(
            label="order", choices=[FOLDER_ORDER, WORST_FIRST], value=FOLDER_ORDER,
            tooltip="worst first: the images whose masks most likely need correcting (by "
                    "predicted Dice) come first"))
        self.accept_above = FloatSpinBox(label="accept above", value=0.9, min=0.5, max=0.99,
                                         step=0.01, tooltip="predicted Dice")
        self.accept_button = PushButton(text="Accept the rest above it")
        self.click_fix = ClickFixPanel(viewer, self.target_labels, self._set_status,
                                       on_change=lambda: self.update_target())
        self.start_from = ComboBox(label="retrain from", choices=[BASE, IN_USE], value=IN_USE,
                                   tooltip="bundled: fine-tune the bundled model; in use: "
                                           "continue from the model Segment and Curate use")
        self.epochs = SpinBox(label="epochs", value=10, min=1, max=1000)
        self.retrain_button = PushButton(text="Retrain on curated")
        self.status = status_label("")
        self.controller = TrainingController(self._set_running, self._set_status)
        self.extend([self.curated_dir, self.source_dir, self.model_line, self.post_line,
                     self.order, nav, self.cancel_button, self.save_button, self.target,
                     self.count, self.status,
                     self.click_fix, self.accept_above, self.accept_button, self.start_from,
                     self.epochs, self.retrain_button, self.controller])
        self.runner: JobRunner | None = None
        self._ranking = False  # the running job ranks the folder (worst first)
        self._after_ranking = None  # what a press during the ranking asked for (Next, Accept)
        self.visited: list[Path] = []  # images opened here, in order; Previous walks back
        self.position = -1
        self.predicted: dict[Path, float | None] = {}  # review queue: predicted Dice per image
        self._opened: str | None = None  # unique id of the image Curate opened (and is open)
        self._clashes_shown: set[Path] = set()  # images skipped for sharing an id (warned once)
        self._preparing: JobRunner | None = None  # reading the starting model before a retraining
        self._running_what = ""  # what the dock's job does: "ranking", "segmentation", "accepting"
        self.previous_button.changed.connect(self._guard(self.previous_image))
        self.next_button.changed.connect(self._guard(self.next_image))
        self.save_next_button.changed.connect(self._guard(self.save_and_next))
        self.save_button.changed.connect(self._guard(self.save_training_mask))
        self.accept_button.changed.connect(self._guard(self.accept_rest))
        self.cancel_button.changed.connect(self.cancel_job)
        self.order.changed.connect(lambda *_: self._guard(self._rank_if_needed)())
        self.retrain_button.changed.connect(self._retrain_or_cancel)
        self.curated_dir.changed.connect(self.update_count)
        follow(SESSION.post.changed, self, lambda *_: setattr(self.post_line, "value", SESSION.post.describe()))
        viewer.layers.selection.events.active.connect(self.update_target)
        viewer.layers.events.inserted.connect(self._watch_edits)
        self.update_count()
        self.update_target()
        SESSION.client.start_in_background()  # so the first Next finds the model worker warm

    # -- helpers -----------------------------------------------------------------------------
    def _guard(self, action):
        def run(*_):
            try:
                action()
            except Exception as err:  # noqa: BLE001 - a notification, never a traceback
                message = plain_error(err)
                show_error(message)
                self._set_status(message)
        return run

    def _set_status(self, text: str) -> None:
        self.status.value = text

    def _set_running(self, running: bool) -> None:
        self.retrain_button.text = "Cancel" if running else "Retrain on curated"

    @property
    def worker(self):
        """The running segmentation job, or None."""
        return self.runner if self.runner is not None and self.runner.running else None

    def _run(self, what: str, name: str, kwargs: dict, *, finished=None, **callbacks) -> JobRunner:
        """Start a job of this dock; while it runs, "Cancel <what>" stops it."""
        def done():
            self.cancel_button.visible = False
            if finished is not None:
                finished()  # may start the next job (Next after a ranking), which shows it again

        self.cancel_button.text, self.cancel_button.visible = f"Cancel {what}", True
        self._running_what = what
        self.runner = run_job(name, kwargs, finished=done, **callbacks)
        return self.runner

    def cancel_job(self, *_) -> None:
        """Stop the running job: one that cannot stop by itself, or one in a worker that
        hangs, is ended all the same within seconds (JobRunner.cancel); then the dock is free."""
        if self.worker is None:
            return
        self._after_ranking = None  # a Next or Accept pressed during a ranking does not follow
        self.runner.cancel()
        self._set_status(f"{self.cancel_button.text.replace('Cancel', 'cancelling')} ...")

    @property
    def folder(self) -> PairFolder:
        path = chosen_path(self.curated_dir)
        if path is None:
            raise ValueError("choose the curated folder first")
        return PairFolder(path)

    @property
    def current(self) -> Path | None:
        return self.visited[self.position] if 0 <= self.position < len(self.visited) else None

    def update_count(self, *_) -> int:
        try:
            folder = self.folder
        except ValueError:
            self.count.value = "no curated folder chosen"
            return 0
        ids = folder.ids()
        n, unseen = len(ids), len(folder.unreviewed_ids() & ids)
        self.count.value = (f"{n} curated pair{'s' if n != 1 else ''}"
                            + (f" ({unseen} accepted unseen: trained on, never validated on)"
                               if unseen else "") + f" in {folder.root}")
        return n

    def _watch_edits(self, event) -> None:
        layer = event.value
        if isinstance(layer, Labels):
            layer.events.set_data.connect(lambda *_: self.update_target())  # paint, undo, .data = ...
            layer.events.name.connect(lambda *_: self.update_target())

    def target_labels(self) -> Labels:
        """The Labels layer the person is working on: the selected one, or the one over the
        selected image, or the prediction of the image Curate opened."""
        active = self.viewer.layers.selection.active
        for suffix in (CLICKS_SUFFIX, BOX_SUFFIX):  # the clicks/box layer of a labels layer
            if active is not None and active.name.endswith(suffix) \
                    and active.name[: -len(suffix)] in self.viewer.layers:
                active = self.viewer.layers[active.name[: -len(suffix)]]
        if isinstance(active, Labels):
            return active
        if isinstance(active, Image):
            labels = labels_for_image(self.viewer, active)
            if labels is not None:
                return labels
        labels = self._opened_labels()
        if labels:
            return labels[0]
        if self.worker is not None and self._running_what == "segmentation":
            raise ValueError("the image is still being segmented: correct and save its "
                             "prediction once it is shown")
        raise ValueError("select the Labels layer you corrected (or its image) first")

    def update_target(self, *_) -> None:
        try:
            labels = self.target_labels()
            stem = image_id(image_for_labels(self.viewer, labels))
        except ValueError:
            self.target.value = "saving: select a corrected Labels layer"
            return
        state = " (unsaved corrections)" if unsaved_corrections(labels) else ""
        source = image_for_labels(self.viewer, labels).metadata.get("source_path")
        value = self.predicted.get(Path(source)) if source else None
        # the estimate is of the model's mask, not of a training mask saved earlier (Back)
        estimate = ("; its saved training mask" if labels.metadata.get(FROM_SAVED_KEY) else
                    f"; predicted Dice {value:.2f}" if value is not None else "")
        self.target.value = f"saving: '{labels.name}' as {stem}{state}{estimate}"

    # -- saving ------------------------------------------------------------------------------
    def save_training_mask(self) -> Path | None:
        """Write the image and the mask being worked on into the curated folder."""
        self.click_fix.check_nothing_waits("save")
        labels = self.target_labels()
        image_layer = image_for_labels(self.viewer, labels)
        image, mask = image_array(image_layer), labels_array(labels)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"labels '{labels.name}' are {mask.shape[::-1]} but the image is "
                             f"{image.shape[1::-1]}")
        stem = image_id(image_layer)
        folder = self.folder
        mask_path = folder.mask_path(stem)  # a pair exists when its mask does
        if mask_path.exists() and not self._same_as_saved(mask_path, mask) and \
                not self.confirm_overwrite(f"A curated pair '{stem}' exists. Replace it?"):
            self._set_status(f"not saved: the curated '{stem}' was kept as it was")
            return None
        folder.write(stem, image, mask > 0,
                     overwrite=mask_path.exists() or folder.image_path(stem).exists())
        mark_saved(labels)
        n = self.update_count()
        self.update_target()
        self._set_status(f"saved {stem} ('{labels.name}') as {mask_path.name} ({n} curated pairs)")
        show_info(f"saved {stem} as a training pair in {folder.root}")
        return mask_path

    @staticmethod
    def _same_as_saved(mask_path: Path, mask: np.ndarray) -> bool:
        try:
            return mask_path.exists() and np.array_equal(read_mask(mask_path), mask > 0)
        except ValueError:
            return False

    # -- moving between images ---------------------------------------------------------------
    def _settle_unsaved(self) -> bool:
        """Ask about the current image's unsaved corrections (save, discard or stay) before
        anything is closed. False: stay on this image."""
        self.click_fix.check_nothing_waits("move on")
        for labels in [layer for layer in self._opened_labels() if unsaved_corrections(layer)]:
            answer = self.ask_unsaved(f"'{labels.name}' has corrections that are not saved. "
                                      "Save them as a training mask before moving on?")
            if answer == STAY:
                self._set_status(f"stayed on '{labels.name}': its corrections are not saved yet")
                return False
            if answer == SAVE and self.save_training_mask_for(labels) is None:
                return False
        return True

    def _close_opened(self) -> None:
        # by identity: a layer renamed since is closed (and asked about) all the same
        for layer in layers_made_for(self.viewer, self._opened) if self._opened else []:
            self.viewer.layers.remove(layer.name)
        self._opened = None

    def _opened_labels(self) -> list[Labels]:
        """The Labels layers made for the image Curate opened (its prediction or saved mask)."""
        return [layer for layer in layers_made_for(self.viewer, self._opened)
                if isinstance(layer, Labels)] if self._opened else []

    def save_training_mask_for(self, labels: Labels) -> Path | None:
        self.viewer.layers.selection.active = labels
        return self.save_training_mask()

    def _todo(self) -> list[Path]:
        source = required_folder(self.source_dir, "folder of images to curate")
        images, _ = list_images(source)
        # a.jpg and a.png would be saved as the same pair: only the first is curated
        images, clashes = split_same_ids([p for p in images  # not masks, overlays, maps
                                          if not (is_mask_name(p) or is_result_extra(p))],
                                         curated_id)
        for clash in clashes:
            if clash.path not in self._clashes_shown:
                self._clashes_shown.add(clash.path)
                show_warning(f"skipped: {clash}")
        done = self.folder.ids()
        todo = [p for p in images if curated_id(p) not in done]  # saved under that id
        if self.order.value == WORST_FIRST:  # unknown estimates (unreadable files) go last
            todo.sort(key=lambda p: (self.predicted.get(p) is None, self.predicted.get(p) or 0.0))
        return todo

    def _rank_if_needed(self, then=None) -> bool:
        """Worst first needs every image's predicted Dice: computed once per image, by the model
        worker, with a progress line. True when the ranking is complete."""
        if self.order.value != WORST_FIRST or chosen_path(self.source_dir) is None:
            return True
        missing = [p for p in self._todo() if p not in self.predicted]
        if not missing:
            return True
        if self._busy(then):
            return False
        self._set_status(f"ranking {len(missing)} images by predicted Dice ..."
                         + SESSION.model.first_use_note())
        self._ranking, self._after_ranking = True, then

        def got(item):
            self.predicted[Path(item["path"])] = item["predicted_dice"]
            self._set_status(f"ranking by predicted Dice: {len([p for p in missing if p in self.predicted])}"
                             f"/{len(missing)}")

        ranked: list[bool] = []

        def stopped():
            n = len([p for p in missing if p in self.predicted])
            self._set_status(f"ranking cancelled after {n} of {len(missing)} images; Next or "
                             "worst first ranks the rest")

        def done(_n):
            if any(p not in self.predicted for p in missing):  # it stopped between images
                stopped()
                return
            self._set_status(f"ranked {len(missing)} images: worst first")
            ranked.append(True)

        def finished():  # only now is the ranking job no longer "running" (else then() is busy)
            after, self._ranking, self._after_ranking = self._after_ranking, False, None
            if ranked and after is not None:
                self._guard(after)()

        self._run("ranking", "review_folder", dict(paths=[str(p) for p in missing],
                                                   model=SESSION.model.job_arg),
                  yielded=got, returned=done, finished=finished, cancelled=stopped,
                  failed=lambda message: self._set_status(f"cannot rank: {message}"))
        return False

    def _estimate(self, path: Path) -> str:
        value = self.predicted.get(path)
        return f"predicted Dice {value:.2f}; " if value is not None else ""

    def accept_rest(self) -> None:
        """Save the model's masks of every remaining image whose predicted Dice is at least the
        chosen value as curated pairs (the one open now is left to the person)."""
        if self._busy(self.accept_rest):  # one job at a time: Next must know when this image's job is done
            return
        if self.order.value != WORST_FIRST:
            self.order.value = WORST_FIRST
        if not self._rank_if_needed(then=self.accept_rest):
            return
        limit = round(self.accept_above.value, 2)
        chosen = [p for p in self._todo() if p != self.current
                  and (self.predicted.get(p) or 0.0) >= limit]
        if not chosen:
            self._set_status(f"no remaining image has a predicted Dice of {limit:.2f} or more")
            return
        folder = self.folder
        self._set_status(f"accepting {len(chosen)} images (predicted Dice ≥ {limit:.2f}) ..."
                         + SESSION.model.first_use_note())

        def done(n):
            left = self.update_count()
            message = (f"accepted {n} image(s) with predicted Dice ≥ {limit:.2f} as curated "
                       f"({left} curated pairs)")
            self._set_status(message)
            show_info(message)

        self._run("accepting", "accept_as_curated", dict(
            paths=[str(p) for p in chosen], curated=str(folder.root), model=SESSION.model.job_arg,
            post=SESSION.post.config), returned=done,
            cancelled=lambda: self._set_status(f"accepting cancelled ({self.update_count()} "
                                               "curated pairs)"),
            failed=lambda message: self._set_status(f"cannot accept: {message}"))

    def next_image(self) -> Path | None:
        """Open the next image without a curated mask (folder order) and segment it."""
        if self._busy(self.next_image):
            return None
        if not self._rank_if_needed(then=self.next_image):
            return None
        todo = self._todo()
        current = self.current
        if self.order.value == WORST_FIRST:
            todo = [p for p in todo if p != current] + ([current] if current in todo else [])
        elif current is not None and current in todo:  # go on, wrap round; this one last
            todo = todo[todo.index(current) + 1:] + todo[:todo.index(current) + 1]
        elif current is not None:
            later = [p for p in todo if p.name > current.name]
            todo = later + [p for p in todo if p not in later]
        if not todo:
            self._set_status("every image of that folder has a curated mask")
            show_info("every image of that folder has a curated mask")
            return None
        for path in todo:
            try:
                opened = self._open(path)
            except ImageReadError as err:  # report it and go on to the next image
                show_warning(f"skipped: {err}")
                continue
            break
        else:
            self._set_status("none of the remaining images could be read")
            return None
        if not opened:
            return None
        self.visited = self.visited[: self.position + 1] + [path]
        self.position = len(self.visited) - 1
        return path

    def previous_image(self) -> Path | None:
        """Go back to the image opened before this one (its saved mask, if it has one)."""
        if self._busy():
            return None
        if self.position <= 0:
            raise ValueError("there is no previous image")
        path = self.visited[self.position - 1]
        if not self._open(path):
            return None
        self.position -= 1
        return path

    def save_and_next(self) -> Path | None:
        saved = self.save_training_mask()
        if saved is None:
            return None
        if chosen_path(self.source_dir) is None:  # an image opened by hand: nothing comes next
            self._set_status(f"{self.status.value}; choose the image folder for Next")
            return None
        return self.next_image()

    def _busy(self, then=None) -> bool:
        """True (with a word to the person) while a job runs. During a ranking, ``then`` (the
        Next or Accept just pressed) is kept and runs once the ranking is done."""
        if self.worker is None:
            return False
        if self._ranking and then is not None:
            self._after_ranking = then
            show_info("ranking the images by predicted Dice; that follows when it is done")
        else:
            show_warning({"ranking": "ranking the images by predicted Dice; one moment",
                          "accepting": "still accepting images as curated; one moment (or "
                                       "Cancel accepting)"}.get(
                self._running_what, "still segmenting the image; one moment"))
        return True

    def _open(self, path: Path) -> bool:
        image = read_image(path)  # a bad file (or saved mask) is reported before anything is closed
        saved = self.folder.mask_path(curated_id(path))
        saved_mask = read_mask(saved, shape=image.shape[:2]) if saved.exists() else None
        if not self._settle_unsaved():
            return False
        with batched(self.viewer):  # the old image's layers out, the new ones in: one redraw
            self._close_opened()
            layer = self.viewer.add_image(image, name=self._free_name(path.stem), rgb=True,
                                          metadata={"source_path": str(path)})
            if saved_mask is not None:
                self._show_saved_mask(layer, saved_mask)
        self._opened = str(layer.unique_id)
        left = len(self._todo()) - (0 if saved_mask is not None else 1)
        if saved_mask is not None:
            self.update_target()
            self._set_status(f"{path.name}: its saved training mask ({left} more to curate)")
            return True
        self._set_status(f"segmenting {path.name} ({self._estimate(path)}{left} more to curate) ..."
                         + SESSION.model.first_use_note())

        def shown(item):
            name, value = item
            if name == "model":
                return
            if layer not in self.viewer.layers:
                self._set_status(f"{path.name} was closed while it was segmented")
                return
            labels = show_prediction(self.viewer, layer.name, value, SESSION.post.config)
            if labels is None:  # a layer made meanwhile under its name was kept
                return
            labels.mode = "paint"
            self.update_target()
            self._set_status(f"correct '{labels.name}' with clicks or the brush, then Save & next "
                             f"({self._estimate(path)}{left} more to curate)")

        def stopped():
            self._set_status(f"segmenting {path.name} was cancelled")

        self._run("segmentation", "predict", dict(images=[(layer.name, image)],
                                                  model=SESSION.model.job_arg),
                  yielded=shown, returned=lambda n: None if n else stopped(), cancelled=stopped,
                  failed=lambda message: self._set_status(f"cannot segment {path.name}: {message}"))
        return True

    def _free_name(self, stem: str) -> str:
        """A name whose layers (image, prediction, ...) are all new: Curate closes its layers by
        name, so it must never share one with a layer the person made."""
        suffixes = ("", PREDICTION_SUFFIX, PROBABILITY_SUFFIX, PREDICTION_SUFFIX + CLICKS_SUFFIX,
                    PREDICTION_SUFFIX + BOX_SUFFIX)
        name, i = stem, 1
        while any(name + suffix in self.viewer.layers for suffix in suffixes):
            name, i = f"{stem} [{i}]", i + 1
        return name

    def _show_saved_mask(self, image_layer: Image, mask: np.ndarray) -> None:
        data = mask.astype(np.uint8)
        digest = mask_hash(data)
        labels = self.viewer.add_labels(data, name=image_layer.name + PREDICTION_SUFFIX, opacity=0.5,
                                        colormap=PREDICTION_COLOURS,
                                        metadata={AUTO_HASH_KEY: digest, SAVED_HASH_KEY: digest,
                                                  FROM_SAVED_KEY: True, **made_for(image_layer)})
        bring_to_top(self.viewer, labels)
        labels.mode = "paint"

    # -- retraining --------------------------------------------------------------------------
    def _retrain_or_cancel(self, *_):
        if self.controller.running:
            self.controller.cancel()
            return
        if self._preparing is not None and self._preparing.running:  # reading the model's settings
            show_warning("retraining is starting; one moment")
            return
        self._guard(self.retrain)()

    def retrain(self) -> None:
        n = self.update_count()
        if n < 2:
            raise ValueError(f"retraining needs at least 2 curated pairs (have {n}): save more "
                             "corrected masks first")
        folder = self.folder
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
