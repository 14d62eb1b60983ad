"""Where results go: up-front checks that a destination can be written, and failures in one line.

Every command checks its destinations *before* it reads data or trains (:func:`check_output_file`,
:func:`check_output_folder`), and every write that still fails (a disk that fills up mid-run)
raises :class:`WriteError`, whose text names the path and the cause in plain words, e.g.
``cannot write Results/a_segmentation.png: no space left on device``. Folders given as inputs are
checked with :func:`require_folder`, which tells a file from a missing folder.

This module imports nothing heavy (no torch, no Qt), so every layer can use it.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

#: The cause of an OSError in the words a user reads (errno -> text).
CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENAMETOOLONG: "the file name is too long",
    errno.EFBIG: "the file is too large for this file system",
    errno.ENOENT: "no such file or folder",
    errno.EIO: "input/output error (a failing disk or a disconnected drive)",
}
if hasattr(errno, "EDQUOT"):
    CAUSES[errno.EDQUOT] = "disk quota exceeded"


def cause_of(err: OSError) -> str:
    """``err``'s cause in plain words (``no space left on device``), without the path."""
    if err.errno in CAUSES:
        return CAUSES[err.errno]
    text = err.strerror or (str(err.args[0]) if err.args else type(err).__name__)
    return text[:1].lower() + text[1:]


class WriteError(OSError):
    """A file or folder that could not be written: ``cannot write PATH: CAUSE``."""

    def __init__(self, path: str | os.PathLike, cause: str, code: int | None = None):
        super().__init__(code, cause, str(path))
        self.path = Path(path)
        self.cause = cause

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.cause}"

    @classmethod
    def from_os_error(cls, path: str | os.PathLike, err: OSError) -> "WriteError":
        if isinstance(err, WriteError):
            return err
        return cls(path, cause_of(err), err.errno)


def describe_os_error(err: OSError) -> str:
    """One line for any OSError: our own messages as they are, the system's as ``PATH: cause``."""
    if isinstance(err, WriteError) or err.errno is None or not err.strerror:
        return str(err)
    where = err.filename if err.filename is not None else ""
    return f"{where}: {cause_of(err)}" if where else cause_of(err)


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def probe_folder(folder: str | os.PathLike, for_path: str | os.PathLike | None = None) -> None:
    """Raise :class:`WriteError` unless a file can be created in ``folder`` (or, when it does not
    exist yet, in the nearest folder above it that does, where it would be created).

    A real file is created and removed, so read-only mounts, permissions and ACLs are all caught
    (``os.access`` is fooled by some of them, and always says yes to root).
    """
    target = Path(for_path) if for_path is not None else Path(folder)
    existing = _nearest_existing(Path(folder))
    if not existing.is_dir():
        raise WriteError(target, f"{existing} is a file, not a folder", errno.ENOTDIR)
    probe = existing / f".skinseg-write-test.{secrets.token_hex(4)}.tmp"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as err:
        raise WriteError.from_os_error(target, err) from None
    try:
        os.unlink(probe)
    except OSError:
        pass


def check_output_file(path: str | os.PathLike, *, overwrite: bool = False,
                      what: str = "output file", example: str = "results.csv") -> Path:
    """Check, before any work, that ``path`` can be written as a new file (or, with
    ``overwrite``, replaced): not a folder, not already there, in a folder that can be written."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder; give a file name, e.g. "
                                f"{path / example}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another {what} or pass --overwrite")
    probe_folder(path.parent, for_path=path)
    return path


def check_output_folder(path: str | os.PathLike, what: str = "results folder") -> Path:
    """Check, before any work, that files can be written into the folder ``path``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{what} {path} is a file, not a folder")
    probe_folder(path)
    return path


def require_folder(path: str | os.PathLike, what: str = "folder") -> Path:
    """An input folder that must exist: says whether it is missing or is a file."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{what} {path} is a file, not a folder; give the folder "
                                 "that holds the files")
    raise FileNotFoundError(f"{what} {path} does not exist")
