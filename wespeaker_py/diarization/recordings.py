"""Audio files and folders to diarize, as recordings: ``{RTTM recording id: audio path}``.

A file is one recording, named as :func:`~wespeaker_py.diarization.rttm.recording_id`
names it (its name without the extension, whitespace as ``_``). A folder is searched at
any depth (hidden files and folders left out, a linked folder followed once) for the files
of the extensions soundfile decodes here
(:func:`~wespeaker_py.dataset.lists.decodable_extensions`), each named by its path below
the folder (``day1/room a.wav`` is ``day1_room_a``). Two inputs of one name are an error
naming both.
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence

from wespeaker_py.dataset.lists import audio_extension, decodable_extensions
from wespeaker_py.diarization.rttm import recording_id
from wespeaker_py.errors import WespeakerError
from wespeaker_py.utils.paths import visible_files_under


class RecordingInputError(WespeakerError, ValueError):
    """Inputs that cannot be the recordings of one run: a folder without audio, two inputs
    of one recording id, a recording name that cannot be an RTTM field."""


def audio_files_under(folder: str) -> List[str]:
    """The audio files at any depth under ``folder`` (paths that start with it), sorted."""
    extensions = set(decodable_extensions())
    return sorted(path for path in visible_files_under(folder)
                  if audio_extension(os.path.basename(path)) in extensions)


def recordings_of(paths: Sequence[str]) -> Dict[str, str]:
    """``{recording id: audio path}`` of audio files and folders, in the order given (a
    folder's files sorted by path)."""
    found: Dict[str, str] = {}
    for path in paths:
        if os.path.isdir(path):
            files = audio_files_under(path)
            if not files:
                raise RecordingInputError(
                    f"{path}: no audio files in it or below (looked for "
                    f"{', '.join('.' + suffix for suffix in decodable_extensions())})")
            named = [(recording_id(file, path), file) for file in files]
        else:
            named = [(recording_id(path), path)]
        for key, file in named:
            if key in found:
                raise RecordingInputError(
                    f"{found[key]} and {file} are both recording {key!r} (an RTTM recording "
                    f"id: the path without the extension, whitespace and / as _); rename one, "
                    f"or name them yourself in a wav.scp (--wav_scp)")
            found[key] = file
    return found
