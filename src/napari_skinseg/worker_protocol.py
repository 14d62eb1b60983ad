"""The messages between napari and the model worker, and the only classes they may carry.

Client -> worker: ``("run", job_id, job_name, kwargs)``, ``("cancel", job_id)``, ``("shutdown",)``.
Worker -> client: ``("hello", info)``, ``("event", job_id, item)``, ``("done", job_id, value)``,
``("error", job_id, message)``.

Messages are pickles over an authenticated :mod:`multiprocessing.connection`; the receiving side
of napari unpickles them with :class:`SafeUnpickler`, which admits plain data, numpy arrays and
the torch-free report classes only. So a message can never import torch into napari, nor run
code from a stranger's pickle.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

#: Modules whose classes may cross into napari.
ALLOWED_MODULES = (
    "builtins",
    "collections",
    "datetime",
    "pathlib",
    "napari_skinseg.reports",
    "napari_skinseg.config",
)
_SAFE_BUILTINS = {"list", "dict", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int",
                  "float", "complex", "bool", "slice", "range", "object"}


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name not in _SAFE_BUILTINS:
            raise pickle.UnpicklingError(f"refused builtins.{name} from the worker")
        if module in ALLOWED_MODULES or module.startswith("pathlib."):
            return super().find_class(module, name)
        if module.startswith("numpy") and name in ("dtype", "ndarray", "_reconstruct", "scalar",
                                                    "_frombuffer"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused {module}.{name} from the worker")


def loads(data: bytes) -> Any:
    return SafeUnpickler(io.BytesIO(data)).load()


def dumps(message: Any) -> bytes:
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
