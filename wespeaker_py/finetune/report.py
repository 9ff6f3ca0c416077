"""What a fine-tuning run says at its end, from its ``finetune.json`` record.

- :func:`verdict`: whether the dev trials tell the new model from the source (better,
  worse, EER and minDCF disagreeing, or no measurable difference);
- :func:`summary_line`: the dev figures before and after in one line, with that verdict,
  which ``wespeaker-py finetune`` prints and :func:`~wespeaker_py.finetune.finetune` logs;
- :func:`warn_if_worse`: the warning when the new model is worse on dev (the model is
  written all the same);
- :func:`next_steps`: the source's companion files (mean vector, window LDAs, band fills)
  do not carry over: the commands that learn the new model's own.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

from wespeaker_py.api.companion_files import companion_prefix, companions_at, rate_templates
from wespeaker_py.finetune.config import option_name, option_setting
from wespeaker_py.io.layout import (CALIBRATION_NAME, CONFIG_NAME, MEAN_NAME,
                                    NARROWBAND_WINDOW_LDA, WEIGHTS_NAME, WINDOW_LDA_NAME,
                                    WORK_DIR, EmbeddingSetLayout)
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.paths import rate_in_name

logger = get_logger(__name__)

# what window-lda's --data and calibrate's --wav_scp are to be when DIR holds segments,
# which they do not read
UTTERANCE_FILES = "<a Kaldi folder of one file per utterance (window-lda reads no segments)>"
DEV_UTTERANCE_FILES = ("<a wav.scp of the dev utterances, one file each (calibrate reads no "
                       "segments)>")
# docs/finetune.md's section on a fine-tuning that made the model worse
WORSE_SECTION = "docs/finetune.md, 'When fine-tuning makes it worse'"
# the verdicts of :func:`verdict` (finetune.json's dev.verdict)
BETTER = "better"
WORSE = "worse"
DISAGREE = "EER and minDCF disagree"
NO_DIFFERENCE = "no measurable difference"
# below this, two EERs or minDCFs of the same trials are taken as equal (float rounding)
FIGURE_TOLERANCE = 1e-9
# why a companion file of the source does not carry over: one learnt from its embeddings,
# and a band fill, a map between log-mel bins that no weights enter
FROM_EMBEDDINGS = "learnt from the source's embeddings, which fine-tuning changed"
BAND_FILL_REASON = ("a map between log-mel bins, not learnt from embeddings, but the new model "
                    "was trained, and its calibration fitted, without one")


def _trial_counts(dev: Mapping[str, Any], data: Optional[Mapping[str, Any]]
                  ) -> Tuple[int, int]:
    """The target and nontarget dev trials scored; for a record written before they were
    kept, those of the split (``data``: the record's ``data``)."""
    after = dev["after"]
    if "target_trials" in after:
        return after["target_trials"], after["nontarget_trials"]
    return data["dev_target_trials"], data["dev_nontarget_trials"]


def eer_resolution(dev: Mapping[str, Any], data: Optional[Mapping[str, Any]] = None) -> float:
    """What one trial of the smaller kind moves the dev EER by (as a fraction): 1 over
    the fewer of the target and nontarget trials."""
    return 1.0 / min(_trial_counts(dev, data))


def verdict(dev: Mapping[str, Any], data: Optional[Mapping[str, Any]] = None) -> str:
    """What the dev figures (``dev``: a record's ``dev``; ``data`` its ``data``, for older
    records) say of the new model against the source.

    :data:`NO_DIFFERENCE` when the EER moved by no more than one trial of the smaller kind
    (:func:`eer_resolution`); otherwise :data:`WORSE` (EER up, minDCF not lower) or
    :data:`BETTER` (EER down, minDCF not higher), or :data:`DISAGREE` when minDCF moved
    the other way."""
    before, after = dev["before"], dev["after"]
    eer_change = after["eer"] - before["eer"]
    dcf_change = after["min_dcf"] - before["min_dcf"]
    if abs(eer_change) <= eer_resolution(dev, data) + FIGURE_TOLERANCE:
        return NO_DIFFERENCE
    if eer_change > 0:
        return WORSE if dcf_change > -FIGURE_TOLERANCE else DISAGREE
    return BETTER if dcf_change < FIGURE_TOLERANCE else DISAGREE


def worse_than_source(dev: Mapping[str, Any], data: Optional[Mapping[str, Any]] = None
                      ) -> bool:
    """Whether the new model is measurably worse on dev than the source (:func:`verdict`)."""
    return verdict(dev, data) == WORSE


def what_to_try(report: Mapping[str, Any]) -> str:
    """The settings to try when the run made the model worse: a tenth of its ``lr``,
    and unless a phase of the run froze the body already, a first epoch that trains the
    new head alone: ``freeze`` body, with ``freeze_epochs`` 1 when it was 0 (with it,
    ``freeze`` body freezes nothing). Named as the caller names the options
    (:func:`~wespeaker_py.finetune.config.option_setting`)."""
    options = report["options"]
    tries = [f"a lower {option_name('lr')} (e.g. {options['lr'] / 10:g})"]
    if not any(phase["freeze"] == "body" for phase in report["phases"]):
        freeze_body, one_epoch = option_setting("freeze", "body"), option_setting(
            "freeze_epochs", 1)
        if options["freeze_epochs"] == 0:
            tries.append(one_epoch if options["freeze"] == "body"
                         else f"{freeze_body} {one_epoch}")
        else:
            tries.append(freeze_body)
    return " or ".join(tries)


def warn_if_worse(report: Mapping[str, Any], out_dir: str) -> None:
    """Warn, with both figures and what to try, when the new model is worse on dev."""
    dev = report["dev"]
    if not worse_than_source(dev, report["data"]):
        return
    before, after = dev["before"], dev["after"]
    logger.warning("the fine-tuned model is worse than the source on the dev trials: EER "
                   "%.2f%% before, %.2f%% after; minDCF %.3f before, %.3f after. %s is "
                   "written all the same; try %s (with %s, or another %s): see %s",
                   100 * before["eer"], 100 * after["eer"], before["min_dcf"],
                   after["min_dcf"], out_dir, what_to_try(report),
                   option_setting("overwrite", True), option_name("out_dir"), WORSE_SECTION)


def _dev_utterances(report: Mapping[str, Any]) -> str:
    """``19 utterances: 8 at 8000 Hz, 11 at 16000 Hz``, and the rate they were heard at
    when it is below some of their files' rate (the new model's)."""
    data = report["data"]
    by_rate = {int(rate): count for rate, count in
               (data.get("dev_utterances_by_rate") or {}).items()}
    text = f"{data['dev_utterances']} utterances"
    if len(by_rate) == 1:
        text += f" at {next(iter(by_rate))} Hz"
    elif by_rate:
        text += ": " + ", ".join(f"{count} at {rate} Hz"
                                 for rate, count in sorted(by_rate.items()))
    if any(rate > report["sample_rate"] for rate in by_rate):
        text += f", heard at {report['sample_rate']} Hz (the new model's rate) by both models"
    return text


def _verdict_text(report: Mapping[str, Any]) -> str:
    """The summary line's words on :func:`verdict` (none for a better model), each ending
    in ``; ``."""
    dev = report["dev"]
    found = verdict(dev, report["data"])
    if found == WORSE:
        return f"WORSE than the source: try {what_to_try(report)}; "
    if found == DISAGREE:
        eer_up = dev["after"]["eer"] > dev["before"]["eer"]
        return (f"EER {'worse' if eer_up else 'better'} but minDCF "
                f"{'better' if eer_up else 'worse'}: no verdict; ")
    if found == NO_DIFFERENCE:
        return (f"no measurable difference on {dev['after']['trials']} trials (one trial of "
                f"the smaller kind is {100 * eer_resolution(dev, report['data']):.2f}% of "
                f"EER); ")
    return ""


def summary_line(report: Mapping[str, Any], out_dir: str) -> str:
    """The run's result in one line: the dev part, EER and minDCF before and after, the
    :func:`verdict` on them (a worse model plainly, with what to try), and, for a run whose
    dev trials were too few to fit a calibration, that none was written."""
    before, after = report["dev"]["before"], report["dev"]["after"]
    skipped = report.get("calibration_skipped")
    no_calibration = f"no {CALIBRATION_NAME} written ({skipped}); " if skipped else ""
    return (f"dev ({report['data']['dev_speakers']} speakers, {_dev_utterances(report)}; "
            f"{after['trials']} trials): EER {100 * before['eer']:.2f}% before, "
            f"{100 * after['eer']:.2f}% after; minDCF {before['min_dcf']:.3f} before, "
            f"{after['min_dcf']:.3f} after; {_verdict_text(report)}{no_calibration}model in "
            f"{out_dir}")


def _calibrate_again(out_dir: str, data: Optional[str]) -> str:
    """The command that fits ``out_dir``'s calibration on the run's dev trials again,
    their audio in ``data``'s wav.scp (None for a DIR of segments, which calibrate does
    not read)."""
    wav_scp = os.path.join(data, "wav.scp") if data else DEV_UTTERANCE_FILES
    return (f"wespeaker-py calibrate --model {out_dir} --trials "
            f"{os.path.join(out_dir, WORK_DIR, 'data', 'dev', 'trials')} --wav_scp {wav_scp}")


def _mean_vector_step(out_dir: str, data: Optional[str]) -> str:
    """How to give the new model a mean vector: extract its training list's mean, then fit
    the calibration again (it records the mean vector its scores were made with)."""
    work = os.path.join(out_dir, WORK_DIR)
    mean_set = EmbeddingSetLayout(os.path.join(work, "mean"))
    return (f"{MEAN_NAME}: {out_dir} scores without one, as its calibration was fitted; for "
            f"one, python -m wespeaker_py.bin.extract --config "
            f"{os.path.join(out_dir, CONFIG_NAME)} --model_path "
            f"{os.path.join(out_dir, WEIGHTS_NAME)} --data_type raw --data_list "
            f"{os.path.join(work, 'data', 'train', 'raw.list')} --embed_ark "
            f"{mean_set.embeddings_ark} --mean_vec True, copy "
            f"{mean_set.mean_path} into {out_dir}, then calibrate again: "
            f"{_calibrate_again(out_dir, data)}")


def _relearn(name: str, out_dir: str, data: Optional[str], rate: int,
             wide_band_data: Optional[str]) -> Optional[Tuple[str, str]]:
    """Why the companion file ``name`` does not carry over, and the step that learns the
    new model's own (a model at ``rate``) from the Kaldi folder ``data`` (None for a DIR
    of segments, which those commands do not read); None for a name of no known form, or
    one for a rate at or above ``rate`` (none needed)."""
    if name == MEAN_NAME:
        return FROM_EMBEDDINGS, _mean_vector_step(out_dir, data)
    window_lda = f"wespeaker-py window-lda --model {out_dir} --data {data or UTTERANCE_FILES}"
    if name == WINDOW_LDA_NAME:
        return FROM_EMBEDDINGS, f"{name}: {window_lda}"
    heard = {template: rate_in_name(template, name) for template in rate_templates()}
    heard = {template: found for template, found in heard.items() if found is not None}
    if not heard:
        return None
    template, low = next(iter(heard.items()))
    if low >= rate:
        return None
    if template == NARROWBAND_WINDOW_LDA:
        return FROM_EMBEDDINGS, f"{name}: {window_lda} --heard_rate {low}"
    # the calibration records the band fill its scores of audio at that rate went through
    wide = wide_band_data or f"<speech at {rate} Hz, e.g. the source's training data>"
    return BAND_FILL_REASON, (f"{name}: wespeaker-py band-fill --model {out_dir} --data {wide} "
                              f"--heard_rate {low}, then calibrate again: "
                              f"{_calibrate_again(out_dir, data)}")


def _wide_band_folder(report: Mapping[str, Any], folders: Mapping[str, str]
                      ) -> Optional[str]:
    """Of the run's data folders (``folders``: role -> Kaldi folder), the first holding
    files at the new model's rate or above: speech a band fill can learn from."""
    rate, data = report["sample_rate"], report["data"]
    for role, rates in (("data", data["files_by_rate"]),
                        ("mix_data", data.get("mix_files_by_rate") or {})):
        if role in folders and any(int(found) >= rate for found in rates):
            return folders[role]
    return None


def _why_not_carried(reasons: Mapping[str, str]) -> str:
    """``{name: reason}`` in words: the reason alone when all share it, else each with the
    names it holds for."""
    by_reason: Dict[str, List[str]] = {}
    for name, reason in reasons.items():
        by_reason.setdefault(reason, []).append(name)
    if len(by_reason) == 1:
        return next(iter(by_reason))
    return "; ".join(f"{', '.join(names)}: {reason}" for reason, names in by_reason.items())


def next_steps(source: str, out_dir: str, folders: Mapping[str, str],
               report: Mapping[str, Any]) -> Optional[str]:
    """The line that says which of the source's companion files (at ``source``'s
    companion prefix; its calibration aside: the run fits a new one) did not carry over,
    why, and the command that learns each for the new model in ``out_dir``. ``folders``:
    ``data`` and ``mix_data`` (when given) -> a Kaldi folder of that data the commands
    read (for a DIR of segments, which they do not read, DIR itself: then those that need
    utterances name what to give instead); a band fill is learnt from the first holding
    files at the new rate. Files for a rate the new model does not go below are left out.
    None when no file is left."""
    rate = report["sample_rate"]
    data = None if report["data"].get("segments") else folders["data"]
    steps = {name: _relearn(name, out_dir, data, rate, _wide_band_folder(report, folders))
             for name in companions_at(companion_prefix(source)) if name != CALIBRATION_NAME}
    steps = {name: step for name, step in steps.items() if step}
    if not steps:
        return None
    why = _why_not_carried({name: reason for name, (reason, _) in steps.items()})
    return (f"next steps: the source's {', '.join(steps)} did not carry over to {out_dir} "
            f"({why}); learn the new model's own: "
            + "; ".join(step for _, step in steps.values()))
