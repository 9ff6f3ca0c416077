""":class:`SpeakerModel`: a trained speaker model to embed, compare, verify and identify with.

Get one with :func:`wespeaker_py.load_model`. Audio may be a file path or an
array/tensor with its ``sample_rate`` (see :mod:`wespeaker_py.audio` for
the rules); every method resamples to the model's rate and takes the first
channel, as training did, unless its ``channel=`` says otherwise (``"mean"``,
``"loudest"`` or a channel number). Errors in what is passed raise
:class:`~wespeaker_py.errors.WespeakerError` subclasses with a one-line message
naming the input.
"""
from __future__ import annotations

import os
from typing import (TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Mapping, Optional,
                    Sequence, Tuple, Union)

import numpy as np

from wespeaker_py.api.band_fill_files import BandFillFiles
from wespeaker_py.api.calibration import Calibration, CalibrationMissingError
from wespeaker_py.api.calibration_file import CalibrationFile
from wespeaker_py.api.companion_files import side_file_prefix
from wespeaker_py.api.decisions import (Candidate, Verification, calibration_for_ranking,
                                        check_decision_rule, check_rule_has_calibration,
                                        decide_score)
from wespeaker_py.api.embedding_inputs import EmbeddingResults, items_of
from wespeaker_py.api.gallery import ZeroEmbeddingError, check_top_k
from wespeaker_py.api.model_galleries import ModelGalleries
from wespeaker_py.api.window_lda_files import WindowLdaFiles
from wespeaker_py.audio import (DEFAULT_CHANNEL, AudioLike, AudioTooShortError, ChannelChoice,
                                describe_audio, heard_rate_of, load_audio_with_rate,
                                parse_channel)
from wespeaker_py.audio.load import check_sample_rate
from wespeaker_py.audio.speech_rules import SpeechLog
from wespeaker_py.diarization.options import DEFAULT_METHOD
from wespeaker_py.errors import AudioInputError, WespeakerError
from wespeaker_py.io.layout import CALIBRATION_NAME
from wespeaker_py.dataset.stats import TOO_SHORT_FOR_MODEL
from wespeaker_py.runtime.embedding import Outcome, embed_stream
from wespeaker_py.runtime.identity import ModelMismatchError
from wespeaker_py.utils.list_jobs import DEFAULT_MAX_FAIL_FRACTION
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.paths import file_digest
from wespeaker_py.utils.vectors import MIN_NORM, unit_rows

logger = get_logger(__name__)

if TYPE_CHECKING:
    from wespeaker_py.frontend.band_fill import BandFill


# features waiting for a batch of their length in embed_many
BUFFER_BYTES = 256 << 20
# one recording shorter than this is warned about: its embedding rests on too little speech
SHORT_INPUT_SECONDS = 1.0


class EmbeddingShapeError(WespeakerError, ValueError):
    """An embedding given to compare that is not one vector of the model's size."""


def _check_array_rate(pairs: Sequence[Tuple[str, Any]], sample_rate: Optional[int]) -> None:
    """Arrays and tensors among ``pairs`` need ``sample_rate``: a missing or bad one is an
    argument error for them all, raised before any work rather than a skip of each."""
    arrays = [key for key, audio in pairs
              if isinstance(audio, np.ndarray) or hasattr(audio, "detach")]
    if not arrays:
        return
    if sample_rate is None:
        raise AudioInputError(f"give sample_rate= with arrays or tensors: {len(arrays)} of the "
                              f"{len(pairs)} inputs are (the first: item {arrays[0]})")
    check_sample_rate(sample_rate, f"item {arrays[0]}")


def _outcome_error(name: str, outcome: Outcome) -> AudioInputError:
    """The error for an input the model could not embed (``outcome`` without an embedding),
    naming it ``name``: :class:`~wespeaker_py.audio.AudioTooShortError` for one shorter than
    the model's shortest input, else an :class:`~wespeaker_py.errors.AudioInputError` whose
    ``reason`` is the skip reason :meth:`SpeakerModel.embed_many` counts it under."""
    if outcome.skip == TOO_SHORT_FOR_MODEL:
        return AudioTooShortError(f"{name}: {outcome.detail}")
    error = AudioInputError(f"{name}: {outcome.detail}")
    error.reason = outcome.skip or error.reason
    return error


class SpeakerModel:
    """A loaded speaker model (torch or onnxruntime) with the files that travel with it.

    ``mean_vec``, when given, is subtracted from embeddings before any cosine
    (the mean of a reference set, as the recipes' scoring does);
    ``calibration_path`` is where :meth:`calibrate` writes and :meth:`verify`
    reads ``calibration.json``; one fitted with another model (another
    :attr:`identity`) is an error unless ``force``, which makes it a warning.
    ``window_lda_path`` is where :meth:`train_window_lda` writes, and diarization
    reads, the window LDA (same identity rule). ``config_path``: the ``config=``
    a bare checkpoint was loaded with (None: the source carries its own), which
    :meth:`finetune` passes on. ``calibration_required``: ``calibration_path`` was named
    by the user, so using the model for a decision while it does not exist is an error
    rather than an uncalibrated answer.
    """

    def __init__(self, backend, name: str, source: str, mean_vec: Optional[np.ndarray] = None,
                 calibration_path: Optional[str] = None, force: bool = False,
                 window_lda_path: Optional[str] = None, config_path: Optional[str] = None,
                 calibration_required: bool = False):
        self.backend = backend
        self.name = name
        self.source = source
        self.config_path = config_path
        self.mean_vec = None if mean_vec is None else np.asarray(mean_vec, dtype=np.float32)
        if self.mean_vec is not None and self.mean_vec.shape != (self.embed_dim,):
            raise EmbeddingShapeError(f"the mean vector has shape {self.mean_vec.shape}, not one "
                                      f"vector of this model's {self.embed_dim} values")
        self.calibration_path = calibration_path
        self.calibration_required = calibration_required
        self.window_lda_path = window_lda_path
        self.force = force
        # the companion-file helpers keep their caches, not the model (each call is given
        # it): a copy or unpickled model stands alone, and no reference cycle leaves a
        # dropped model's onnxruntime session to the cycle collector, which may run it in a
        # forked worker (see tests/conftest.py)
        self._band_fill_files = BandFillFiles()
        self._window_lda_files = WindowLdaFiles(self._band_fill_files)
        self._calibration_file = CalibrationFile(self._band_fill_files)
        self._galleries = ModelGalleries(self._band_fill_files)

    def __repr__(self) -> str:
        return (f"SpeakerModel({self.name}, {self.backend.kind}, {self.sample_rate} Hz, "
                f"embed_dim={self.embed_dim}, source={self.source!r})")

    @property
    def sample_rate(self) -> int:
        """The rate every input is resampled to."""
        return self.backend.sample_rate

    @property
    def embed_dim(self) -> int:
        """Size of an embedding."""
        return self.backend.embed_dim

    @property
    def min_seconds(self) -> float:
        """Shortest input (seconds) that gives an embedding."""
        return self.backend.min_seconds

    @property
    def companion_prefix(self) -> Optional[str]:
        """What the names of the files beside this model extend (its folder with a
        separator, or ``model.`` beside ``model.pt``/``model.onnx``), as its
        :attr:`window_lda_path` says; None when the model has no folder beside it (that
        path is unset or not named ``window_lda.npz``)."""
        return side_file_prefix(self.window_lda_path)

    @property
    def identity(self) -> str:
        """Digest of the weights and front-end settings (64 hex digits; see
        :mod:`wespeaker_py.runtime.identity`), recorded in galleries and calibrations."""
        return self.backend.identity

    # -- embeddings ------------------------------------------------------------------------

    def _embed_stream(self, items: Iterable[Tuple[str, Any]], batch_size: int,
                      sample_rate: Optional[int] = None, progress: bool = False,
                      loaded: bool = False, channel: ChannelChoice = DEFAULT_CHANNEL,
                      heard_rate: int = 0,
                      speech: Optional[SpeechLog] = None) -> Iterator[Outcome]:
        """:func:`~wespeaker_py.runtime.embedding.embed_stream` over ``(key, audio)`` items.

        Each audio is read (resampled to the model's rate, mono by ``channel``) as it
        comes, unless ``loaded`` says the items are model samples already
        (:func:`~wespeaker_py.audio.load_audio`'s); batches only hold inputs of
        equal length, as in ``bin.extract``. Audio that came below the model's rate
        (a read file's own rate; with ``loaded``, ``heard_rate``) goes through the
        model's band fill for it, when it has one (see :meth:`band_fill_file`). Read audio
        goes through the speech rules (:meth:`_read_speech`), recorded in ``speech``.
        """
        if batch_size < 1:
            raise WespeakerError(f"batch_size must be at least 1, got {batch_size}")
        channel = parse_channel(channel)   # a bad one is an error now, not a skip per item
        log = speech if speech is not None else SpeechLog()
        read = None if loaded else (
            lambda audio: self._read_speech(audio, sample_rate, channel, log))
        heard_rate = heard_rate_of(heard_rate, self.sample_rate)
        if heard_rate or not loaded:   # full-band arrays need no fill: no look for files
            self._band_fill_files.refresh(self)
        return embed_stream(self.backend, items, batch_size, read=read,
                            buffer_bytes=BUFFER_BYTES, progress=progress, desc="embedding",
                            heard_rate=heard_rate)

    def _read_speech(self, audio: AudioLike, sample_rate: Optional[int],
                     channel: ChannelChoice, speech: SpeechLog) -> Tuple[np.ndarray, int]:
        """:func:`~wespeaker_py.audio.load_audio_with_rate` of one recording through the
        speech rules of :mod:`~wespeaker_py.audio.speech_rules` (digital silence and
        near-silent edges removed at the input's own rate, steady noise refused), recorded in
        ``speech``. Less than the model's shortest input left is an
        :class:`~wespeaker_py.audio.AudioTooShortError` naming the input. Only the speaker
        API does this: ``bin.extract``, the recipes, training and diarization keep the
        audio whole, as WeSpeaker does."""
        wav, heard_rate = load_audio_with_rate(audio, self.sample_rate, sample_rate,
                                               channel=channel, speech=speech)
        removed = speech.last
        if removed.seconds and wav.size < self.backend.min_samples:
            rate = self.sample_rate
            raise AudioTooShortError(
                f"{describe_audio(audio)}: {wav.size / rate:.3f} s ({wav.size} samples) of "
                f"audio left once {removed.silence_seconds:.3f} s of digital silence "
                f"({speech.rules.describe_silence()}) and {removed.edge_seconds:.3f} s of "
                f"near-silent edges ({speech.rules.describe_edges()}) were removed before "
                f"embedding; the model needs at least {self.min_seconds:.3f} s "
                f"({self.backend.min_samples} samples)")
        return wav, heard_rate

    @staticmethod
    def _log_removed(speech: SpeechLog, inputs: int) -> None:
        """One INFO line on what the speech rules removed from a call's ``inputs``, if any."""
        summary = speech.summary(inputs)
        if summary:
            logger.info("%s", summary)

    def embed(self, audio: AudioLike, sample_rate: Optional[int] = None,
              channel: ChannelChoice = DEFAULT_CHANNEL) -> np.ndarray:
        """The embedding (float32 vector) of one recording (of multi-channel audio: the
        channel ``channel`` chooses, see :mod:`wespeaker_py.audio`). Digital silence (runs of
        25 ms or more of exact zeros) and near-silent edges are left out first, and steady
        noise with no speech is refused (:class:`~wespeaker_py.audio.AudioNoSpeechError`;
        see :mod:`wespeaker_py.audio.speech_rules`); :meth:`embed_many` does the same,
        ``bin.extract`` and the recipes do not."""
        return self._embed_heard(audio, sample_rate, channel)[0]

    def _embed_heard(self, audio: AudioLike, sample_rate: Optional[int],
                     channel: ChannelChoice) -> Tuple[np.ndarray, int]:
        """:meth:`embed`, and the rate below the model's the audio came at (0: none)."""
        speech = SpeechLog()
        wav, source_rate = self._read_speech(audio, sample_rate, channel, speech)
        if speech.last.seconds:
            logger.info("%s: %s; %.3f s left", describe_audio(audio), speech.summary(1),
                        wav.size / self.sample_rate)
        seconds = wav.size / self.sample_rate
        if seconds < SHORT_INPUT_SECONDS:
            logger.warning("%s: %.2f s of audio; the embedding of an input under %g s is "
                           "unreliable, and so are scores and decisions made with it",
                           describe_audio(audio), seconds, SHORT_INPUT_SECONDS)
        [outcome] = list(self._embed_stream([(describe_audio(audio), wav)], 1, loaded=True,
                                            heard_rate=source_rate))
        if outcome.embedding is None:
            raise _outcome_error(describe_audio(audio), outcome)
        return outcome.embedding, outcome.heard_rate

    def embed_waveforms(self, waveforms: Sequence[Any], sample_rate: int,
                        batch_size: int = 16,
                        channel: ChannelChoice = DEFAULT_CHANNEL) -> np.ndarray:
        """Embeddings ``[N, E]`` of in-memory waveforms (e.g. the segments of a recording).

        Each waveform is 1-D (or follows the channel rule) at ``sample_rate`` (below
        the model's rate: its band fill is applied, see :meth:`band_fill_file`).
        The speech rules apply first, as :meth:`embed`'s do.
        Equal-length inputs are batched; a waveform that cannot be embedded
        raises :class:`~wespeaker_py.errors.AudioInputError` naming its index.
        """
        speech = SpeechLog()
        wavs = []
        for index, waveform in enumerate(waveforms):
            try:
                wavs.append(self._read_speech(waveform, sample_rate, channel, speech)[0])
            except AudioInputError as error:   # the same error class, named by its index
                raise type(error)(f"waveform {index}: {error}") from None
        self._log_removed(speech, len(wavs))
        return self._embed_loaded(wavs, batch_size, sample_rate)

    def _embed_loaded(self, wavs: Sequence[np.ndarray], batch_size: int,
                      heard_rate: int = 0, noun: str = "waveform") -> np.ndarray:
        """Embeddings ``[N, E]`` of model samples (:func:`~wespeaker_py.audio.load_audio`'s)
        that came at ``heard_rate`` (0: the model's rate); messages name each ``noun N``."""
        rows: Dict[str, np.ndarray] = {}
        keys = [f"{noun} {index}" for index in range(len(wavs))]
        for outcome in self._embed_stream(zip(keys, wavs), batch_size, loaded=True,
                                          heard_rate=heard_rate):
            if outcome.embedding is None:
                raise _outcome_error(outcome.key, outcome)
            rows[outcome.key] = outcome.embedding
        if not rows:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return np.stack([rows[key] for key in keys])

    def embed_many(self, items: Union[str, Iterable[AudioLike], Mapping[str, AudioLike]],
                   batch_size: int = 16, progress: bool = True,
                   sample_rate: Optional[int] = None,
                   channel: ChannelChoice = DEFAULT_CHANNEL) -> EmbeddingResults:
        """Embed a wav.scp (path), a ``{key: audio}`` mapping or any other iterable of
        paths/arrays (a list, a generator).

        Items that cannot be embedded (missing, not audio, too short, ...) are
        skipped with a warning and listed in the result's ``skipped``; the rest
        are embedded in length-bucketed batches and returned in input order, keyed by
        wav.scp key, mapping key, or (an iterable) path or index: a path listed twice is
        one result. A wav.scp that is missing, empty or malformed is an error naming it
        (as ``embed --wav_scp``'s), raised before any work. The speech rules apply first,
        as :meth:`embed`'s do (one INFO line sums up what they removed; an input with no
        speech is skipped as ``no_speech``).
        """
        pairs = items_of(items)
        _check_array_rate(pairs, sample_rate)
        results = EmbeddingResults()
        speech = SpeechLog()
        for outcome in self._embed_stream(pairs, batch_size, sample_rate, progress,
                                          channel=channel, speech=speech):
            if outcome.embedding is None:
                results.skipped[outcome.key] = outcome.detail
                results.reasons[outcome.skip] += 1
            else:
                results.embeddings[outcome.key] = outcome.embedding
                if outcome.heard_rate:
                    results.heard_rates[outcome.key] = outcome.heard_rate
        order = {key: index for index, (key, _) in enumerate(pairs)}
        results.embeddings = dict(sorted(results.embeddings.items(), key=lambda kv: order[kv[0]]))
        self._log_removed(speech, len(pairs))
        for key, reason in results.skipped.items():
            logger.warning("skipped %s: %s", key, reason)
        if results.skipped:
            logger.warning("%d embedded, %d skipped", len(results.embeddings),
                           len(results.skipped))
        return results

    # -- comparing ---------------------------------------------------------------------------

    def unit(self, embedding: np.ndarray, name: str = "the input") -> np.ndarray:
        """``embedding`` minus the model's mean vector (if any), scaled to unit length.

        It is one vector of :attr:`embed_dim` values (a ``[1, embed_dim]`` row, a batch of
        one, is taken as one); another shape or size raises :class:`EmbeddingShapeError`.
        One with no direction (all zeros, or equal to the mean vector) has no cosine with
        anything; it, and one holding NaN or infinity, raise
        :class:`~wespeaker_py.api.gallery.ZeroEmbeddingError`. Both name ``name`` (the
        input it came from).
        """
        given = np.asarray(embedding, dtype=np.float64)
        if given.ndim == 2 and given.shape[0] == 1:
            given = given[0]
        if given.ndim != 1:
            raise EmbeddingShapeError(f"the embedding of {name} has shape {given.shape}, not "
                                      f"one vector of this model's {self.embed_dim} values")
        if given.size != self.embed_dim:
            raise EmbeddingShapeError(f"the embedding of {name} has {given.size} values, this "
                                      f"model's embeddings have {self.embed_dim}")
        if not np.isfinite(given).all():
            raise ZeroEmbeddingError(f"the embedding of {name} holds NaN or infinity")
        vector = given if self.mean_vec is None else given - self.mean_vec
        if np.linalg.norm(vector) < MIN_NORM:
            what = ("is all zeros" if not given.any() else "equals the model's mean vector, "
                    "so nothing is left once it is subtracted")
            raise ZeroEmbeddingError(f"the embedding of {name} {what}; it has no direction "
                                     f"to compare by cosine")
        return unit_rows(vector)

    def score_embeddings(self, first: np.ndarray, second: np.ndarray,
                         first_name: str = "the first input",
                         second_name: str = "the second input") -> float:
        """Cosine of two embeddings (after mean subtraction), in [-1, 1]; the names are
        those :meth:`unit`'s error gives them."""
        return float(np.clip(self.unit(first, first_name) @ self.unit(second, second_name),
                             -1.0, 1.0))

    def similarity(self, first: AudioLike, second: AudioLike,
                   sample_rate: Optional[int] = None,
                   channel: ChannelChoice = DEFAULT_CHANNEL) -> float:
        """Cosine similarity of two recordings' embeddings, in [-1, 1]."""
        return self.score_embeddings(self.embed(first, sample_rate, channel),
                                     self.embed(second, sample_rate, channel),
                                     describe_audio(first), describe_audio(second))

    @property
    def calibration(self) -> Optional[Calibration]:
        """The calibration in :attr:`calibration_path`, or None. One fitted on audio that
        came below the model's rate through another band fill (or none) than such audio
        goes through now is an error unless :attr:`force` (then a warning)."""
        return self._calibration_file.current(self)

    def decide(self, score: float, prior: Optional[float] = None,
               operating_point: Optional[str] = None,
               threshold: Optional[float] = None, force: bool = False) -> Verification:
        """Turn a score into a :class:`Verification` (see :meth:`verify`)."""
        check_decision_rule(prior, operating_point, threshold)
        calibration = self._calibration_file.current(self, force)
        check_rule_has_calibration(calibration, prior, operating_point, self.source)
        return decide_score(score, calibration, prior, operating_point, threshold)

    def verify(self, first: AudioLike, second: AudioLike, sample_rate: Optional[int] = None,
               prior: Optional[float] = None, operating_point: Optional[str] = None,
               threshold: Optional[float] = None,
               channel: ChannelChoice = DEFAULT_CHANNEL, force: bool = False) -> Verification:
        """Same speaker? Score, calibrated LLR and probability at ``prior``, and a decision.

        With a calibration and a ``prior``, the decision is the Bayes rule's: same
        speaker when P(same | prior) > 0.5. Otherwise it compares the score with
        the calibration's threshold at ``operating_point`` (``eer``, the default, or
        ``fa1``: 1 % false acceptance on the calibration trials), or with
        ``threshold``; give one of ``prior``, ``operating_point`` and ``threshold``.
        Without a calibration the result says the decision is uncalibrated, and a
        ``prior`` or ``operating_point`` is an error. A calibration fitted through another
        band fill than low-rate audio goes through now is an error unless ``force`` (then a
        warning), as the model's own ``force`` of :func:`~wespeaker_py.load_model` makes it.
        """
        check_decision_rule(prior, operating_point, threshold)
        # a calibration of another model, or a rule that needs one, fails before any audio
        check_rule_has_calibration(self._calibration_file.current(self, force), prior,
                                   operating_point, self.source)
        return self.decide(self.similarity(first, second, sample_rate, channel), prior,
                           operating_point, threshold, force)

    def calibrate(self, trials: str, wav_scp: str, output: Optional[str] = None,
                  batch_size: int = 16, progress: bool = True,
                  channel: ChannelChoice = DEFAULT_CHANNEL) -> Calibration:
        """Fit score-to-LLR calibration on a labelled trial list; write ``calibration.json``.

        ``wav_scp`` maps the trials' utterance keys to audio. Trials whose
        audio could not be embedded are left out (and counted in the log).
        Fewer than :data:`~wespeaker_py.api.calibration.MIN_TRIALS_PER_CLASS`
        target or nontarget trials (before or after that) raise
        :class:`~wespeaker_py.api.calibration.TooFewTrialsError`. The result,
        with this model's :attr:`identity` and the band fills that any low-rate
        audio went through, goes to ``output`` (default :attr:`calibration_path`).
        """
        return self._calibration_file.fit(self, trials, wav_scp, output, batch_size, progress,
                                          parse_channel(channel))

    def calibration_of_scores(self, scores: Sequence[float],
                              labels: Sequence[Union[bool, int, str]],
                              trials: str, heard_rates: Iterable[int]) -> Calibration:
        """Fit a calibration on this model's ``scores`` of labelled trials (the file
        ``trials``; ``labels`` True/1/``target`` for targets, False/0/``nontarget`` for
        nontargets, anything else an error), recording what they depend on: the model's
        :attr:`identity`, its mean vector, and the band fills that its audio heard at
        ``heard_rates`` went through (call it right after embedding that audio)."""
        return self._calibration_file.of_scores(self, scores, labels, trials, heard_rates)

    # -- speaker gallery ---------------------------------------------------------------------

    def enroll(self, name: str, *audio: AudioLike, gallery: str,
               sample_rate: Optional[int] = None, replace: bool = False, append: bool = False,
               force: bool = False, channel: ChannelChoice = DEFAULT_CHANNEL) -> int:
        """Add recordings of speaker ``name`` to the gallery file; return its size in speakers.

        The file is created when missing and rewritten atomically, with this
        model's :attr:`identity`. A name already enrolled needs ``replace``
        (enroll anew) or ``append`` (add these recordings); a gallery of
        another model, or appending to a speaker enrolled from low-rate audio
        through another band fill than the model now has (see
        :meth:`band_fill_file`), is an error unless ``force`` (then a warning).
        Enrolments into one gallery at the same time each keep their speaker: the file
        is read again and rewritten under a lock once the audio is embedded.
        A recording given more than once in one call (identical embeddings) counts once,
        with a warning naming the repeats, and so does one ``append`` adds again to a
        speaker who holds it (the gallery records a digest of each recording's embedding;
        one written before it did knows only the recordings enrolled since).
        """
        if not audio:
            raise WespeakerError(f"enroll {name!r}: give at least one recording")
        # the gallery's checks, before any embedding
        self._galleries.enrollment_target(self, gallery, name, replace, append, force)
        units, inputs, fills = [], [], {}
        for item in audio:
            embedding, heard_rate = self._embed_heard(item, sample_rate, channel)
            inputs.append(describe_audio(item))
            units.append(self.unit(embedding, inputs[-1]))
            if heard_rate:   # each recording's own fill: the files may change between them
                fill = self._band_fill_files.loaded_digest(self, heard_rate)
                fills.setdefault(heard_rate, set()).add(fill)
        return self._galleries.enroll(self, gallery, name, units, inputs, fills, replace,
                                      append, force)

    def unenroll(self, name: str, *, gallery: str) -> int:
        """Remove speaker ``name`` from the gallery file; return how many speakers it still
        holds (removing the last leaves a valid gallery of none, which :meth:`identify`
        refuses). The file is rewritten atomically under the lock :meth:`enroll` takes. A
        name it does not hold is a
        :class:`~wespeaker_py.api.gallery.SpeakerNotEnrolledError` naming those it does.
        Nothing is embedded, so a gallery of another model is not refused; what it records
        of the model that made it is kept for later enrolments and identifications."""
        return self._galleries.remove(gallery, name)

    def identify(self, audio: AudioLike, gallery: str, top_k: int = 5,
                 sample_rate: Optional[int] = None,
                 force: bool = False,
                 channel: ChannelChoice = DEFAULT_CHANNEL, prior: Optional[float] = None,
                 operating_point: Optional[str] = None,
                 threshold: Optional[float] = None) -> List[Candidate]:
        """The ``top_k`` (at least 1) enrolled speakers most similar to ``audio``, most
        similar first: :class:`~wespeaker_py.api.decisions.Candidate` ``(name, cosine)``
        pairs. A gallery of another model, or holding speakers enrolled from low-rate audio
        through another band fill than the model now has, is an error unless ``force``
        (then a warning; it covers the calibration too, as the model's own ``force`` of
        :func:`~wespeaker_py.load_model` does).

        With a calibration, each candidate's ``verification`` is what :meth:`verify` of the
        recording and that speaker gives, by the same rule (``prior``,
        ``operating_point``, ``threshold``; by default the calibration's EER threshold):
        the calibrated LLR and the same-speaker decision, so that an unknown speaker shows
        as no candidate decided the same. Without one, a ``threshold`` makes an
        uncalibrated decision; with none, ``verification`` is None (no decision). A
        calibration that does not fit the model (another model, mean vector or band fill)
        is an error when one of the three asks for a decision; without them the ranking
        comes undecided, with a warning, as without a calibration. A gallery that holds no
        speakers is an :class:`~wespeaker_py.api.gallery.EmptyGalleryError` naming it.
        """
        if not os.path.exists(gallery):
            raise WespeakerError(f"gallery {gallery} does not exist; enroll speakers first")
        check_top_k(top_k)
        check_decision_rule(prior, operating_point, threshold)
        # a calibration of another model with a rule, or a rule that needs one, fails
        # before any audio
        rule_given = prior is not None or operating_point is not None or threshold is not None
        calibration = calibration_for_ranking(
            lambda: self._calibration_file.current(self, force), rule_given)
        check_rule_has_calibration(calibration, prior, operating_point, self.source)
        speakers = self._galleries.read(self, gallery, force)
        speakers.check_has_speakers(gallery)
        ranking = speakers.rank(self.unit(self.embed(audio, sample_rate, channel),
                                          describe_audio(audio)), top_k)
        decides = calibration is not None or threshold is not None
        return [Candidate(name, score, decide_score(score, calibration, prior, operating_point,
                                                    threshold) if decides else None)
                for name, score in ranking]

    # -- diarization -------------------------------------------------------------------------

    def diarizer(self, vad: str = "silero", cluster_method: str = DEFAULT_METHOD,
                 batch_size: int = 32, progress: bool = True, **settings: Any):
        """A :class:`~wespeaker_py.diarization.Diarizer` embedding its windows with this model
        (at the model's rate; a recording is read and resampled once), projecting them
        with the window LDAs of ``window_lda`` (the log names the file each recording
        rate uses, once). ``progress``: a bar over the windows of a long recording.
        ``settings``: any other :class:`~wespeaker_py.diarization.DiarizationOptions` field
        (``vad_threshold``, ``window``, ``min_cluster_size``, ``resolution``...); an
        unknown one is an error."""
        from wespeaker_py.diarization import DiarizationOptions, Diarizer
        options = DiarizationOptions.from_settings(vad=vad, cluster_method=cluster_method,
                                                   **settings)
        ldas = self._window_lda_files.for_diarization(self, options.window_lda)
        files = {rate: item.path for rate, item in ldas.items()}
        main = ldas.pop(0, None)   # the rest are narrowband, by rate

        def embed(windows: Sequence[np.ndarray], heard_rate: int = 0,
                  name: str = "") -> np.ndarray:
            noun = f"{name} window" if name else "window"
            return self._embed_loaded(windows, batch_size, heard_rate, noun)

        return Diarizer(embed, options, sample_rate=self.sample_rate, narrowband_embed=embed,
                        projection=None if main is None else main.lda.project,
                        narrowband_projections={rate: item.lda.project
                                                for rate, item in ldas.items()},
                        projection_files=files,
                        show_progress=progress)

    def window_lda_file(self, heard_rate: int = 0) -> Optional[str]:
        """Where this model's window LDA learnt at ``heard_rate`` lives (0: the model's rate,
        :attr:`window_lda_path`; e.g. ``window_lda_8000hz.npz`` beside it, or
        ``model.window_lda_8000hz.npz`` beside ``model.onnx``); None when the model has
        no folder beside it."""
        return self._window_lda_files.file(self, heard_rate)

    def companion_files(self) -> Dict[str, str]:
        """``{name: path}`` of the calibration and window LDAs this model reads beside it
        (each checked against its identity when used), by the names they have there
        (``calibration.json``, ``window_lda.npz``, ``window_lda_8000hz.npz``); with
        :meth:`band_fills`, what an ONNX export carries along."""
        found = {}
        if self.calibration_path and os.path.isfile(self.calibration_path):
            found[CALIBRATION_NAME] = self.calibration_path
        found.update(self._window_lda_files.present(self))
        return found

    def band_fills(self) -> Dict[int, "BandFill"]:
        """``{heard rate: band fill}`` that audio heard at each rate goes through now (the
        files beside the model read again if they changed; one that does not fit the
        model raises :class:`~wespeaker_py.frontend.band_fill.BandFillError`)."""
        return self._band_fill_files.refreshed_fills(self)

    def window_ldas_in_use(self) -> Union[Dict[int, str], str]:
        """``{rate: file}`` of the window LDAs diarization uses by default
        (``window_lda="auto"``): a narrowband one under the rate it serves recordings at or
        below, the model-rate one under :attr:`sample_rate`; or, when they cannot be used,
        why (``not used: ...``); what :meth:`info` reports as ``window_ldas``."""
        return self._window_lda_files.files_in_use(self)

    def train_window_lda(self, data: Union[str, Sequence[str]], output: Optional[str] = None,
                         dim: Optional[int] = None, batch_size: int = 32, progress: bool = True,
                         max_fail_fraction: float = DEFAULT_MAX_FAIL_FRACTION,
                         heard_rate: int = 0, **settings: Any):
        """Learn a window LDA for diarization from labelled speakers; return it.

        ``data``: one or more Kaldi data directories (``wav.scp`` + ``utt2spk``),
        e.g. the model's training speakers. Every utterance is cut into the
        diarization windows (``settings``: :class:`~wespeaker_py.diarization.DiarizationOptions`
        fields such as ``window``, ``shift``, ``dither``) and embedded with this
        model; the LDA (``dim`` dimensions, default 32) is written atomically to
        ``output`` (default :attr:`window_lda_path`, where diarization finds it)
        with this model's :attr:`identity`. Unreadable utterances are skipped and
        counted (see :mod:`wespeaker_py.utils.list_jobs`). A ``utt2spk`` line of more
        than two fields, or an utterance of it missing from ``wav.scp``, is an error
        naming the file; utterances of ``wav.scp`` without a speaker are left out with a
        warning.

        ``heard_rate`` (a rate below the model's, e.g. 8000 for a 16 kHz model):
        every utterance is embedded twice, narrow-banded to it (as calls at that
        rate reach the model) and as it is, so that the LDA keeps what tells the
        speakers apart at both bandwidths (on our 8 kHz conversations this counted
        speakers better than the narrow-banded windows alone); the LDA goes to
        :meth:`window_lda_file` ``(heard_rate)`` (``window_lda_8000hz.npz``), which
        diarization uses for recordings at or below that rate.
        """
        return self._window_lda_files.train(self, data, output, dim, batch_size, progress,
                                            max_fail_fraction, heard_rate, **settings)

    # -- narrow-band audio ----------------------------------------------------------------

    def band_fill_file(self, heard_rate: int) -> Optional[str]:
        """Where this model's band fill for audio heard at ``heard_rate`` lives
        (``band_fill_8000hz.npz`` beside the model); None when the model has no folder.

        Audio that comes at a rate below the model's (an 8 kHz call for a 16 kHz
        model) leaves the top mel bins empty; with a band fill learnt for exactly that
        rate they are estimated from the bins below before the model sees them
        (:mod:`wespeaker_py.frontend.band_fill`). Every method that embeds finds and
        uses it (read again when the file changes), for files (their own rate) and
        arrays (their ``sample_rate``) alike; audio already upsampled before it is
        given gets none.
        """
        return self._band_fill_files.file(self, heard_rate)

    def train_band_fill(self, data: Union[str, Sequence[str]], heard_rate: int,
                        output: Optional[str] = None, progress: bool = True,
                        max_fail_fraction: float = DEFAULT_MAX_FAIL_FRACTION):
        """Learn how to fill the mel bins that audio heard at ``heard_rate`` leaves empty;
        return the :class:`~wespeaker_py.frontend.band_fill.BandFill`.

        ``data``: Kaldi data directories (``wav.scp``) of wide-band speech, e.g. the
        model's training data. Each utterance's log-mel energies at the model's rate
        are the target, those of the same utterance brought down to ``heard_rate``
        and back the input (:func:`~wespeaker_py.frontend.band_fill.fit_band_fill`).
        Written atomically to ``output``, default :meth:`band_fill_file`, where this
        model (and every later load of it) finds and uses it; unreadable utterances,
        and those that came below the model's rate (no wide band to learn from), are
        skipped and counted (see :mod:`wespeaker_py.utils.list_jobs`).
        """
        return self._band_fill_files.train(self, data, heard_rate, output, progress,
                                           max_fail_fraction)

    def diarize(self, audio: AudioLike, sample_rate: Optional[int] = None,
                num_speakers: Optional[int] = None, min_speakers: Optional[int] = None,
                max_speakers: Optional[int] = None, vad: str = "silero",
                cluster_method: str = DEFAULT_METHOD,
                batch_size: int = 32, channel: ChannelChoice = DEFAULT_CHANNEL,
                **settings: Any):
        """Who spoke when: a :class:`~wespeaker_py.diarization.DiarizationResult` (``.turns``).

        Speech from ``vad`` (silero, or energy), 1.5 s windows every 0.75 s
        embedded with this model, clustered (``spectral-norm`` with the number of
        speakers from the eigen-gap within ``[min_speakers, max_speakers]`` (1 and
        10 when not given) unless ``num_speakers`` is given, which comes without
        them; or WeSpeaker's exact ``spectral``, ``nme-sc``, ``umap-hdbscan``,
        ``agglomerative``). ``settings``: the other
        :class:`~wespeaker_py.diarization.DiarizationOptions` fields. Of
        multi-channel audio the first channel is used, as everywhere, unless
        ``channel`` says otherwise. Needs the ``diar`` extra.
        """
        return self.diarizer(vad, cluster_method, batch_size, **settings).diarize(
            audio, sample_rate, num_speakers=num_speakers, min_speakers=min_speakers,
            max_speakers=max_speakers, channel=channel)

    def diarize_many(self, wav_scp: Union[str, Mapping[str, str]], output_rttm: str,
                     num_speakers: Optional[int] = None,
                     min_speakers: Optional[int] = None,
                     max_speakers: Optional[int] = None, vad: str = "silero",
                     cluster_method: str = DEFAULT_METHOD, batch_size: int = 32,
                     progress: bool = True,
                     max_fail_fraction: float = DEFAULT_MAX_FAIL_FRACTION,
                     channel: ChannelChoice = DEFAULT_CHANNEL,
                     speaker_counts: Optional[Dict[str, int]] = None, overwrite: bool = False,
                     **settings: Any):
        """Diarize every recording of a ``wav.scp`` (or of ``{recording: audio path}``) into
        one RTTM file, or into a folder of one ``<recording>.rttm`` each (``output_rttm``
        ending in ``/``, or an existing folder).

        The settings are those of :meth:`diarize`, for every recording;
        ``speaker_counts`` (recording -> count) instead fixes each recording's
        count. A recording that cannot be read is skipped; one without speech
        gets no turns. Each recording is kept as soon as it is done: a run cut short
        continues where it stopped when run again with the same recordings, model and
        settings (:mod:`wespeaker_py.diarization.batch`); ``overwrite`` starts over in a
        folder of RTTMs of other work instead of refusing it. Returns the run's summary
        (diarized, silent, capped and failed recordings; ``describe()`` says it in one
        line). Nothing diarized, or more than ``max_fail_fraction`` failed, raises
        :class:`~wespeaker_py.errors.RunFailedError` and writes no RTTM file.
        """
        from wespeaker_py.diarization import diarize_wav_scp
        diarizer = self.diarizer(vad, cluster_method, batch_size, progress, **settings)
        # what the work's embeddings and projections depend on, besides the settings
        identity = {"model": self.identity,
                    "band_fills": {rate: fill.digest for rate, fill in self.band_fills().items()},
                    "window_ldas": {rate: file_digest(path)
                                    for rate, path in diarizer.projection_files.items()}}
        return diarize_wav_scp(diarizer, wav_scp, output_rttm, show_progress=progress,
                               max_fail_fraction=max_fail_fraction,
                               speaker_counts=speaker_counts, model_identity=identity,
                               overwrite=overwrite, num_speakers=num_speakers,
                               min_speakers=min_speakers, max_speakers=max_speakers,
                               channel=channel)

    # -- fine-tuning -------------------------------------------------------------------------

    def finetune(self, data_dir: str, out_dir: str, device: Optional[str] = None,
                 num_threads: Optional[int] = None, overwrite: bool = False,
                 mix_data: Optional[str] = None, max_fail_fraction: Optional[float] = None,
                 **options: Any) -> "SpeakerModel":
        """Fine-tune this model on the speakers of ``data_dir``; return the new model, in
        ``out_dir``.

        ``options`` are :class:`~wespeaker_py.finetune.FinetuneOptions` fields
        (``epochs``, ``lr``, ``margin``, ``freeze``, ``sample_rate``, ...); ``mix_data``
        a Kaldi folder of original-domain data that trains too; ``max_fail_fraction`` the
        share of an epoch's utterances that may be skipped before the run stops (None: the
        trainer's default); a checkpoint loaded with ``config=`` is fine-tuned with that
        config. See
        :func:`wespeaker_py.finetune.finetune` and docs/finetune.md.
        """
        # not at the top: api.loading imports this module, and finetune.run imports api.loading
        from wespeaker_py.api.loading import load_model
        from wespeaker_py.finetune import FinetuneOptions, finetune
        try:
            settings = FinetuneOptions(**options)
        except TypeError as error:
            raise WespeakerError(f"finetune: {error}") from None
        finetune(self.source, data_dir, out_dir, settings, device=device,
                 num_threads=num_threads, overwrite=overwrite, config=self.config_path,
                 mix_data=mix_data, max_fail_fraction=max_fail_fraction)
        return load_model(out_dir, device=device)

    # -- about -------------------------------------------------------------------------------

    def info(self) -> Dict[str, Any]:
        """Model name, parameters, embedding size, sample rate, front-end, files in use."""
        details = {"name": self.name, "source": self.source}
        details.update(self.backend.describe())
        details["identity"] = self.identity
        details["mean_vec"] = self.mean_vec is not None
        details["band_fills"] = self._band_fill_files.files_in_use(self)
        details["window_ldas"] = self.window_ldas_in_use()
        from wespeaker_py.frontend.band_fill import BandFillError
        try:
            calibration = self.calibration
        except (ModelMismatchError, BandFillError,
                CalibrationMissingError) as error:   # reported, not raised
            details["calibration"] = f"not used: {error}"
            return details
        details["calibration"] = (None if calibration is None else
                                  f"{self.calibration_path} (EER {100 * calibration.eer:.2f}% "
                                  f"on {calibration.num_target + calibration.num_nontarget} "
                                  f"trials)")
        return details
