"""The model worker: a separate Python process that runs torch for napari.

Started by :class:`~napari_skinseg.worker_client.WorkerClient` as
``python -m napari_skinseg.worker_process --connect HOST:PORT`` (a fresh interpreter, like
multiprocessing's ``spawn``) with the connection key in ``SKINSEG_WORKER_KEY``. It connects back,
imports torch on its main thread, then runs each requested job on a thread of its own, streaming
the job's yielded items back, and stops when napari closes the connection.

This module itself never imports torch: napari imports it only to know how to start it.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import traceback
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from typing import Any, Callable

from .worker_protocol import dumps, loads

KEY_ENV = "SKINSEG_WORKER_KEY"


class _Sender:
    """One lock around the connection: job threads and the main thread all send."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def __call__(self, *message: Any) -> None:
        data = dumps(message)
        with self.lock:
            self.conn.send_bytes(data)


def _run_job(send: _Sender, job_id: int, job: Callable, kwargs: dict, cancel: threading.Event,
             describe_error: Callable[[BaseException], str]) -> None:
    try:
        gen = job(cancel.is_set, **kwargs)
        while True:
            try:
                item = next(gen)
            except StopIteration as stop:
                send("done", job_id, stop.value)
                return
            send("event", job_id, item)
    except BaseException as err:  # noqa: BLE001 - every failure goes back as one sentence
        traceback.print_exc(file=sys.stderr)  # the full story stays in the worker's log
        try:
            send("error", job_id, describe_error(err))
        except OSError:
            pass


def serve(conn: Connection, jobs: dict[str, Callable], describe_error: Callable[[BaseException], str]) -> None:
    """Answer requests until the client closes the connection or asks to shut down."""
    send = _Sender(conn)
    send("hello", {"pid": os.getpid(), "python": sys.version.split()[0]})
    cancels: dict[int, threading.Event] = {}
    try:
        _serve(conn, send, cancels, jobs, describe_error)
    finally:
        for cancel in cancels.values():  # nobody is listening any more: stop what still runs
            cancel.set()


def _serve(conn: Connection, send: _Sender, cancels: dict[int, threading.Event],
           jobs: dict[str, Callable], describe_error: Callable[[BaseException], str]) -> None:
    while True:
        try:
            message = loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "shutdown":
            return
        if kind == "cancel":
            if message[1] in cancels:
                cancels[message[1]].set()
            continue
        if kind == "run":
            _, job_id, name, kwargs = message
            if name not in jobs:
                send("error", job_id, f"the worker has no job called {name!r}")
                continue
            cancel = cancels[job_id] = threading.Event()
            threading.Thread(target=_run_job, name=f"job-{job_id}-{name}", daemon=True,
                             args=(send, job_id, jobs[name], kwargs, cancel, describe_error)).start()


def _address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="napari-skinseg model worker. napari starts one itself (--connect); "
                    "--listen runs one for napari on another machine, e.g. a GPU server "
                    f"(napari then needs SKINSEG_WORKER=HOST:PORT and the same {KEY_ENV}).")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--connect", help="HOST:PORT of the napari process that started it")
    where.add_argument("--listen", help="HOST:PORT to wait on for napari (one session at a time)")
    args = parser.parse_args(argv)
    key = bytes.fromhex(os.environ.pop(KEY_ENV))
    # torch, torchvision and smp are imported here, on the main thread: importing smp first in
    # another thread has crashed the process before.
    from .worker_jobs import JOBS, describe_error

    if args.listen:
        with Listener(_address(args.listen), authkey=key) as listener:
            print(f"model worker listening on {args.listen}", file=sys.stderr, flush=True)
            while True:
                try:
                    conn = listener.accept()
                except (OSError, EOFError, AuthenticationError):
                    continue  # a wrong key or a dropped connection: wait for the next one
                serve(conn, JOBS, describe_error)
                conn.close()
    conn = Client(_address(args.connect), authkey=key)
    try:
        serve(conn, JOBS, describe_error)
    finally:
        # Job threads may still be computing; nobody is left to tell, so leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
