"""Who spoke when: speech regions -> windows -> embeddings -> clusters -> turns.

:class:`Diarizer` holds the embedding function, the model's sample rate and the
options; its :meth:`~Diarizer.diarize` reads a recording once through the audio
module (:func:`~wespeaker_py.audio.load_audio`: the first channel unless told
otherwise, resampled to the model's rate, the shared checks) and returns the
speaker turns, and
:func:`diarize_wav_scp` runs it over a Kaldi ``wav.scp`` into one RTTM file.
:func:`labelled_window_embeddings` cuts and embeds the windows of labelled
utterances the same way, to learn a window LDA from
(:mod:`wespeaker_py.diarization.projection`).
"""
from __future__ import annotations

import inspect
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from wespeaker_py.audio import (DEFAULT_CHANNEL, INT16_SCALE, AudioSilentError,
                                ChannelChoice, heard_rate_of, load_audio_with_rate,
                                narrowband, warn_if_narrowband)
from wespeaker_py.dataset.lists import warn_unlisted
from wespeaker_py.diarization.clustering import cluster_windows
from wespeaker_py.diarization.options import (ClusteringOptionError, DiarizationOptions,
                                              check_cluster_options, given_or, speaker_bounds)
from wespeaker_py.diarization.rttm import write_rttm
from wespeaker_py.diarization.segmentation import subsegments
from wespeaker_py.diarization.turns import Turn, frames_to_turns, windows_to_turns
from wespeaker_py.diarization.vad import Region, VoiceActivityDetector, build_vad
from wespeaker_py.errors import AudioInputError, WespeakerError
from wespeaker_py.runtime.embedding import UNREADABLE
from wespeaker_py.utils.atomic_files import require_writable
from wespeaker_py.utils.list_jobs import DEFAULT_MAX_FAIL_FRACTION, JobTally
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.paths import refuse_output_over_input
from wespeaker_py.utils.progress import progress_bar
from wespeaker_py.utils.tables import DataFormatError, read_wav_scp

logger = get_logger(__name__)


# windows -> [N, D]: 1-D model samples (float32, int16 scale, see wespeaker_py.audio), all of
# one length, at the Diarizer's sample_rate (the model's), ready for the embedding loop.
# A function that also takes a keyword ``name`` is told the recording's, for its messages.
EmbedFunction = Callable[..., np.ndarray]
# windows that came at a rate below the model's, and that rate -> [N, D] embeddings
# (``name`` as for EmbedFunction)
NarrowbandEmbedFunction = Callable[..., np.ndarray]
# [N, D] window embeddings -> [N, d] (a window LDA's project), applied before clustering
Projection = Callable[[np.ndarray], np.ndarray]


@dataclass
class DiarizationResult:
    """Turns of one recording, its speech regions, and seconds spent per step.

    ``capped``: the clustering found ``found_speakers`` > ``max_speakers`` (or
    stopped at ``max_speakers``), so the recording may have more speakers than reported.
    ``silence``: why a recording was taken as silent as a whole, when it was (every
    sample zero, no frame above the energy floor).
    """

    turns: List[Turn]
    speech: List[Region]
    num_speakers: int
    seconds: Dict[str, float] = field(default_factory=dict)
    found_speakers: int = 0
    capped: bool = False
    silence: str = ""


class Diarizer:
    """Speaker diarization with any :data:`EmbedFunction` of a model at ``sample_rate``.

    ``SpeakerModel.diarizer`` of the API makes one, embedding the windows with the
    runtime layer's embedding loop. ``projection``, when given, maps the window
    embeddings before they are clustered (a window LDA). ``narrowband_projections``
    (``{rate: projection}``, rates below ``sample_rate``) replace it for recordings
    that come at or below a rate (:meth:`projection_for`): a window LDA learnt from
    audio heard at 8 kHz for 8 kHz calls. ``narrowband_embed``, when given, embeds the
    windows of a recording that came below ``sample_rate`` instead, told its rate
    (the API's fills the mel bins the low rate left empty).
    """

    def __init__(self, embed_windows: EmbedFunction,
                 options: Optional[DiarizationOptions] = None,
                 vad: Optional[VoiceActivityDetector] = None, sample_rate: int = 16000,
                 projection: Optional[Projection] = None,
                 narrowband_projections: Optional[Mapping[int, Projection]] = None,
                 narrowband_embed: Optional[NarrowbandEmbedFunction] = None):
        self.embed_windows = embed_windows
        self.narrowband_embed = narrowband_embed
        self.projection = projection
        self.narrowband_projections = dict(narrowband_projections or {})
        too_high = sorted(rate for rate in self.narrowband_projections if rate >= sample_rate)
        if too_high:
            raise ValueError(f"narrowband projections must be for rates below the model's "
                             f"{sample_rate} Hz, got {too_high}")
        self.options = options or DiarizationOptions()
        self.options.check()
        self.vad = vad or build_vad(self.options.vad, self.options.region_rules())
        self.sample_rate = sample_rate

    def diarize(self, audio: Any, sample_rate: Optional[int] = None,
                num_speakers: Optional[int] = None, min_speakers: Optional[int] = None,
                max_speakers: Optional[int] = None,
                channel: ChannelChoice = DEFAULT_CHANNEL,
                recording: Optional[str] = None) -> DiarizationResult:
        """Turns of a recording: a file (or ``command |``), or an array/tensor at ``sample_rate``.

        Arrays are ``[samples]`` or two-axis with channels (``channel`` chooses: the
        first by default, see :mod:`wespeaker_py.audio`); floats
        in [-1, 1] or int16. Silence (every sample zero, or no frame above the energy
        floor) has no speech: no turns, and a log line says why. Other audio the shared
        checks refuse (missing, unreadable, empty, NaN, a silent channel chosen beside
        one with signal) raises its :class:`~wespeaker_py.audio.AudioCheckError`.
        The number of speakers is ``num_speakers`` when given, else estimated
        within ``[min_speakers, max_speakers]`` (defaults from the options); a count
        given with settings that only shape an estimated one (``min_cluster_size``,
        ``merge_threshold``, ``ahc_threshold``, ``min_speakers``, ``max_speakers``) raises
        :class:`~wespeaker_py.diarization.options.ClusteringOptionError`.
        Audio without speech gives no turns; speech shorter than a window gives one turn.
        ``recording`` names it in the log (default: the file, when ``audio`` is one).
        """
        opts = self.options
        num_speakers = given_or(num_speakers, opts.num_speakers)
        min_speakers = given_or(min_speakers, opts.min_speakers)
        max_speakers = given_or(max_speakers, opts.max_speakers)
        opts.cluster_options().check(num_speakers, min_speakers, max_speakers)
        seconds: Dict[str, float] = {}
        clock = time.perf_counter()
        rate = self.sample_rate
        name = recording or (audio if isinstance(audio, str) else "the recording")
        try:
            audio, source_rate = load_audio_with_rate(audio, rate, sample_rate,
                                                      channel=channel)
        except AudioSilentError as error:
            if error.live_channels:   # the wrong channel: the error says which to choose
                raise
            return DiarizationResult([], [], 0, {"load": time.perf_counter() - clock},
                                     silence=str(error))
        seconds["load"] = time.perf_counter() - clock
        clock = time.perf_counter()
        speech = self.vad(audio / np.float32(INT16_SCALE), rate)
        seconds["vad"] = time.perf_counter() - clock
        clock = time.perf_counter()
        windows, embeddings = self.window_embeddings(audio, speech,
                                                     heard_rate_of(source_rate, rate), name)
        seconds["embed"] = time.perf_counter() - clock
        if not windows:
            return DiarizationResult([], speech, 0, seconds)

        clock = time.perf_counter()
        projection = self.projection_for(source_rate)
        if projection is not None:
            embeddings = projection(embeddings)
        clustering = cluster_windows(embeddings, opts.cluster_options(), num_speakers,
                                     min_speakers, max_speakers)
        seconds["cluster"] = time.perf_counter() - clock
        if clustering.capped:
            logger.warning("%s: found %s%d speakers, more than max_speakers=%d: kept %d; raise "
                           "max_speakers if the recording has more", name,
                           "at least " if clustering.at_least else "", clustering.found,
                           speaker_bounds(min_speakers, max_speakers)[1],
                           clustering.num_speakers)
        if num_speakers is not None and clustering.num_speakers < num_speakers:
            logger.warning("%s: num_speakers=%d but only %d window(s) of speech: %d "
                           "speaker(s)", name, num_speakers, len(windows),
                           clustering.num_speakers)
        turns = self.turns(windows, clustering.labels, embeddings)
        return DiarizationResult(turns, speech, clustering.num_speakers, seconds,
                                 clustering.found, clustering.capped)

    def projection_for(self, source_rate: int) -> Optional[Projection]:
        """The projection for a recording that came at ``source_rate``: the narrowband one of
        the lowest rate at or above it, else :attr:`projection`."""
        fitting = [rate for rate in self.narrowband_projections if source_rate <= rate]
        if not fitting:
            return self.projection
        logger.debug("a recording at %d Hz: projected with the narrowband one for %d Hz",
                     source_rate, min(fitting))
        return self.narrowband_projections[min(fitting)]

    def window_embeddings(self, audio: np.ndarray, speech: Sequence[Region],
                          heard_rate: int = 0, name: Optional[str] = None):
        """The windows ``[(start, end)]`` cut from ``speech`` in ``audio`` (model samples at
        :attr:`sample_rate`, which came at ``heard_rate`` when that is set), and
        ``[N, D]`` embeddings of them. ``name`` (the recording's) goes to an embedding
        function that takes it, for its messages."""
        opts = self.options
        windows = subsegments(speech, opts.window, opts.shift)
        if not windows:
            return windows, np.zeros((0, 0))
        rate = self.sample_rate
        window_samples = int(round(opts.window * rate))
        # Every window is repeated to the full length (np.resize, as WeSpeaker pads
        # short ones), so they batch together and short ones still fill the model's input.
        spans = [(int(round(a * rate)), int(round(b * rate))) for a, b in windows]
        pieces = [with_noise_floor(np.resize(audio[first:last], window_samples), opts.dither,
                                   first) for first, last in spans]
        if heard_rate and self.narrowband_embed is None:
            warn_if_narrowband(heard_rate, rate, name or "a recording", "the diarizer has no "
                               "narrowband embedding function (SpeakerModel.diarizer's has)")
        if heard_rate and self.narrowband_embed is not None:
            embeddings = _call_naming(self.narrowband_embed, name, pieces, heard_rate)
        else:
            embeddings = _call_naming(self.embed_windows, name, pieces)
        embeddings = np.asarray(embeddings)
        if embeddings.shape[0] != len(windows) or not np.isfinite(embeddings).all():
            raise RuntimeError(f"the embedding function returned {embeddings.shape} "
                               f"(finite: {np.isfinite(embeddings).all()}) for "
                               f"{len(windows)} windows")
        return windows, embeddings

    def turns(self, windows: Sequence[Region], labels: np.ndarray,
              embeddings: np.ndarray) -> List[Turn]:
        """Speaker turns from labelled windows, at ``options.resolution`` when set."""
        if self.options.resolution is None:
            return windows_to_turns(windows, labels)
        return frames_to_turns(windows, labels, embeddings, self.options.resolution)


def _call_naming(function: Callable[..., np.ndarray], name: Optional[str],
                 *args: Any) -> np.ndarray:
    """``function(*args)``, with ``name=`` too when ``name`` is set and it takes that keyword."""
    try:
        takes_name = "name" in inspect.signature(function).parameters
    except (TypeError, ValueError):   # a callable without an inspectable signature
        takes_name = False
    return function(*args, name=name) if name and takes_name else function(*args)


def with_noise_floor(piece: np.ndarray, dither: float, seed: int) -> np.ndarray:
    """``piece`` (model samples, 16-bit scale) plus Gaussian noise of standard deviation
    ``dither``, drawn from ``seed`` (a window's start sample), so a recording always
    gives the same embeddings.

    Digital silence (exact zeros: pauses of mixed or edited audio, zero padding, the
    empty upper band of upsampled 8 kHz audio) gives log-mel energies at the fbank's
    floor, far below anything a model hears in training; a few such frames at a
    region's edge turn a window's embedding away from its speaker's. A noise floor of
    one 16-bit step (Kaldi's dither) removes the floor and changes nothing audible.
    """
    if dither <= 0.0:
        return piece
    noise = np.random.default_rng(seed).standard_normal(piece.size, dtype=np.float32)
    return piece + dither * noise


@dataclass
class BatchSummary:
    """What a run over a list did: recordings diarized, silent, capped at ``max_speakers``
    (they may have more speakers), and failed (with why)."""

    diarized: int = 0
    silent: List[str] = field(default_factory=list)
    capped: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)
    reasons: Counter = field(default_factory=Counter)  # the failures counted by reason

    def tally(self) -> JobTally:
        """The run as a list job: recordings diarized, and the failed ones by reason."""
        return JobTally.of(self.diarized, self.reasons)

    def describe(self) -> str:
        text = f"{self.tally().describe()}: {self.diarized} recordings diarized"
        if self.silent:
            text += f", {len(self.silent)} without speech (no turns): {', '.join(self.silent)}"
        if self.capped:
            text += (f", {len(self.capped)} with more speakers than max_speakers (capped): "
                     f"{', '.join(self.capped)}")
        if self.failed:
            text += f", {len(self.failed)} failed: " + "; ".join(
                f"{key}: {why}" for key, why in self.failed.items())
        return text


def diarize_wav_scp(diarizer: Diarizer, wav_scp: str, output_rttm: str,
                    show_progress: bool = True,
                    max_fail_fraction: float = DEFAULT_MAX_FAIL_FRACTION,
                    speaker_counts: Optional[Mapping[str, int]] = None,
                    **kwargs) -> BatchSummary:
    """Diarize every recording of a ``wav.scp`` into one RTTM file (written atomically).

    ``speaker_counts`` (recording -> number of speakers, e.g. from
    :func:`~wespeaker_py.diarization.rttm.read_speaker_counts`) fixes each
    recording's count; it must name every recording, and comes without
    ``num_speakers`` and the settings that shape an estimated count
    (``min_cluster_size``, ``merge_threshold``, ``ahc_threshold``). ``kwargs`` go to
    :meth:`Diarizer.diarize` for every recording.
    A malformed ``wav.scp`` line, a key given twice, a recording missing from
    ``speaker_counts``, or a setting that cannot apply is an error naming it, raised
    before any work. A recording
    that cannot be read is logged, counted and skipped; one without speech gets
    no turns; both are listed in the returned summary, as are those with more
    speakers than ``max_speakers`` (capped). Any other error stops the run, raised
    again with the recording's key and path in its message (of the same type where
    that type takes one message; the original as its cause). Nothing diarized, or more
    than ``max_fail_fraction`` of the recordings failed, is a
    :class:`~wespeaker_py.errors.RunFailedError` (:mod:`wespeaker_py.utils.list_jobs`)
    and no RTTM is written.
    """
    if not isinstance(wav_scp, (str, os.PathLike)):
        raise WespeakerError(f"wav_scp must be the path of a wav.scp file, got a "
                             f"{type(wav_scp).__name__}; diarize files one by one with "
                             f"diarize()")
    refuse_output_over_input({"the output RTTM": output_rttm}, {"the wav.scp": wav_scp})
    require_writable(output_rttm)
    recordings = read_wav_scp(wav_scp)
    if speaker_counts is not None:
        if kwargs.get("num_speakers") is not None:
            raise ClusteringOptionError("give num_speakers (every recording) or "
                                        "speaker_counts (each its own), not both")
        diarizer.options.check_count_given("each recording's, speaker_counts / --reco2num_spk",
                                           kwargs.get("min_speakers"),
                                           kwargs.get("max_speakers"))
        missing = [key for key in recordings if key not in speaker_counts]
        if missing:
            raise ClusteringOptionError(f"no speaker count for {len(missing)} recording(s) of "
                                        f"{wav_scp}: {', '.join(missing[:5])}")
        for key in recordings:
            try:
                check_cluster_options(diarizer.options.cluster_method, speaker_counts[key])
            except ClusteringOptionError as error:
                raise ClusteringOptionError(f"the speaker count of {key}: {error}") from None
    summary = BatchSummary()
    turns: Dict[str, List[Turn]] = {}
    for key, path in progress_bar(recordings.items(), desc="diarize", unit="rec",
                                  enabled=show_progress):
        if speaker_counts is not None:
            kwargs["num_speakers"] = speaker_counts[key]
        try:
            result = diarizer.diarize(path, recording=key, **kwargs)
        except AudioInputError as err:
            logger.warning("skipping %s: %s", key, err)
            summary.failed[key] = str(err)
            summary.reasons[getattr(err, "reason", UNREADABLE)] += 1
            continue
        except Exception as err:  # noqa: BLE001 -- raised again, naming the recording
            named = naming_recording(err, key, path)
            if named is err:
                raise
            raise named from err
        if not result.turns:
            logger.warning("%s: no speech found%s, no turns written", key,
                           f" ({result.silence})" if result.silence else "")
            summary.silent.append(key)
        if result.capped:
            summary.capped.append(key)
        summary.diarized += 1
        turns[key] = result.turns
    summary.tally().check(wav_scp, max_fail_fraction, f"{output_rttm} was not written")
    write_rttm(output_rttm, turns)
    logger.info("%s -> %s", summary.describe(), output_rttm)
    return summary


def naming_recording(error: Exception, key: str, path: str) -> Exception:
    """An error of ``error``'s type whose message leads with the recording's key and path;
    ``error`` itself (the log names the recording) when its type is not built from one
    message."""
    message = f"recording {key} ({path}): {error}"
    try:
        named = type(error)(message)
    except Exception:  # noqa: BLE001 -- a type that needs other arguments
        named = None
    if named is None or str(named) != message:
        logger.error("recording %s (%s) failed", key, path)
        return error
    return named


def labelled_window_embeddings(diarizer: Diarizer, wav_scp: str, utt2spk: Mapping[str, str],
                               show_progress: bool = True,
                               max_fail_fraction: float = DEFAULT_MAX_FAIL_FRACTION,
                               heard_rates: Sequence[int] = (0,), utt2spk_name: str = "utt2spk"
                               ) -> Tuple[np.ndarray, np.ndarray, JobTally]:
    """The diarization windows of every utterance of ``wav_scp`` named in ``utt2spk``, embedded.

    An utterance of ``utt2spk`` (read from the file ``utt2spk_name``) missing from
    ``wav_scp`` is a :class:`~wespeaker_py.utils.tables.DataFormatError` naming both
    and the first such utterance, raised before any work; utterances of ``wav_scp``
    without a speaker are left out with a warning that counts them.

    Each utterance counts as speech throughout (a speaker corpus's utterances
    are), cut into the diarizer's windows with its noise floor, and embedded once
    for each of ``heard_rates`` (read once): 0 as it is, a rate below the model's
    brought down to it and back, as a recording at that rate reaches the model (an
    utterance that came at a lower rate is embedded as heard at that rate, as it
    would be when diarized).
    Returns ``(embeddings [N, D], speakers [N], tally)``, the windows of each rate
    together, in the order of ``heard_rates``. Unreadable utterances are
    skipped and counted; nothing embedded, or more than ``max_fail_fraction``
    skipped, raises :class:`~wespeaker_py.errors.RunFailedError`.
    """
    wavs = read_wav_scp(wav_scp)
    absent = [key for key in utt2spk if key not in wavs]
    if absent:
        raise DataFormatError(utt2spk_name, None, f"{len(absent)} utterance(s) are not in "
                                                  f"{wav_scp} (the first: {absent[0]!r})")
    recordings = {key: path for key, path in wavs.items() if key in utt2spk}
    warn_unlisted(wavs, utt2spk, wav_scp, utt2spk_name)
    skipped: Counter = Counter()
    rows: Dict[int, List[np.ndarray]] = {heard_rate: [] for heard_rate in heard_rates}
    speakers: Dict[int, List[str]] = {heard_rate: [] for heard_rate in heard_rates}
    read = 0
    rate = diarizer.sample_rate
    for key, path in progress_bar(recordings.items(), desc="windows", unit="utt",
                                  enabled=show_progress):
        try:
            audio, source_rate = load_audio_with_rate(path, rate)
        except AudioInputError as err:
            logger.warning("skipping %s: %s", key, err)
            skipped[getattr(err, "reason", UNREADABLE)] += 1
            continue
        read += 1
        came_at = heard_rate_of(source_rate, rate)
        for heard_rate in heard_rates:
            heard = narrowband(audio, heard_rate, rate) if heard_rate else audio
            lowest = min(filter(None, (heard_rate, came_at)), default=0)
            _, embeddings = diarizer.window_embeddings(heard, [(0.0, heard.size / rate)],
                                                       lowest, key)
            rows[heard_rate].append(embeddings)
            speakers[heard_rate] += [utt2spk[key]] * len(embeddings)
    tally = JobTally.of(read, skipped)
    tally.check(wav_scp, max_fail_fraction, "no window LDA was learnt")
    return (np.concatenate([row for heard_rate in heard_rates for row in rows[heard_rate]]),
            np.array([name for heard_rate in heard_rates for name in speakers[heard_rate]]),
            tally)
