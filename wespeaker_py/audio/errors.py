"""The named errors of audio that no model should see, one class per check.

Each derives from :class:`~wespeaker_py.errors.AudioInputError` (so the command
line prints it as one line and exits 2) and carries ``reason``, the short name
the training pipeline counts a skipped utterance under
(:class:`~wespeaker_py.dataset.stats.SkipSummary`). The message names the input.
"""
from __future__ import annotations

from wespeaker_py.errors import AudioInputError


class AudioCheckError(AudioInputError):
    """Audio refused by a check of :mod:`wespeaker_py.audio`; ``reason`` names the check."""

    reason = "bad_audio"


class AudioMissingError(AudioCheckError):
    """The file does not exist (or cannot be opened)."""

    reason = "missing_file"


class AudioUnreadableError(AudioCheckError):
    """The input is not audio that soundfile can decode (or is a folder)."""

    reason = "not_audio"


class AudioPipeError(AudioUnreadableError):
    """A Kaldi ``command |`` entry exited with an error."""

    reason = "pipe_failed"


class AudioTruncatedError(AudioUnreadableError):
    """The file holds fewer frames than it promises: a WAV header counting more data than
    the file has, decoding that stops early (a cut FLAC, a broken stream)."""

    reason = "truncated"


class AudioSegmentError(AudioCheckError):
    """A VAD segment starts at or past the end of its audio, or ends more than
    :data:`~wespeaker_py.audio.files.MAX_SEGMENT_OVERSHOOT` past it (Kaldi's
    ``extract-segments``): the segments do not fit the recording they are applied to."""

    reason = "segment_past_end"


class AudioEmptyError(AudioCheckError):
    """The file or array holds no samples."""

    reason = "empty_file"


class AudioTooShortError(AudioCheckError):
    """Fewer samples than the reader (or the model) needs."""

    reason = "too_short"


class AudioNonFiniteError(AudioCheckError):
    """Some samples are NaN or infinite (a broken float WAV)."""

    reason = "non_finite_samples"


class AudioChannelError(AudioCheckError):
    """The channel asked for (a number) is not one the input has."""

    reason = "no_such_channel"


class AudioSilentError(AudioCheckError):
    """Every sample is zero: digital silence, nothing to embed. ``live_channels``: the
    other channels of the input that have signal (the wrong channel was chosen,
    :class:`AudioSilentChannelError`), if any."""

    reason = "all_zero_samples"
    live_channels: tuple = ()


class AudioNoEnergyError(AudioSilentError):
    """No frame reaches the energy floor (dither-level noise): silent in all but name.

    See :data:`~wespeaker_py.audio.samples.SILENCE_FLOOR_DBFS`."""

    reason = "no_energy"


class AudioSilentChannelError(AudioSilentError):
    """The chosen channel of a multi-channel input is silent (all zeros or below the
    energy floor) while ``live_channels`` have signal: the wrong channel, not silent audio."""

    reason = "silent_channel"


class AudioNoSpeechError(AudioCheckError):
    """A faint input whose level hardly varies (room tone, a muted microphone's hiss): no
    speech to embed.
    The speaker API's check only (see :mod:`wespeaker_py.audio.speech_rules`)."""

    reason = "no_speech"
