"""What the speaker API leaves out of a recording before embedding it, and what it refuses.

Speaker embeddings pool statistics over every frame, so frames unlike any in
training weigh far more than their share. Measured with the mini ECAPA on 20
nontarget LibriSpeech pairs (``bench/bench_speech_rules.py``): padding each
recording with a fraction of a second of exact zeros made all 20 "the same
speaker"; padding with +-1 LSB dither or -70 dBFS hiss made 7 of 20. Three rules,
applied to the mono samples at the input's own rate (before resampling, whose
filter turns zeros next to speech into ringing):

* **digital silence** (:func:`without_digital_silence`): every run of exact
  zeros at least one 25 ms fbank window long is removed, wherever it is;
* **near-silent edges** (:func:`near_silent_edges`): leading and trailing
  frames :attr:`SpeechRules.edge_below_db` or more below the recording's loud
  frames (the level its loudest :attr:`SpeechRules.loud_seconds` reach, a fixed
  amount of audio, so that padding far longer than the speech is still judged
  against the speech) are removed, keeping
  :attr:`SpeechRules.edge_keep_seconds` next to the sound; pauses inside the
  recording, and the steady background of a noisy one (far less than 40 dB
  below its speech), stay as training saw them;
* **no speech** (:func:`check_level_varies`): a faint input (every frame under
  :attr:`SpeechRules.steady_below_dbfs`) whose level stays within
  :attr:`SpeechRules.min_level_range_db` between its quiet frames (10th
  percentile) and its loudest is refused with
  :class:`~wespeaker_py.audio.errors.AudioNoSpeechError` instead of being
  embedded: room tone or a muted microphone's hiss (two such recordings
  otherwise score as one speaker). Steady noise stays within about 1 dB, speech
  varies by 10 to 60 dB (by 4 dB or more even under white noise at 0 dB SNR).
  Loud steady input (a tone, a test signal) is embedded as given.

Only the speaker API applies them (:class:`SpeechLog` is its opt-in of
:func:`~wespeaker_py.audio.load.load_audio_with_rate`); ``bin.extract``, the
recipes, training and diarization keep WeSpeaker's features.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from wespeaker_py.audio.errors import AudioNoSpeechError
from wespeaker_py.audio.samples import INT16_SCALE, frame_powers

logger = logging.getLogger(__name__)

# the frame of the level rules: one fbank window
FRAME_SECONDS = 0.025
# fewer frames than this are too few to judge a level range or edges by percentiles
MIN_JUDGED_FRAMES = 10


@dataclass(frozen=True)
class SpeechRules:
    """The settings of the three rules (see the module's docstring)."""

    silence_run_seconds: float = FRAME_SECONDS
    edge_below_db: float = 40.0
    loud_seconds: float = 0.25
    edge_keep_seconds: float = 0.05
    min_level_range_db: float = 3.0
    steady_below_dbfs: float = -40.0

    def describe_silence(self) -> str:
        """The digital-silence rule in words, for messages."""
        return f"runs of {self.silence_run_seconds * 1000:g} ms or more of zero samples"

    def describe_edges(self) -> str:
        """The near-silent-edge rule in words, for messages."""
        return f"leading and trailing audio {self.edge_below_db:g} dB or more below its speech"


@dataclass(frozen=True)
class Removal:
    """What the rules took out of one input, in seconds."""

    name: str
    silence_seconds: float
    edge_seconds: float

    @property
    def seconds(self) -> float:
        """Both parts together."""
        return self.silence_seconds + self.edge_seconds


def without_digital_silence(samples: np.ndarray, min_run: int) -> Tuple[np.ndarray, int]:
    """Mono ``samples`` (one axis; other shapes raise ``ValueError``) less every run of
    ``min_run`` or more consecutive exact zeros (at the ends and in gaps alike), and how many
    samples that removed (``samples`` itself when 0).

    With ``min_run`` one fbank window, such a run gives frames that are all zeros, which
    fbank turns into constant log-floor frames unlike any in training. Shorter runs (a
    zero crossing held at int16, a click) stay: no frame of them is all zeros.
    """
    if samples.ndim != 1:
        raise ValueError(f"without_digital_silence takes mono samples (one axis), got an "
                         f"array of shape {samples.shape}")
    if min_run < 1:
        raise ValueError(f"min_run must be at least 1 sample, got {min_run}")
    zero = np.equal(samples, 0).view(np.int8)
    # +1 where a run of zeros starts, -1 just past where it ends
    edges = np.diff(zero, prepend=np.int8(0), append=np.int8(0))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    long = stops - starts >= min_run
    if not long.any():
        return samples, 0
    marks = np.zeros(samples.shape[0] + 1, dtype=np.int8)
    marks[starts[long]] = 1
    marks[stops[long]] = -1
    # the runs neither touch nor overlap, so the running sum is 1 inside one, else 0
    kept = samples[np.cumsum(marks[:-1], dtype=np.int8) == 0]
    return kept, samples.shape[0] - kept.shape[0]


def frame_levels_dbfs(samples: np.ndarray, frame: int) -> np.ndarray:
    """The level (RMS with the frame's mean removed, dBFS on the int16 scale) of each whole
    frame of ``frame`` samples (:func:`~wespeaker_py.audio.samples.frame_powers`); a
    trailing part frame is left out. A frame of constant samples is at -inf."""
    count = samples.shape[0] // frame
    powers = np.concatenate([np.zeros(0), *frame_powers(samples, frame)])[:count]
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(powers / INT16_SCALE ** 2)


def near_silent_edges(samples: np.ndarray, rate: int,
                      rules: SpeechRules = SpeechRules()) -> Tuple[int, int]:
    """``(start, stop)``: the span of mono ``samples`` at ``rate`` kept once the leading and
    trailing frames at least ``rules.edge_below_db`` below the loud level (what the loudest
    ``rules.loud_seconds`` of frames reach) are removed, ``rules.edge_keep_seconds`` kept
    next to the first and last louder frame. The whole input when it has fewer than
    :data:`MIN_JUDGED_FRAMES` frames."""
    frame = max(1, int(round(FRAME_SECONDS * rate)))
    levels = frame_levels_dbfs(samples, frame)
    finite = levels[np.isfinite(levels)]
    if levels.size < MIN_JUDGED_FRAMES or not finite.size:
        return 0, samples.shape[0]
    loud_frames = max(1, int(round(rules.loud_seconds / FRAME_SECONDS)))
    loud_level = float(np.sort(finite)[-min(loud_frames, finite.size)])
    loud = np.flatnonzero(levels >= loud_level - rules.edge_below_db)
    keep = int(round(rules.edge_keep_seconds * rate))
    start = max(0, int(loud[0]) * frame - keep)
    # a trailing part frame stays with the last frame when that frame stays
    stop = samples.shape[0] if loud[-1] == levels.size - 1 \
        else min(samples.shape[0], (int(loud[-1]) + 1) * frame + keep)
    return start, stop


def check_level_varies(samples: np.ndarray, rate: int, name: str,
                       rules: SpeechRules = SpeechRules()) -> None:
    """Refuse mono ``samples`` at ``rate`` whose every frame is under
    ``rules.steady_below_dbfs`` and whose level stays within ``rules.min_level_range_db``
    between their quiet frames (10th percentile) and their loudest: faint steady noise, no
    speech (:class:`~wespeaker_py.audio.errors.AudioNoSpeechError` naming ``name``). Inputs
    of fewer than :data:`MIN_JUDGED_FRAMES` frames are not judged."""
    frame = max(1, int(round(FRAME_SECONDS * rate)))
    levels = frame_levels_dbfs(samples, frame)
    finite = levels[np.isfinite(levels)]
    if finite.size < MIN_JUDGED_FRAMES:
        return
    quiet, loudest = float(np.percentile(finite, 10)), float(finite.max())
    if loudest < rules.steady_below_dbfs and loudest - quiet < rules.min_level_range_db:
        raise AudioNoSpeechError(
            f"{name}: no speech found: its level stays within {loudest - quiet:.1f} dB "
            f"(at {quiet:.1f} to {loudest:.1f} dBFS) over {samples.shape[0] / rate:.2f} s, "
            f"as faint steady noise does (room tone, a muted microphone's hiss), where "
            f"speech varies by {rules.min_level_range_db:g} dB or more; its speaker "
            f"embedding would mean nothing")


@dataclass
class SpeechLog:
    """The speaker API's opt-in of :func:`~wespeaker_py.audio.load.load_audio_with_rate`:
    each input loses what the first two rules of :attr:`rules` remove (:meth:`apply`, at its
    own rate) and is refused by the third (:meth:`check`) after the loader's own checks;
    what an accepted input lost is recorded in :attr:`removals` (the last entry is the
    latest accepted input's)."""

    rules: SpeechRules = SpeechRules()
    removals: List[Removal] = field(default_factory=list)
    _pending: Optional[Removal] = field(default=None, repr=False)

    def apply(self, samples: np.ndarray, rate: int, name: str) -> np.ndarray:
        """Mono ``samples`` at ``rate`` less their digital silence and near-silent edges;
        what was removed is logged (DEBUG) and recorded."""
        min_run = max(1, int(round(self.rules.silence_run_seconds * rate)))
        kept, silent = without_digital_silence(samples, min_run)
        start, stop = near_silent_edges(kept, rate, self.rules)
        edges = kept.shape[0] - (stop - start)
        kept = kept[start:stop]
        removal = Removal(name, silent / rate, edges / rate)
        self._pending = removal
        if removal.seconds:
            logger.debug("%s: %.3f s of digital silence and %.3f s of near-silent edges "
                         "removed; %.3f s left", name, removal.silence_seconds,
                         removal.edge_seconds, kept.shape[0] / rate)
        return kept

    def check(self, samples: np.ndarray, rate: int, name: str) -> None:
        """The no-speech rule (:func:`check_level_varies`), run once the input has passed
        every check of :func:`~wespeaker_py.audio.samples.check_samples`."""
        check_level_varies(samples, rate, name, self.rules)
        # recorded only now: an input refused by any check lost nothing worth counting
        if self._pending is not None:
            self.removals.append(self._pending)
            self._pending = None

    @property
    def last(self) -> Removal:
        """What was removed from the latest input (nothing before the first)."""
        return self.removals[-1] if self.removals else Removal("", 0.0, 0.0)

    def summary(self, inputs: int) -> str:
        """One line on what was removed from the ``inputs`` of a call ('' when nothing)."""
        touched = [removal for removal in self.removals if removal.seconds]
        if not touched:
            return ""
        silence = sum(removal.silence_seconds for removal in touched)
        edges = sum(removal.edge_seconds for removal in touched)
        return (f"removed before embedding from {len(touched)} of {inputs} input(s): "
                f"{silence:.3f} s of digital silence ({self.rules.describe_silence()}), "
                f"{edges:.3f} s of near-silent edges ({self.rules.describe_edges()})")
