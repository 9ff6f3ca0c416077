"""The request of a fine-tuning run, and OUT claimed for it.

The options checked before any work (:func:`checked_options`); what ``work/request.json``
records of the run (:func:`run_request`: the arguments, a digest of each data list and of
each file read from the source), so that a rerun tells its own run from another; OUT made
the run's (:func:`claim_output`: started, resumed, or found finished, and never one of the
run's inputs: :func:`check_out_holds_no_input`); and, for a finished run, whether audio it
could not read then reads now (:func:`check_audio_unchanged`).
"""
from __future__ import annotations

import os
import shutil
from typing import Any, Dict, List, Optional, Sequence, Tuple

from wespeaker_py.api.companion_files import companion_prefix, companions_at
from wespeaker_py.audio import is_pipe
from wespeaker_py.config.fields import FieldValueError, checked_fields
from wespeaker_py.errors import AudioInputError, WespeakerError
from wespeaker_py.finetune.config import (FinetuneOptions, OptionValueError, option_name,
                                          option_setting, with_loader_options_of)
from wespeaker_py.finetune.data import (MIN_DEV_SPEAKERS, FinetuneCorpus, FinetuneData,
                                        list_digests)
from wespeaker_py.finetune.dev import read_dev_utterance
from wespeaker_py.io.layout import (BAND_FILL_NAME, CALIBRATION_NAME, CONFIG_NAME, MEAN_NAME,
                                    REPORT_NAME, REQUEST_NAME, WEIGHTS_NAME, WORK_DIR)
from wespeaker_py.utils.atomic_files import read_json_or_none, write_json_atomically
from wespeaker_py.utils.list_jobs import is_fail_fraction
from wespeaker_py.utils.logging_utils import get_logger, listed_names
from wespeaker_py.utils.paths import file_digest
from wespeaker_py.utils.values import is_real_number, is_whole_number

logger = get_logger(__name__)

# what OUT holds of a finished run, in the order it is written: the model loads only once
# config.yaml is there (until then load_model names OUT an unfinished run), so a run killed
# while publishing leaves no model that loads without its calibration (a run whose dev
# trials cannot fit one writes none: see finetune.dev.dev_calibration)
PUBLISHED = (CALIBRATION_NAME, REPORT_NAME, WEIGHTS_NAME, CONFIG_NAME)
# request.json's key for the SHA-256 of each file the run reads from the source
SOURCE_FILES = "source_files"
# finetune.json's key for the data's files whose header could not be read when the run
# started: a rerun of the finished run compares them with the data as it reads it then
UNREADABLE_FILES = "unreadable_files"


class OutputExistsError(WespeakerError):
    """OUT holds something other than this fine-tuning run, or one of its inputs
    (exit status 2)."""


def checked_options(options: FinetuneOptions, max_fail_fraction: Optional[float]
                    ) -> FinetuneOptions:
    """``options`` with plain Python values (numpy's made Python's, so that request.json can
    record them); an :class:`OptionValueError` naming the first option of the wrong type or
    out of range, before any work: each as :class:`FinetuneOptions` declares it
    (:func:`~wespeaker_py.config.fields.checked_fields`), then the rules it cannot declare."""
    try:
        options = checked_fields(options)
    except FieldValueError as error:
        # OptionValueError's message shows the value: a wrong type is named after the wanted
        raise OptionValueError(error.key, error.value, error.wanted + (
            f", not {error.kind}" if error.kind else "")) from None
    if max_fail_fraction is not None and not is_real_number(max_fail_fraction):
        raise OptionValueError("max_fail_fraction", max_fail_fraction,
                               "must be a number in [0, 1] or None")
    problems = [("dev_speakers",
                 options.dev_speakers is None or options.dev_speakers >= MIN_DEV_SPEAKERS,
                 f"must be at least {MIN_DEV_SPEAKERS}"),
                # the epochs after the first freeze_epochs train everything; with one epoch
                # the default freeze_epochs 1 is let through (phases() warns)
                ("freeze_epochs", options.freeze_epochs < max(options.epochs, 2),
                 f"must be below {{epochs}} ({options.epochs}): the epochs after the first "
                 f"{{freeze_epochs}} train everything (0 trains everything from the start)"),
                ("max_fail_fraction",
                 max_fail_fraction is None or is_fail_fraction(max_fail_fraction),
                 "must be a number in [0, 1]")]
    for name, ok, problem in problems:
        if not ok:
            value = (max_fail_fraction if name == "max_fail_fraction"
                     else getattr(options, name))
            raise OptionValueError(name, value, problem)
    return options


def _is_within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (links resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def check_out_holds_no_input(out_dir: str, inputs: Sequence[Tuple[str, str]]) -> None:
    """:class:`OutputExistsError` when OUT is, or holds, one of the run's ``inputs``
    (``(what, path)``): writing OUT, or ``--overwrite`` replacing it, would destroy it."""
    for what, path in inputs:
        if _is_within(path, out_dir):
            raise OutputExistsError(f"{option_setting('out_dir', out_dir)} is or holds {what} "
                                    f"{path}; choose an {option_name('out_dir')} that holds "
                                    f"none of the inputs")


def run_inputs(checkpoint: str, config_path: str, data: FinetuneData
               ) -> List[Tuple[str, str]]:
    """``(what, path)`` of everything the run reads: the source's files, the data folders
    and their audio files (pipes aside)."""
    inputs = [("the source checkpoint", checkpoint), ("the source config", config_path),
              (f"the {option_name('data_dir')} folder", data.source)]
    if data.mix_source:
        inputs.append((f"the {option_name('mix_data')} folder", data.mix_source))
    wavs = sorted({entry.wav for entry in data.train + data.dev if not is_pipe(entry.wav)})
    return inputs + [("the audio file", wav) for wav in wavs]


_ABSENT = object()


def _differences(old: Any, new: Any, where: str = "") -> List[str]:
    """The dotted keys whose values differ between two requests (``lists.data/utt2spk``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [changed for key in sorted(set(old) | set(new))
                for changed in _differences(old.get(key, _ABSENT), new.get(key, _ABSENT),
                                            f"{where}.{key}" if where else key)]
    return [] if old == new else [where]


def _finished(out_dir: str) -> bool:
    """Whether OUT holds every file :func:`~wespeaker_py.finetune.run.finetune` publishes
    (the run finished): the calibration too, unless its ``finetune.json`` records why none
    was written (``calibration_skipped``: too few dev trials to fit one)."""
    if not all(os.path.isfile(os.path.join(out_dir, name)) for name in PUBLISHED
               if name != CALIBRATION_NAME):
        return False
    if os.path.isfile(os.path.join(out_dir, CALIBRATION_NAME)):
        return True
    report = read_json_or_none(os.path.join(out_dir, REPORT_NAME))
    return isinstance(report, dict) and bool(report.get("calibration_skipped"))


def claim_output(out_dir: str, request: Dict[str, Any], overwrite: bool) -> bool:
    """Make OUT ours; True when it already holds this run, finished. An unfinished run of
    this ``request`` resumes, with ``overwrite`` too: a command that carries --overwrite
    (a cluster job requeued after a preemption) goes on, as the resume advice says.
    ``overwrite`` replaces only an earlier fine-tuning run (a folder with
    ``work/request.json``): one with other arguments, or this one once finished, which then
    trains again."""
    request_path = os.path.join(out_dir, WORK_DIR, REQUEST_NAME)
    overwrite_option, out_option = option_setting("overwrite", True), option_name("out_dir")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutputExistsError(f"{option_setting('out_dir', out_dir)} is a file, not a folder")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not os.path.isfile(request_path):
            raise OutputExistsError(
                f"{out_dir} holds other files, not a fine-tuning run (it has no "
                f"{WORK_DIR}/{REQUEST_NAME}); {overwrite_option} only replaces an earlier "
                f"fine-tuning run: choose another {out_option}")
        recorded = with_loader_options_of(read_json_or_none(request_path), request)
        if isinstance(recorded, dict) and SOURCE_FILES not in recorded:
            # written before the source's files were recorded: they cannot be compared
            recorded[SOURCE_FILES] = request[SOURCE_FILES]
        changed = (None if recorded == request else "unreadable" if recorded is None else
                   "differs in " + ", ".join(_differences(recorded, request)))
        finished = _finished(out_dir)
        if not changed and not finished:
            logger.info("resuming the fine-tuning run in %s%s", out_dir,
                        f" (unfinished: {overwrite_option} starts only a finished run, or one "
                        f"with other arguments, again)" if overwrite else "")
        elif overwrite:
            logger.info("%s: removing the fine-tuning run in %s (%s) to start again",
                        overwrite_option, out_dir, f"{REQUEST_NAME} {changed}" if changed
                        else "finished, with the same request")
            shutil.rmtree(out_dir)
        elif changed:
            raise OutputExistsError(f"{out_dir} already holds a fine-tuning run with other "
                                    f"arguments or data ({REQUEST_NAME} {changed}); pass "
                                    f"{overwrite_option} to replace it, or choose another "
                                    f"{out_option}")
        else:
            return True
    os.makedirs(os.path.join(out_dir, WORK_DIR), exist_ok=True)
    write_json_atomically(request_path, request, indent=2, sort_keys=True)
    return False


def _audio_changes(report: Dict[str, Any], corpus: FinetuneCorpus) -> Tuple[List[str], List[str]]:
    """How the audio of a finished run's data differs now from what its ``report`` (its
    ``finetune.json``) records, as far as that tells cheaply (``corpus``: the data as read
    now): ``(mended, lost)``. Mended: files whose header could not be read then
    (:data:`UNREADABLE_FILES`; a record without it tells nothing) and can now, and dev
    utterances skipped at its evaluation (``dev_skipped``) that read now; lost: files read
    then that cannot be read now."""
    mended, lost = [], []
    recorded = report.get(UNREADABLE_FILES)
    unread_then = set(recorded) if isinstance(recorded, list) else set()
    if isinstance(recorded, list):
        now_read = sorted(unread_then - corpus.unreadable)
        if now_read:
            mended.append(f"{len(now_read)} file(s) could not be read then and can now "
                          f"({listed_names(now_read, 5)})")
        now_unread = sorted(corpus.unreadable - unread_then)
        if now_unread:
            lost.append(f"{len(now_unread)} file(s) were read then and cannot be now "
                        f"({listed_names(now_unread, 5)})")
    skipped = report.get("dev_skipped")
    rate = report.get("sample_rate")
    if isinstance(skipped, dict) and skipped and is_whole_number(rate):
        read_now = []
        for entry in corpus.entries:
            # a file unread then and read now is counted above
            if entry.key in skipped and corpus.readable(entry) and entry.wav not in unread_then:
                try:
                    read_dev_utterance(entry, rate)
                except AudioInputError:
                    continue
                read_now.append(entry.key)
        if read_now:
            mended.append(f"{len(read_now)} dev utterance(s) skipped at its evaluation read "
                          f"now ({listed_names(read_now, 5)})")
    return mended, lost


def check_audio_unchanged(report: Dict[str, Any], corpus: FinetuneCorpus,
                          out_dir: str) -> None:
    """:class:`OutputExistsError` when audio the finished run in ``out_dir`` (its
    ``report``) could not use reads now (:func:`_audio_changes`): its request (the lists,
    not the audio they name) is the same, but training again would use more of the data.
    Audio it used that cannot be read now is only warned about: the model stands as
    trained (audio removed to save space, say)."""
    mended, lost = _audio_changes(report, corpus)
    if lost:
        logger.warning("%s holds this fine-tuning run, finished; since then %s: the model "
                       "stays as it was trained with them", out_dir, "; ".join(lost))
    if mended:
        raise OutputExistsError(
            f"{out_dir} holds this fine-tuning run, finished, but the audio of its data has "
            f"changed since: {'; '.join(mended)}; pass {option_setting('overwrite', True)} "
            f"to train it again on the audio as it is now, or choose another "
            f"{option_name('out_dir')}")


def _source_files(source: str, checkpoint: str, config_path: str) -> Dict[str, str]:
    """SHA-256 of each file the run reads from the source: its checkpoint and config, and
    the companion files that its dev figures go through (its mean vector and band fills,
    by their names at ``source``'s companion prefix)."""
    used = companions_at(companion_prefix(source), [MEAN_NAME, BAND_FILL_NAME])
    return {name: file_digest(path) for name, path in
            [("checkpoint", checkpoint), ("config", config_path), *used.items()]}


def run_request(source: str, checkpoint: str, config_path: str, data: FinetuneData,
                options: FinetuneOptions) -> Dict[str, Any]:
    """What ``work/request.json`` records of the run: the source's files and a digest of
    each (:func:`_source_files`), the data folders, the options and a digest of each data
    list."""
    return {"source": os.path.abspath(checkpoint), "config": os.path.abspath(config_path),
            SOURCE_FILES: _source_files(source, checkpoint, config_path),
            "data": data.source, "mix_data": data.mix_source, "options": options.as_dict(),
            "lists": list_digests(data)}
