"""A data folder laid out as ``DIR/<speaker>/<audio files>``, listed as a Kaldi folder.

What ``wespeaker-py finetune --data DIR`` takes when DIR has no ``wav.scp``: each
folder of DIR is a speaker, and every audio file under it (at any depth, linked folders
followed; the suffixes of :data:`~wespeaker_py.dataset.lists.AUDIO_EXTENSIONS`, of which
those soundfile cannot decode here, m4a and wma, are refused) one of their utterances. An
utterance's key is its path relative to DIR (``george/george_00.wav``, as WeSpeaker's
VoxCeleb lists name theirs): unique, and the same on every run. Hidden files and
folders (``.name``) are left out. The listing's ``wav.scp`` and ``utt2spk`` rows are
what the run records a digest of and writes into its work folder. A layout that looks
one level too high (``DIR/<group>/<speaker>/``: the same subfolder name under several
speaker folders) is warned about.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Sequence, Set, Tuple

from wespeaker_py.dataset.lists import (AUDIO_EXTENSIONS, TableEntry, audio_extension,
                                        check_decodable)
from wespeaker_py.errors import WespeakerError
from wespeaker_py.utils.logging_utils import get_logger, listed_names
from wespeaker_py.utils.paths import visible_files_under, visible_names

logger = get_logger(__name__)

LISTS = ("wav.scp", "utt2spk")


class SpeakerFolderError(WespeakerError):
    """A speaker folder that cannot be listed: a path a Kaldi list cannot hold, or audio
    that cannot be decoded here."""


@dataclass
class SpeakerFolderListing:
    """The utterances found under DIR's speaker folders, and what was left out."""

    entries: List[TableEntry]
    speakers: int
    other_files: int   # files that are not audio, or lie directly in DIR

    def rows(self, name: str) -> List[Tuple[str, str]]:
        """The rows of the list ``name`` (``wav.scp`` or ``utt2spk``)."""
        return [(entry.key, entry.wav if name == "wav.scp" else entry.spk)
                for entry in self.entries]


def _speaker_files(data_dir: str, speaker: str) -> Tuple[List[str], int]:
    """The audio files under ``data_dir/speaker`` (paths relative to ``data_dir``, sorted),
    and the number of other files there (as :func:`~wespeaker_py.utils.paths.visible_files_under`
    lists them)."""
    audio, others = [], 0
    for path in visible_files_under(os.path.join(data_dir, speaker)):
        if audio_extension(os.path.basename(path)) in AUDIO_EXTENSIONS:
            audio.append(os.path.relpath(path, data_dir))
        else:
            others += 1
    return sorted(audio), others


def list_speaker_folders(data_dir: str) -> SpeakerFolderListing:
    """The utterances of ``data_dir``'s speaker folders; none when it has none with audio.

    A path holding whitespace (which a Kaldi list cannot hold in a key) and audio that
    soundfile cannot decode here (m4a, wma) raise :class:`SpeakerFolderError` naming the
    file."""
    entries: List[TableEntry] = []
    speakers, others = 0, 0
    for name in visible_names(os.listdir(data_dir)):
        if not os.path.isdir(os.path.join(data_dir, name)):
            others += 1
            continue
        files, more = _speaker_files(data_dir, name)
        others += more
        speakers += bool(files)
        for relative in files:
            key = relative.replace(os.sep, "/")
            if any(char.isspace() for char in key):
                raise SpeakerFolderError(
                    f"{os.path.join(data_dir, relative)}: its path below {data_dir} holds "
                    f"whitespace, which an utterance key of a Kaldi list (wav.scp, utt2spk) "
                    f"cannot hold; rename it (or list the folder in a wav.scp and utt2spk)")
            entries.append(TableEntry(key=key, spk=name,
                                      wav=os.path.abspath(os.path.join(data_dir, relative))))
    try:
        check_decodable(entries)
    except ValueError as error:
        raise SpeakerFolderError(f"{data_dir}: {error}") from None
    _warn_if_grouped(data_dir, entries)
    return SpeakerFolderListing(entries, speakers, others)


def _warn_if_grouped(data_dir: str, entries: Sequence[TableEntry]) -> None:
    """Warn when a subfolder name holding audio recurs under several of ``data_dir``'s
    speaker folders that hold no audio of their own: the layout looks like
    ``DIR/<group>/<speaker>/`` (months, campaigns), whose groups would train as speakers.
    A speaker folder with files of its own beside a ``session1/`` is not counted."""
    direct = {entry.spk for entry in entries if entry.key.count("/") == 1}
    under: Dict[str, Set[str]] = defaultdict(set)
    for entry in entries:
        parts = entry.key.split("/")
        if len(parts) > 2 and entry.spk not in direct:
            under[parts[1]].add(entry.spk)
    recurring = sorted((name for name, folders in under.items() if len(folders) >= 2),
                       key=lambda name: (-len(under[name]), name))
    if not recurring:
        return
    example, folders = recurring[0], sorted(under[recurring[0]])
    logger.warning(
        "%s: %d subfolder name(s) holding audio recur under several of its speaker folders "
        "(%r is under %s): the layout looks like %s/<group>/<speaker>/, but each folder of "
        "%s is taken as one speaker, so the groups would train as speakers and one person's "
        "files carry several labels. Give one group's folder (%s) as the folder, or list the "
        "files in a wav.scp and utt2spk naming each file's speaker; if those subfolders are "
        "each speaker's own sessions, nothing is wrong", data_dir, len(recurring), example,
        listed_names(folders, 3), data_dir, data_dir, os.path.join(data_dir, folders[0]))
