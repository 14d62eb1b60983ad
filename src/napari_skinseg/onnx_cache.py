"""The cache of prepared networks: what is on disk for each model file, and whether ``auto``
runs its int8 copy.

A model file's network is exported once and cached in the user's cache folder, keyed by the
file's content (sha256), together with the metadata prediction needs; with a cached export
nothing here imports torch, so `skinseg segment --engine onnx` starts quickly. Export itself
(:mod:`napari_skinseg.onnx_export`) needs torch and happens on first use; the int8 copy is made
from the cached export (:mod:`napari_skinseg.onnx_quantize`, no torch), and timed here once per
kind of CPU for ``auto``'s choice (:func:`int8_preferred`). A cache entry that ONNX Runtime
cannot load is made again once (:func:`build_from_cache`). Processes preparing one model file
take turns (:func:`_preparing`).

Running the networks is :mod:`napari_skinseg.onnx_engine`'s, which imports this module (never
the other way round: both open sessions through :mod:`napari_skinseg.onnx_sessions`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from .atomic import TEMP_SUFFIX, atomic_write_text, file_lock
from .destinations import WriteError
from .errors import ModelFileError, check_model_file
from .onnx_sessions import can_load, is_onnxruntime_error

CACHE_ENV = "SKINSEG_CACHE"
CACHE_ENTRIES = 20  # exports kept (each retrained model makes one); the least recently used go


def cache_dir() -> Path:
    """``$SKINSEG_CACHE``, else the platform's user cache folder, ``/napari-skinseg/onnx``.
    Without a home folder (a container run as a user the system does not know, HOME unset) a
    WriteError that asks for ``$SKINSEG_CACHE``: ``auto`` then runs torch instead of failing."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if sys.platform == "win32":
        base = _absolute_env("LOCALAPPDATA") or _home() / "AppData" / "Local"
    elif sys.platform == "darwin":
        base = _home() / "Library" / "Caches"
    else:
        # the XDG rule: an empty or relative XDG_CACHE_HOME is ignored (it would put the cache
        # in whatever folder a run starts in)
        base = _absolute_env("XDG_CACHE_HOME") or _home() / ".cache"
    return base / "napari-skinseg" / "onnx"


def _absolute_env(name: str) -> Path | None:
    value = os.environ.get(name, "")
    return Path(value) if value and os.path.isabs(value) else None


def _home() -> Path:
    try:
        return Path.home()
    except RuntimeError:  # "Could not determine home directory"
        raise WriteError(Path("~") / ".cache" / "napari-skinseg", f"there is no home folder "
                         f"(HOME is not set); set {CACHE_ENV} to a writable folder",
                         errno.ENOENT) from None


def prune_cache(keep: int = CACHE_ENTRIES) -> None:
    """Delete all but the ``keep`` most recently used model files' exports (an entry is every
    ``<digest>.*`` file: the fp32 export, its metadata, and the int8 copy if one was made)."""
    used: dict[str, float] = {}
    for onnx in cache_dir().glob("*.onnx"):
        digest = onnx.name.split(".")[0]
        try:
            mtime = onnx.stat().st_mtime
        except OSError:  # deleted meanwhile by another run pruning the same cache
            continue
        used[digest] = max(used.get(digest, 0.0), mtime)
    for digest in sorted(used, key=used.get, reverse=True)[keep:]:
        for stale in cache_dir().glob(f"{digest}.*"):
            stale.unlink(missing_ok=True)
    # Temporary files (and the quantiser's scratch folders) of preparations killed midway: an
    # export takes seconds, so one older than an hour is nobody's (a younger one may be another
    # process's export in progress).
    hour_ago = time.time() - 3600
    for leftover in cache_dir().glob(f".*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            if leftover.lstat().st_mtime < hour_ago:
                _remove(leftover)
    # lock files of preparations killed midway (of models not prepared since): removed unless held
    for lock in cache_dir().glob(".*.lock"):
        with contextlib.suppress(OSError):
            if lock.stat().st_mtime < hour_ago:
                with file_lock(lock, wait_s=0):  # its holder removes it when letting go
                    pass


def _remove(path: Path) -> None:
    """Delete a leftover temporary file or scratch folder, whichever it is."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


# A model file's first use (export, int8 copy, its timing) takes seconds. Two processes doing it
# at once (napari's model worker and a CLI run) did it all twice, each timing the two networks
# while the other kept the CPU busy: they could choose different engines for one model.
PREPARE_WAIT_S = 120.0
_HELD = threading.local()  # the entries whose lock this thread holds (the steps nest)
# entries whose holder this process stopped waiting for: its next steps (int8 copy, timing) do
# not wait PREPARE_WAIT_S each again, only take the lock if it is free by then
_GAVE_UP: set[str] = set()


@contextlib.contextmanager
def _preparing(onnx_path: Path) -> Iterator[None]:
    """Make or time the cache entry of ``onnx_path`` (``<digest>.onnx``, the lock per model, not
    for the whole cache) in turn with other processes and threads: they wait here, then find its
    files made. A holder stopped or hung for PREPARE_WAIT_S is not waited for any longer (the
    atomic writes keep two writers safe); without flock (Windows) nobody waits."""
    digest = onnx_path.name.split(".")[0]
    held = _HELD.__dict__.setdefault("digests", set())
    if digest in held:
        yield
        return
    wait_s = 0.0 if digest in _GAVE_UP else PREPARE_WAIT_S
    with file_lock(onnx_path.parent / f".{digest}.lock", wait_s) as locked:
        (_GAVE_UP.discard if locked else _GAVE_UP.add)(digest)
        held.add(digest)
        try:
            if locked:
                _remove_leftovers(onnx_path.parent, digest)
            yield
        finally:
            held.discard(digest)


def _remove_leftovers(folder: Path, digest: str) -> None:
    """Temporary files and quantiser scratch folders of this entry left by a preparation that
    was killed (kill -9, a power cut): the lock's holder is the entry's only writer, so they are
    nobody's (a model-sized int8 one waited an hour for pruning). Only a run that stopped
    waiting for a hung holder writes without the lock; should the holder die during that write,
    the write fails and auto falls back, as for a full disk."""
    for leftover in folder.glob(f".{digest}.*{TEMP_SUFFIX}"):
        _remove(leftover)


def model_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached_export(path: str | os.PathLike | None, inputs: str = "rgb") -> tuple[Path, dict]:
    """``(onnx file, metadata)`` of the cached export of the model file ``path`` (the bundled
    segmentation model when None), made now if missing; ``inputs`` is the kind of model wanted
    (``"rgb"`` segmentation, ``"rgb+clicks"`` click-to-fix), any other is refused."""
    if path is None:
        from .bundled import bundled_model_path

        path = bundled_model_path()
    path = check_model_file(path)
    digest = model_digest(path)
    onnx_path = cache_dir() / f"{digest}.onnx"
    metadata = _cached_metadata(onnx_path)
    if metadata is None:
        with _preparing(onnx_path):
            metadata = _cached_metadata(onnx_path) or _export(path, onnx_path)
        if metadata is None:
            # The file was replaced (retrained, copied over) while it was exported: the entry
            # may hold the new network under the old content's key. Dropped; the new one made.
            return cached_export(path, inputs)
    else:
        _touch(onnx_path)  # recently used: kept when the cache is pruned
    found = metadata.get("inputs", "rgb")  # exports made before click models were all "rgb"
    if found != inputs:
        kind = {"rgb": "a segmentation model", "rgb+clicks": "a click-to-fix model"}
        raise ModelFileError(f"{path.name} is {kind.get(found, found)}, not "
                             f"{kind.get(inputs, inputs)}")
    return onnx_path, metadata


def _cached_metadata(onnx_path: Path) -> dict | None:
    """The metadata of the cached export ``onnx_path``; None when it is not (validly) there."""
    return _read_metadata(onnx_path.with_suffix(".json")) if onnx_path.is_file() else None


def _export(path: Path, onnx_path: Path) -> dict | None:
    """Export the model file ``path`` to ``onnx_path`` (and its JSON); its metadata, or None
    (the entry dropped) when the file changed meanwhile."""
    # torch is imported here only: the first time this model file is used
    from .onnx_export import export_onnx

    digest = onnx_path.name.split(".")[0]
    export_onnx(path, onnx_path, onnx_path.with_suffix(".json"))
    if model_digest(path) != digest:
        _drop_entry(onnx_path)
        return None
    prune_cache(keep=CACHE_ENTRIES)
    return json.loads(onnx_path.with_suffix(".json").read_text())


def _touch(path: Path) -> None:
    """Mark a cache entry as recently used; a read-only cache (one prepared for a container or
    a shared machine) is used as it is, not refused for a timestamp."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _read_json(path: Path) -> dict | None:
    """A cache entry's JSON; None when it is missing or damaged."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_metadata(meta_path: Path) -> dict | None:
    """A cache entry's metadata; None when it is missing or damaged (then it is made again):
    valid JSON that lacks what prediction reads (written by hand, or by another version) failed
    every run with a KeyError's traceback."""
    metadata = _read_json(meta_path)
    if metadata is None:
        return None
    numbers = (int, float)
    size, mean, std = metadata.get("size"), metadata.get("mean"), metadata.get("std")
    valid = (isinstance(size, int) and size > 0
             and all(isinstance(v, list) and v and all(isinstance(x, numbers) for x in v)
                     for v in (mean, std))
             and isinstance(metadata.get("config", {}) or {}, dict)
             and isinstance(metadata.get("quality", {}) or {}, dict))
    return metadata if valid else None


def _drop_entry(onnx_path: Path) -> None:
    """Delete one cached network and its JSON (``x.onnx``/``x.json``, ``x.int8.onnx``/...)."""
    for stale in (onnx_path, onnx_path.with_suffix(".json")):
        stale.unlink(missing_ok=True)


class OnnxRuntimeFailed(ModelFileError):
    """ONNX Runtime cannot load a freshly made export (a broken install, an operator it lacks):
    ``auto`` runs torch instead (:func:`napari_skinseg.engines.make_segmenter`)."""

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__(f"ONNX Runtime cannot load the export of this model even after making "
                         f"it again ({cause}); use --engine torch")


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:200]


def build_from_cache(export, build):
    """``build(*export())``; a cached network ONNX Runtime cannot load (a file damaged outside
    this program: a disk error, a copy cut short) is deleted and made again once, instead of
    failing every run until someone empties the cache by hand."""
    for attempt in (1, 2):
        onnx_path, metadata = export()
        try:
            return build(onnx_path, metadata)
        except Exception as err:  # noqa: BLE001 - filtered by is_onnxruntime_error
            if not is_onnxruntime_error(err):
                raise
            if attempt == 2:
                raise OnnxRuntimeFailed(_first_line(err)) from None
            _drop_entry(onnx_path)


def cached_int8_export(path: str | os.PathLike | None,
                       retry_failed: bool = False) -> tuple[Path, dict]:
    """``(int8 onnx file, metadata)`` for the segmentation model file ``path`` (the bundled one
    when None): the quantised copy of :func:`cached_export`'s network, made now if missing
    (:mod:`napari_skinseg.onnx_quantize`; refused with ModelFileError if its masks drift). A
    quantiser that failed on this model fails again at once (QuantisationFailed) unless
    ``retry_failed`` (the onnx-int8 engine asked for by name) or its version changed."""
    onnx_path, metadata = cached_export(path, "rgb")
    int8_path = onnx_path.with_suffix(".int8.onnx")
    if _int8_ready(int8_path):
        _touch(int8_path)
        return int8_path, metadata
    with _preparing(onnx_path):
        if not _int8_ready(int8_path):  # else made meanwhile by the process waited for
            onnx_path, metadata = _quantise(path, onnx_path, metadata, retry_failed)
    return int8_path, metadata


def _int8_ready(int8_path: Path) -> bool:
    return int8_path.is_file() and int8_path.with_suffix(".json").is_file()


def _quantise(path, onnx_path: Path, metadata: dict, retry_failed: bool) -> tuple[Path, dict]:
    """Make the int8 copy of the cached export ``onnx_path``; ``(fp32 export, metadata)``, made
    again if it was damaged. A refusal or a failure of the quantiser is remembered beside it:
    quantising again would take seconds to end the same way, on every ``auto`` run."""
    from .onnx_quantize import QuantisationFailed, QuantisationRefused, quantize_export

    if not can_load(onnx_path):
        # a damaged fp32 export failed the quantiser (a protobuf traceback) on every run
        _drop_entry(onnx_path)
        onnx_path, metadata = cached_export(path, "rgb")
    refused = onnx_path.with_suffix(".int8-refused.json")
    failed = onnx_path.with_suffix(".int8-failed.json")
    _raise_remembered(refused, None if retry_failed else failed)
    try:
        quantize_export(onnx_path, onnx_path.with_suffix(".int8.onnx"), metadata)
    except QuantisationRefused as err:
        _remember(refused, {"agreement": err.agreement})
        raise
    except (OSError, MemoryError):  # a full or read-only cache: said as such
        raise
    except Exception as err:  # noqa: BLE001 - the quantiser's own failures, of every type
        _remember(failed, {"cause": _first_line(err), "versions": _quantiser_versions()})
        raise QuantisationFailed(_first_line(err)) from None
    refused.unlink(missing_ok=True)
    failed.unlink(missing_ok=True)
    return onnx_path, metadata


def _raise_remembered(refused: Path, failed: Path | None) -> None:
    """Raise the refusal, or the failure (``failed``; None: not looked at), noted for this
    model's int8 copy; a damaged note is passed over (the copy is made again)."""
    from .onnx_quantize import MIN_AGREEMENT, QuantisationFailed, QuantisationRefused

    agreement = (_read_json(refused) or {}).get("agreement")
    if isinstance(agreement, (int, float)) and agreement < MIN_AGREEMENT:
        raise QuantisationRefused(agreement)
    note = (_read_json(failed) or {}) if failed is not None else {}
    # another onnxruntime (or napari-skinseg) may quantise this model: tried again
    if isinstance(note.get("cause"), str) and note.get("versions") == _quantiser_versions():
        raise QuantisationFailed(note["cause"])


def _remember(note: Path, data: dict) -> None:
    with contextlib.suppress(OSError):  # a read-only cache: found out again next time
        atomic_write_text(note, json.dumps(data))


def _quantiser_versions() -> dict[str, str]:
    import onnxruntime

    from . import __version__

    return {"onnxruntime": onnxruntime.__version__, "napari_skinseg": __version__}


# ``auto`` runs a model's int8 copy only where its network is clearly faster than fp32's: CPUs
# with int8 dot-product instructions (VNNI, AMX) run it ~1.5x faster (BENCHMARKS.md §9), others
# may run the QDQ network slower, and a near tie is not worth masks that differ from torch's.
INT8_MIN_SPEEDUP = 1.2


def _cpu_name() -> str:
    """The kind of CPU an int8 timing holds for: a cache folder may be shared by machines (a
    home folder on a cluster), so each kind gets its own record."""
    name = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{platform.machine()} {name or platform.processor()} x{os.cpu_count()}"


def int8_preferred(path: str | os.PathLike | None) -> bool:
    """Whether the ``auto`` engine runs the int8 copy of the model file ``path`` (None: bundled)
    on this machine: the copy is made (its masks agree with fp32's on the check lesions, else it
    is refused) and its network ran at least INT8_MIN_SPEEDUP times as fast as fp32's here. The
    timing is taken once per model and kind of CPU (about a second) and kept beside the copy."""
    from .onnx_quantize import QuantisationRefused

    try:
        int8_path, _ = cached_int8_export(path)
        record = _speed_record(int8_path)
        if record is None:
            # timed while other processes preparing this model wait (idle), not compute
            with _preparing(int8_path):
                record = _speed_record(int8_path) or _time_and_keep(path, int8_path)
    except QuantisationRefused:
        return False
    return float(record["int8_ms"]) * INT8_MIN_SPEEDUP <= float(record["fp32_ms"])


def _speed_record(int8_path: Path) -> dict | None:
    """This kind of CPU's timing of the two networks; None when not taken yet (or damaged)."""
    record = (_read_json(int8_path.with_suffix(".speed.json")) or {}).get(_cpu_name())
    valid = isinstance(record, dict) and all(isinstance(record.get(k), (int, float))
                                             for k in ("fp32_ms", "int8_ms"))
    return record if valid else None


def _time_and_keep(path, int8_path: Path) -> dict:
    """Time the two networks; the record kept beside those of other kinds of CPU."""
    record_path = int8_path.with_suffix(".speed.json")
    record = _time_networks(path)
    records = _read_json(record_path) or {}
    records[_cpu_name()] = record
    with contextlib.suppress(OSError):  # a read-only cache: timed again next time
        atomic_write_text(record_path, json.dumps(records))
    return record


def _time_networks(path: str | os.PathLike | None) -> dict[str, float]:
    """``{"fp32_ms", "int8_ms"}`` of the model file's two cached networks. A network ONNX Runtime
    cannot load is made again once (:func:`build_from_cache`): a damaged int8 copy failed the
    timing, and so was passed over with a warning, on every run."""
    from .onnx_quantize import network_ms

    def timed(int8_path: Path, metadata: dict) -> dict[str, float]:
        fp32_path = int8_path.parent / f"{int8_path.name.split('.')[0]}.onnx"
        fp32_ms, int8_ms = network_ms(fp32_path, int8_path, int(metadata["size"]))
        return {"fp32_ms": fp32_ms, "int8_ms": int8_ms}

    return build_from_cache(lambda: cached_int8_export(path), timed)
