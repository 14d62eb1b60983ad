"""Writing files atomically: a temporary file beside the target, then a rename.

A crash or cancel in the middle never leaves a half-written file under the real name, and a
failed write (a full disk) removes its temporary file and raises :class:`WriteError` naming the
target and the cause. With ``overwrite=False`` the final step is a hard link, which fails when
the target appeared meanwhile, so two runs writing the same file never replace each other's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from pathlib import Path
from typing import Callable, Iterator

from .destinations import WriteError

TEMP_SUFFIX = ".tmp"


def temp_path_for(path: Path) -> Path:
    """A fresh hidden name beside ``path`` (``.<name>.<random>.tmp``)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Temporary files of ``path`` left behind by a process that was killed while writing it."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}")
                  if len(p.name) == len(path.name) + 10 + len(TEMP_SUFFIX))


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Remove :func:`stale_temp_files` of ``path``; only for files that one process owns (a
    model and its checkpoint), never for shared results another run may be writing."""
    removed = []
    for stale in stale_temp_files(path):
        with contextlib.suppress(OSError):
            stale.unlink()
            removed.append(stale)
    return removed


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic "create if absent"
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, f"{path} exists; not overwriting it", str(path)) from None
    except OSError:  # a file system without hard links: check, then rename
        if path.exists():
            raise FileExistsError(errno.EEXIST, f"{path} exists; not overwriting it",
                                  str(path)) from None
        os.replace(tmp, path)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *,
                 overwrite: bool = True) -> Path:
    """Call ``write(temporary_path)``, then move the result to ``path``.

    ``overwrite=False`` raises ``FileExistsError`` if ``path`` exists when the file is ready
    (checked atomically). Failures of the file system raise :class:`WriteError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # the folder, or one above it, is a file ("file exists" misled)
        raise WriteError(path, "a part of the path is a file, not a folder",
                         errno.ENOTDIR) from None
    except OSError as err:
        raise WriteError.from_os_error(path, err) from None
    if path.is_dir():
        raise WriteError(path, "it is a folder, not a file", errno.EISDIR)
    while True:
        tmp = temp_path_for(path)
        try:
            # Created with mode 0o666, so the process umask gives it a normal file's permissions
            # (mkstemp would make it private, and reading the umask means changing it).
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
        except OSError as err:
            raise WriteError.from_os_error(path, err) from None
    try:
        write(str(tmp))
        _publish(tmp, path, overwrite)
    except FileExistsError as err:
        if err.filename == str(path):
            raise
        raise WriteError.from_os_error(path, err) from None
    except OSError as err:
        raise WriteError.from_os_error(path, err) from None
    finally:
        with contextlib.suppress(OSError):
            if os.path.lexists(tmp):
                os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    """Write a text file (UTF-8, ``\\n`` line ends as given) atomically.

    A file name that is not UTF-8 (Python holds its bytes as surrogates) is written as those
    bytes, so an id in a table matches its file; strict UTF-8 stopped whole runs here."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
            fh.write(text)

    return atomic_write(path, write, overwrite=overwrite)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (POSIX ``flock``; a no-op where that is missing), so
    that two runs merging into one file of the folder take turns."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


LOCK_POLL_S = 0.05


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, wait_s: float) -> Iterator[bool]:
    """Hold an exclusive lock on the file ``path`` (POSIX ``flock``; the file is made, and
    removed on release) for the block, so that processes doing the same work take turns. Yields
    whether it is held: False where ``fcntl`` is missing (Windows), the folder is not writable,
    or another process held it for ``wait_s`` seconds (stopped or hung: its work is not waited
    for forever; a dead process's lock is released by the system)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield False
        return
    path = Path(path)
    fd = _locked_fd(fcntl, path, time.monotonic() + wait_s)
    if fd is None:
        yield False
        return
    try:
        yield True
    finally:
        # removed while still held: a process waiting on this file finds it gone and locks the
        # next one (_locked_fd), so a lock file never outlives its work
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _locked_fd(fcntl, path: Path, deadline: float) -> int | None:
    """A descriptor of ``path`` holding its flock, or None (no lock to be had by ``deadline``)."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:  # read-only is enough for flock (a lock file another user made in a shared cache)
            fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
        except OSError:
            return None
        if not _flock_by(fcntl, fd, deadline):
            os.close(fd)
            return None
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        os.close(fd)  # its holder removed it as it let go: lock the file there now


def _flock_by(fcntl, fd: int, deadline: float) -> bool:
    """Take the flock of ``fd``, polling (a blocking flock cannot time out) until ``deadline``."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(LOCK_POLL_S)
        except OSError:  # a file system without locks (some network mounts)
            return False
