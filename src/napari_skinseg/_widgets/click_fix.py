"""Click-to-fix in napari: a click on the image says "lesion here" or "this is skin", and the
prediction layer changes around the click only; a box re-segments the lesion inside it.

Each click goes to the model worker, whose click-to-fix network (shipped with the package, see
:mod:`napari_skinseg.click_model`) answers with a corrected mask, of which only the changes that
reach the click are taken; clicks made meanwhile wait their turn. Without that network (or if the
worker fails) a click is fixed here, in napari's process, by the random walker of
:mod:`napari_skinseg.click_refine` from the probabilities stored with the prediction layer. The
box needs the segmentation network, so its crop goes to the model worker too.

A left click marks the kind chosen in the dock's *click marks*; a right click, or Shift+click (for
trackpads), marks the other kind, as if the combo had been switched for that one click; ``T`` on
the clicks layer switches the combo. napari (0.9.2) runs each layer's ``mouse_drag_callbacks``
with the press, moves and release of any button; its own add-point callback adds a point on the
release of a click of *any* button (left, right, with or without Shift), and the panel's callback,
kept after it, says which kind that press marks (and adds the point itself should a napari add
only on left clicks).

While a click or box waits for the worker, a *Cancel click* / *Cancel box* button takes it back:
the mask and undo history stay as they were, and the worker, if it hangs or was stopped, is ended
within seconds (:meth:`JobRunner.cancel`); the next click starts a new one.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton
from napari.layers import Labels, Points, Shapes
from napari.utils.colormaps.standardize_color import transform_color
from napari.utils.notifications import show_error

from ..bundled import bundled_click_model_path
from ..interactive import ClickSession
from .fields import shrinkable
from .jobs import JobRunner, run_job
from .layers import (
    IMAGE_KEY,
    PROBABILITY_KEY,
    image_array,
    image_for_labels,
    labels_array,
    layer_key,
    placement_of,
)
from .session import SESSION

LESION, SKIN = "lesion (missed here)", "skin (wrongly taken)"
CLICK_COLOURS = {True: "magenta", False: "cyan"}
CLICKS_SUFFIX, BOX_SUFFIX = " clicks", " box"
TOGGLE_KEY = "t"  # on the clicks layer: switches "click marks" between the two kinds
RIGHT = 2  # vispy's number of the right mouse button (left is 1)
CLICK_DISTANCE = 5  # canvas pixels a press may move and still be a click (napari's add: 5)


def short(kind: str) -> str:
    return "lesion" if kind == LESION else "skin"


def other(kind: str) -> str:
    return SKIN if kind == LESION else LESION


def set_mask(labels: Labels, mask: np.ndarray) -> None:
    """Write only the pixels that changed, as a paint stroke does: napari redraws just those,
    and the change joins the layer's own undo history."""
    changed = np.nonzero((labels.data > 0) != mask)
    if changed[0].size:
        labels.data_setitem(changed, mask[changed].astype(labels.data.dtype))


def _tie(labels: Labels) -> dict:
    """Clicks and boxes belong to the image their labels were made for (closed with it)."""
    return {IMAGE_KEY: labels.metadata[IMAGE_KEY]} if IMAGE_KEY in labels.metadata else {}


def follow_layer(labels: Labels, session: ClickSession) -> None:
    """Start the next click from the mask on screen: strokes painted since the last click are
    part of it (a click computed from the session's older mask would erase them)."""
    session.mask = labels.data > 0


class ClickFixPanel(Container):
    """Fix the Labels layer being worked on (``target()``) with clicks and a box."""

    def __init__(self, viewer, target: Callable[[], Labels], on_status: Callable[[str], None],
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.viewer, self.target, self.on_status = viewer, target, on_status
        self.on_change = on_change  # told after every click, undo and box (not only via events)
        self.start_button = PushButton(text="Fix with clicks")
        self.kind = shrinkable(ComboBox(label="click marks", choices=[LESION, SKIN], value=LESION))
        self.undo_button = PushButton(text="Undo click")
        self.box_button = PushButton(text="Re-segment inside box")
        self.cancel_button = PushButton(text="Cancel click", visible=False)  # while one waits
        super().__init__(widgets=[self.start_button, self.kind, self.undo_button, self.box_button,
                                  self.cancel_button], labels=True)
        self.margins = (0, 0, 0, 0)  # nested in the Curate dock: its margins are enough
        self.sessions: dict[int, tuple[Labels, ClickSession, Points]] = {}
        self._pending: list[tuple] = []  # clicks waiting for the worker, oldest first
        self._made: dict[int, list[np.ndarray]] = {}  # per session: the mask each click/box made
        self._placed: dict[int, np.ndarray] = {}  # per points layer: the points of its clicks
        self._running = False  # a click's job runs (the one given up by a cancel too)
        self._jobs: dict[str, JobRunner | None] = {}  # the last "prepare", "click", "box" job
        self._cancels = 0  # how many cancels so far: a job started before one is not applied
        # per points layer: the kind (lesion?) the mouse press under way marks, until its point
        # is added (a right or Shift click marks the kind the combo does not show)
        self._pressed: dict[int, bool] = {}
        self._napari_help: dict[int, str] = {}  # per points layer: the help napari gave its mode
        self.start_button.changed.connect(self._guard(self.start))
        self.undo_button.changed.connect(self._guard(self.undo))
        self.box_button.changed.connect(self._guard(self.resegment_box))
        self.kind.changed.connect(self._on_kind)
        self.cancel_button.changed.connect(self.cancel)
        viewer.layers.events.removed.connect(self._forget_removed)

    def _forget_removed(self, *_) -> None:
        """Sessions end with their layers: a removed layer is never touched again."""
        for key, (labels, _session, points) in list(self.sessions.items()):
            if points not in self.viewer.layers or labels not in self.viewer.layers:
                del self.sessions[key]
                self._made.pop(id(_session), None)
                self._placed.pop(key, None)
                self._napari_help.pop(key, None)

    def _guard(self, action):
        def run(*_):
            try:
                action()
            except (ValueError, KeyError) as err:
                show_error(str(err))
                self.on_status(str(err))
        return run

    # -- clicks ------------------------------------------------------------------------------
    def start(self) -> Points:
        """A Points layer over the labels being worked on: each point added is a click."""
        labels = self.target()
        image_layer = image_for_labels(self.viewer, labels)
        image = image_array(image_layer)
        (h, w), (ih, iw) = labels_array(labels).shape, image.shape[:2]
        if (h, w) != (ih, iw):
            raise ValueError(f"labels '{labels.name}' are {w}x{h} but its image '{image_layer.name}' "
                             f"is {iw}x{ih}: click-to-fix needs a mask of the image's size")
        probability = labels.metadata.get(PROBABILITY_KEY)
        if probability is None or np.shape(probability) != labels.data.shape:
            probability = (labels.data > 0).astype(np.float32)  # a saved mask: refine around it
        session = ClickSession(image, probability=probability, post=SESSION.post.config)
        session.mask = labels.data > 0  # start from what is on screen, corrections included
        name = labels.name + CLICKS_SUFFIX
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        side = max(labels.data.shape)
        points = self.viewer.add_points(ndim=2, name=name, size=max(4, side // 60),
                                        border_color="white", metadata=_tie(labels),
                                        **placement_of(labels))
        self.sessions[layer_key(points)] = (labels, session, points)
        self._made[id(session)] = []
        self._placed[layer_key(points)] = np.empty((0, 2))
        if bundled_click_model_path() is not None:
            # load the click network now, while the person moves to the lesion: else the
            # first click waits for it (0.5 s instead of 0.1 s)
            self._jobs["prepare"] = run_job("prepare_clicks", dict(image=session.image,
                                                                   mask=session.mask),
                                            failed=lambda message: None)
        points.events.data.connect(lambda event: self._on_points(event, points))
        self._set_click_colour()
        points.mode = "add"
        self._bind_mouse_and_key(points)
        self.viewer.layers.selection.active = points
        self.on_status(f"click on '{labels.name}': {self.buttons_help()}")
        return points

    def buttons_help(self) -> str:
        """What each mouse button (and the key) does, for napari's help line and the dock."""
        kind = self.kind.value
        return (f"left click: {short(kind)}, right or Shift+click: {short(other(kind))} "
                f"({TOGGLE_KEY.upper()} swaps them)")

    def _bind_mouse_and_key(self, points: Points) -> None:
        """Right/Shift clicks mark the other kind; the key switches the combo; napari's help line
        (bottom right) says so whenever the layer is in add mode."""
        mark = self._mark_press

        def keep_last(*_) -> None:
            # napari re-appends its add callback on every mode change: ours must stay after it,
            # so that at a release it sees whether napari added the point
            if mark in points.mouse_drag_callbacks:
                points.mouse_drag_callbacks.remove(mark)
            points.mouse_drag_callbacks.append(mark)
            # the viewer has just written the mode's help ("use <3> for select points, ..."):
            # the buttons go first, in add mode
            self._napari_help[layer_key(points)] = points.help
            self._show_help(points)

        keep_last()
        points.events.mode.connect(keep_last)
        points.bind_key(TOGGLE_KEY, lambda _layer: self.toggle_kind(), overwrite=True)

    def _mark_press(self, layer: Points, event):
        """A drag callback of the clicks layers, run after napari's add-point one: records the
        kind of click this press makes (right button or Shift: the other kind) for the point
        napari adds at its release, and adds that point itself if napari did not."""
        button = getattr(event, "button", 1)
        if layer.mode != "add" or event.type != "mouse_press" or button not in (1, RIGHT):
            return
        key = layer_key(layer)
        swapped = button == RIGHT or "Shift" in (getattr(event, "modifiers", None) or ())
        self._pressed[key] = (self.kind.value == LESION) != swapped
        start = np.asarray(event.pos, dtype=float)
        yield
        while event.type == "mouse_move":
            yield
        moved = np.linalg.norm(start - np.asarray(event.pos, dtype=float))
        try:
            if key in self._pressed and swapped and moved < CLICK_DISTANCE:
                # no point yet: a napari that adds points on left clicks only
                layer.add(layer.world_to_data(event.position))
        finally:
            self._pressed.pop(key, None)

    def _show_help(self, points: Points) -> None:
        """napari's help line (bottom right of its window) for the clicks layer."""
        napari_help = self._napari_help.get(layer_key(points), "")
        points.help = "; ".join(filter(None, [self.buttons_help(), napari_help])) \
            if points.mode == "add" else napari_help
        active = self.viewer.layers.selection.active
        if active is not None and layer_key(active) == layer_key(points):
            self.viewer.help = points.help  # the viewer copies it only on its own events

    def toggle_kind(self) -> None:
        """Switch what a left click marks (the key on the clicks layer)."""
        self.kind.value = other(self.kind.value)
        self.on_status(self.buttons_help())

    def _on_kind(self, *_) -> None:
        self._set_click_colour()
        for _labels, _session, points in self.sessions.values():
            self._show_help(points)

    def _set_click_colour(self, *_) -> None:
        for _labels, _session, points in self.sessions.values():
            # napari colours the selected points (the last one added) with the current colour:
            # unselected, every point keeps its click's colour
            points.selected_data = set()
            points.current_face_color = CLICK_COLOURS[self.kind.value == LESION]

    @staticmethod
    def _colour_points(points: Points, session: ClickSession) -> None:
        """Each point in its click's colour (lesion magenta, skin cyan), whatever is selected."""
        points.selected_data = set()
        if len(points.data):
            points.face_color = [CLICK_COLOURS[c.lesion] for c in session.clicks[: len(points.data)]]

    def _current(self) -> tuple[Labels, ClickSession, Points]:
        active = self.viewer.layers.selection.active
        if isinstance(active, Points) and layer_key(active) in self.sessions:
            return self.sessions[layer_key(active)]
        for labels, session, points in reversed(list(self.sessions.values())):
            if points in self.viewer.layers and labels in self.viewer.layers:
                return labels, session, points
        raise ValueError("press \"Fix with clicks\" first")

    def _on_points(self, event, points: Points) -> None:
        action = getattr(event, "action", "added")
        if action in ("removed", "changed") and layer_key(points) in self._placed:
            self._keep_points(points)
        if action != "added" or len(points.data) == 0:
            return
        pressed = self._pressed.pop(layer_key(points), None)  # a right/Shift click's kind
        lesion = (self.kind.value == LESION) if pressed is None else pressed
        if layer_key(points) not in self.sessions:  # its Labels layer was closed: the session ended
            self.on_status(f"'{points.name}' no longer fixes a Labels layer (it was closed): "
                           "select a Labels layer and press \"Fix with clicks\" again")
            return
        labels, session, _ = self.sessions[layer_key(points)]
        if len(points.data) <= len(session.clicks):
            return  # a point was removed (undo), not added
        y, x = (int(v) for v in np.round(points.data[-1]))
        try:
            session.clicks_with(y, x, lesion)  # checks the click is inside the image
        except ValueError as err:
            self.on_status(str(err))
            with points.events.data.blocker():
                points.data = points.data[:-1]
            return
        self._placed[layer_key(points)] = np.array(points.data)
        if pressed is not None and pressed != (self.kind.value == LESION):
            self._colour_last(points, pressed)  # added in the combo's colour: the other kind's
        if bundled_click_model_path() is None:
            follow_layer(labels, session)
            self._show(labels, session, points, y, x, lesion, session.click(y, x, lesion))
            return
        self._pending.append((labels, session, points, y, x, lesion))
        self._send_next()
        self._show_waiting()

    @staticmethod
    def _colour_last(points: Points, lesion: bool) -> None:
        colours = np.array(points.face_color)
        colours[-1] = transform_color(CLICK_COLOURS[lesion])[0]
        points.face_color = colours

    def _keep_points(self, points: Points) -> None:
        """A point deleted by hand would leave its click in force, unseen, and make the next
        point look like a deletion (ignored); a point dragged elsewhere would show a click where
        none was made. The points are put back, and the person told how a click is taken back."""
        placed = self._placed[layer_key(points)]
        deleted = len(points.data) < len(placed)
        moved = len(points.data) == len(placed) and not np.allclose(points.data, placed)
        if deleted or moved:
            with points.events.data.blocker():
                points.data = placed
            if layer_key(points) in self.sessions:
                self._colour_points(points, self.sessions[layer_key(points)][1])
            self.on_status(f"a click's point cannot be {'deleted' if deleted else 'moved'}: "
                           "\"Undo click\" takes back the last click")

    def _send_next(self) -> None:
        """Send the oldest waiting click to the worker's click-to-fix network."""
        if self._running or not self._pending:
            return
        labels, session, points, y, x, lesion = self._pending.pop(0)
        if labels not in self.viewer.layers:
            self._pending.clear()  # the image was closed: its clicks go with it
            return
        self._running, cancels = True, self._cancels
        follow_layer(labels, session)

        def ended(fix: Callable[[], np.ndarray] | None, note: str = "") -> None:
            self._running = False
            if fix and cancels == self._cancels and labels in self.viewer.layers:  # not taken back
                follow_layer(labels, session)  # strokes painted while the worker answered
                self._show(labels, session, points, y, x, lesion, fix(), note)
            self._send_next()
            self._show_waiting()

        self._jobs["click"] = run_job(
            "click_refine", dict(image=session.image, mask=session.mask,
                                 clicks=session.clicks_with(y, x, lesion)),
            returned=lambda proposal: ended(lambda: session.apply_proposal(y, x, lesion, proposal)),
            # the worker failed: fix this click here, without the network
            failed=lambda message: ended(lambda: session.click(y, x, lesion),
                                         f" (fixed without the click network: {message})"),
            cancelled=lambda: ended(None))  # taken back (its point already gone)

    def _show(self, labels, session, points, y, x, lesion, mask, note: str = "") -> None:
        self._made.setdefault(id(session), []).append(mask.copy())
        set_mask(labels, mask)
        self._colour_points(points, session)
        self.on_change()
        self.on_status(f"{'lesion' if lesion else 'skin'} click at ({y}, {x}): "
                       f"{int(mask.sum()):,} lesion pixels" + note)

    def _trim_points(self, points: Points, session: ClickSession) -> None:
        """Keep the points of the clicks in force only (after an undo or a cancel)."""
        if len(points.data) > len(session.clicks):
            with points.events.data.blocker():
                points.data = points.data[: len(session.clicks)]
        self._placed[layer_key(points)] = np.array(points.data)
        self._colour_points(points, session)

    def undo(self) -> None:
        labels, session, points = self._current()
        if self._running or self._pending:
            raise ValueError("a click is still being fixed: undo once its mask is shown, or "
                             f"press \"{self.cancel_button.text}\"")
        if not session.can_undo:
            raise ValueError("nothing to undo")
        made = self._made.get(id(session)) or [session.mask]
        after = made.pop()  # the mask the last click or box made
        before = session.undo()
        # only the pixels that click changed go back: strokes painted since then stay
        set_mask(labels, np.where(before != after, before, labels.data > 0))
        self._trim_points(points, session)
        self.on_change()
        self.on_status(f"undone: {len(session.clicks)} click(s) left")

    # -- waiting on the worker ---------------------------------------------------------------
    def _waits(self, name: str) -> bool:
        """Whether job ``name`` runs and was not cancelled."""
        runner = self._jobs.get(name)
        return runner is not None and runner.running and not runner.cancel_requested

    @property
    def busy(self) -> bool:
        """A click or box still waits for the worker (or for the end of its cancelled job)."""
        box = self._jobs.get("box")
        return bool(self._running or self._pending or (box is not None and box.running))

    @property
    def waiting(self) -> str:
        """What waits for the worker and will still change a mask ("2 clicks and box"), or ""."""
        clicks = len(self._pending) + (self._running and self._waits("click"))
        what = ([f"{clicks} clicks" if clicks > 1 else "click"] if clicks else []) + \
            (["box"] if self._waits("box") else [])
        return " and ".join(what)

    def check_nothing_waits(self, doing: str) -> None:
        """Raise (a message saying what to do) while a click or box will still change a mask:
        saving or closing it now would drop that change without a word."""
        waiting = self.waiting
        if waiting:
            are = "is" if waiting in ("click", "box") else "are"
            raise ValueError(f"the {waiting} {are} still being fixed: {doing} once the mask "
                             f"is shown, or press \"Cancel {waiting}\"")

    def _show_waiting(self) -> None:
        """The cancel button, shown while a click or box waits for the worker."""
        waiting = self.waiting
        self.cancel_button.text, self.cancel_button.visible = f"Cancel {waiting}", bool(waiting)

    def cancel(self, *_) -> None:
        """Take back the clicks and the box still waiting for the worker: no mask they bring
        later is applied, their points go, and their jobs are stopped (a worker that hangs or
        was stopped is ended within seconds; the next click or box starts a new one)."""
        what = self.cancel_button.text.removeprefix("Cancel ")
        self._cancels += 1
        self._pending.clear()
        for runner in self._jobs.values():  # the loading of the click network too
            if runner is not None and runner.running:
                runner.cancel()
        for _labels, session, points in self.sessions.values():
            self._trim_points(points, session)
        self._show_waiting()
        self.on_status(f"{what} cancelled: the mask is as it was (a model worker that does not "
                       "answer is ended, and the next click or box starts a new one)")

    # -- box ---------------------------------------------------------------------------------
    def resegment_box(self) -> None:
        """Draw a rectangle (a Shapes layer named '<labels> box' is made for it), then press
        again: the network segments the lesion inside it."""
        labels, session, _points = self._current()
        if self._waits("box"):
            raise ValueError("the box is still being segmented: wait for it, or press "
                             f"\"{self.cancel_button.text}\"")
        name = labels.name + BOX_SUFFIX
        shapes = self.viewer.layers[name] if name in self.viewer.layers else None
        if not isinstance(shapes, Shapes) or len(shapes.data) == 0:
            if shapes is None:
                shapes = self.viewer.add_shapes(ndim=2, name=name, edge_color="yellow",
                                                face_color="transparent", edge_width=3,
                                                metadata=_tie(labels), **placement_of(labels))
            shapes.mode = "add_rectangle"
            self.viewer.layers.selection.active = shapes
            self.on_status("draw a box around the missed lesion, then press "
                           "\"Re-segment inside box\" again")
            return
        corners = np.asarray(shapes.data[-1])
        (y0, x0), (y1, x1) = corners.min(axis=0), corners.max(axis=0)
        crop, box = session.box_regions(int(y0), int(x0), int(y1), int(x1))
        cy0, cy1, cx0, cx1 = crop
        self.on_status("segmenting inside the box ...")
        cancels = self._cancels

        def shown(item):
            name_, probability = item
            if name_ != "box" or labels not in self.viewer.layers or cancels != self._cancels:
                return
            follow_layer(labels, session)
            mask = session.apply_box(crop, box, probability)
            self._made.setdefault(id(session), []).append(mask.copy())
            set_mask(labels, mask)
            self.on_change()
            shapes.data = []
            self.on_status(f"re-segmented inside the box: {int(labels.data.sum()):,} lesion pixels")

        self._jobs["box"] = run_job(
            "predict", dict(images=[("box", session.image[cy0:cy1, cx0:cx1])],
                            model=SESSION.model.job_arg),
            yielded=shown, finished=self._show_waiting,
            failed=lambda message: self.on_status(f"box failed: {message}"))
        self._show_waiting()
