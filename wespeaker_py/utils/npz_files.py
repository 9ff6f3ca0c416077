"""Reading the toolkit's own ``.npz`` files (galleries, window LDAs, band fills, PLDA models).

``np.load`` takes any file that is neither a zip nor a ``.npy`` array for a pickle, and
then advises loading it unsafely (``allow_pickle=True``); :func:`read_npz` refuses such a
file first, in words a reader can put after "not a <kind> written by <command>".

:func:`read_npz` reads a whole file of one :class:`NpzKind`. Whatever is wrong with the
file (missing, a folder, truncated, not a zip, a byte changed, an array missing or of
the wrong type or number of dimensions) raises the caller's error, whose message names
the file, the kind of file it should be and the command that writes one.
"""
from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional

import numpy as np

from wespeaker_py.errors import first_line

_NPY_MAGIC = b"\x93NUMPY"   # the start of a single array's .npy file
# What reading a damaged archive raises, besides _open_npz's ValueError: BadZipFile (a bad
# CRC, headers that disagree), RuntimeError and its NotImplementedError (a changed flag
# read as encryption or an unknown compression), EOFError and OSError (a member cut short
# or its sizes changed), ValueError (a changed .npy header), zlib.error (changed
# compressed data).
_DAMAGE = (zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError, zlib.error)
# the dtype families an NpzArray may ask for
_FAMILIES = {"number": np.number, "integer": np.integer, "text": np.str_, "bool": np.bool_}


@dataclass(frozen=True)
class NpzArray:
    """One array of an ``.npz`` file: its ``family`` of dtypes (a key of ``_FAMILIES``:
    "number", "integer", "text" or "bool"), its number of dimensions (None: any), and
    whether every file holds it (``required=False``: files written before it was
    recorded lack it)."""

    family: str
    ndim: Optional[int] = None
    required: bool = True

    def fault(self, value: object) -> Optional[str]:
        """What makes ``value`` not such an array; None when nothing does."""
        wanted = f"{self.family} values" + (f" in {self.ndim} dimension(s)"
                                            if self.ndim is not None else "")
        if not isinstance(value, np.ndarray):
            return f"not an array, not {wanted}"
        if (not np.issubdtype(value.dtype, _FAMILIES[self.family])
                or (self.ndim is not None and value.ndim != self.ndim)):
            return f"{value.dtype} of shape {value.shape}, not {wanted}"
        return None


@dataclass(frozen=True)
class NpzKind:
    """A kind of ``.npz`` file the toolkit writes: its ``name`` ("window LDA"), the command
    that writes one (``written_by``), its ``arrays``, and the wording of its errors.

    ``missing`` and ``unreadable`` are :meth:`str.format` templates of ``name``,
    ``written_by`` and ``path``; ``missing`` also of ``problem`` ("does not exist", "is a
    folder, not a file"), ``unreadable`` of ``why`` (what is wrong inside the file).
    """

    name: str
    written_by: str
    arrays: Mapping[str, NpzArray]
    missing: str = "{name} {path} {problem}; {written_by} writes one"
    unreadable: str = "{path}: not a {name} written by {written_by} ({why})"

    def damaged(self, path: str, why: str) -> str:
        """The message for the file ``path`` of this kind, which ``why`` makes unusable."""
        return self.unreadable.format(name=self.name, written_by=self.written_by, path=path,
                                      why=why)


def _open_npz(path: str) -> "np.lib.npyio.NpzFile":
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


def _check_member_sizes(archive: zipfile.ZipFile) -> None:
    """Refuse a member whose ``.npy`` header promises more data than the member holds (a
    changed shape), before numpy allocates what the header asks for: a shape changed to
    ``(10**12,)`` would otherwise end in a MemoryError, not in the caller's error."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    for info in archive.infolist():
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version not in readers:
                raise ValueError(f"{info.filename}: .npy format {version} is not one numpy "
                                 f"writes for these arrays")
            shape, _, dtype = readers[version](member)
            promised = int(np.prod(shape, dtype=object)) * dtype.itemsize
            held = info.file_size - member.tell()
            if promised > held:
                raise ValueError(f"{info.filename}: its header promises {promised} bytes of "
                                 f"shape {shape}, the archive holds {held}")


def read_npz(path: str, kind: NpzKind,
             error: Callable[[str], Exception]) -> Dict[str, np.ndarray]:
    """The arrays of ``kind.arrays`` that the ``.npz`` file at ``path`` holds, read whole.

    Raises:
        ``error(message)`` (the caller's error class): the file is missing or a folder
        (``kind.missing``), cannot be read as an ``.npz`` archive, is damaged, lacks a
        required array or holds one of another family or number of dimensions
        (``kind.unreadable``).
    """
    if not os.path.isfile(path):
        problem = "is a folder, not a file" if os.path.isdir(path) else "does not exist"
        raise error(kind.missing.format(name=kind.name, written_by=kind.written_by,
                                        path=path, problem=problem))
    try:
        with _open_npz(path) as archive:
            if any(member.comment for member in archive.zip.infolist()):
                # np.savez writes none: a changed length field in the archive's directory
                # made the entries after it a comment, hiding their arrays
                raise zipfile.BadZipFile("its directory of arrays is damaged")
            _check_member_sizes(archive.zip)
            # every member, so that a damaged one the caller does not use still tells
            stored = {name: archive[name] for name in archive.files}
    except _DAMAGE as damage:
        raise error(kind.damaged(path, first_line(damage))) from None
    arrays = {name: stored[name] for name in kind.arrays if name in stored}
    absent = [name for name, spec in kind.arrays.items()
              if spec.required and name not in arrays]
    if absent:
        raise error(kind.damaged(path, f"no {', '.join(absent)} array(s)"))
    for name, value in arrays.items():
        fault = kind.arrays[name].fault(value)
        if fault is not None:
            raise error(kind.damaged(path, f"{name}: {fault}"))
    return arrays
