"""Running model-worker jobs from the docks without blocking napari.

A job's items stream back through a napari thread worker (which only waits on the worker
process; the computing happens there), so the GUI stays live and a crashed worker becomes a
notification. ``RUN_SYNCHRONOUSLY = True`` runs the same code on the calling thread (for tests
that want no event loop), as stardist-napari does.

While a job runs, a watchdog on napari's GUI thread pings the worker every few seconds; a worker
that has not answered for :data:`SILENT_AFTER` seconds (stopped, deadlocked, hung in native code)
is announced once in a warning, since every dock would otherwise just wait. It is never ended
automatically (a long native call can be legitimate): the dock's Cancel does that.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QThread, QThreadPool, QTimer

from ..worker_client import Job, JobCancelled, WorkerDied, WorkerError
from .fields import plain_error
from .session import SESSION

RUN_SYNCHRONOUSLY = False
#: runners whose thread has not finished yet (kept referenced until then)
RUNNING: set["JobRunner"] = set()
#: seconds between the watchdog's pings while jobs run (a working worker answers in ms)
WATCH_EVERY = 3.0
#: seconds without an answer after which the person is told the worker may be stopped or hung.
#: Measured on 2 cores: pings are answered in 4 ms (median) and 0.6 s at worst during a training,
#: a model's first load with its ONNX export and int8 quantisation, and a folder run beside a
#: training, with 3 more processes hogging the cores.
SILENT_AFTER = 20.0


class _Failure:
    def __init__(self, message: str) -> None:
        self.message = message


_CANCELLED = object()  # the job ended without its result because the person cancelled it


class JobRunner:
    """One running job of a dock: start it, cancel it, know whether it runs.

    ``patient``: the job stops by itself soon after a cancel and keeps what it did (training,
    folder runs), so a cancel waits for it as long as the worker answers; any other job is
    ended for sure (see :meth:`~napari_skinseg.worker_client.Job.stop`). ``cancelled`` is
    called when a cancelled job ended without its result (instead of ``returned``)."""

    def __init__(self, name: str, kwargs: dict, *, yielded: Callable[[Any], None] | None = None,
                 returned: Callable[[Any], None] | None = None,
                 failed: Callable[[str], None] | None = None,
                 finished: Callable[[], None] | None = None,
                 cancelled: Callable[[], None] | None = None, patient: bool = False) -> None:
        self.name, self.kwargs = name, kwargs
        self.yielded, self.returned, self.failed, self.finished = yielded, returned, failed, finished
        self.cancelled, self.patient = cancelled, patient
        self.job: Job | None = None
        self.running = False
        self._cancel_requested = False
        self._orphaned = False  # its dock's widgets were deleted: nothing more is handed to it

    def _deliver(self, callback: Callable | None, *args: Any) -> None:
        """Hand the dock an item. A dock whose widgets were deleted (napari's window closed while
        the job ran) gets nothing more and its job is stopped: nobody is left to see it, and a
        Qt object used after its deletion raises in a slot, which aborts the process."""
        if callback is None or self._orphaned:
            return
        try:
            callback(*args)
        except RuntimeError as err:
            if "has been deleted" not in str(err):
                raise
            self._orphaned = True
            self.cancel()

    def _body(self):
        try:
            self.job = SESSION.client.submit(self.name, **self.kwargs)
            if self._cancel_requested:
                self.job.stop(self.patient)
            result = yield from self.job.stream()
        except WorkerError as err:
            if self._cancel_requested and isinstance(err, (WorkerDied, JobCancelled)):
                return _CANCELLED  # given up, or its worker ended to stop it
            return _Failure(str(err))
        except Exception as err:  # noqa: BLE001 - e.g. a request that cannot be sent
            return _Failure(plain_error(err))
        return result

    def _on_returned(self, value: Any) -> None:
        if value is _CANCELLED:
            if not SESSION.closing:
                self._deliver(self.cancelled)
        elif isinstance(value, _Failure):
            if SESSION.closing or self._orphaned:
                return
            show_error(value.message)
            self._deliver(self.failed, value.message)
        else:
            if "model" in self.kwargs:
                SESSION.model.mark_loaded(self.kwargs["model"], self.kwargs.get("engine"))
            self._deliver(self.returned, value)

    def _on_aborted(self) -> None:
        """napari's window stopped its thread workers (it closes, and the person agreed to end
        its running tasks): the job stops in the model worker as on a cancel, and a dock still
        open hears it (a job started while another viewer's window was napari's current one
        is that window's task)."""
        self.cancel()
        if not SESSION.closing:
            self._deliver(self.cancelled)

    def _on_yielded(self, item: Any) -> None:
        self._deliver(self.yielded, item)

    def _on_finished(self) -> None:
        _widen_pool(-1)
        self._end()

    def _end(self) -> None:
        self.running = False
        RUNNING.discard(self)
        if not RUNNING:
            WATCHDOG.stop()
        self._deliver(self.finished)

    def start(self) -> "JobRunner":
        _hook_quit()
        self.running = True
        RUNNING.add(self)
        if RUN_SYNCHRONOUSLY:
            gen = self._body()
            while True:
                try:
                    item = next(gen)
                except StopIteration as stop:
                    self._on_returned(stop.value)
                    break
                self._on_yielded(item)
            self._end()
            return self
        worker = self.worker = thread_worker(self._body)()
        worker.yielded.connect(self._on_yielded)
        _widen_pool(1)
        worker.returned.connect(self._on_returned)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        worker.start()
        WATCHDOG.start()
        return self

    @property
    def cancel_requested(self) -> bool:
        """Whether :meth:`cancel` was called (a late result is then the caller's to drop)."""
        return self._cancel_requested

    def cancel(self) -> None:
        """Stop the job without waiting (the GUI stays live); ``finished`` follows."""
        self._cancel_requested = True
        if self.job is not None:
            self.job.stop(self.patient)


def _widen_pool(by: int) -> None:
    """A runner's thread only waits for the model worker (the computing happens there), so it
    takes no place of napari's thread pool, which holds as many threads as there are CPU
    cores: on a 2-core machine a training and a folder run held both, and every other dock's
    job (a click, a ranking, an image) and each measurement queued behind them, unannounced."""
    pool = QThreadPool.globalInstance()
    pool.setMaxThreadCount(pool.maxThreadCount() + by)


class _Watchdog:
    """Pings the model worker while jobs run and says so once when it stops answering.

    Runs on napari's GUI thread from a QTimer and never waits: a ping is a job like any other
    (the worker answers it on a thread of its own, beside the jobs that compute), sent by
    :meth:`~napari_skinseg.worker_client.WorkerClient.ping_nowait`; at most one is on its way.
    The silence is the time since the unanswered ping was sent or, if later, since the worker's
    latest message of any kind. Starts with a dock's job, stops when the last one ends: it has
    no thread of its own and nothing outlives the jobs."""

    def __init__(self) -> None:
        self._timer: QTimer | None = None
        self._reset()

    def _reset(self) -> None:
        self.ping = None  # the unanswered ping, if any
        self.asked = 0.0  # when it was sent
        self.next_ping = 0.0  # when the next one is due
        self.warned = False  # the person was told about this silence

    def start(self) -> None:
        from qtpy.QtWidgets import QApplication

        app = QApplication.instance()
        if app is None or QThread.currentThread() is not app.thread():
            return  # no event loop to tick on (a job started off napari's GUI thread)
        active = False
        if self._timer is not None:
            try:
                active = self._timer.isActive()
            except RuntimeError:  # deleted with an earlier QApplication
                self._timer = None
        if self._timer is None:
            self._timer = QTimer(app)
            self._timer.timeout.connect(self._tick)
        self._timer.setInterval(int(1000 * min(1.0, WATCH_EVERY, SILENT_AFTER / 4)))
        if not active:
            self._reset()
            self._timer.start()

    def stop(self) -> None:
        """The last job ended (or napari quits): after a warning, a worker that answered again
        (its job ended with a result) is said to; a ping still on its way ends with its worker,
        or is answered and dropped."""
        if self._timer is not None:
            try:
                self._timer.stop()
            except RuntimeError:
                self._timer = None
        if (self.ping is not None and self.ping.end_kind != "died"
                and SESSION.client.last_heard > self.asked):
            self._answered_again()
        self._reset()

    def _answered_again(self) -> None:
        if self.warned and not SESSION.closing:
            show_info(f"the model worker answers again (after {time.monotonic() - self.asked:.0f}"
                      " s without an answer)")

    def _tick(self) -> None:
        if not RUNNING or SESSION.closing:
            self.stop()
            return
        client, now = SESSION.client, time.monotonic()
        if self.ping is not None and self.ping.ended.is_set():
            if self.ping.end_kind != "died":  # an ended worker's jobs say so themselves
                self._answered_again()
            self._reset()
            self.next_ping = now + WATCH_EVERY
        if self.ping is None:
            if now >= self.next_ping:
                self.ping = client.ping_nowait()  # None while a worker starts: nothing to ask
                self.asked = now
            return
        silent = now - max(self.asked, client.last_heard)
        if silent >= SILENT_AFTER and not self.warned:
            self.warned = True
            pid = f" (process {client.pid})" if client.remote is None and client.pid else ""
            show_warning(
                f"the model worker{pid} has not answered for {silent:.0f} s: it may be stopped "
                "or hung. Nothing is ended automatically (a long computation can be silent "
                "too); the Cancel button of the dock that waits ends it, napari and its layers "
                "are unaffected, and the next action starts a new worker.")


#: the one watchdog of napari's process (see :class:`_Watchdog`)
WATCHDOG = _Watchdog()

_hooked = False


def _hook_quit() -> None:
    """When napari quits, stop the worker and let the waiting threads end before Qt goes away
    (a thread still waiting on a job when Python exits would abort the process)."""
    global _hooked
    if _hooked:
        return
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        return

    def quit_():
        WATCHDOG.stop()
        SESSION.close()
        QThreadPool.globalInstance().waitForDone(5000)

    app.aboutToQuit.connect(quit_)
    _hooked = True


def run_job(name: str, kwargs: dict | None = None, **callbacks) -> JobRunner:
    """Start worker job ``name``; see :class:`JobRunner` for the callbacks."""
    return JobRunner(name, kwargs or {}, **callbacks).start()


def fetch_devices(combo) -> None:
    """Fill a device ComboBox with the devices that work in the worker (starting it, so the
    first real job finds it warm); the person's choice is kept when it is still offered."""
    def fill(devices) -> None:
        value = combo.value
        combo.choices = list(devices)
        combo.value = value if value in devices else "auto"

    if SESSION.devices_known:
        fill(SESSION.devices)
        return

    def known(devices):
        SESSION.devices, SESSION.devices_known = tuple(devices), True
        fill(SESSION.devices)

    run_job("devices", returned=known, failed=lambda _message: None)
