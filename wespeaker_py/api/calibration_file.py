"""The calibration companion file of a model: read once, checked against the band fills that
low-rate audio goes through now, and fitted anew from the model's scores of labelled
trials."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from wespeaker_py.api.band_fill_files import BandFillFiles, band_fill_mismatch
from wespeaker_py.api.calibration import (Calibration, check_trial_counts, fit_calibration,
                                          read_optional_calibration, save_calibration)
from wespeaker_py.api.embedding_inputs import EmbeddingResults, items_of
from wespeaker_py.audio import DEFAULT_CHANNEL, ChannelChoice
from wespeaker_py.errors import WespeakerError
from wespeaker_py.runtime.identity import mean_vec_digest
from wespeaker_py.utils.atomic_files import require_writable
from wespeaker_py.utils.list_jobs import JobTally
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.paths import FileStamp
from wespeaker_py.utils.tables import DataFormatError

logger = get_logger(__name__)

if TYPE_CHECKING:
    from wespeaker_py.api.model import SpeakerModel


class CalibrationFile:
    """The calibration at a model's ``calibration_path``, read the first time it is asked for
    (and again for another path); each method is given the model (``SpeakerModel``), which
    this does not keep."""

    def __init__(self, band_fills: BandFillFiles):
        self._band_fills = band_fills
        # ((the path read, whether forced), the calibration there or None); None: nothing
        # read yet. A forced read is kept apart: a call without force checks the file again
        self._read: Optional[Tuple[Tuple[Optional[str], bool], Optional[Calibration]]] = None
        # the band fills' stamps the calibration was last checked against (None: not yet)
        self._fills_checked: Optional[Tuple[Tuple[str, Optional[FileStamp]], ...]] = None

    def current(self, model: "SpeakerModel", force: bool = False) -> Optional[Calibration]:
        """The calibration of ``model``, or None; one fitted with another model or mean
        vector, or on audio that came below the model's rate through another band fill (or
        none) than such audio goes through now, is an error unless the model's ``force`` or
        this call's ``force`` (then a warning)."""
        path, force = model.calibration_path, model.force or force
        if self._read is None or self._read[0] != (path, force):
            self._read = (path, force), read_optional_calibration(
                path, model.identity, force, mean_vec_digest(model.mean_vec),
                required=model.calibration_required)
            self._fills_checked = None
        calibration = self._read[1]
        if calibration is not None and calibration.band_fills:
            band_fills = self._band_fills
            band_fills.refresh(model)
            if self._fills_checked != band_fills.stamps:
                for rate, digest in calibration.band_fills.items():
                    if band_fills.refreshed_digest(model, rate) != digest:
                        band_fill_mismatch(
                            f"{path} was fitted on scores of {rate} Hz audio that went "
                            f"through a different band fill (or none) than such audio goes "
                            f"through now ({band_fills.refreshed_description(model, rate)}); "
                            f"calibrate again: wespeaker-py calibrate", force)
                self._fills_checked = band_fills.stamps
        return calibration

    def fit(self, model: "SpeakerModel", trials: str, wav_scp: str,
            output: Optional[str] = None, batch_size: int = 16, progress: bool = True,
            channel: ChannelChoice = DEFAULT_CHANNEL) -> Calibration:
        """Fit a calibration on the model's scores of the labelled trial list ``trials``
        (audio from ``wav_scp``) and write it to ``output``, default the model's
        ``calibration_path`` (see :meth:`~wespeaker_py.api.SpeakerModel.calibrate`)."""
        from wespeaker_py.scoring.trials import read_trials
        target = output or model.calibration_path
        if target is None:
            raise WespeakerError("say where to write the calibration (output=...)")
        require_writable(target)  # before the embedding, not after it
        try:
            trial_list = read_trials(trials)
            table = items_of(wav_scp)
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
        results = model.embed_many(audio, batch_size=batch_size, progress=progress,
                                   channel=channel)
        embedded = results.embeddings
        scores, labels, rates = [], [], set()
        for enroll, test, label in zip(trial_list.enroll, trial_list.test, trial_list.labels):
            keys = (trial_list.enroll_keys[enroll], trial_list.test_keys[test])
            first, second = (embedded.get(key) for key in keys)
            if first is not None and second is not None:
                scores.append(model.score_embeddings(first, second, *keys))
                labels.append(bool(label))
                rates.update(results.heard_rates[key] for key in keys
                             if key in results.heard_rates)
        if len(scores) < len(trial_list):
            lost = (f"{len(trial_list) - len(scores)} of its {targets} target and "
                    f"{len(trial_list) - targets} nontarget trial(s) were left out, as their "
                    f"audio was skipped: {_skipped_audio(results, audio, wav_scp)}")
            scored_targets = sum(labels)
            check_trial_counts(scored_targets, len(labels) - scored_targets, trials, lost)
            logger.warning("%s: %s", trials, lost)
        calibration = self.of_scores(model, scores, labels, os.path.abspath(trials), rates)
        save_calibration(target, calibration)
        if target == model.calibration_path:
            self._read, self._fills_checked = ((target, model.force), calibration), None
        return calibration

    def of_scores(self, model: "SpeakerModel", scores: Sequence[float],
                  labels: Sequence[Union[bool, int, str]], trials: str,
                  heard_rates: Iterable[int]) -> Calibration:
        """A calibration fitted on the model's ``scores`` of labelled trials (the file
        ``trials``; ``labels`` as :func:`~wespeaker_py.scoring.metrics.target_labels` takes
        them), recording its identity, its mean vector and the band fills that its audio
        heard at ``heard_rates`` went through (call it right after embedding that audio)."""
        return fit_calibration(np.array(scores), labels, trials=trials,
                               model=model.name, identity=model.identity,
                               band_fills=self._band_fills.loaded_digests(model, heard_rates),
                               mean_vec=mean_vec_digest(model.mean_vec))


def _skipped_audio(results: EmbeddingResults, audio: Mapping[str, str], wav_scp: str) -> str:
    """How many of the trials' utterances (listed in ``wav_scp``) were skipped and why (the
    list job's summary by reason, and the first one's detail). When none of the relative
    paths listed for them was found, it adds that such paths are read from the current
    folder (a wav.scp used from another folder than the one its paths were written for
    misses them all; one that finds some is read from the right folder)."""
    tally = JobTally.of(len(results.embeddings), results.reasons)
    key, detail = next(iter(results.skipped.items()))
    note = (f"{tally.num_skipped} of the trials' {tally.total} utterance(s) (from {wav_scp}) "
            f"were skipped ({tally.describe_reasons()}; the first: {key}: {detail})")
    relative = [path for path in (value.strip() for value in audio.values())
                if not os.path.isabs(path) and not path.endswith("|")]
    if relative and not any(os.path.exists(path) for path in relative):
        note += (f"; relative paths in a wav.scp are read from the current folder, "
                 f"{os.getcwd()}, not the wav.scp's folder")
    return note
