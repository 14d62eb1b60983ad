"""Running the core's report-yielding generators to their end outside a GUI."""

from __future__ import annotations

from typing import Any, Callable, Generator, TypeVar

R = TypeVar("R")


def drain(gen: Generator[Any, Any, R], on_item: Callable[[Any], None] | None = None) -> R:
    """Pass every yielded item to ``on_item`` and return the generator's return value."""
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_item is not None:
            on_item(item)
