"""The package's own exception for user errors: bad audio, a bad model folder, a bad file.

Raised by the Python API (:mod:`wespeaker_py.api`) and caught by the command
line (:mod:`wespeaker_py.cli.errors`), which prints its one-line message and
exits with status 2 instead of a traceback. Importing this module is cheap
(no torch).
"""
from __future__ import annotations


class WespeakerError(Exception):
    """A problem with what the user gave (a file, an argument); the message names it."""


class AudioInputError(WespeakerError, ValueError):
    """Audio that cannot be embedded: missing, not audio, empty, NaN or too short."""


class ModelSourceError(WespeakerError, ValueError):
    """A model folder, checkpoint or ONNX file that cannot be loaded as a speaker model."""
