"""Reading the toolkit's own ``.npz`` files (galleries, window LDAs) without pickles.

``np.load`` takes any file that is neither a zip nor a ``.npy`` array for a pickle, and
then advises loading it unsafely (``allow_pickle=True``); :func:`open_npz` refuses such
a file first, in words a reader can put after "not a <kind> written by <command>".
"""
from __future__ import annotations

import zipfile

import numpy as np

_NPY_MAGIC = b"\x93NUMPY"   # the start of a single array's .npy file


def open_npz(path: str) -> "np.lib.npyio.NpzFile":
    """The ``.npz`` archive at ``path``, opened with pickles refused (use it in ``with``).

    Raises:
        ValueError: the file is a single ``.npy`` array or not a zip archive (the message
            says which, without numpy's advice to allow pickles).
        OSError: the file cannot be opened.
    """
    with open(path, "rb") as stream:
        single_array = stream.read(len(_NPY_MAGIC)) == _NPY_MAGIC
    if single_array:
        raise ValueError("a single array, not an .npz archive")
    if not zipfile.is_zipfile(path):
        raise ValueError("not an .npz archive")
    return np.load(path, allow_pickle=False)
