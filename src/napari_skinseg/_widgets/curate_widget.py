"""Curate dock widget: the human-in-the-loop cycle.

Next image (opened and segmented with the model in use) -> correct the prediction with napari's
paint tools -> Save & next -> ... -> Retrain on curated. A correction is never lost or filed
under another image: saving takes the layer being worked on and names the image it saved; moving
on with unsaved corrections asks first; Previous goes back (to the saved mask, if there is one).

Which image comes next, worst first and Accept live in review_queue.py; Retrain on curated in
retrain_on_curated.py; click-to-fix in click_fix.py. The dock runs one job at a time (ranking,
segmenting the image, accepting) and shows its Cancel button while it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import napari
import numpy as np
from magicgui.widgets import Container, FileEdit, PushButton
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning

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
from .retrain_on_curated import RetrainOnCurated
from .review_queue import ReviewQueue
from .session import SESSION
from .status_label import status_label
from .train_widget import DEFAULT_HOME

FROM_SAVED_KEY = "skinseg_from_saved_mask"  # a Labels layer Back/Next opened from the curated folder


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
        self.status = status_label("")
        self.queue = ReviewQueue(self)
        self.click_fix = ClickFixPanel(viewer, self.target_labels, self._set_status,
                                       on_change=lambda: self.update_target())
        self.retraining = RetrainOnCurated(folder=lambda: self.folder, count=self.update_count,
                                           set_status=self._set_status, guard=self._guard)
        self.extend([self.curated_dir, self.source_dir, self.model_line, self.post_line,
                     self.queue.order, nav, self.cancel_button, self.save_button, self.target,
                     self.count, self.status,
                     self.click_fix, self.queue.accept_above, self.queue.accept_button,
                     *self.retraining.widgets])
        self.runner: JobRunner | None = None
        self.visited: list[Path] = []  # images opened here, in order; Previous walks back
        self.position = -1
        self._opened: str | None = None  # unique id of the image Curate opened (and is open)
        self._clashes_shown: set[Path] = set()  # images skipped for sharing an id (warned once)
        self._running_what = ""  # what the dock's job does: "ranking", "segmentation", "accepting"
        self.previous_button.changed.connect(self._guard(self.previous_image))
        self.next_button.changed.connect(self._guard(self.next_image))
        self.save_next_button.changed.connect(self._guard(self.save_and_next))
        self.save_button.changed.connect(self._guard(self.save_training_mask))
        self.cancel_button.changed.connect(self.cancel_job)
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

    @property
    def worker(self):
        """The dock's running job (ranking, segmentation or accepting), or None."""
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
        self.queue.after_ranking = None  # a Next or Accept pressed during a ranking does not follow
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
        value = self.queue.predicted.get(Path(source)) if source else None
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
        return self.queue.sort(todo)

    def next_image(self) -> Path | None:
        """Open the next image without a curated mask (in the order chosen) and segment it."""
        if self._busy(self.next_image):
            return None
        if not self.queue.rank_if_needed(then=self.next_image):
            return None
        todo = self.queue.after(self.current, self._todo())
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
        if self.queue.ranking and then is not None:
            self.queue.after_ranking = then
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
        self._set_status(f"segmenting {path.name} ({self.queue.estimate(path)}{left} more to curate) ..."
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
                             f"({self.queue.estimate(path)}{left} more to curate)")

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
