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

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import (TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Mapping, Optional,
                    Sequence, Tuple, Union)

import numpy as np

from wespeaker_py.api.calibration import (CALIBRATION_NAME, Calibration, CalibrationMissingError,
                                          check_prior, check_trial_counts, fit_calibration,
                                          read_optional_calibration, probability,
                                          save_calibration)
from wespeaker_py.api.gallery import (MIXED_FILLS, Gallery, ZeroEmbeddingError,
                                      check_top_k, gallery_lock, load_gallery, save_gallery)
from wespeaker_py.audio import (DEFAULT_CHANNEL, AudioLike, ChannelChoice, describe_audio,
                                heard_rate_of, load_audio, load_audio_with_rate)
from wespeaker_py.diarization.options import DEFAULT_METHOD
from wespeaker_py.errors import AudioInputError, WespeakerError
from wespeaker_py.io.ark import MIN_NORM
from wespeaker_py.runtime.embedding import UNREADABLE, Outcome, embed_stream
from wespeaker_py.runtime.identity import ModelMismatchError, combined_record, mean_vec_digest
from wespeaker_py.utils.file_utils import (DataFormatError, FileStamp, file_stamp,
                                           files_named_by_rate, read_key_value, read_wav_scp,
                                           require_writable)
from wespeaker_py.utils.list_jobs import DEFAULT_MAX_FAIL_FRACTION, JobTally
from wespeaker_py.utils.logging_utils import get_logger, listed_names
from wespeaker_py.utils.progress import progress_bar

logger = get_logger(__name__)

if TYPE_CHECKING:
    from wespeaker_py.diarization.projection import WindowLDA
    from wespeaker_py.frontend.band_fill import BandFill


# features waiting for a batch of their length in embed_many
BUFFER_BYTES = 256 << 20
# the decision threshold on the cosine score when a model has no calibration
UNCALIBRATED_THRESHOLD = 0.5
# one recording shorter than this is warned about: its embedding rests on too little speech
SHORT_INPUT_SECONDS = 1.0
# the prior that P(same) is shown at when none is given (the decision is a threshold's then)
NO_PRIOR = 0.5


@dataclass
class Verification:
    """The answer to "same speaker?" for one pair of recordings.

    ``llr`` (natural-log likelihood ratio) and ``probability`` (of the same
    speaker at ``prior``; 0.5 when none was given) are None without a calibration;
    ``decision`` then compares the raw score with ``threshold`` and ``calibrated``
    is False. ``rule`` says what decided: ``threshold`` (the score above
    ``threshold``, the one at ``operating_point``), or ``bayes`` (a prior was given
    to a calibrated model: same speaker when ``probability`` > 0.5, i.e. ``llr`` >
    log((1 - prior) / prior); ``threshold`` and ``operating_point`` are None).
    """

    score: float
    decision: bool
    threshold: Optional[float]
    operating_point: Optional[str]
    calibrated: bool
    llr: Optional[float] = None
    probability: Optional[float] = None
    prior: Optional[float] = None
    rule: str = "threshold"

    def describe(self) -> str:
        """One line for people, naming the rule that decided."""
        verdict = "same speaker" if self.decision else "different speakers"
        if not self.calibrated:
            return (f"score {self.score:.4f}: {verdict} (UNCALIBRATED decision: score > "
                    f"{self.threshold:g}; run 'wespeaker-py calibrate' for a trustworthy "
                    f"one)")
        found = (f"score {self.score:.4f}, LLR {self.llr:.3f}, P(same | prior {self.prior:g}) "
                 f"= {self.probability:.3f}: {verdict}")
        if self.rule == "bayes":
            return (f"{found} (Bayes rule at prior {self.prior:g}: same speaker when "
                    f"P(same) > 0.5, i.e. LLR > {bayes_llr_threshold(self.prior):.3f})")
        return (f"{found} (threshold rule: score > {self.threshold:.4f}, the "
                f"{self.operating_point} operating point)")


def bayes_llr_threshold(prior: float) -> float:
    """The LLR above which "same speaker" is the more probable answer at ``prior``:
    log((1 - prior) / prior)."""
    return math.log((1.0 - prior) / prior)


def _check_decision_rule(prior: Optional[float], operating_point: Optional[str],
                         threshold: Optional[float]) -> None:
    """A valid ``prior`` (if any), and at most one way to decide: a prior (the Bayes rule),
    or an operating point or threshold (the threshold rule)."""
    if threshold is not None and not -1.0 <= threshold <= 1.0:   # NaN fails too
        raise WespeakerError(f"a threshold (--threshold, threshold=) is a cosine score: it "
                             f"must lie between -1 and 1, got {threshold}")
    if operating_point is not None and threshold is not None:
        raise WespeakerError("an operating point (--operating_point, operating_point=) and a "
                             "threshold (--threshold, threshold=) each set the score "
                             "threshold: give one of them")
    if prior is None:
        return
    check_prior(prior)
    if operating_point is not None or threshold is not None:
        raise WespeakerError("a prior (--prior, prior=) decides by the Bayes rule, an "
                             "operating point or threshold (--operating_point, --threshold) "
                             "by a score threshold: give one of them")


def _check_rule_has_calibration(calibration: Optional[Calibration], prior: Optional[float],
                                operating_point: Optional[str], source: str) -> None:
    """A ``prior`` or ``operating_point`` means nothing without a calibration: refuse them
    (a raw-score ``threshold``, or none, still decides, marked uncalibrated)."""
    if calibration is not None:
        return
    for what, value in (("a prior (--prior, prior=)", prior),
                        ("an operating point (--operating_point, operating_point=)",
                         operating_point)):
        if value is not None:
            raise WespeakerError(f"{what} needs a calibration, and the model {source} has "
                                 f"none: run 'wespeaker-py calibrate' on labelled trials, or "
                                 f"decide with a raw-score threshold (--threshold)")


@dataclass
class EmbeddingResults:
    """What :meth:`SpeakerModel.embed_many` produced: embeddings by key, skipped keys (with
    why), and the skips counted by reason (``missing_file``, ``too_short_for_model``, ...)."""

    embeddings: Dict[str, np.ndarray] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)
    reasons: Counter = field(default_factory=Counter)
    # the embedded keys whose audio came below the model's rate, and that rate
    heard_rates: Dict[str, int] = field(default_factory=dict)


def _note_replaced_window_lda(path: str, new: Any) -> None:
    """Say what the window LDA about to be written at ``path`` replaces: a warning when
    the old one was learnt for the same model (a working LDA is being swapped), else a
    note (one of an earlier model, as a recipe rerun after training again replaces)."""
    from wespeaker_py.diarization.projection import WindowLDA
    try:
        old = WindowLDA.load(path)
    except WespeakerError as error:
        logger.info("replacing %s (%s)", path, error)
        return
    log = logger.warning if old.identity == new.identity else logger.info
    log("replacing the window LDA at %s (%s) with one of %s", path, old.describe(),
        new.describe())


def _items_of(items: Union[str, Sequence[AudioLike], Mapping[str, AudioLike]]
              ) -> List[Tuple[str, AudioLike]]:
    """``(key, audio)`` pairs of a wav.scp path, a mapping, or a list (keys: paths or indices;
    a path listed again is the same key, and is embedded once).

    A wav.scp is read by :func:`~wespeaker_py.utils.file_utils.read_wav_scp`: one that is
    missing, empty or malformed raises its error, naming the file.
    """
    if isinstance(items, (str, os.PathLike)):
        return list(read_wav_scp(os.fspath(items)).items())
    if isinstance(items, Mapping):
        return [(str(key), audio) for key, audio in items.items()]
    pairs = {}
    for index, item in enumerate(items):
        key = os.fspath(item) if isinstance(item, (str, os.PathLike)) else str(index)
        pairs.setdefault(key, item)
    if len(pairs) < len(items):
        logger.info("%d paths were listed more than once: each is embedded once, under its "
                    "path", len(items) - len(pairs))
    return list(pairs.items())


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
        self.calibration_path = calibration_path
        self.calibration_required = calibration_required
        self.window_lda_path = window_lda_path
        self.force = force
        self._calibration: Optional[Calibration] = None
        self._calibration_read = False
        # absolute path: (the file's stamp when read, the LDA read)
        self._window_ldas_read: Dict[str, Tuple[Optional[FileStamp], "WindowLDA"]] = {}
        self._band_fill_stamps: Tuple[Tuple[str, Optional[FileStamp]], ...] = ()
        # the fills' stamps the calibration was last checked against (None: not yet)
        self._calibration_fills_checked: Optional[Tuple[Tuple[str, Optional[FileStamp]],
                                                        ...]] = None

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
    def identity(self) -> str:
        """Digest of the weights and front-end settings (64 hex digits; see
        :mod:`wespeaker_py.runtime.identity`), recorded in galleries and calibrations."""
        return self.backend.identity

    # -- embeddings ------------------------------------------------------------------------

    def _embed_stream(self, items: Iterable[Tuple[str, Any]], batch_size: int,
                      sample_rate: Optional[int] = None, progress: bool = False,
                      loaded: bool = False, channel: ChannelChoice = DEFAULT_CHANNEL,
                      heard_rate: int = 0) -> Iterator[Outcome]:
        """:func:`~wespeaker_py.runtime.embedding.embed_stream` over ``(key, audio)`` items.

        Each audio is read (resampled to the model's rate, mono by ``channel``) as it
        comes, unless ``loaded`` says the items are model samples already
        (:func:`~wespeaker_py.audio.load_audio`'s); batches only hold inputs of
        equal length, as in ``bin.extract``. Audio that came below the model's rate
        (a read file's own rate; with ``loaded``, ``heard_rate``) goes through the
        model's band fill for it, when it has one (see :meth:`band_fill_file`).
        """
        if batch_size < 1:
            raise WespeakerError(f"batch_size must be at least 1, got {batch_size}")
        read = None if loaded else (
            lambda audio: load_audio_with_rate(audio, self.sample_rate, sample_rate,
                                               channel=channel))
        heard_rate = heard_rate_of(heard_rate, self.sample_rate)
        if heard_rate or not loaded:   # full-band arrays need no fill: no look for files
            self._refresh_band_fills()
        return embed_stream(self.backend, items, batch_size, read=read,
                            buffer_bytes=BUFFER_BYTES, progress=progress, desc="embedding",
                            heard_rate=heard_rate)

    def embed(self, audio: AudioLike, sample_rate: Optional[int] = None,
              channel: ChannelChoice = DEFAULT_CHANNEL) -> np.ndarray:
        """The embedding (float32 vector) of one recording (of multi-channel audio: the
        channel ``channel`` chooses, see :mod:`wespeaker_py.audio`)."""
        return self._embed_heard(audio, sample_rate, channel)[0]

    def _embed_heard(self, audio: AudioLike, sample_rate: Optional[int],
                     channel: ChannelChoice) -> Tuple[np.ndarray, int]:
        """:meth:`embed`, and the rate below the model's the audio came at (0: none)."""
        wav, source_rate = load_audio_with_rate(audio, self.sample_rate, sample_rate,
                                                channel=channel)
        seconds = wav.size / self.sample_rate
        if seconds < SHORT_INPUT_SECONDS:
            logger.warning("%s: %.2f s of audio; the embedding of an input under %g s is "
                           "unreliable, and so are scores and decisions made with it",
                           describe_audio(audio), seconds, SHORT_INPUT_SECONDS)
        [outcome] = list(self._embed_stream([(describe_audio(audio), wav)], 1, loaded=True,
                                            heard_rate=source_rate))
        if outcome.embedding is None:
            raise AudioInputError(f"{describe_audio(audio)}: {outcome.detail}")
        return outcome.embedding, outcome.heard_rate

    def embed_waveforms(self, waveforms: Sequence[Any], sample_rate: int,
                        batch_size: int = 16,
                        channel: ChannelChoice = DEFAULT_CHANNEL) -> np.ndarray:
        """Embeddings ``[N, E]`` of in-memory waveforms (e.g. the segments of a recording).

        Each waveform is 1-D (or follows the channel rule) at ``sample_rate`` (below
        the model's rate: its band fill is applied, see :meth:`band_fill_file`).
        Equal-length inputs are batched; a waveform that cannot be embedded
        raises :class:`~wespeaker_py.errors.AudioInputError` naming its index.
        """
        wavs = []
        for index, waveform in enumerate(waveforms):
            try:
                wavs.append(load_audio(waveform, self.sample_rate, sample_rate,
                                       channel=channel))
            except AudioInputError as error:
                raise AudioInputError(f"waveform {index}: {error}") from None
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
                raise AudioInputError(f"{outcome.key}: {outcome.detail}")
            rows[outcome.key] = outcome.embedding
        if not rows:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return np.stack([rows[key] for key in keys])

    def embed_many(self, items: Union[str, Sequence[AudioLike], Mapping[str, AudioLike]],
                   batch_size: int = 16, progress: bool = True,
                   sample_rate: Optional[int] = None,
                   channel: ChannelChoice = DEFAULT_CHANNEL) -> EmbeddingResults:
        """Embed a wav.scp (path), a ``{key: audio}`` mapping or a list of paths/arrays.

        Items that cannot be embedded (missing, not audio, too short, ...) are
        skipped with a warning and listed in the result's ``skipped``; the rest
        are embedded in length-bucketed batches and returned in input order, keyed by
        wav.scp key, mapping key, or (a list) path or index: a path listed twice is
        one result. A wav.scp that is missing, empty or malformed is an error naming it
        (as ``embed --wav_scp``'s), raised before any work.
        """
        pairs = _items_of(items)
        results = EmbeddingResults()
        for outcome in self._embed_stream(pairs, batch_size, sample_rate, progress,
                                          channel=channel):
            if outcome.embedding is None:
                results.skipped[outcome.key] = outcome.detail
                results.reasons[outcome.skip] += 1
            else:
                results.embeddings[outcome.key] = outcome.embedding
                if outcome.heard_rate:
                    results.heard_rates[outcome.key] = outcome.heard_rate
        order = {key: index for index, (key, _) in enumerate(pairs)}
        results.embeddings = dict(sorted(results.embeddings.items(), key=lambda kv: order[kv[0]]))
        for key, reason in results.skipped.items():
            logger.warning("skipped %s: %s", key, reason)
        if results.skipped:
            logger.warning("%d embedded, %d skipped", len(results.embeddings),
                           len(results.skipped))
        return results

    # -- comparing ---------------------------------------------------------------------------

    def unit(self, embedding: np.ndarray, name: str = "the input") -> np.ndarray:
        """``embedding`` minus the model's mean vector (if any), scaled to unit length.

        One with no direction (all zeros, or equal to the mean vector) has no cosine with
        anything; it, and one holding NaN or infinity, raise
        :class:`~wespeaker_py.api.gallery.ZeroEmbeddingError` naming ``name`` (the input
        it came from).
        """
        given = np.asarray(embedding, dtype=np.float64)
        if not np.isfinite(given).all():
            raise ZeroEmbeddingError(f"the embedding of {name} holds NaN or infinity")
        vector = given if self.mean_vec is None else given - self.mean_vec
        norm = float(np.linalg.norm(vector))
        if norm < MIN_NORM:
            what = ("is all zeros" if not given.any() else "equals the model's mean vector, "
                    "so nothing is left once it is subtracted")
            raise ZeroEmbeddingError(f"the embedding of {name} {what}; it has no direction "
                                     f"to compare by cosine")
        return vector / norm

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
        if not self._calibration_read:
            self._calibration = read_optional_calibration(
                self.calibration_path, self.identity, self.force, self._mean_vec_digest(),
                required=self.calibration_required)
            self._calibration_read, self._calibration_fills_checked = True, None
        if self._calibration is not None and self._calibration.band_fills:
            self._refresh_band_fills()
            if self._calibration_fills_checked != self._band_fill_stamps:
                for rate, digest in self._calibration.band_fills.items():
                    if self._band_fill_digest(rate) != digest:
                        self._band_fill_mismatch(
                            f"{self.calibration_path} was fitted on scores of {rate} Hz audio "
                            f"that went through a different band fill (or none) than such "
                            f"audio goes through now ({self._band_fill_now(rate)}); calibrate "
                            f"again: wespeaker-py calibrate", self.force)
                self._calibration_fills_checked = self._band_fill_stamps
        return self._calibration

    def decide(self, score: float, prior: Optional[float] = None,
               operating_point: Optional[str] = None,
               threshold: Optional[float] = None) -> Verification:
        """Turn a score into a :class:`Verification` (see :meth:`verify`)."""
        _check_decision_rule(prior, operating_point, threshold)
        calibration = self.calibration
        _check_rule_has_calibration(calibration, prior, operating_point, self.source)
        if calibration is None:
            point = "default" if threshold is None else "given"
            threshold = UNCALIBRATED_THRESHOLD if threshold is None else float(threshold)
            return Verification(score=score, decision=score > threshold, threshold=threshold,
                                operating_point=point, calibrated=False)
        llr = calibration.llr(score)
        if prior is not None:
            return Verification(score=score, decision=llr > bayes_llr_threshold(prior),
                                threshold=None, operating_point=None, calibrated=True,
                                llr=llr, probability=probability(llr, prior), prior=prior,
                                rule="bayes")
        if threshold is None:
            operating_point = operating_point or "eer"
            threshold = calibration.threshold(operating_point)
        else:
            operating_point = "given"
        return Verification(score=score, decision=score > threshold, threshold=float(threshold),
                            operating_point=operating_point, calibrated=True, llr=llr,
                            probability=probability(llr, NO_PRIOR), prior=NO_PRIOR)

    def verify(self, first: AudioLike, second: AudioLike, sample_rate: Optional[int] = None,
               prior: Optional[float] = None, operating_point: Optional[str] = None,
               threshold: Optional[float] = None,
               channel: ChannelChoice = DEFAULT_CHANNEL) -> Verification:
        """Same speaker? Score, calibrated LLR and probability at ``prior``, and a decision.

        With a calibration and a ``prior``, the decision is the Bayes rule's: same
        speaker when P(same | prior) > 0.5. Otherwise it compares the score with
        the calibration's threshold at ``operating_point`` (``eer``, the default, or
        ``fa1``: 1 % false acceptance on the calibration trials), or with
        ``threshold``; give one of ``prior``, ``operating_point`` and ``threshold``.
        Without a calibration the result says the decision is uncalibrated, and a
        ``prior`` or ``operating_point`` is an error.
        """
        _check_decision_rule(prior, operating_point, threshold)
        # a calibration of another model, or a rule that needs one, fails before any audio
        _check_rule_has_calibration(self.calibration, prior, operating_point, self.source)
        return self.decide(self.similarity(first, second, sample_rate, channel), prior,
                           operating_point, threshold)

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
        from wespeaker_py.scoring.trials import read_trials
        target = output or self.calibration_path
        if target is None:
            raise WespeakerError("say where to write the calibration (output=...)")
        require_writable(target)  # before the embedding, not after it
        try:
            trial_list = read_trials(trials)
            table = _items_of(wav_scp)
        except DataFormatError as error:
            raise WespeakerError(str(error)) from None
        if trial_list.labels is None:
            raise WespeakerError(f"{trials}: calibration needs labelled trials "
                                 f"('enroll test target|nontarget')")
        targets = int(np.count_nonzero(trial_list.labels))
        check_trial_counts(targets, len(trial_list) - targets, trials)
        wanted = set(trial_list.enroll_keys) | set(trial_list.test_keys)
        audio = {key: path for key, path in table if key in wanted}
        missing = sorted(wanted - set(audio))
        if missing:
            raise WespeakerError(f"{wav_scp} has no entry for {len(missing)} utterance(s) of "
                                 f"{trials}, e.g. {missing[0]!r}")
        results = self.embed_many(audio, batch_size=batch_size, progress=progress,
                                  channel=channel)
        embedded = results.embeddings
        scores, labels, rates = [], [], set()
        for enroll, test, label in zip(trial_list.enroll, trial_list.test, trial_list.labels):
            keys = (trial_list.enroll_keys[enroll], trial_list.test_keys[test])
            first, second = (embedded.get(key) for key in keys)
            if first is not None and second is not None:
                scores.append(self.score_embeddings(first, second, *keys))
                labels.append(bool(label))
                rates.update(results.heard_rates[key] for key in keys
                             if key in results.heard_rates)
        if len(scores) < len(trial_list):
            logger.warning("%d of %d trials left out: their audio was skipped",
                           len(trial_list) - len(scores), len(trial_list))
        calibration = self.calibration_of_scores(scores, labels, os.path.abspath(trials), rates)
        save_calibration(target, calibration)
        if target == self.calibration_path:
            self._calibration, self._calibration_read = calibration, True
        return calibration

    def calibration_of_scores(self, scores: Sequence[float], labels: Sequence[bool],
                              trials: str, heard_rates: Iterable[int]) -> Calibration:
        """Fit a calibration on this model's ``scores`` of labelled trials (the file
        ``trials``), recording what they depend on: the model's :attr:`identity`, its mean
        vector, and the band fills that its audio heard at ``heard_rates`` went through
        (call it right after embedding that audio)."""
        return fit_calibration(np.array(scores), np.array(labels, dtype=bool), trials=trials,
                               model=self.name, identity=self.identity,
                               band_fills=self._heard_fills(heard_rates),
                               mean_vec=self._mean_vec_digest())

    # -- speaker gallery ---------------------------------------------------------------------

    def _mean_vec_digest(self) -> str:
        """What galleries and calibrations record of :attr:`mean_vec`."""
        return mean_vec_digest(self.mean_vec)

    def _gallery_tag(self) -> str:
        return f"{self.name}/emb{self.embed_dim}"

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
        """
        if not audio:
            raise WespeakerError(f"enroll {name!r}: give at least one recording")
        self._enrollment_target(gallery, name, replace, append, force)  # before embedding
        units, fills = [], {}
        for item in audio:
            embedding, heard_rate = self._embed_heard(item, sample_rate, channel)
            units.append(self.unit(embedding, describe_audio(item)))
            if heard_rate:   # each recording's own fill: the files may change between them
                fills.setdefault(heard_rate, set()).add(self._applied_fill(heard_rate))
        heard = {rate: digests.pop() if len(digests) == 1 else MIXED_FILLS
                 for rate, digests in fills.items()}
        with gallery_lock(gallery):
            speakers = self._enrollment_target(gallery, name, replace, append, force)
            # speakers of another model (forced) make the gallery one that no model may use
            # unchecked, the one that made them included
            others = [other for other in speakers.names if other != name or append]
            speakers.identity = combined_record(speakers.identity or None, self.identity,
                                                bool(others))
            speakers.mean_vec = combined_record(speakers.mean_vec, self._mean_vec_digest(),
                                                bool(others))
            speakers.add(name, np.stack(units), replace=replace, append=append, heard=heard)
            save_gallery(gallery, speakers)
        return len(speakers.names)

    def _enrollment_target(self, gallery: str, name: str, replace: bool, append: bool,
                           force: bool) -> Gallery:
        """The gallery ``name`` may be enrolled into (:meth:`enroll`'s checks)."""
        speakers = load_gallery(gallery, self._gallery_tag(), self.identity, force,
                                self._mean_vec_digest())
        speakers.check_enrollment(name, replace, append)
        if append:
            self._check_gallery_fills(gallery, speakers, force, only=name)
        return speakers

    def identify(self, audio: AudioLike, gallery: str, top_k: int = 5,
                 sample_rate: Optional[int] = None,
                 force: bool = False,
                 channel: ChannelChoice = DEFAULT_CHANNEL) -> List[Tuple[str, float]]:
        """The ``top_k`` (at least 1) enrolled speakers most similar to ``audio``:
        ``(name, cosine)``. A gallery of another model, or holding speakers enrolled
        from low-rate audio through another band fill than the model now has, is an
        error unless ``force``."""
        if not os.path.exists(gallery):
            raise WespeakerError(f"gallery {gallery} does not exist; enroll speakers first")
        check_top_k(top_k)
        speakers = load_gallery(gallery, self._gallery_tag(), self.identity, force,
                                self._mean_vec_digest())
        self._check_gallery_fills(gallery, speakers, force)
        return speakers.rank(self.unit(self.embed(audio, sample_rate, channel),
                                       describe_audio(audio)), top_k)

    def _check_gallery_fills(self, path: str, speakers: Gallery, force: bool,
                             only: Optional[str] = None) -> None:
        """Refuse (``force``: warn about) the gallery's speakers (or speaker ``only``)
        enrolled from low-rate audio through another band fill than the model now has."""
        for rate, names in speakers.stale_band_fills(self._band_fill_digest, only).items():
            self._band_fill_mismatch(
                f"{path}: speaker(s) {listed_names(names, 5)} were enrolled from {rate} Hz audio "
                f"that went through a different band fill (or none) than such audio goes through "
                f"now ({self._band_fill_now(rate)}); their embeddings no longer match new ones: "
                f"enroll them again with --replace (replace=True)", force)

    # -- diarization -------------------------------------------------------------------------

    def diarizer(self, vad: str = "silero", cluster_method: str = DEFAULT_METHOD,
                 batch_size: int = 32, **settings: Any):
        """A :class:`~wespeaker_py.diarization.Diarizer` embedding its windows with this model
        (at the model's rate; a recording is read and resampled once). ``settings``: any
        other :class:`~wespeaker_py.diarization.DiarizationOptions` field (``vad_threshold``,
        ``window``, ``min_cluster_size``, ``resolution``...); an unknown one is an error."""
        from wespeaker_py.diarization import DiarizationOptions, Diarizer
        options = DiarizationOptions.from_settings(vad=vad, cluster_method=cluster_method,
                                                   **settings)
        lda, narrowband = self._window_ldas(options.window_lda)

        def embed(windows: Sequence[np.ndarray], heard_rate: int = 0,
                  name: str = "") -> np.ndarray:
            noun = f"{name} window" if name else "window"
            return self._embed_loaded(windows, batch_size, heard_rate, noun)

        return Diarizer(embed, options, sample_rate=self.sample_rate, narrowband_embed=embed,
                        projection=None if lda is None else lda.project,
                        narrowband_projections={rate: item.project
                                                for rate, item in narrowband.items()})

    def window_lda_file(self, heard_rate: int = 0) -> Optional[str]:
        """Where this model's window LDA learnt at ``heard_rate`` lives (0: the model's rate,
        :attr:`window_lda_path`; e.g. ``window_lda_8000hz.npz`` beside it, or
        ``model.window_lda_8000hz.npz`` beside ``model.onnx``); None when the model has
        no folder beside it."""
        from wespeaker_py.diarization.options import window_lda_name
        prefix = self._side_file_prefix()
        if prefix is None:
            return None if heard_rate else self.window_lda_path
        return prefix + window_lda_name(heard_rate)

    def companion_files(self) -> Dict[str, str]:
        """``{name: path}`` of the calibration and window LDAs this model reads beside it
        (each checked against its identity when used), by the names they have there
        (``calibration.json``, ``window_lda.npz``, ``window_lda_8000hz.npz``); with
        :meth:`band_fills`, what an ONNX export carries along."""
        from wespeaker_py.diarization.options import NARROWBAND_WINDOW_LDA, WINDOW_LDA_NAME
        found = {}
        if self.calibration_path and os.path.isfile(self.calibration_path):
            found[CALIBRATION_NAME] = self.calibration_path
        if self.window_lda_path and os.path.isfile(self.window_lda_path):
            found[WINDOW_LDA_NAME] = self.window_lda_path
        prefix = self._side_file_prefix()
        if prefix is not None:
            for path in files_named_by_rate(prefix, NARROWBAND_WINDOW_LDA):
                found[path[len(prefix):]] = path
        return found

    def band_fills(self) -> Dict[int, "BandFill"]:
        """``{heard rate: band fill}`` that audio heard at each rate goes through now (the
        files beside the model read again if they changed; one that does not fit the
        model raises :class:`~wespeaker_py.frontend.band_fill.BandFillError`)."""
        self._refresh_band_fills()
        return dict(self.backend.band_fills)

    def _side_file_prefix(self) -> Optional[str]:
        """:attr:`window_lda_path` without its file name (a folder, or ``model.`` for ONNX)."""
        from wespeaker_py.diarization.options import WINDOW_LDA_NAME
        path = self.window_lda_path
        if path is None or not path.endswith(WINDOW_LDA_NAME):
            return None
        return path[:-len(WINDOW_LDA_NAME)]

    def _window_ldas(self, choice: str) -> Tuple[Optional["WindowLDA"], Dict[int, "WindowLDA"]]:
        """The window LDA that ``choice`` names (``off``/``none``: none; a file, which must
        exist, for every recording; ``auto``: :attr:`window_lda_path` if it exists) and,
        with ``auto``, the narrowband ones beside it (``{heard rate: LDA}``), each checked
        against the model and against its file name."""
        from wespeaker_py.diarization.options import (NARROWBAND_WINDOW_LDA,
                                                      narrowband_rate_of, window_lda_name)
        if choice.lower() in ("off", "none"):
            return None, {}
        if choice != "auto":
            lda = self._load_window_lda(choice)
            if lda.heard_rate:
                logger.warning("window LDA %s was learnt from audio heard at %d Hz; given "
                               "by name, it projects every recording whatever its rate",
                               choice, lda.heard_rate)
            return lda, {}
        path = self.window_lda_path
        main = self._load_window_lda(path) if path and os.path.exists(path) else None
        if main is not None and main.heard_rate:
            raise ModelMismatchError(
                f"window LDA {path} was learnt from audio heard at {main.heard_rate} Hz, but "
                f"that name is for the model's own rate; rename it "
                f"{window_lda_name(main.heard_rate)}, which serves recordings at or below "
                f"{main.heard_rate} Hz")
        prefix = self._side_file_prefix()
        narrowband = {}
        for found in ([] if prefix is None else
                      files_named_by_rate(prefix, NARROWBAND_WINDOW_LDA)):
            rate = narrowband_rate_of(found[len(prefix):])
            if rate is None:
                logger.warning("ignoring %s: not a window_lda_<HZ>hz.npz name", found)
                continue
            lda = self._load_window_lda(found)
            if lda.heard_rate != rate or rate >= self.sample_rate:
                raise ModelMismatchError(
                    f"window LDA {found}: its name says {rate} Hz but it was learnt from audio "
                    f"heard at {lda.heard_rate or self.sample_rate} Hz; a narrowband one is "
                    f"learnt with heard_rate below the model's {self.sample_rate} Hz and "
                    f"named for it")
            if lda.band_fill != self._band_fill_digest(rate):
                learnt = "through another band fill" if lda.band_fill else "without a band fill"
                self._band_fill_mismatch(
                    f"window LDA {found} was learnt from windows {learnt}, but {rate} Hz audio "
                    f"now goes through {self._band_fill_now(rate)}; learn it again: "
                    f"wespeaker-py window-lda --heard_rate {rate}", self.force)
            narrowband[rate] = lda
        return main, narrowband

    def _load_window_lda(self, path: str) -> "WindowLDA":
        """One window LDA file, checked against this model (identity and dimension); read
        again only when the file changed since this model last read it."""
        from wespeaker_py.diarization.projection import WindowLDA
        from wespeaker_py.runtime.identity import check_recorded_identity
        key = os.path.abspath(path)
        stamp = file_stamp(path)
        known = self._window_ldas_read.get(key)
        if known is not None and stamp is not None and known[0] == stamp:
            return known[1]
        lda = WindowLDA.load(path)
        check_recorded_identity(path, "window LDA", lda.identity, self.identity, self.force)
        if lda.input_dim != self.embed_dim:
            raise ModelMismatchError(f"window LDA {path} takes {lda.input_dim}-dim embeddings, "
                                     f"the model gives {self.embed_dim}")
        logger.info("window LDA %s: %s", path, lda.describe())
        self._window_ldas_read[key] = (stamp, lda)
        return lda

    def window_lda_output(self, output: Optional[str] = None, heard_rate: int = 0) -> str:
        """Where :meth:`train_window_lda` writes: ``output``, else :meth:`window_lda_file`."""
        target = output or self.window_lda_file(heard_rate)
        if target is None:
            raise WespeakerError("this model has no folder beside it; give output=")
        return target

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
        from wespeaker_py.diarization.pipeline import labelled_window_embeddings
        from wespeaker_py.diarization.projection import DEFAULT_LDA_DIM, fit_window_lda
        heard_rate = self._check_heard_rate(heard_rate)
        target = self.window_lda_output(output, heard_rate)
        require_writable(target)
        if (heard_rate and self._fbank_frontend() is not None
                and self._side_file_prefix() is not None
                and self._band_fill_digest(heard_rate) == ""):
            logger.info("no band fill for %d Hz beside the model: learning one from the same "
                        "data first", heard_rate)
            self.train_band_fill(data, heard_rate, progress=progress,
                                 max_fail_fraction=max_fail_fraction)
        diarizer = self.diarizer("energy", batch_size=batch_size, window_lda="off", **settings)
        rows, speakers, skipped = [], [], 0
        for folder in [data] if isinstance(data, str) else list(data):
            utt2spk_path = os.path.join(folder, "utt2spk")
            utt2spk = read_key_value(utt2spk_path, allow_spaces_in_value=False)
            embeddings, labels, tally = labelled_window_embeddings(
                diarizer, os.path.join(folder, "wav.scp"), utt2spk, progress, max_fail_fraction,
                (heard_rate, 0) if heard_rate else (0,), utt2spk_path)
            rows.append(embeddings)
            speakers.append(labels)
            skipped += tally.num_skipped
        lda = fit_window_lda(np.concatenate(rows), np.concatenate(speakers),
                             dim or DEFAULT_LDA_DIM, self.identity, heard_rate,
                             self._band_fill_digest(heard_rate))
        if os.path.exists(target):
            _note_replaced_window_lda(target, lda)
        lda.save(target)
        logger.info("window LDA -> %s: %s; utterances skipped: %d", target, lda.describe(),
                    skipped)
        return lda

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
        from wespeaker_py.frontend.band_fill import band_fill_name
        prefix = self._side_file_prefix()
        return None if prefix is None else prefix + band_fill_name(heard_rate)

    def _fbank_frontend(self):
        """The model's fbank front-end when band fills can be learnt for it (a torch model
        with fbank features), else None."""
        from wespeaker_py.frontend.features import FbankFeatures
        frontend = getattr(getattr(self.backend, "embedder", None), "frontend", None)
        return frontend if isinstance(frontend, FbankFeatures) else None

    def _band_fill_digest(self, heard_rate: int) -> str:
        """The digest of the band fill that audio heard at ``heard_rate`` goes through now
        ("": none), the files beside the model read again if they changed."""
        if heard_rate:
            self._refresh_band_fills()
        return self._applied_fill(heard_rate)

    def _applied_fill(self, heard_rate: int) -> str:
        """The digest of the band fill the backend holds for ``heard_rate`` ("": none),
        without reading the files again: the one the last embeddings went through."""
        fill = self.backend.band_fill_for(heard_rate) if heard_rate else None
        return "" if fill is None else fill.digest

    def _heard_fills(self, heard_rates: Iterable[int]) -> Dict[int, str]:
        """``{rate: digest of the band fill the last embeddings of audio heard at it went
        through ("": none)}``; call it right after embedding them."""
        return {rate: self._applied_fill(rate) for rate in sorted(heard_rates)}

    def _band_fill_now(self, heard_rate: int) -> str:
        """What audio heard at ``heard_rate`` goes through now, in words."""
        return "the band fill beside the model" if self._band_fill_digest(heard_rate) else "none"

    @staticmethod
    def _band_fill_mismatch(message: str, force: bool) -> None:
        """A file made through another band fill: :class:`ModelMismatchError` saying
        ``message``, or with ``force`` a warning."""
        if not force:
            raise ModelMismatchError(f"{message}; or pass --force (force=True) to use the file "
                                     f"anyway")
        logger.warning("%s (used anyway: force)", message)

    def _band_fills_in_use(self) -> Union[Dict[int, str], str]:
        """``{heard rate: file}`` of the band fills this model uses (for :meth:`info`), or
        why the ones beside it cannot be used."""
        from wespeaker_py.frontend.band_fill import BandFillError
        try:
            self._refresh_band_fills()
        except BandFillError as error:   # info reports it rather than failing
            return f"not used: {error}"
        return {rate: self.band_fill_file(rate) for rate in sorted(self.backend.band_fills)}

    def _refresh_band_fills(self) -> None:
        """Hand the band fills beside the model to its backend; read again whenever the
        files there change (one learnt since is used, one removed is dropped)."""
        from wespeaker_py.frontend.band_fill import band_fill_files, load_band_fills
        prefix = self._side_file_prefix()
        if prefix is None or not self.backend.takes_band_fills:
            return
        stamps = tuple((path, file_stamp(path)) for path in band_fill_files(prefix))
        if stamps == self._band_fill_stamps:
            return
        fills = load_band_fills(prefix)
        for fill in fills:
            logger.info("band fill for %d Hz beside %s: %s", fill.heard_rate, self.source,
                        fill.describe())
        self.backend.set_band_fills(fills)
        self._band_fill_stamps = stamps

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
        import torch
        from wespeaker_py.audio import narrowband
        from wespeaker_py.frontend.band_fill import NARROW_SOURCE, BandFillError, fit_band_fill
        frontend = self._fbank_frontend()
        if frontend is None:
            raise BandFillError("a band fill needs a torch model with an fbank front-end")
        heard_rate = self._check_heard_rate(heard_rate)
        if not heard_rate:
            raise BandFillError(f"a band fill is for a rate below the model's "
                                f"{self.sample_rate} Hz, got heard_rate 0")
        target = output or self.band_fill_file(heard_rate)
        if target is None:
            raise WespeakerError("this model has no folder beside it; give output=")
        require_writable(target)
        folders = [data] if isinstance(data, str) else list(data)
        skipped: Counter = Counter()
        done = 0

        def log_mels(samples: np.ndarray) -> np.ndarray:
            return frontend.log_mel(torch.as_tensor(samples).unsqueeze(0))[0].numpy()

        def pairs() -> Iterator[Tuple[np.ndarray, np.ndarray]]:
            nonlocal done
            for folder in folders:
                recordings = read_wav_scp(os.path.join(folder, "wav.scp"))
                for key, path in progress_bar(recordings.items(), desc="band fill",
                                              unit="utt", enabled=progress):
                    try:
                        wide, source_rate = load_audio_with_rate(path, self.sample_rate)
                    except AudioInputError as err:
                        logger.warning("skipping %s: %s", key, err)
                        skipped[getattr(err, "reason", UNREADABLE)] += 1
                        continue
                    if heard_rate_of(source_rate, self.sample_rate):
                        logger.warning("skipping %s: it came at %d Hz; a band fill learns "
                                       "from audio at the model's %d Hz", key, source_rate,
                                       self.sample_rate)
                        skipped[NARROW_SOURCE] += 1
                        continue
                    done += 1
                    yield log_mels(wide), log_mels(narrowband(wide, heard_rate,
                                                              self.sample_rate))

        def check_tally() -> None:
            JobTally.of(done, skipped).check(", ".join(folders), max_fail_fraction,
                                             "no band fill was learnt")

        try:
            fill = fit_band_fill(pairs(), heard_rate, frontend.sample_rate,
                                 frontend.num_mel_bins, frontend.frame_length)
        except BandFillError:
            check_tally()   # nothing read says so, naming the data, before "too few frames"
            raise
        check_tally()
        fill.save(target)
        self._refresh_band_fills()
        logger.info("band fill -> %s: %s; utterances skipped: %d", target, fill.describe(),
                    sum(skipped.values()))
        return fill

    def _check_heard_rate(self, heard_rate: Any) -> int:
        """``heard_rate`` as an int: 0 (the model's rate) or a rate below the model's."""
        if (isinstance(heard_rate, bool) or not isinstance(heard_rate, (int, np.integer))
                or not 0 <= heard_rate < self.sample_rate):
            raise WespeakerError(f"heard_rate must be a whole number of Hz below the model's "
                                 f"{self.sample_rate} Hz (0: its own rate), got {heard_rate!r}")
        return int(heard_rate)

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

    def diarize_many(self, wav_scp: str, output_rttm: str, num_speakers: Optional[int] = None,
                     min_speakers: Optional[int] = None,
                     max_speakers: Optional[int] = None, vad: str = "silero",
                     cluster_method: str = DEFAULT_METHOD, batch_size: int = 32,
                     progress: bool = True,
                     max_fail_fraction: float = DEFAULT_MAX_FAIL_FRACTION,
                     channel: ChannelChoice = DEFAULT_CHANNEL,
                     speaker_counts: Optional[Dict[str, int]] = None, **settings: Any):
        """Diarize every recording of a ``wav.scp`` into one RTTM file (written atomically).

        The settings are those of :meth:`diarize`, for every recording;
        ``speaker_counts`` (recording -> count) instead fixes each recording's
        count. A recording that cannot be read is skipped; one without speech
        gets no turns. Returns the run's summary (diarized, silent and failed
        recordings; ``describe()`` says it in one line). Nothing diarized, or
        more than ``max_fail_fraction`` failed, raises
        :class:`~wespeaker_py.errors.RunFailedError` and writes nothing.
        """
        from wespeaker_py.diarization import diarize_wav_scp
        return diarize_wav_scp(self.diarizer(vad, cluster_method, batch_size, **settings),
                               wav_scp, output_rttm, show_progress=progress,
                               max_fail_fraction=max_fail_fraction,
                               speaker_counts=speaker_counts, num_speakers=num_speakers,
                               min_speakers=min_speakers, max_speakers=max_speakers,
                               channel=channel)

    # -- fine-tuning -------------------------------------------------------------------------

    def finetune(self, data_dir: str, out_dir: str, device: Optional[str] = None,
                 num_threads: Optional[int] = None, overwrite: bool = False,
                 mix_data: Optional[str] = None, **options: Any) -> "SpeakerModel":
        """Fine-tune this model on the speakers of ``data_dir``; return the new model, in
        ``out_dir``.

        ``options`` are :class:`~wespeaker_py.finetune.FinetuneOptions` fields
        (``epochs``, ``lr``, ``margin``, ``freeze``, ``sample_rate``, ...); ``mix_data``
        a Kaldi folder of original-domain data that trains too; a checkpoint loaded
        with ``config=`` is fine-tuned with that config. See
        :func:`wespeaker_py.finetune.finetune` and docs/finetune.md.
        """
        from wespeaker_py.api.loading import load_model
        from wespeaker_py.finetune import FinetuneOptions, finetune
        try:
            settings = FinetuneOptions(**options)
        except TypeError as error:
            raise WespeakerError(f"finetune: {error}") from None
        finetune(self.source, data_dir, out_dir, settings, device=device,
                 num_threads=num_threads, overwrite=overwrite, config=self.config_path,
                 mix_data=mix_data)
        return load_model(out_dir, device=device)

    # -- about -------------------------------------------------------------------------------

    def info(self) -> Dict[str, Any]:
        """Model name, parameters, embedding size, sample rate, front-end, files in use."""
        details = {"name": self.name, "source": self.source}
        details.update(self.backend.describe())
        details["identity"] = self.identity
        details["mean_vec"] = self.mean_vec is not None
        details["band_fills"] = self._band_fills_in_use()
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
