"""A pickle reader that can rebuild numpy arrays and nothing else.

The MNIST wheel (mnist.pkl.gz) and CIFAR-10's python batches are pickles, and unpickling runs
whatever callables the file names. `RestrictedUnpickler.find_class` therefore resolves only the
handful of numpy globals that array reconstruction uses (old and new module paths), each wrapped
to refuse object dtypes and ndarray subclasses, whose reconstruction could run arbitrary code.
Containers (tuple, list, dict), numbers and strings need no globals and stay allowed; bytes in
Python 3 protocol 0–2 pickles come through a latin-1-only stand-in for _codecs.encode.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from krenorm.data.errors import UnsafePickleError


def _checked_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.hasobject:
        raise UnsafePickleError(
            f"pickle holds an array of dtype {dtype} with Python objects; only numeric arrays "
            "are accepted. Use the original data files."
        )
    return dtype


def _make_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    return _checked_dtype(np.dtype(spec, align=align, copy=copy))


def _reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"pickle asks to rebuild {subtype!r}; only numpy.ndarray is.")
    return np.ndarray.__new__(np.ndarray, shape, _make_dtype(dtype_code))


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    if order not in ("C", "F"):
        raise UnsafePickleError(f"pickle asks for array order {order!r}; only 'C' or 'F' is valid.")
    array = np.frombuffer(buffer, dtype=_make_dtype(dtype))
    return array.reshape(tuple(shape), order="C" if order == "C" else "F").copy()


def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
    # Python 3 writes bytes into protocol 0–2 pickles as _codecs.encode(text, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("pickle calls _codecs.encode with unexpected arguments.")
    return text.encode("latin1")


#: (module, name) → safe callable; numpy 1 wrote numpy.core, numpy 2 writes numpy._core.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _make_dtype,
    ("_codecs", "encode"): _latin1_bytes,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED_GLOBALS[(_module, "_reconstruct")] = _reconstruct
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED_GLOBALS[(_module, "_frombuffer")] = _frombuffer


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose globals are limited to numpy array reconstruction."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"pickle refers to {module}.{name}, which is not needed to rebuild numpy "
                "arrays; refusing to load it. The file is not a plain data pickle (tampered or "
                "unexpected): replace it with the original."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("pickle uses persistent ids; refusing to load it.")


def _refuse_object_arrays(value: Any) -> None:
    # A structured dtype gains its fields only after construction (BUILD), so dtypes are
    # checked once more on the finished result.
    if isinstance(value, np.ndarray):
        _checked_dtype(value.dtype)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _refuse_object_arrays(item)
    elif isinstance(value, dict):
        for item in value.values():
            _refuse_object_arrays(item)


def restricted_loads(data: bytes, encoding: str = "latin1") -> Any:
    """Unpickle bytes allowing only numpy arrays, containers, numbers and strings.

    encoding='latin1' reads Python 2 pickles (MNIST, CIFAR-10) with their array bytes intact.
    Any other failure while reading is reported as UnsafePickleError too.
    """
    try:
        value = RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
    except UnsafePickleError:
        raise
    except Exception as error:  # malformed streams raise many types; report them uniformly
        raise UnsafePickleError(f"not a readable data pickle ({error}).") from error
    _refuse_object_arrays(value)
    return value
