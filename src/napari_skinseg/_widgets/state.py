"""The model shared by the Train, Segment and Curate widgets of one napari session."""

from __future__ import annotations

from pathlib import Path

from psygnal import Signal

from ..bundled import bundled_model_path, has_bundled_model
from ..prediction import Segmenter

BUNDLED, CURRENT, FILE = "bundled model", "last trained", "model file"


class CurrentModel:
    """The last trained model (falls back to the bundled one); emits ``changed`` with its path."""

    changed = Signal(object)

    def __init__(self) -> None:
        self.path: Path | None = None
        self._cache: tuple[tuple, Segmenter] | None = None

    def set(self, path: str | Path) -> None:
        self.path = Path(path)
        self.changed.emit(self.path)

    def resolve(self, choice: str, file: str | Path | None = None) -> Path:
        """The model file for a widget's model choice; raises with a message a user can act on."""
        if choice == FILE:
            if not file or not Path(file).is_file():
                raise FileNotFoundError("choose a model file first")
            return Path(file)
        if choice == CURRENT and self.path is not None:
            return self.path
        if choice == CURRENT and not has_bundled_model():
            raise FileNotFoundError("no model trained in this session yet: train one first or "
                                    "choose a model file")
        return bundled_model_path()

    def segmenter(self, path: Path, device: str = "auto") -> Segmenter:
        """Load (or reuse) a Segmenter; reloaded when the file changes."""
        key = (str(path), path.stat().st_mtime_ns, device)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, Segmenter.from_file(path, device=device))
        return self._cache[1]


MODEL = CurrentModel()
