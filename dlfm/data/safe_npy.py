"""Read ``.npy`` files that may hold object arrays without letting them run code.

DeepLenseSim saved axion images as object arrays ``[image, mass]``, which ``np.load`` can only
read with ``allow_pickle=True``: a full unpickler that calls whatever a ``__reduce__`` names. A
dataset is untrusted input, so object arrays go through :class:`RestrictedUnpickler`, which admits
only the few callables numpy needs to rebuild an ndarray, a dtype and a numpy scalar (the approach
of ``torch.load(weights_only=True)``). Everything else is refused before it is called.
"""

from __future__ import annotations

import io
import pickle

import numpy as np
from numpy.lib import format as npy_format

__all__ = ["UnsafeNpyError", "NotNpyError", "RestrictedUnpickler", "load_npy"]

# (module, name) pairs an object .npy may reference. numpy 1.x pickles name ``numpy.core``,
# numpy 2.x ``numpy._core``; both resolve to the same functions.
_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_ALLOWED = {
    **{(module, "_reconstruct"): np.ndarray.__reduce__(np.empty(0))[0] for module in _NUMPY_CORE},
    **{(module, "scalar"): np.float64(0).__reduce__()[0] for module in _NUMPY_CORE},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class UnsafeNpyError(pickle.UnpicklingError):
    """An object .npy references something other than arrays, dtypes and numbers."""


class NotNpyError(ValueError):
    """The bytes do not start with the NumPy .npy magic string."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds ndarrays, dtypes and Python/numpy scalars, and nothing else."""

    def find_class(self, module: str, name: str):
        """Return an allowed numpy callable; refuse every other global by name."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeNpyError(f"refused to load {module}.{name} (only numpy arrays and numbers are allowed)") from None

    def persistent_load(self, pid):
        """Persistent ids are another way to reach code; a .npy never needs them."""
        raise UnsafeNpyError("refused a persistent id (only numpy arrays and numbers are allowed)")


def load_npy(raw: bytes, allow_object: bool = False) -> np.ndarray:
    """Parse ``.npy`` bytes; object arrays only if ``allow_object``, via the restricted unpickler.

    Raises NotNpyError (no .npy header), UnsafeNpyError (a forbidden global), ValueError
    (object array not allowed, or a malformed header) or EOFError (truncated data).
    """
    stream = io.BytesIO(raw)
    if not raw.startswith(npy_format.MAGIC_PREFIX):
        # np.load would treat any non-.npy bytes as a pickle and say "pickled data": a text file
        # renamed .npy is simply not a .npy file.
        raise NotNpyError("it does not start with the .npy header (\\x93NUMPY)")
    version = npy_format.read_magic(stream)
    _shape, _fortran, dtype = _read_header(stream, version)
    if not dtype.hasobject:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    if not allow_object:
        raise ValueError("it holds a Python object array, which is only accepted for axion [image, mass] files")
    array = RestrictedUnpickler(stream).load()
    if not isinstance(array, np.ndarray):
        raise ValueError(f"its object payload is a {type(array).__name__}, not an array")
    return array


def _read_header(stream, version):
    if version == (1, 0):
        return npy_format.read_array_header_1_0(stream)
    if version == (2, 0):
        return npy_format.read_array_header_2_0(stream)
    raise ValueError(f"unsupported .npy format version {version}")
