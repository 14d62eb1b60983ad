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

Only plain data, numpy arrays and the classes of :mod:`napari_skinseg.reports` and
:mod:`napari_skinseg.config` cross the boundary (see :mod:`napari_skinseg.worker_protocol`).
"""

from __future__ import annotations

import atexit
import itertools
import os
import queue
import secrets
import signal
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


class WorkerError(RuntimeError):
    """A job failed in the worker; the message is meant for the person."""


class WorkerDied(WorkerError):
    """The worker process ended while a job was running or could not start."""


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


class Job:
    """One request to the worker: its items arrive in :meth:`stream`."""

    def __init__(self, client: "WorkerClient", job_id: int, name: str) -> None:
        self.client, self.id, self.name = client, job_id, name
        self.queue: queue.Queue = queue.Queue()
        self.cancelled = False

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
        self.client._send("cancel", self.id)


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
        self._send_lock = threading.Lock()
        self._conn: Connection | None = None
        self._process: subprocess.Popen | None = None
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._log_path: Path | None = None
        self.starts = 0  # how many workers this client has started (a restart counts)
        atexit.register(self.shutdown)

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        if self.remote is not None:
            return self._conn is not None
        return self._conn is not None and self._process is not None and self._process.poll() is None

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
        self._process, self._conn = process, conn
        self.starts += 1
        threading.Thread(target=self._receive, args=(conn, process), name="skinseg-worker-receive",
                         daemon=True).start()

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
        self._conn = conn
        self.starts += 1
        threading.Thread(target=self._receive, args=(conn, None), name="skinseg-worker-receive",
                         daemon=True).start()

    def _log_tail(self, lines: int = 3) -> str:
        try:
            text = self._log_path.read_text(errors="replace").strip().splitlines()
        except (OSError, AttributeError):
            return ""
        useful = [t for t in text if t.strip()][-lines:]
        return (": " + " | ".join(u.strip() for u in useful)[:400]) if useful else ""

    def _receive(self, conn: Connection, process: subprocess.Popen | None) -> None:
        while True:
            try:
                kind, job_id, value = loads(conn.recv_bytes())
            except (EOFError, OSError):
                break
            job = self._jobs.get(job_id)
            if job is None:
                continue
            if kind != "event":
                self._jobs.pop(job_id, None)
            if kind == "error" and str(value).endswith("worker's log"):
                value = f"{value} ({self._log_path})"
            job.queue.put((kind, value))
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
            if self._conn is conn:
                self._conn = None
            orphans = [j for j in self._jobs.values() if j.client is self]
            self._jobs.clear()
        message = (f"the model worker {cause}; napari and its layers are "
                   "unaffected, and the next action starts a new worker")
        for job in orphans:
            job.queue.put(("died", message))

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._conn = None

    def shutdown(self) -> None:
        """Stop the worker (at napari's exit; jobs still running are abandoned)."""
        with self._lock:
            process, conn = self._process, self._conn
            if conn is not None:
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
    def _send(self, *message: Any) -> None:
        conn = self._conn
        if conn is None:
            raise WorkerDied("the model worker is not running")
        data = dumps(message)
        try:
            with self._send_lock:
                conn.send_bytes(data)
        except OSError as err:
            raise WorkerDied(f"the model worker is not reachable ({err})") from None

    def submit(self, name: str, **kwargs: Any) -> Job:
        """Start job ``name`` (see :mod:`napari_skinseg.worker_jobs`) in the worker."""
        self.ensure_started()
        with self._lock:
            job = Job(self, next(self._ids), name)
            self._jobs[job.id] = job
        try:
            self._send("run", job.id, name, kwargs)
        except WorkerDied:
            self._jobs.pop(job.id, None)
            raise
        return job

    def call(self, name: str, **kwargs: Any) -> Any:
        """Run a job to its end and return its result."""
        return self.submit(name, **kwargs).result()
