"""A restricted unpickler for RHD-format annotation files: data in, never code.

A pickle names the globals it needs and the plain unpickler imports and calls whatever
is named, so a crafted ``anno_<split>.pickle`` could run any code. RHD's published files
(Python 2, protocol 2) and the synthetic set's (Python 3, highest protocol) hold only
dicts, lists, numbers, strings and numpy arrays; built-in containers and numbers need no
global at all, and a numpy array needs only the few reconstruction helpers listed below.
Any other global is refused before it is imported, so nothing it names ever runs.
"""

from __future__ import annotations

import codecs
import pickle
from typing import Any, BinaryIO

import numpy as np

try:
    from numpy._core import multiarray, numeric  # numpy >= 2
except ImportError:  # numpy 1.x
    from numpy.core import multiarray, numeric  # type: ignore[no-redef]

_NUMPY_HELPERS = {
    ("multiarray", "_reconstruct"): multiarray._reconstruct,  # ndarray, protocols 0-4
    ("multiarray", "scalar"): multiarray.scalar,  # numpy scalars such as np.float32(1.0)
    ("numeric", "_frombuffer"): numeric._frombuffer,  # ndarray, protocol 5
}

#: (module, name) -> the object it may stand for. numpy 2 writes ``numpy._core``, numpy 1
#: and RHD's Python 2 file ``numpy.core``: both spellings name the same helpers.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes into protocol 0-2 pickles as _codecs.encode(text, "latin1").
    ("_codecs", "encode"): codecs.encode,
    **{(f"{package}.{module}", name): obj
       for package in ("numpy.core", "numpy._core") for (module, name), obj in _NUMPY_HELPERS.items()},
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside :data:`ALLOWED_GLOBALS`; ``name`` is ``module.qualname``."""

    def __init__(self, module: str, name: str) -> None:
        self.name = f"{module}.{name}"
        super().__init__(f"refused global {self.name}")


class DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None


def load_data_pickle(file: BinaryIO) -> Any:
    """Unpickle data-only content; latin1 lets Python 3 read the numpy arrays of a Python 2 pickle."""
    return DataUnpickler(file, encoding="latin1").load()
