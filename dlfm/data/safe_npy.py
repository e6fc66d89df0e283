"""Read ``.npy`` files that may hold object arrays without letting them run code.

DeepLenseSim saved axion images as object arrays ``[image, mass]``, which ``np.load`` can only
read with ``allow_pickle=True``: a full unpickler that calls whatever a ``__reduce__`` names. A
dataset is untrusted input, so object arrays go through :class:`RestrictedUnpickler`, which admits
only the few callables numpy needs to rebuild an ndarray, a dtype and a numpy scalar (the approach
of ``torch.load(weights_only=True)``). Everything else is refused before it is called.

A header is untrusted too: ``np.load`` allocates whatever shape it claims, so one edited file that
promises (100000, 100000) float32 asks for 37 GiB. Every read checks the header first, before any
allocation: a plain array's shape × itemsize + header length must equal the file's size, image
sides are bounded, and an object array's inner arrays may not claim more bytes than the file holds.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.lib import format as npy_format

__all__ = [
    "UnsafeNpyError",
    "NotNpyError",
    "NpyHeaderError",
    "NpyHeader",
    "RestrictedUnpickler",
    "MAX_IMAGE_SIDE",
    "read_npy_header",
    "check_npy_file",
    "load_npy",
]

# Largest image side (pixels) dlfm reads. DeepLense images are 64 (Model II) to 150 (Model I) px and
# survey cut-outs rarely pass 1000; 4096 leaves room for any real cut-out while a single image stays
# ≤ 64 MiB in float32, so a crafted (1, 100000, 100000) header is refused before it costs memory.
MAX_IMAGE_SIDE = 4096

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


class NpyHeaderError(ValueError):
    """The .npy header promises an array that the file does not hold (or one too large to be an image)."""


class NpyHeader(NamedTuple):
    """What a .npy header claims: shape, memory order, dtype, and where the data starts (bytes)."""

    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    data_offset: int

    @property
    def data_bytes(self) -> int:
        """Bytes the data needs: shape × itemsize, in Python ints (a crafted shape cannot overflow)."""
        return math.prod(self.shape) * self.dtype.itemsize


def read_npy_header(stream) -> NpyHeader:
    """Parse the magic string and header of a .npy stream, allocating nothing for the data.

    Raises NotNpyError (no .npy magic) or ValueError (a malformed header or unknown version).
    """
    start = stream.tell()
    if stream.read(len(npy_format.MAGIC_PREFIX)) != npy_format.MAGIC_PREFIX:
        # np.load would treat any non-.npy bytes as a pickle and say "pickled data": a text file
        # renamed .npy is simply not a .npy file.
        raise NotNpyError("it does not start with the .npy header (\\x93NUMPY)")
    stream.seek(start)
    version = npy_format.read_magic(stream)
    shape, fortran_order, dtype = _read_header(stream, version)
    return NpyHeader(tuple(shape), bool(fortran_order), dtype, stream.tell())


def check_npy_header(header: NpyHeader, file_size: int) -> None:
    """NpyHeaderError unless the header's array fits the file: exact size for plain arrays, bounded sides."""
    if any(side > MAX_IMAGE_SIDE for side in header.shape[-2:]) and len(header.shape) >= 2:
        raise NpyHeaderError(
            f"its header claims shape {header.shape}, an image side over {MAX_IMAGE_SIDE} px "
            f"(dlfm's bound on one image); the file holds {file_size} bytes"
        )
    if header.dtype.hasobject:
        return  # a pickle: its inner arrays are bounded while they are rebuilt (RestrictedUnpickler)
    expected = header.data_offset + header.data_bytes
    if expected != file_size:
        raise NpyHeaderError(
            f"its header claims shape {header.shape} {header.dtype} ({expected} bytes with the header) "
            f"but the file holds {file_size} bytes (truncated, or the header was edited)"
        )


def check_npy_file(path: str | os.PathLike) -> NpyHeader:
    """Check a .npy file's header against its size on disk (reads only the header); return it."""
    path = Path(path)
    with open(path, "rb") as handle:
        header = read_npy_header(handle)
    check_npy_header(header, path.stat().st_size)
    return header


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds ndarrays, dtypes and Python/numpy scalars, and nothing else.

    ``byte_budget`` bounds every array it rebuilds: an inner array may not claim more bytes than the
    whole payload, so a pickle cannot ask numpy for an allocation its own bytes could not fill.
    """

    def __init__(self, file, byte_budget: int | None = None):
        super().__init__(file)
        self.byte_budget = byte_budget

    def find_class(self, module: str, name: str):
        """Return an allowed numpy callable; refuse every other global by name."""
        try:
            allowed = _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeNpyError(f"refused to load {module}.{name} (only numpy arrays and numbers are allowed)") from None
        if name == "_reconstruct" and self.byte_budget is not None:
            return self._bounded_reconstruct
        return allowed

    def _bounded_reconstruct(self, subtype, shape, dtype):
        """numpy's ``_reconstruct``, refusing a claimed shape larger than the payload, then a guarded array."""
        self._check_claim(shape, np.dtype(dtype) if not isinstance(dtype, np.dtype) else dtype)
        array = _ALLOWED[("numpy._core.multiarray", "_reconstruct")](_BoundedArray, (0,), dtype)
        array._dlfm_check = self._check_claim
        return array

    def _check_claim(self, shape, dtype: np.dtype) -> None:
        try:
            claimed = math.prod(int(side) for side in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        except (TypeError, ValueError):
            raise ValueError(f"its object payload has an array with a malformed shape {shape!r}") from None
        itemsize = dtype.itemsize if not dtype.hasobject else 8
        if claimed < 0 or claimed * itemsize > self.byte_budget:
            raise NpyHeaderError(
                f"its object payload claims an array of shape {tuple(shape) if isinstance(shape, (tuple, list)) else shape} "
                f"{dtype} but the file holds {self.byte_budget} bytes"
            )

    def persistent_load(self, pid):
        """Persistent ids are another way to reach code; a .npy never needs them."""
        raise UnsafeNpyError("refused a persistent id (only numpy arrays and numbers are allowed)")


class _BoundedArray(np.ndarray):
    """An ndarray being rebuilt from a pickle: its state's shape is checked before numpy allocates it."""

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 5:
            _version, shape, dtype, _fortran, _data = state
            self._dlfm_check(shape, np.dtype(dtype))
        elif isinstance(state, tuple) and len(state) == 4:
            shape, dtype, _fortran, _data = state
            self._dlfm_check(shape, np.dtype(dtype))
        else:
            raise ValueError("its object payload has an array with an unknown pickle state")
        super().__setstate__(state)


def _plain(value):
    """A rebuilt value with every guarded array turned back into a plain ndarray (a view, no copy)."""
    if isinstance(value, _BoundedArray):
        value = value.view(np.ndarray)
        if value.dtype.hasobject:
            for index in np.ndindex(value.shape):
                value[index] = _plain(value[index])
    return value


def load_npy(raw: bytes, allow_object: bool = False) -> np.ndarray:
    """Parse ``.npy`` bytes, header checked against their length first; object arrays only if ``allow_object``.

    Raises NotNpyError (no .npy header), NpyHeaderError (a header or inner array that claims more than
    the bytes hold), UnsafeNpyError (a forbidden global), ValueError (object array not allowed, or a
    malformed header) or EOFError (truncated data).
    """
    stream = io.BytesIO(raw)
    header = read_npy_header(stream)
    check_npy_header(header, len(raw))
    if not header.dtype.hasobject:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    if not allow_object:
        raise ValueError("it holds a Python object array, which is only accepted for axion [image, mass] files")
    array = _plain(RestrictedUnpickler(stream, byte_budget=len(raw)).load())
    if not isinstance(array, np.ndarray):
        raise ValueError(f"its object payload is a {type(array).__name__}, not an array")
    return array


def _read_header(stream, version):
    if version == (1, 0):
        return npy_format.read_array_header_1_0(stream)
    if version == (2, 0):
        return npy_format.read_array_header_2_0(stream)
    raise ValueError(f"unsupported .npy format version {version}")
