"""Readers of the file formats data sets ship in: IDX (MNIST's) and pickles of numpy arrays.

Both accept gzip-compressed or plain files, check what they read, and raise a
:class:`~autoprune.errors.DataError` that names the file; neither runs code from the file.
"""

from __future__ import annotations

import codecs
import gzip
import io
import math
import pickle
import zlib
from pathlib import Path

import numpy as np

from autoprune.errors import DataError

__all__ = ["read_idx", "read_pickle"]

# What a pickled numpy array needs, as numpy 1 (Python 2 era: CIFAR, deeplearning.net's MNIST)
# and numpy 2 write it: the array reconstructor, ndarray, dtype, scalars, and `_codecs.encode`,
# which protocol 2 uses for bytes under Python 3. The reconstructors are taken from numpy's own
# reduce tuples, so they are the current numpy's functions whatever module path the file names.
_PICKLE_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
    **{
        (f"{package}.{module}", name): function
        for package in ("numpy.core", "numpy._core")
        for module, name, function in (
            ("multiarray", "_reconstruct", np.zeros(1).__reduce__()[0]),
            ("multiarray", "scalar", np.float64(0).__reduce__()[0]),
            ("numeric", "_frombuffer", np.zeros(1).__reduce_ex__(5)[0]),
        )
    },
}


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dicts, lists, strings and numbers, and refuses anything else."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"refused to load global {module}.{name}") from None


def read_pickle(path: str | Path) -> object:
    """Read a (gzip-compressed or plain) pickle of numpy arrays, lists, dicts and strings.

    Strings that Python 2 wrote are decoded as latin-1, as torchvision does for CIFAR. Unlike
    :func:`pickle.load` it runs no code: a pickle that names any other global (a class, a
    function) is refused, so a data folder from elsewhere cannot execute anything.

    Raises:
        DataError: The file is unreadable, not a pickle, or names a global other than numpy's
            array reconstruction; the message names the file.

    Example:
        >>> import pickle, numpy as np
        >>> cifar = {"data": np.zeros((4, 3072), np.uint8), "labels": [3, 8, 8, 0]}
        >>> _ = Path("test_batch").write_bytes(pickle.dumps(cifar))  # as CIFAR-10's batches
        >>> batch = read_pickle("test_batch")
        >>> batch["data"].shape, batch["labels"]
        ((4, 3072), [3, 8, 8, 0])
        >>> class Payload:
        ...     def __reduce__(self):
        ...         return (print, ("this would run",))
        >>> _ = Path("evil").write_bytes(pickle.dumps(Payload()))
        >>> read_pickle("evil")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        autoprune.errors.DataError: ...evil...
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except _RefusedGlobal as exc:
        raise DataError(
            f"cannot load pickle {str(path)!r}: {exc}; only numpy arrays, lists, dicts and "
            f"strings are loaded (a pickle can run code), replace the file"
        ) from None
    except (pickle.UnpicklingError, OSError, EOFError, zlib.error, ValueError, TypeError) as exc:
        raise DataError(
            f"cannot read pickle {str(path)!r}: {type(exc).__name__}: {exc}; the file is "
            f"truncated or corrupt, replace it"
        ) from None


# IDX type codes (LeCun et al., "THE MNIST DATABASE" file format description); big-endian.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or plain) into a numpy array, checking its header.

    The header is two zero bytes, a type code (0x08 = unsigned byte, ...), the number of
    dimensions, then one big-endian ``uint32`` per dimension; the payload must hold exactly
    the product of the dimensions.

    Raises:
        DataError: The file is unreadable, its header is invalid or its payload has the wrong
            length; the message names the file.

    Example:
        >>> images = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
        >>> images.shape, images.dtype
        ((10000, 28, 28), dtype('uint8'))
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {str(path)!r}: {exc}; replace the file") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{str(path)!r} is not an IDX file: header starts with {raw[:4].hex()!r}, expected "
            f"'0000' followed by a type code and a dimension count; replace the file"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        valid = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise DataError(
            f"IDX file {str(path)!r} has unknown type code 0x{code:02X}; valid codes: {valid}; "
            f"replace the file"
        )
    offset = 4 + 4 * ndim
    if ndim == 0 or len(raw) < offset:
        raise DataError(
            f"IDX file {str(path)!r} has a truncated header ({ndim} dimensions, {len(raw)} "
            f"bytes); replace the file"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - offset != expected:
        raise DataError(
            f"IDX file {str(path)!r} holds {len(raw) - offset} payload bytes but its header "
            f"{dims} of {dtype} needs {expected}; the file is truncated or corrupt, replace it"
        )
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(dims)
