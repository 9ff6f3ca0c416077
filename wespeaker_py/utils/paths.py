"""Checks and facts about input and output paths: an input that must be a non-empty
file, an output that would replace an input, a file's digest and stamp, a rate in a name,
the visible files under a folder.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
from typing import Iterable, Iterator, List, Mapping, Optional, Tuple

from wespeaker_py.errors import WespeakerError


class InputFileError(WespeakerError, OSError):
    """An input file named on the command line is missing, a folder, empty or unreadable."""


def rate_in_name(template: str, name: str) -> Optional[int]:
    """The rate in a file name made from ``template`` (a ``{}`` for the rate:
    ``band_fill_{}hz.npz`` and ``band_fill_8000hz.npz`` give 8000); None for another name."""
    match = re.fullmatch(re.escape(template).replace(r"\{\}", r"([0-9]+)"), name)
    return int(match.group(1)) if match else None


def files_named_by_rate(prefix: str, template: str) -> List[str]:
    """The files ``prefix`` + ``template`` with anything in place of its ``{}`` (the files
    of :func:`rate_in_name`'s form beside a model, and any with a bad rate), sorted."""
    return sorted(glob.glob(glob.escape(prefix) + template.format("*")))


def visible_files_under(folder: str) -> Iterator[str]:
    """The files at any depth under ``folder`` (paths that start with it), hidden files and
    folders (``.name``) left out; each folder's files in name order, its folders walked in
    name order after them.

    Linked folders are followed; a folder reached again (a link to one listed already, or
    a loop) is listed once, under the path that reached it first.
    """
    walked = set()
    for root, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in walked:
            folders[:] = []
            continue
        walked.add(real)
        folders[:] = visible_names(folders)
        for name in visible_names(files):
            yield os.path.join(root, name)


def visible_names(names: Iterable[str]) -> List[str]:
    """``names`` without the hidden ones (``.name``), sorted."""
    return sorted(name for name in names if not name.startswith("."))


# what changes when a file is rewritten: (mtime in ns, size, inode)
FileStamp = Tuple[int, int, int]


def file_digest(path: str, algorithm: str = "sha256") -> str:
    """The hex digest of a file's content (read in 1 MiB blocks)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_stamp(path: str) -> Optional[FileStamp]:
    """The file's :data:`FileStamp`; None when there is no file."""
    if not os.path.isfile(path):
        return None
    info = os.stat(path)
    return info.st_mtime_ns, info.st_size, info.st_ino


def require_input_file(path: str, what: str = "") -> None:
    """Fail now, before any model loads, unless ``path`` is an existing, non-empty file
    that can be read.

    ``what`` (e.g. ``"wav.scp"``) starts the message when given.
    """
    name = f"{what} {path}" if what else str(path)
    if not os.path.exists(path):
        raise InputFileError(f"{name} does not exist")
    if os.path.isdir(path):
        raise InputFileError(f"{name} is a folder, not a file")
    if os.path.getsize(path) == 0:
        raise InputFileError(f"{name} is empty")
    if not os.access(path, os.R_OK):
        raise InputFileError(f"{name} cannot be read (no read permission)")


class OutputNotWritableError(WespeakerError, OSError):
    """An output cannot be written where it was asked for (found before any work)."""


def same_file(first: str, second: str) -> bool:
    """Whether two paths name one file (links resolved; hard links too, where both exist)."""
    try:
        return os.path.samefile(first, second)
    except OSError:   # one does not exist (yet): compare where they would be
        return os.path.realpath(first) == os.path.realpath(second)


def refuse_output_over_input(outputs: Mapping[str, Optional[str]],
                             inputs: Mapping[str, Optional[str]]) -> None:
    """Fail now, before any work, when an output would replace an input.

    ``outputs`` and ``inputs`` map what names each path for the user (a flag such as
    ``--output``, or ``the scp beside --output``) to the path; None entries are passed
    over. The error names both, so that ``--output wav.ark`` beside ``--wav_scp wav.scp``
    cannot end with the list replaced by an index of embeddings.
    """
    for out_name, out_path in outputs.items():
        for in_name, in_path in inputs.items():
            if out_path and in_path and same_file(out_path, in_path):
                raise OutputNotWritableError(
                    f"{out_name} {out_path} is {in_name} ({in_path}): writing it would "
                    f"replace an input; choose another output path")
