"""napari's side of the model worker: start it, send it jobs, stream their reports back.

napari never imports torch (torch's triton and the Mesa OpenGL driver of napari's canvas crash
one process between them); everything that needs torch runs in a worker process started here.
The worker is long-lived, so a loaded model stays warm, and replaceable: when it dies (segfault,
out of memory, ``kill -9``) every running job fails with :class:`WorkerDied` and the next
:meth:`WorkerClient.submit` starts a fresh one.

::

    client = WorkerClient()
    job = client.submit("predict", images=[("skin", array)], model=None)
    for name, probability in job.stream(): ...
    job.cancel()  # the worker's job sees it between batches
    job.stop()    # cancel, and end it even when it cannot stop by itself (see Job.stop)

Only plain data, numpy arrays and the classes of :mod:`napari_skinseg.reports` and
:mod:`napari_skinseg.config` cross the boundary (see :mod:`napari_skinseg.worker_protocol`).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any, Generator

from .worker_process import KEY_ENV
from .worker_protocol import dumps, loads

START_TIMEOUT = 180.0  # seconds; the first import of torch from a cold disk can take a minute
STOP_GRACE = 2.0  # seconds a stopped job has to end by itself before the worker is looked at
PING_TIMEOUT = 5.0  # seconds a worker that works has to answer a ping (it answers in ms)


class WorkerError(RuntimeError):
    """A job failed in the worker; the message is meant for the person."""


class WorkerDied(WorkerError):
    """The worker process ended while a job was running or could not start."""


class JobCancelled(WorkerError):
    """The job was given up at the person's request before it ended (see :meth:`Job.stop`)."""


def _exit_cause(returncode: int | None) -> str:
    """How the worker ended, as the end of "the model worker ..."."""
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return {"SIGSEGV": "crashed (segmentation fault)",
                "SIGKILL": "was killed (for instance by the system when memory ran out)",
                "SIGABRT": "aborted"}.get(name, f"was stopped by {name}")
    return f"exited with code {returncode}"


class _Link:
    """One connection to a worker, and a thread of its own that writes to it: nobody who sends
    (napari's GUI thread cancelling a job, above all) ever waits on a worker that stopped
    reading, a stopped or hung process whose socket buffer (about 4 MB, less than one
    photograph) is full."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.broken = False
        threading.Thread(target=self._write, name="skinseg-worker-send", daemon=True).start()

    def send(self, *message: Any) -> None:
        if self.broken:
            raise WorkerDied("the model worker is not reachable")
        self._outbox.put(dumps(message))

    def _write(self) -> None:
        while (data := self._outbox.get()) is not None:
            try:
                self.conn.send_bytes(data)
            # the worker is gone (the receiving side fails its jobs), or close() hung up
            # during a long write (a closed Connection then raises TypeError)
            except (OSError, TypeError, ValueError):
                self.broken = True
                return

    def close(self) -> None:
        """Hang up at once: threads blocked reading or writing return (a plain close leaves
        them waiting on a worker that does not answer), and a remote worker sees the end."""
        self.broken = True
        self._outbox.put(None)
        with contextlib.suppress(OSError, ValueError):
            with socket.socket(fileno=os.dup(self.conn.fileno())) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()


class Job:
    """One request to the worker: its items arrive in :meth:`stream`."""

    def __init__(self, client: "WorkerClient", job_id: int, name: str,
                 link: _Link | None = None) -> None:
        self.client, self.id, self.name, self.link = client, job_id, name, link
        self.queue: queue.Queue = queue.Queue()
        self.cancelled = False
        self.ended = threading.Event()  # its last item (result, error, death) has arrived
        self.end_kind: str | None = None
        self._stopping = False

    def _end(self, kind: str, value: Any) -> None:
        self.end_kind = kind
        self.queue.put((kind, value))
        self.ended.set()

    def stream(self) -> Generator[Any, None, Any]:
        """Yield the job's items; return its result; raise :class:`WorkerError` if it failed."""
        while True:
            kind, value = self.queue.get()
            if kind == "event":
                yield value
            elif kind == "done":
                return value
            elif kind == "died":
                raise WorkerDied(value)
            elif kind == "cancelled":
                raise JobCancelled(value)
            else:
                raise WorkerError(value)

    def result(self) -> Any:
        """Wait for the end, dropping the items."""
        gen = self.stream()
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value

    def cancel(self) -> None:
        """Ask the worker to stop this job (training stops within one batch)."""
        self.cancelled = True
        self.client._send("cancel", self.id, link=self.link)

    def stop(self, patient: bool = False) -> None:
        """Cancel, and see that the job ends even when it cannot stop by itself: one long image
        is not interrupted between batches, and a worker that hangs or was stopped (SIGSTOP)
        never answers. Returns at once; if the job has not ended after :data:`STOP_GRACE`
        seconds, a worker that does not answer a ping is restarted (every job it ran ends), a
        ``patient`` job (one that stops between batches or images and keeps what it did:
        training, folder runs) is waited for while the worker answers, and any other job is
        ended by restarting the worker, or, when other jobs run there (a training), given up
        alone: :meth:`stream` raises :class:`JobCancelled` and its late items are dropped."""
        if self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(WorkerError):
            self.cancel()
        threading.Thread(target=self.client._see_to_end, args=(self, patient),
                         name=f"skinseg-stop-{self.id}", daemon=True).start()


REMOTE_ENV = "SKINSEG_WORKER"


class WorkerClient:
    """Starts and talks to one model worker process.

    ``remote=(host, port)`` (or the environment variable ``SKINSEG_WORKER=HOST:PORT`` with
    ``SKINSEG_WORKER_KEY``) talks to a worker started elsewhere with
    ``python -m napari_skinseg.worker_process --listen HOST:PORT`` instead of starting one; folder
    paths must then mean the same on both machines (arrays travel with the request).
    """

    def __init__(self, python: str | None = None, remote: tuple[str, int] | None = None,
                 authkey: bytes | None = None) -> None:
        self.python = python or sys.executable
        if remote is None and os.environ.get(REMOTE_ENV):
            host, port = os.environ[REMOTE_ENV].rsplit(":", 1)
            remote, authkey = (host, int(port)), bytes.fromhex(os.environ[KEY_ENV])
        self.remote, self.authkey = remote, authkey
        self._lock = threading.RLock()
        self._link: _Link | None = None
        self._process: subprocess.Popen | None = None
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._log_path: Path | None = None
        self.starts = 0  # how many workers this client has started (a restart counts)
        self.last_heard = 0.0  # time.monotonic() of the worker's latest message (any job's)
        atexit.register(self.shutdown)

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        if self.remote is not None:
            return self._link is not None
        return self._link is not None and self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def ensure_started(self) -> None:
        """Start a worker unless one is running (blocks for the worker's imports)."""
        with self._lock:
            if self.alive:
                return
            self._discard()
            self._connect() if self.remote is not None else self._start()

    def start_in_background(self) -> None:
        """Start the worker now without waiting, so the first real job finds it warm."""
        def start():
            try:
                self.ensure_started()
            except WorkerError:
                pass  # reported to whoever submits the first job
        threading.Thread(target=start, name="skinseg-worker-start", daemon=True).start()

    def _start(self) -> None:
        key = secrets.token_bytes(32)
        listener = Listener(("127.0.0.1", 0), authkey=key)
        host, port = listener.address
        log = tempfile.NamedTemporaryFile(prefix="napari-skinseg-worker-", suffix=".log",
                                          delete=False)
        self._log_path = Path(log.name)
        env = {**os.environ, KEY_ENV: key.hex(), "PYTHONFAULTHANDLER": "1",
               "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            [self.python, "-m", "napari_skinseg.worker_process", "--connect", f"{host}:{port}"],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        accepted: list[Connection] = []
        accepter = threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True)
        accepter.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not accepted and process.poll() is None and time.monotonic() < deadline:
            accepter.join(0.05)
        listener.close()
        conn = accepted[0] if accepted else None
        hello = None
        if conn is not None:
            while process.poll() is None and time.monotonic() < deadline:
                if conn.poll(0.1):
                    try:
                        hello = loads(conn.recv_bytes())
                    except (EOFError, OSError):
                        pass
                    break
        if not hello or hello[0] != "hello":
            if process.poll() is None:
                process.kill()
                process.wait()
            if conn is not None:
                conn.close()
            raise WorkerDied(f"the model worker could not start (it {_exit_cause(process.poll())})"
                             + self._log_tail())
        self._process, self._link = process, _Link(conn)
        self.starts += 1
        threading.Thread(target=self._receive, args=(self._link, process),
                         name="skinseg-worker-receive", daemon=True).start()

    def _connect(self) -> None:
        try:
            conn = Client(self.remote, authkey=self.authkey)
            if not conn.poll(START_TIMEOUT):
                raise OSError("no answer")
            hello = loads(conn.recv_bytes())
        except (OSError, EOFError, AuthenticationError) as err:
            raise WorkerDied(f"cannot reach the model worker at {self.remote[0]}:{self.remote[1]} "
                             f"({err or type(err).__name__})") from None
        if hello[0] != "hello":
            raise WorkerDied(f"{self.remote[0]}:{self.remote[1]} is not a napari-skinseg worker")
        self._link = _Link(conn)
        self.starts += 1
        threading.Thread(target=self._receive, args=(self._link, None),
                         name="skinseg-worker-receive", daemon=True).start()

    def _log_tail(self, lines: int = 3) -> str:
        try:
            text = self._log_path.read_text(errors="replace").strip().splitlines()
        except (OSError, AttributeError):
            return ""
        useful = [t for t in text if t.strip()][-lines:]
        return (": " + " | ".join(u.strip() for u in useful)[:400]) if useful else ""

    def _receive(self, link: _Link, process: subprocess.Popen | None) -> None:
        while True:
            try:
                kind, job_id, value = loads(link.conn.recv_bytes())
            except (EOFError, OSError):
                break
            self.last_heard = time.monotonic()
            job = self._jobs.get(job_id)
            if job is None:  # e.g. the late items of a job given up
                continue
            if kind != "event":
                self._jobs.pop(job_id, None)
            if kind == "error" and str(value).endswith("worker's log"):
                value = f"{value} ({self._log_path})"
            if kind == "event":
                job.queue.put((kind, value))
            else:
                job._end(kind, value)
        # The worker is gone: fail every job that was waiting on it.
        if process is not None:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
            cause = _exit_cause(process.returncode)
        else:
            cause = f"at {self.remote[0]}:{self.remote[1]} disconnected"
        with self._lock:
            if self._link is link:
                self._link = None
            orphans = [j for j in self._jobs.values() if j.link is link]  # not a new worker's
            for job in orphans:
                del self._jobs[job.id]
        message = (f"the model worker {cause}; napari and its layers are "
                   "unaffected, and the next action starts a new worker")
        for job in orphans:
            job._end("died", message)

    def _discard(self) -> None:
        if self._link is not None:
            self._link.close()
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._link = None

    def shutdown(self) -> None:
        """Stop the worker (at napari's exit; jobs still running are abandoned)."""
        with self._lock:
            process, link = self._process, self._link
            if link is not None:
                try:
                    self._send("shutdown")
                except WorkerError:
                    pass
            if process is not None:
                try:
                    process.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            self._discard()
            self._process = None

    def kill(self) -> None:
        """Kill the worker as a crash would (for tests and a stuck worker)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    # -- jobs --------------------------------------------------------------------------------
    def _send(self, *message: Any, link: _Link | None = None) -> None:
        """Queue a message for the worker (``link``: the one a job runs on); never blocks."""
        link = link or self._link
        if link is None:
            raise WorkerDied("the model worker is not running")
        link.send(*message)

    def _new_job(self, name: str, link: _Link | None, kwargs: dict) -> Job:
        with self._lock:  # the link still current: a worker that dies later fails this job
            if link is None or link is not self._link:
                raise WorkerDied("the model worker is not running")
            job = Job(self, next(self._ids), name, link)
            self._jobs[job.id] = job
        try:
            self._send("run", job.id, name, kwargs, link=link)
        except WorkerDied:
            self._jobs.pop(job.id, None)
            raise
        return job

    def submit(self, name: str, **kwargs: Any) -> Job:
        """Start job ``name`` (see :mod:`napari_skinseg.worker_jobs`) in the worker."""
        self.ensure_started()
        return self._new_job(name, self._link, kwargs)

    def ping_nowait(self) -> Job | None:
        """Send a ping to the running worker without waiting for anything (napari's GUI thread
        calls it: see :mod:`napari_skinseg._widgets.jobs`' watchdog); its answer ends the job
        returned. None when no worker runs, or one is being started or ended right now (that
        holds the lock for up to :data:`START_TIMEOUT` seconds and has its own messages)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if not self.alive:
                return None
            return self._new_job("ping", self._link, {})
        except WorkerDied:
            return None
        finally:
            self._lock.release()

    def _answers(self, link: _Link) -> bool:
        """Whether the worker on ``link`` answers a ping within :data:`PING_TIMEOUT` seconds
        (any answer counts: an older worker without the job says so)."""
        try:
            ping = self._new_job("ping", link, {})
        except WorkerDied:
            return False
        answered = ping.ended.wait(PING_TIMEOUT) and ping.end_kind != "died"
        with self._lock:
            self._jobs.pop(ping.id, None)
        return answered

    def _see_to_end(self, job: Job, patient: bool) -> None:
        """:meth:`Job.stop`'s watch, on a thread of its own."""
        while not job.ended.wait(STOP_GRACE):
            if job.link is None or job.link is not self._link:
                return  # that worker is already gone; its jobs ended with it
            if not self._answers(job.link):
                self.restart(job.link, "the model worker stopped answering (stopped or hung), "
                                       "so it was ended; napari and its layers are unaffected, "
                                       "and the next action starts a new worker")
                return
            if patient:
                continue
            with self._lock:
                others = [j for j in self._jobs.values()
                          if j is not job and j.link is job.link and j.name != "ping"]
                if others:  # e.g. a training: it goes on, this job's late items are dropped
                    self._jobs.pop(job.id, None)
            if others:
                job._end("cancelled", f"{job.name} was cancelled")
            else:  # nothing else runs there: a fresh worker stops the computing too
                self.restart(job.link, f"the model worker was restarted to cancel {job.name}")
            return

    def restart(self, link: _Link | None = None, reason: str = "the model worker was restarted"
                ) -> None:
        """End the worker now, a stopped or hung one too (only if it is still the one on
        ``link``): every job it runs ends with ``reason``, and the next job starts a new one."""
        with self._lock:
            if link is not None and link is not self._link:
                return
            ended = [j for j in self._jobs.values() if j.link is self._link]
            for job in ended:
                del self._jobs[job.id]
            self._discard()  # SIGKILL ends a stopped process as well
        for job in ended:
            job._end("died", reason)

    def call(self, name: str, **kwargs: Any) -> Any:
        """Run a job to its end and return its result."""
        return self.submit(name, **kwargs).result()
