"""Running core generators in napari's thread workers, with errors turned into notifications."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generator

from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error


@dataclass
class Failure:
    message: str


def friendly_message(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    if isinstance(err, MemoryError) or "out of memory" in text.lower():
        return ("out of memory: lower the batch size or the working size, or choose the CPU "
                f"({text.splitlines()[0][:200]})")
    return text


def start_worker(body: Callable[[], Generator[Any, None, Any]],
                 yielded: Callable[[Any], None] | None = None,
                 returned: Callable[[Any], None] | None = None,
                 finished: Callable[[], None] | None = None):
    """Run the generator function ``body`` in a thread; exceptions become a napari error
    notification (never a traceback dialog or a frozen GUI) and ``returned`` is not called."""

    @thread_worker
    def run():
        try:
            result = yield from body()
        except Exception as err:  # noqa: BLE001 - every failure must reach the user
            return Failure(friendly_message(err))
        return result

    def on_returned(value):
        if isinstance(value, Failure):
            show_error(value.message)
        elif returned is not None:
            returned(value)

    worker = run()
    if yielded is not None:
        worker.yielded.connect(yielded)
    worker.returned.connect(on_returned)
    if finished is not None:
        worker.finished.connect(finished)
    worker.start()
    return worker
