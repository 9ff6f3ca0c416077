"""The dev figures of a fine-tuning run, and the calibration fitted on them.

:func:`dev_audio` reads the dev utterances as training reads them; :func:`score_dev`
embeds them with a model (the source, then the new one) and scores the dev trials (EER,
minDCF); :func:`dev_record` is what ``finetune.json`` records of both; and
:func:`dev_calibration` fits the new model's calibration on its dev scores and writes it
into OUT.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from wespeaker_py.api.calibration import (MIN_TRIALS_PER_CLASS, Calibration, TooFewTrialsError,
                                          save_calibration)
from wespeaker_py.api.loading import load_model, recipe_mean_vectors
from wespeaker_py.api.model import SpeakerModel
from wespeaker_py.audio import INT16_SCALE, apply_vad, open_audio, read_checked
from wespeaker_py.dataset.lists import TableEntry
from wespeaker_py.errors import AudioInputError, WespeakerError
from wespeaker_py.finetune.config import option_name, option_setting
from wespeaker_py.finetune.data import FinetuneData
from wespeaker_py.finetune.report import WORSE, verdict
from wespeaker_py.io.layout import CALIBRATION_NAME
from wespeaker_py.scoring.metrics import compute_eer, compute_min_dcf
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

# the dev embedding passes show a progress bar from this much dev audio on (a few seconds
# of embedding for the mini recipe's ECAPA-TDNN on two CPU threads; more for larger models)
DEV_PROGRESS_SECONDS = 300.0

DevAudio = Dict[int, Dict[str, np.ndarray]]  # heard rate -> {utterance: samples at it}


def read_dev_utterance(entry: TableEntry, rate: int) -> Tuple[int, np.ndarray]:
    """The rate ``entry``'s audio is heard at (its file's, or ``rate`` when that is lower)
    and its [-1, 1] samples at that rate, segments cut out; :class:`AudioInputError` for
    audio that cannot be read (missing, truncated, silent, ...)."""
    with open_audio(entry.wav) as handle:
        heard = min(int(handle.samplerate), rate)
        voiced = apply_vad(handle, entry.vad) if entry.vad else handle
        # the int16 scale; arrays passed back in are read as [-1, 1] floats
        return heard, read_checked(voiced, heard) / INT16_SCALE


def dev_audio(data: FinetuneData, rate: int) -> Tuple[DevAudio, Dict[str, str]]:
    """The dev utterances (segments cut out, as training reads them) by the rate they are
    heard at -- their file's own, or ``rate`` when that is lower -- as [-1, 1] samples at
    that rate; and ``{utterance: why}`` of those that cannot be read, each skipped with a
    warning naming its file (their trials drop out)."""
    audio: DevAudio = {}
    skipped: Dict[str, str] = {}
    for entry in data.dev:
        try:
            heard, samples = read_dev_utterance(entry, rate)
        except AudioInputError as error:
            logger.warning("dev utterance %s skipped: %s", entry.key, error)
            skipped[entry.key] = str(error)
            continue
        audio.setdefault(heard, {})[entry.key] = samples
    if skipped:
        logger.warning("%d of %d dev utterances skipped: their trials are left out",
                       len(skipped), len(data.dev))
    return audio, skipped


def _dev_seconds(audio: DevAudio) -> float:
    """The length of the dev audio, in seconds."""
    return sum(len(samples) / heard for heard, group in audio.items()
               for samples in group.values())


def score_dev(model: SpeakerModel, audio: DevAudio, trials: List, what: str
              ) -> Dict[str, Any]:
    """EER, minDCF, scores and labels of ``model`` (``what``: the source, the new model)
    on the dev ``trials`` whose utterances it embedded, and the rates below the model's
    that their audio was heard at. A progress bar from :data:`DEV_PROGRESS_SECONDS` of
    audio on."""
    embeddings: Dict[str, np.ndarray] = {}
    heard_rates: Dict[str, int] = {}
    seconds = _dev_seconds(audio)
    logger.info("embedding the %d dev utterances (%.1f min of audio) with %s",
                sum(len(group) for group in audio.values()), seconds / 60, what)
    for heard, group in sorted(audio.items()):
        results = model.embed_many(group, sample_rate=heard,
                                   progress=seconds >= DEV_PROGRESS_SECONDS)
        embeddings.update(results.embeddings)
        heard_rates.update(results.heard_rates)
    scores, labels, rates = [], [], set()
    for enroll, test, label in trials:
        if enroll in embeddings and test in embeddings:
            scores.append(model.score_embeddings(embeddings[enroll], embeddings[test]))
            labels.append(label == "target")
            rates.update(heard_rates[key] for key in (enroll, test) if key in heard_rates)
    if len(scores) < len(trials):
        logger.warning("%d of %d dev trials left out for %s: their audio was skipped",
                       len(trials) - len(scores), len(trials), model.source)
    if not any(labels) or all(labels):
        raise WespeakerError("the dev utterances could not be embedded: no trial of each kind "
                             "is left (see the warnings above)")
    scores_array, labels_array = np.array(scores), np.array(labels, dtype=bool)
    return {"eer": compute_eer(scores_array, labels_array),
            "min_dcf": compute_min_dcf(scores_array, labels_array),
            "trials": len(scores), "scores": scores_array, "labels": labels_array,
            "heard_rates": rates}


def load_source(source: str, device: Optional[str], config: Optional[str]) -> SpeakerModel:
    """The source model, for the dev figures before fine-tuning. An experiment folder
    whose recipe scored with a mean vector is said to be scored without one here, in
    place of load_model's advice of ``mean_vec=``, a setting finetune lacks."""
    model = load_model(source, device=device, config=config, note_recipe_mean=False)
    if model.mean_vec is None and recipe_mean_vectors(source):
        logger.info("%s: its recipe scored with a mean vector subtracted; the dev scores "
                    "before and after fine-tuning are cosines without one, as the new model "
                    "scores", source)
    return model


def dev_record(before: Dict[str, Any], after: Dict[str, Any],
               audio: DevAudio) -> Dict[str, Any]:
    """The record's ``dev`` entry: the figures before and after (with the target and
    nontarget trials scored), the :func:`~wespeaker_py.finetune.report.verdict` on them,
    whether the new model is worse than the source, and how many dev utterances were heard
    at each rate."""
    figures = {name: {"eer": result["eer"], "min_dcf": result["min_dcf"],
                      "trials": result["trials"],
                      "target_trials": int(result["labels"].sum()),
                      "nontarget_trials": int((~result["labels"]).sum())}
               for name, result in (("before", before), ("after", after))}
    found = verdict(figures)
    return dict(figures, verdict=found, worse_than_source=found == WORSE,
                heard_by_rate={str(heard): len(group) for heard, group in sorted(audio.items())})


def dev_calibration(model: SpeakerModel, after: Dict[str, Any], trials_path: str, out_dir: str
                    ) -> Tuple[Optional[Calibration], Optional[str]]:
    """The calibration fitted on ``model``'s dev scores (``after``), written into OUT; or,
    when the trials scored are fewer than a calibration is fitted on (dev audio skipped at
    the evaluation: the split gave enough), none, with a warning saying so and how to get
    one, and why, for the record (``calibration_skipped``). The model is published either
    way: the training is not lost for its calibration."""
    path = os.path.join(out_dir, CALIBRATION_NAME)
    try:
        calibration = model.calibration_of_scores(after["scores"], after["labels"],
                                                  os.path.abspath(trials_path),
                                                  after["heard_rates"])
    except TooFewTrialsError:
        labels = after["labels"]
        why = (f"{int(labels.sum())} target and {int((~labels).sum())} nontarget dev trials "
               f"scored, at least {MIN_TRIALS_PER_CLASS} of each are needed")
        if os.path.isfile(path):   # an earlier attempt's, fitted on other scores
            os.remove(path)
        logger.warning("no %s written to %s: %s (dev audio was skipped: see above); the "
                       "model is written without one, so its scores are not calibrated. For "
                       "one, fine-tune again (%s) with more %s or the dev audio mended, or fit "
                       "one on trials of your own with wespeaker-py calibrate --model %s",
                       CALIBRATION_NAME, out_dir, why, option_setting("overwrite", True),
                       option_name("dev_speakers"), out_dir)
        return None, why
    save_calibration(path, calibration)
    return calibration, None
