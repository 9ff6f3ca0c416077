"""What a fine-tuning run says at its end, from its ``finetune.json`` record.

- :func:`summary_line`: the dev figures before and after in one line, which
  ``wespeaker-py finetune`` prints and :func:`~wespeaker_py.finetune.finetune` logs;
- :func:`warn_if_worse`: the warning when the new model's dev EER is above the source's
  (the model is written all the same);
- :func:`next_steps`: the source's companion files (mean vector, window LDAs, band
  fills) are learnt from its embeddings and do not carry over: the commands that learn
  the new model's own.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from wespeaker_py.api.calibration import CALIBRATION_NAME
from wespeaker_py.api.companion_files import companion_prefix, companions_at, rate_templates
from wespeaker_py.diarization.options import NARROWBAND_WINDOW_LDA, WINDOW_LDA_NAME
from wespeaker_py.finetune.config import WORK_DIR
from wespeaker_py.io.layout import CONFIG_NAME, MEAN_NAME, WEIGHTS_NAME, EmbeddingSetLayout
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


def worse_than_source(dev: Mapping[str, Any]) -> bool:
    """Whether the new model's dev EER is above the source's."""
    return dev["after"]["eer"] > dev["before"]["eer"]


def what_to_try(report: Mapping[str, Any]) -> str:
    """The settings to try when the run made the model worse: a tenth of its ``--lr``,
    and unless a phase of the run froze the body already, a first epoch that trains the
    new head alone: ``--freeze body``, with ``--freeze_epochs 1`` when it was 0 (with it,
    ``--freeze body`` freezes nothing)."""
    options = report["options"]
    tries = [f"a lower --lr (e.g. {options['lr'] / 10:g})"]
    if not any(phase["freeze"] == "body" for phase in report["phases"]):
        if options["freeze_epochs"] == 0:
            tries.append("--freeze_epochs 1" if options["freeze"] == "body"
                         else "--freeze body --freeze_epochs 1")
        else:
            tries.append("--freeze body")
    return " or ".join(tries)


def warn_if_worse(report: Mapping[str, Any], out_dir: str) -> None:
    """Warn, with both figures and what to try, when the new model is worse on dev."""
    dev = report["dev"]
    if not worse_than_source(dev):
        return
    before, after = dev["before"], dev["after"]
    logger.warning("the fine-tuned model is worse than the source on the dev trials: EER "
                   "%.2f%% before, %.2f%% after; minDCF %.3f before, %.3f after. %s is "
                   "written all the same; try %s (with --overwrite, or another --out): see "
                   "%s", 100 * before["eer"], 100 * after["eer"], before["min_dcf"],
                   after["min_dcf"], out_dir, what_to_try(report), WORSE_SECTION)


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


def summary_line(report: Mapping[str, Any], out_dir: str) -> str:
    """The run's result in one line: the dev part, EER and minDCF before and after, and,
    when the new model is worse, that plainly, with what to try."""
    before, after = report["dev"]["before"], report["dev"]["after"]
    verdict = (f"WORSE than the source: try {what_to_try(report)}; "
               if worse_than_source(report["dev"]) else "")
    return (f"dev ({report['data']['dev_speakers']} speakers, {_dev_utterances(report)}; "
            f"{after['trials']} trials): EER {100 * before['eer']:.2f}% before, "
            f"{100 * after['eer']:.2f}% after; minDCF {before['min_dcf']:.3f} before, "
            f"{after['min_dcf']:.3f} after; {verdict}model in {out_dir}")


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
             wide_band_data: Optional[str]) -> Optional[str]:
    """The command that learns the new model's own companion file ``name`` (a model at
    ``rate``) from the Kaldi folder ``data`` (None for a DIR of segments, which those
    commands do not read); None for a name of no known form."""
    if name == MEAN_NAME:
        return _mean_vector_step(out_dir, data)
    window_lda = f"wespeaker-py window-lda --model {out_dir} --data {data or UTTERANCE_FILES}"
    if name == WINDOW_LDA_NAME:
        return f"{name}: {window_lda}"
    heard = {template: rate_in_name(template, name) for template in rate_templates()}
    heard = {template: found for template, found in heard.items() if found is not None}
    if not heard:
        return None
    template, low = next(iter(heard.items()))
    if low >= rate:
        return f"{name}: none needed, {out_dir} works at {rate} Hz"
    if template == NARROWBAND_WINDOW_LDA:
        return f"{name}: {window_lda} --heard_rate {low}"
    data = wide_band_data or f"<speech at {rate} Hz, e.g. the source's training data>"
    return f"{name}: wespeaker-py band-fill --model {out_dir} --data {data} --heard_rate {low}"


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


def next_steps(source: str, out_dir: str, folders: Mapping[str, str],
               report: Mapping[str, Any]) -> Optional[str]:
    """The line that says which of the source's companion files (at ``source``'s
    companion prefix; its calibration aside: the run fits a new one) did not carry over,
    and the command that learns each for the new model in ``out_dir``. ``folders``:
    ``data`` and ``mix_data`` (when given) -> a Kaldi folder of that data the commands
    read (for a DIR of segments, which they do not read, DIR itself: then those that need
    utterances name what to give instead); a band fill is learnt from the first holding
    files at the new rate. None when the source has none."""
    rate = report["sample_rate"]
    data = None if report["data"].get("segments") else folders["data"]
    steps = {name: _relearn(name, out_dir, data, rate, _wide_band_folder(report, folders))
             for name in companions_at(companion_prefix(source)) if name != CALIBRATION_NAME}
    steps = {name: step for name, step in steps.items() if step}
    if not steps:
        return None
    return (f"next steps: the source's {', '.join(steps)} did not carry over to {out_dir} "
            f"(learnt from the source's embeddings, which fine-tuning changed); learn the new "
            f"model's own: " + "; ".join(steps.values()))
