"""What the Train, Segment and Curate docks of one napari session share.

* the model worker (a separate process: napari never imports torch),
* the model in use (the bundled model until a validated model replaces it, or the person picks
  one), with its name and validation Dice for every dock to show,
* the post-processing settings (set in Segment, used by Curate too).
"""

from __future__ import annotations

from pathlib import Path

from psygnal import Signal

from ..config import PostprocessConfig
from ..worker_client import WorkerClient


# A model's first job in a session loads it; the first use of a model file on a computer also
# exports it for ONNX Runtime and, where it pays, quantises and times an int8 copy (engines.py)
FIRST_USE_NOTE = (" (loading the model; the first use of a model file on this computer prepares "
                  "it, about 10 s more, once)")


class ModelInUse:
    """The model Segment and Curate use; ``path`` None means the bundled model."""

    changed = Signal(object)

    def __init__(self) -> None:
        self.path: Path | None = None
        self.info: dict | None = None  # from the worker's model_info / a training summary
        self.trained: list[Path] = []  # models trained in this session, newest last
        self._loaded: set[tuple[str | None, str]] = set()  # (job_arg, engine) a job has run with

    def mark_loaded(self, job_arg: str | None, engine: str | None) -> None:
        """A job with this model and engine has finished: the worker holds it, prepared."""
        self._loaded.add((job_arg, engine or "auto"))

    def first_use_note(self, engine: str | None = None) -> str:
        """Words for a status line of a job that may have to load (or prepare) the model."""
        return "" if (self.job_arg, engine or "auto") in self._loaded else FIRST_USE_NOTE

    @property
    def is_bundled(self) -> bool:
        return self.path is None

    @property
    def job_arg(self) -> str | None:
        """How worker jobs name this model."""
        return str(self.path) if self.path is not None else None

    def use(self, path: str | Path | None, info: dict | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.info = info
        self.changed.emit(self)

    def describe(self) -> str:
        name = "bundled model" if self.is_bundled else (self.path.name if self.path else "?")
        parts = []
        if self.info:
            if self.is_bundled:
                parts.append(self.info.get("name", ""))
            if self.info.get("val_dice") is not None:
                parts.append(f"val Dice {self.info['val_dice']:.3f}")
            if self.info.get("status") not in (None, "complete"):
                parts.append(self.info["status"])
        return f"model in use: {name}" + (f" ({', '.join(p for p in parts if p)})" if parts else "")

    def reset(self) -> None:
        self.path, self.info, self.trained = None, None, []
        self._loaded.clear()
        self.changed.emit(self)


class PostprocessSettings:
    """The threshold/clean-up settings of the session; emits ``changed`` with the new config."""

    changed = Signal(object)

    def __init__(self) -> None:
        self.config = PostprocessConfig()

    def set(self, config: PostprocessConfig) -> None:
        self.config = config
        self.changed.emit(config)

    def describe(self) -> str:
        c = self.config
        return (f"post-processing (set in Segment): threshold {c.threshold:.2f}, keep {c.keep}, "
                f"min size {c.min_size} px{', holes filled' if c.fill_holes else ''}")


class Session:
    def __init__(self) -> None:
        self.client = WorkerClient()
        self.model = ModelInUse()
        self.post = PostprocessSettings()
        self.devices: tuple[str, ...] = ("auto", "cpu")
        self.devices_known = False
        self.closing = False

    def close(self) -> None:
        """napari is quitting: stop the worker (its jobs end at once, without notifications)."""
        self.closing = True
        self.client.shutdown()


SESSION = Session()
