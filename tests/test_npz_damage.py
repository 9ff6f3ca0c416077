"""Damaged ``.npz`` files of the toolkit (band fills, window LDAs, galleries, PLDA models).

A changed byte or a cut-off end gives the error of that kind of file. The message names
the file, the kind and the command that writes one. It is never zipfile's BadZipFile or
another library's error.
"""
import io
import os
import struct
import zipfile
from dataclasses import dataclass
from typing import Callable, Tuple, Type

import numpy as np
import pytest
import soundfile as sf

from tests.inference_helpers import FEAT_DIM, SAMPLE_RATE, make_experiment
from tool_helpers import run_cli
from wespeaker_py.api.gallery import Gallery, GalleryFileError, read_gallery, save_gallery
from wespeaker_py.diarization.projection import WindowLDA, WindowLDAError
from wespeaker_py.frontend.band_fill import BandFill, BandFillError, band_fill_name, split_bins
from wespeaker_py.scoring.plda import Preprocessing, TwoCovPLDA
from wespeaker_py.utils.tables import DataFormatError


def write_band_fill(path: str) -> None:
    kept, filled = split_bins(SAMPLE_RATE, FEAT_DIM, 25, 8000)
    BandFill(8000, SAMPLE_RATE, FEAT_DIM, kept, filled,
             np.ones((kept.size + 1, filled.size)), 100).save(path)


def write_window_lda(path: str) -> None:
    WindowLDA(np.zeros(4), np.ones((4, 2)), "model-id", 3, 10, 8000, "fill-digest").save(path)


def write_gallery(path: str) -> None:
    save_gallery(path, Gallery("XVEC/emb4", ["alice"], np.ones((1, 4)), np.array([2]),
                               "model-id", "", {"alice": {8000: "fill-digest"}}))


def write_plda(path: str) -> None:
    TwoCovPLDA(np.zeros(3), np.eye(3), np.ones(3),
               Preprocessing(np.zeros(3), np.eye(3), True)).save(path)


@dataclass(frozen=True)
class Kind:
    """One kind of file: how to write a good one and read one back, and what its errors say."""

    write: Callable[[str], None]
    load: Callable[[str], object]
    error: Type[Exception]
    words: Tuple[str, str]   # the kind of file and the command that writes one


KINDS = {
    "band fill": Kind(write_band_fill, BandFill.load, BandFillError,
                      ("band fill", "wespeaker-py band-fill")),
    "window LDA": Kind(write_window_lda, WindowLDA.load, WindowLDAError,
                       ("window LDA", "wespeaker-py window-lda")),
    "gallery": Kind(write_gallery, read_gallery, GalleryFileError, ("gallery", "enroll")),
    "PLDA model": Kind(write_plda, TwoCovPLDA.load, DataFormatError,
                       ("PLDA model", "train_plda")),
}


def changed(raw: bytes, at: int) -> bytes:
    """``raw`` with every bit of the byte at ``at`` flipped."""
    damaged = bytearray(raw)
    damaged[at] ^= 0xFF
    return bytes(damaged)


def data_span(raw: bytes, member: zipfile.ZipInfo) -> Tuple[int, int]:
    """Where ``member``'s stored bytes (its .npy file) start and end in the archive ``raw``."""
    name_size, extra_size = struct.unpack_from("<HH", raw, member.header_offset + 26)
    start = member.header_offset + 30 + name_size + extra_size
    return start, start + member.compress_size


def directory_entries(raw: bytes):
    """The offsets of the archive's central directory entries, in order."""
    offsets, at = [], raw.find(b"PK\x01\x02")
    while at != -1:
        offsets.append(at)
        at = raw.find(b"PK\x01\x02", at + 1)
    return offsets


def huge_shape(raw: bytes, members) -> bytes:
    """The archive again, its first array's .npy header promising 10**12 values (8 TB): its
    data is what it was."""
    source, rewritten = zipfile.ZipFile(io.BytesIO(raw)), io.BytesIO()
    with source, zipfile.ZipFile(rewritten, "w") as target:
        for member in members:
            data = source.read(member)
            if member is members[0]:
                stream = io.BytesIO(data)
                assert np.lib.format.read_magic(stream) == (1, 0)
                _, _, dtype = np.lib.format.read_array_header_1_0(stream)
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    header, {"descr": np.lib.format.dtype_to_descr(dtype),
                             "fortran_order": False, "shape": (10 ** 12,)})
                data = header.getvalue() + data[stream.tell():]
            target.writestr(member.filename, data)
    return rewritten.getvalue()


# each damage: the file's bytes and its members -> the damaged bytes
DAMAGES = {
    "the first array's header promising 8 TB": huge_shape,
    "a byte of the last array's data (bad CRC)":
        lambda raw, members: changed(raw, data_span(raw, members[-1])[1] - 1),
    "a byte of the first array's .npy header":
        lambda raw, members: changed(raw, data_span(raw, members[0])[0] + 20),
    "a byte of the first member's name in its own header":
        lambda raw, members: changed(raw, members[0].header_offset + 30),
    "the first member's compression method":
        lambda raw, members: changed(raw, directory_entries(raw)[0] + 10),
    "the first member's flags (read as encrypted)":
        lambda raw, members: changed(raw, directory_entries(raw)[0] + 8),
    "the signature of the directory's last entry":
        lambda raw, members: changed(raw, directory_entries(raw)[-1]),
    "a comment length in the directory, hiding the last array":
        lambda raw, members: changed(raw, directory_entries(raw)[-2] + 32),
    "the end record's signature": lambda raw, members: changed(raw, raw.rfind(b"PK\x05\x06")),
    "cut in half": lambda raw, members: raw[:len(raw) // 2],
    "last byte cut": lambda raw, members: raw[:-1],
    "cut after the first array": lambda raw, members: raw[:data_span(raw, members[0])[1]],
    "cut to nothing": lambda raw, members: b"",
}


def good_file(kind: Kind, folder) -> Tuple[str, bytes, list]:
    """A good file of ``kind`` in ``folder``: its path, bytes and zip members."""
    path = str(folder / "good.npz")
    kind.write(path)
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
    with open(path, "rb") as handle:
        return path, handle.read(), members


def assert_refused(kind: Kind, path: str) -> None:
    with pytest.raises(Exception) as refused:
        kind.load(path)
    assert isinstance(refused.value, kind.error), repr(refused.value)
    message = str(refused.value)
    assert path in message and all(word in message for word in kind.words), message


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("name", KINDS)
def test_a_damaged_file_gives_its_kinds_error(name, damage, tmp_path):
    kind = KINDS[name]
    _, raw, members = good_file(kind, tmp_path)
    path = str(tmp_path / "damaged.npz")
    with open(path, "wb") as handle:
        handle.write(DAMAGES[damage](raw, members))
    assert_refused(kind, path)


@pytest.mark.parametrize("name", KINDS)
def test_a_missing_array_or_one_of_another_type_or_shape_gives_its_kinds_error(name, tmp_path):
    kind = KINDS[name]
    good, _, _ = good_file(kind, tmp_path)
    with np.load(good) as stored:
        arrays = {key: stored[key] for key in stored.files}
    first = next(iter(arrays))
    other_type = np.zeros(3) if arrays[first].dtype.kind == "U" else np.array(["x"])
    for case, replaced in (("missing", {}), ("other type", {first: other_type}),
                           ("extra dimension", {first: arrays[first][None]})):
        path = str(tmp_path / f"{case}.npz")
        np.savez(path, **{**{key: value for key, value in arrays.items() if key != first},
                          **replaced})
        assert_refused(kind, path)


@pytest.mark.parametrize("name", KINDS)
def test_no_single_byte_change_is_read_as_a_different_file(name, tmp_path):
    """A change at every 7th byte (headers, data and directory alike): the file is refused,
    or, where zip ignores the byte, read exactly as before."""
    kind = KINDS[name]
    good, raw, _ = good_file(kind, tmp_path)
    expected = repr(vars(kind.load(good)))
    path = str(tmp_path / "damaged.npz")
    for at in range(0, len(raw), 7):
        with open(path, "wb") as handle:
            handle.write(changed(raw, at))
        try:
            loaded = kind.load(path)
        except kind.error:
            continue
        assert repr(vars(loaded)) == expected, f"byte {at} changed"


def test_a_corrupt_band_fill_beside_the_model_is_a_one_line_error(tmp_path, capsys):
    folder = str(tmp_path / "model")
    make_experiment(folder, bare=True)
    fill = os.path.join(folder, band_fill_name(8000))
    write_band_fill(fill)
    with zipfile.ZipFile(fill) as archive:
        weights = archive.getinfo("weights.npy")
    with open(fill, "rb") as handle:
        raw = handle.read()
    with open(fill, "wb") as handle:
        handle.write(changed(raw, data_span(raw, weights)[1] - 1))
    call = str(tmp_path / "call.wav")
    sf.write(call, np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1,
             8000)
    status, out, err = run_cli(capsys, "embed", "--model", folder, "--device", "cpu", call)
    lines = err.strip().splitlines()
    assert (status, out, len(lines)) == (2, "", 1), err
    assert lines[0].startswith(f"wespeaker-py: error: band fill {fill} cannot be read "
                               f"(Bad CRC-32 for file 'weights.npy')")
    # info reports it instead of failing
    status, out, err = run_cli(capsys, "info", "--model", folder)
    assert status == 0 and f"not used: band fill {fill} cannot be read" in out
