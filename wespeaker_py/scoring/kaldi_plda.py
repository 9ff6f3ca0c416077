"""Reader for PLDA models written by Kaldi (``ivector-compute-plda``), binary or text.

A Kaldi PLDA holds ``<Plda> mean transform psi </Plda>``: the mean, the
transform that whitens the within-class and diagonalises the between-class
covariance, and that diagonal.
"""
from __future__ import annotations

import re
import struct
from typing import BinaryIO, Tuple

import numpy as np

from wespeaker_py.utils.tables import DataFormatError

_SAMPLE_TYPES = {"FV": np.float32, "DV": np.float64, "FM": np.float32, "DM": np.float64}


def _read_token(handle: BinaryIO) -> str:
    chars = []
    while True:
        char = handle.read(1)
        if char in (b" ", b""):
            return b"".join(chars).decode("ascii")
        chars.append(char)


def _read_int32(handle: BinaryIO, path: str) -> int:
    if handle.read(1) != b"\x04":
        raise DataFormatError(path, None, "expected a 4-byte integer in the Kaldi PLDA")
    return struct.unpack("<i", handle.read(4))[0]


def _read_binary_array(handle: BinaryIO, path: str, kind: str) -> np.ndarray:
    token = _read_token(handle)
    if token not in _SAMPLE_TYPES or token[1] != kind:
        raise DataFormatError(path, None, f"unexpected {token!r} in the Kaldi PLDA "
                                          f"(expected a {'vector' if kind == 'V' else 'matrix'})")
    dtype = np.dtype(_SAMPLE_TYPES[token]).newbyteorder("<")
    shape = (_read_int32(handle, path),)
    if kind == "M":
        shape = shape + (_read_int32(handle, path),)
    count = int(np.prod(shape))
    data = np.frombuffer(handle.read(count * dtype.itemsize), dtype=dtype)
    if data.size != count:
        raise DataFormatError(path, None, "Kaldi PLDA is truncated")
    return data.reshape(shape).astype(np.float64)


def read_kaldi_plda(path: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(mean, transform, psi)`` of a Kaldi PLDA file in either encoding."""
    with open(path, "rb") as handle:
        if handle.read(2) == b"\0B":
            if _read_token(handle) != "<Plda>":
                raise DataFormatError(path, None, "not a Kaldi PLDA (no <Plda> token)")
            mean = _read_binary_array(handle, path, "V")
            transform = _read_binary_array(handle, path, "M")
            psi = _read_binary_array(handle, path, "V")
            return mean, transform, psi
        handle.seek(0)
        text = handle.read().decode("ascii", errors="replace")
    if "<Plda>" not in text:
        raise DataFormatError(path, None, "not a Kaldi PLDA (no <Plda> token)")
    groups = re.findall(r"\[([^\]]*)\]", text)
    if len(groups) != 3:
        raise DataFormatError(path, None, f"expected 3 bracketed arrays, found {len(groups)}")
    mean = np.array(groups[0].split(), dtype=np.float64)
    transform = np.array([row.split() for row in groups[1].strip().splitlines()],
                         dtype=np.float64)
    psi = np.array(groups[2].split(), dtype=np.float64)
    return mean, transform, psi
