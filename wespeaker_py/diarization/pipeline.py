"""Who spoke when: speech regions -> windows -> embeddings -> clusters -> turns.

:class:`Diarizer` holds the embedding function, the model's sample rate and the
options; its :meth:`~Diarizer.diarize` reads a recording once through the audio
module (:func:`~wespeaker_py.audio.load_audio`: the first channel unless told
otherwise, resampled to the model's rate, the shared checks) and returns the
speaker turns (:mod:`wespeaker_py.diarization.batch` runs it over many recordings).
:func:`labelled_window_embeddings` cuts and embeds the windows of labelled
utterances the same way, to learn a window LDA from
(:mod:`wespeaker_py.diarization.projection`).
"""
from __future__ import annotations

import inspect
import time
from collections import Counter
from dataclasses import dataclass, field
from collections.abc import Sequence as SequenceABC
from typing import (Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set,
                    Tuple)

import numpy as np

from wespeaker_py.audio import (DEFAULT_CHANNEL, INT16_SCALE, AudioSilentError,
                                ChannelChoice, heard_rate_of, load_audio_with_rate,
                                narrowband, warn_if_narrowband)
from wespeaker_py.audio.readable import readable_recordings
from wespeaker_py.dataset.lists import warn_unlisted
from wespeaker_py.diarization.clustering import Clustering, cluster_windows
from wespeaker_py.diarization.options import DiarizationOptions, given_or, speaker_bounds
from wespeaker_py.diarization.segmentation import subsegments
from wespeaker_py.diarization.turns import Turn, clip_turns, frames_to_turns, windows_to_turns
from wespeaker_py.diarization.vad import Region, VoiceActivityDetector, build_vad
from wespeaker_py.utils.list_jobs import DEFAULT_MAX_FAIL_FRACTION, JobTally
from wespeaker_py.utils.logging_utils import get_logger
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
# a recording of more windows than this (5 minutes of speech at the default 0.75 s
# shift) shows a bar over them as they are embedded
PROGRESS_WINDOWS = 400


@dataclass
class DiarizationResult:
    """Turns of one recording, its speech regions, and seconds spent per step.

    ``capped``: the clustering found ``found_speakers`` > ``max_speakers`` (or
    stopped at ``max_speakers``), so the recording may have more speakers than reported.
    ``silence``: why a recording has no speech, when it has none and the reason is known
    (every sample zero, no frame above the energy floor, no speech as long as the built-in
    VAD's ``min_speech``). ``unmet_num_speakers``: the
    ``num_speakers`` given when fewer speakers could be told apart (too few windows of
    speech), else None.
    """

    turns: List[Turn]
    speech: List[Region]
    num_speakers: int
    seconds: Dict[str, float] = field(default_factory=dict)
    found_speakers: int = 0
    capped: bool = False
    silence: str = ""
    unmet_num_speakers: Optional[int] = None


class Diarizer:
    """Speaker diarization with any :data:`EmbedFunction` of a model at ``sample_rate``.

    ``SpeakerModel.diarizer`` of the API makes one, embedding the windows with the
    runtime layer's embedding loop. ``projection``, when given, maps the window
    embeddings before they are clustered (a window LDA). ``narrowband_projections``
    (``{rate: projection}``, rates below ``sample_rate``) replace it for recordings
    that come at or below a rate (:meth:`projection_for`): a window LDA learnt from
    audio heard at 8 kHz for 8 kHz calls. ``projection_files`` (``{rate: path}``, 0
    for ``projection``) names the files they were read from: the log says which one
    serves each recording rate, once per diarizer. ``narrowband_embed``, when given,
    embeds the windows of a recording that came below ``sample_rate`` instead, told its
    rate (the API's fills the mel bins the low rate left empty). ``show_progress``: a
    bar over the windows of a recording of more than :data:`PROGRESS_WINDOWS`.
    """

    def __init__(self, embed_windows: EmbedFunction,
                 options: Optional[DiarizationOptions] = None,
                 vad: Optional[VoiceActivityDetector] = None, sample_rate: int = 16000,
                 projection: Optional[Projection] = None,
                 narrowband_projections: Optional[Mapping[int, Projection]] = None,
                 narrowband_embed: Optional[NarrowbandEmbedFunction] = None,
                 projection_files: Optional[Mapping[int, str]] = None,
                 show_progress: bool = True):
        self.embed_windows = embed_windows
        self.narrowband_embed = narrowband_embed
        self.projection = projection
        self.narrowband_projections = dict(narrowband_projections or {})
        too_high = sorted(rate for rate in self.narrowband_projections if rate >= sample_rate)
        if too_high:
            raise ValueError(f"narrowband projections must be for rates below the model's "
                             f"{sample_rate} Hz, got {too_high}")
        self.projection_files = dict(projection_files or {})
        self.options = options or DiarizationOptions()
        self.options.check()
        self.vad = vad or build_vad(self.options.vad, self.options.region_rules())
        self._vad_keeps_min_speech = vad is None   # the built-in VADs drop shorter speech
        self.sample_rate = sample_rate
        self.show_progress = show_progress
        self._projections_named: Set[int] = set()   # the rates whose projection was logged

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
        num_speakers, min_speakers, max_speakers = self._speaker_counts(
            num_speakers, min_speakers, max_speakers)
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
            why = (f"the VAD kept no speech of at least min_speech {self.options.min_speech:g} s"
                   if not speech and self._vad_keeps_min_speech else "")
            return DiarizationResult([], speech, 0, seconds, silence=why)

        clock = time.perf_counter()
        embeddings, clustering = self._clustered(embeddings, source_rate, num_speakers,
                                                 min_speakers, max_speakers)
        seconds["cluster"] = time.perf_counter() - clock
        if clustering.capped:
            _warn_capped(name, clustering, speaker_bounds(min_speakers, max_speakers)[1])
        unmet = _unmet_num_speakers(name, clustering, num_speakers, len(windows))
        if num_speakers is None:
            _warn_below_min_speakers(name, clustering, min_speakers, len(windows))
        turns = clip_turns(self.turns(windows, clustering.labels, embeddings),
                           len(audio) / rate)
        return DiarizationResult(turns, speech, clustering.num_speakers, seconds,
                                 clustering.found, clustering.capped,
                                 unmet_num_speakers=unmet)

    def _speaker_counts(self, num_speakers: Optional[int], min_speakers: Optional[int],
                        max_speakers: Optional[int]
                        ) -> Tuple[Optional[int], Optional[int], Optional[int]]:
        """A call's ``(num_speakers, min_speakers, max_speakers)``, the options' where not
        given, checked against the clustering."""
        opts = self.options
        counts = (given_or(num_speakers, opts.num_speakers),
                  given_or(min_speakers, opts.min_speakers),
                  given_or(max_speakers, opts.max_speakers))
        opts.cluster_options().check(*counts)
        return counts

    def _clustered(self, embeddings: np.ndarray, source_rate: int,
                   num_speakers: Optional[int], min_speakers: Optional[int],
                   max_speakers: Optional[int]) -> Tuple[np.ndarray, Clustering]:
        """The window embeddings of a recording that came at ``source_rate``, projected
        (:meth:`projection_for`), and their clustering."""
        projection = self.projection_for(source_rate)
        if projection is not None:
            embeddings = projection(embeddings)
        return embeddings, cluster_windows(embeddings, self.options.cluster_options(),
                                           num_speakers, min_speakers, max_speakers)

    def projection_for(self, source_rate: int) -> Optional[Projection]:
        """The projection for a recording that came at ``source_rate``: the narrowband one of
        the lowest rate at or above it, else :attr:`projection`. The first recording each
        one serves logs (INFO) its file, or that there is none."""
        fitting = [rate for rate in self.narrowband_projections if source_rate <= rate]
        served = min(fitting, default=0)
        if served not in self._projections_named:
            self._projections_named.add(served)
            logger.info("window LDA for %s: %s", self._recordings_served(served),
                        self._projection_source(served))
        if not served:
            return self.projection
        logger.debug("a recording at %d Hz: projected with the narrowband one for %d Hz",
                     source_rate, served)
        return self.narrowband_projections[served]

    def _recordings_served(self, rate: int) -> str:
        """In words, the recordings whose windows the projection under ``rate`` (0:
        :attr:`projection`) maps."""
        if rate:
            return f"recordings at or below {rate} Hz"
        if self.narrowband_projections:
            return f"recordings above {max(self.narrowband_projections)} Hz"
        return "all recordings"

    def _projection_source(self, rate: int) -> str:
        """The file of the projection under ``rate`` (0: :attr:`projection`), or what it is."""
        if (self.narrowband_projections[rate] if rate else self.projection) is None:
            return "none"
        return self.projection_files.get(rate, "one given without a file")

    def window_embeddings(self, audio: np.ndarray, speech: Sequence[Region],
                          heard_rate: int = 0, name: Optional[str] = None):
        """The windows ``[(start, end)]`` cut from ``speech`` in ``audio`` (model samples at
        :attr:`sample_rate`, which came at ``heard_rate`` when that is set), and
        ``[N, D]`` embeddings of them. ``name`` (the recording's) goes to an embedding
        function that takes it, for its messages, and names the bar over the windows that
        more than :data:`PROGRESS_WINDOWS` show (with :attr:`show_progress`)."""
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
        with progress_bar(desc=f"embedding {name or 'the recording'}", total=len(pieces),
                          unit="win", leave=False,
                          enabled=self.show_progress and len(pieces) > PROGRESS_WINDOWS) as bar:
            pieces = _CountedWindows(pieces, bar.update)
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


def _warn_capped(name: str, clustering: Clustering, max_speakers: int) -> None:
    """Say that the recording ``name`` may have more speakers than the ``max_speakers`` its
    clustering was capped at."""
    logger.warning("%s: found %s%d speakers, more than max_speakers=%d: kept %d; raise "
                   "max_speakers if the recording has more", name,
                   "at least " if clustering.at_least else "", clustering.found,
                   max_speakers, clustering.num_speakers)


def _unmet_num_speakers(name: str, clustering: Clustering, num_speakers: Optional[int],
                        num_windows: int) -> Optional[int]:
    """The ``num_speakers`` given for the recording ``name`` when its ``num_windows`` windows
    gave fewer speakers (with a warning saying so), else None."""
    if num_speakers is None or clustering.num_speakers >= num_speakers:
        return None
    logger.warning("%s: num_speakers=%d but only %d window(s) of speech: %d speaker(s)",
                   name, num_speakers, num_windows, clustering.num_speakers)
    return num_speakers


def _warn_below_min_speakers(name: str, clustering: Clustering, min_speakers: Optional[int],
                             num_windows: int) -> None:
    """Say that the recording ``name`` gave fewer speakers than the ``min_speakers`` its
    estimate was to find: too few windows of speech to split among them."""
    if min_speakers is not None and clustering.num_speakers < min_speakers:
        logger.warning("%s: min_speakers=%d but only %d window(s) of speech: %d speaker(s)",
                       name, min_speakers, num_windows, clustering.num_speakers)


class _CountedWindows(SequenceABC):
    """The windows handed to an embedding function, calling ``taken()`` as it iterates
    to each: the runtime's embedding loop takes them one by one into its batches, so
    the count follows the embedding."""

    def __init__(self, windows: Sequence[np.ndarray], taken: Callable[[], Any]):
        self._windows = windows
        self._taken = taken

    def __len__(self) -> int:
        return len(self._windows)

    def __getitem__(self, index):
        return self._windows[index]

    def __iter__(self) -> Iterator[np.ndarray]:
        for window in self._windows:
            self._taken()
            yield window


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
    for key, audio, source_rate in readable_recordings(recordings, rate, skipped, "windows",
                                                       show_progress):
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
    tally.check(wav_scp, max_fail_fraction, "no window LDA was learnt", unit="utterances")
    return (np.concatenate([row for heard_rate in heard_rates for row in rows[heard_rate]]),
            np.array([name for heard_rate in heard_rates for name in speakers[heard_rate]]),
            tally)
