"""Fine-tune a trained model on a folder of speakers: :func:`finetune`.

    source model + DIR -> read (data.py) -> split (split.py) -> body-only init
    weights -> one or two training phases (config.py; the trainer of
    :mod:`wespeaker_py.train`) -> average -> dev EER before and after ->
    calibration -> OUT

OUT is a model folder that :func:`~wespeaker_py.api.load_model` takes:
``config.yaml``, ``avg_model.pt``, ``calibration.json`` (fitted on the dev trials; none
when too few were scored: :func:`_dev_calibration`) and ``finetune.json`` (what was done,
and the dev figures before and after), written only once the new model is evaluated and
calibrated (until then it is the last phase's experiment folder), the model files last
(:data:`PUBLISHED`);
a new model worse on dev than the source is written too, with a warning. The end of a
run logs (or, for the command, prints) the summary line of
:mod:`~wespeaker_py.finetune.report` and the next steps for the source's companion
files, which do not carry over. ``OUT/work`` keeps the lists
(the split's, and in ``work/lists`` each data folder's as read, for those next steps)
and each phase's experiment folder: a killed (or failed) run, started again with the
same arguments, resumes from the newest checkpoint (the trainer's resume) with the dev
speakers its lists were written with; a finished one is left as it is, unless the audio
it could not read then reads now (:func:`_check_audio_unchanged`).
The same arguments: ``work/request.json`` records them with a digest of each data list
(wav.scp, utt2spk, segments; for a folder of speaker folders, of the lists made from
it) and of each file read from the source (:func:`_source_files`), so that a data
folder edited in place, or a source replaced, is another request. The phases are planned
once, when the run starts, and kept in ``work`` (:data:`PLAN_NAME`). OUT never holds the
run's inputs, and ``overwrite`` only replaces an earlier fine-tuning run (a folder with
``work/request.json``): one with other arguments, or this one once finished, which trains
again; an unfinished run of the same arguments resumes with ``overwrite`` too.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
import typing
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from wespeaker_py.api.calibration import (MIN_TRIALS_PER_CLASS, Calibration, TooFewTrialsError,
                                          save_calibration)
from wespeaker_py.api.companion_files import companion_prefix, companions_at
from wespeaker_py.api.loading import load_model, recipe_mean_vectors, torch_model_files
from wespeaker_py.audio import INT16_SCALE, apply_vad, is_pipe, open_audio, read_checked
from wespeaker_py.config import ConfigError, DatasetArgs, ModelConfig, TrainConfig
from wespeaker_py.config.schema import MIN_BATCH_SIZE
from wespeaker_py.dataset.lists import TableEntry
from wespeaker_py.errors import AudioInputError, WespeakerError
from wespeaker_py.finetune.config import (FREEZE_CHOICES, FinetuneOptions, OptionValueError,
                                          check_device, check_phases, chosen_rate,
                                          named_as_flags, option_name, option_setting,
                                          phase_config, phases, read_source_config,
                                          with_loader_options_of)
from wespeaker_py.finetune.data import (MIN_DEV_SPEAKERS, FinetuneCorpus, FinetuneData,
                                        list_digests, read_finetune_corpus, write_data_lists,
                                        write_lists)
from wespeaker_py.finetune.report import WORSE, next_steps, summary_line, verdict, warn_if_worse
from wespeaker_py.finetune.split import kept_split, split_finetune_data, warn_about_split
from wespeaker_py.io.layout import (BAND_FILL_NAME, CALIBRATION_NAME, CONFIG_NAME, MEAN_NAME,
                                    REPORT_NAME, REQUEST_NAME, WEIGHTS_NAME, WORK_DIR)
from wespeaker_py.runtime.checkpoint import (FRONTEND_PREFIX, HEAD_PREFIX, model_state_of,
                                             read_checkpoint)
from wespeaker_py.scoring.metrics import compute_eer, compute_min_dcf
from wespeaker_py.train.average import average_checkpoints
from wespeaker_py.train.checkpoint import checkpoints_by_epoch
from wespeaker_py.train.plan import Layout
from wespeaker_py.utils.atomic_files import (atomic_open, atomic_path, read_json_or_none,
                                             save_torch, write_json_atomically)
from wespeaker_py.utils.list_jobs import is_fail_fraction
from wespeaker_py.utils.logging_utils import get_logger, listed_names
from wespeaker_py.utils.paths import file_digest
from wespeaker_py.utils.threads import using_threads
from wespeaker_py.utils.values import is_real_number, is_whole_number

logger = get_logger(__name__)

INIT_NAME = "init_body.pt"
# in OUT/work: the phases planned when the run started, which its resumption keeps
PLAN_NAME = "phases.json"
# what OUT holds of a finished run, in the order it is written: the model loads only once
# config.yaml is there (until then load_model names OUT an unfinished run), so a run killed
# while publishing leaves no model that loads without its calibration (a run whose dev
# trials cannot fit one writes none: see _dev_calibration)
PUBLISHED = (CALIBRATION_NAME, REPORT_NAME, WEIGHTS_NAME, CONFIG_NAME)
# request.json's key for the SHA-256 of each file the run reads from the source
SOURCE_FILES = "source_files"
# finetune.json's key for the data's files whose header could not be read when the run
# started: a rerun of the finished run compares them with the data as it reads it then
UNREADABLE_FILES = "unreadable_files"
# the dev embedding passes show a progress bar from this much dev audio on (a few seconds
# of embedding for the mini recipe's ECAPA-TDNN on two CPU threads; more for larger models)
DEV_PROGRESS_SECONDS = 300.0
# in a phase's folder: the phase stopped at its last epoch for skipping too much of its data
# (holds the trainer's message)
SKIPPED_DATA_MARK = "stopped_on_skipped_data.txt"
WEIGHTS_NOTE = (
    "The body's weights are reused as they are and a new head is trained for the data's "
    "speakers. At another sample rate the fbank keeps its number of mel bins, frame length "
    "and shift in ms; the bins then span 0 to half the new rate, so the first layer sees a "
    "stretched spectrum until fine-tuning adapts it.")


def rerun_advice() -> str:
    """How the caller runs this fine-tuning again: the same command, or the same call."""
    return ("run the same wespeaker-py finetune command again" if named_as_flags()
            else "call finetune() again with the same arguments")


def resume_hint() -> str:
    """What a phase stopped by a signal (or Ctrl-C) says: the run resumes from its newest
    checkpoint when started again."""
    return f"{rerun_advice()} to resume"


def _raise_fail_fraction(on_last_epoch: bool) -> str:
    """In place of the trainer's advice to raise the config key, which finetune writes
    itself: a phase that stopped after an epoch skipped too much of its data goes on from
    that epoch, or, stopped at its last epoch (whose checkpoint would otherwise make the
    phase look finished), trains that epoch again."""
    flags = named_as_flags()
    # the command's flag, not the config key of the trainer's message
    raise_it = (f"raise {'wespeaker-py finetune ' if flags else ''}"
                f"{option_name('max_fail_fraction')} (1: never stop)")
    if on_last_epoch:
        return (f"{raise_it}; either way, {rerun_advice()}: it trains that epoch again in "
                f"place of the saved one")
    again = "run the command again" if flags else "call finetune() again"
    return f"{raise_it} and {again}: it goes on from the saved epoch"


class OutputExistsError(WespeakerError):
    """OUT holds something other than this fine-tuning run, or one of its inputs
    (exit status 2)."""


# how _typed_options checks a value for an option annotated with each type, and names it
_TYPE_CHECKS: Dict[type, Tuple[Callable[[Any], bool], str]] = {
    int: (is_whole_number, "a whole number"), float: (is_real_number, "a number")}


def _option_types() -> Dict[str, Tuple[type, bool]]:
    """``{option: (type, may be None)}`` of each field of :class:`FinetuneOptions`, from its
    annotation (``Optional[int]``: ``(int, True)``)."""
    types = {}
    for name, hint in typing.get_type_hints(FinetuneOptions).items():
        args = typing.get_args(hint)
        optional = type(None) in args
        types[name] = (next(arg for arg in args if arg is not type(None)) if optional
                       else hint, optional)
    return types


def _typed_options(options: FinetuneOptions) -> FinetuneOptions:
    """``options`` with plain ``int`` and ``float`` values (numpy's made Python's, so that
    request.json can record them); an :class:`OptionValueError` for a value of another type
    (``sample_rate="8000"``). Text options (``freeze``) are left to the check of their
    choices in :func:`_checked_options`."""
    plain = {}
    for name, (kind, optional) in _option_types().items():
        value = getattr(options, name)
        if kind is str or (value is None and optional):
            continue
        is_kind, described = _TYPE_CHECKS[kind]
        if not is_kind(value):
            raise OptionValueError(name, value, f"must be {described}"
                                   + (" or None" if optional else "")
                                   + f", not {type(value).__name__}")
        plain[name] = kind(value)
    return dataclasses.replace(options, **plain)


def _checked_options(options: FinetuneOptions, max_fail_fraction: Optional[float]
                     ) -> FinetuneOptions:
    """``options`` with plain Python values; an :class:`OptionValueError` naming the first
    option of the wrong type or out of range, before any work."""
    options = _typed_options(options)
    if max_fail_fraction is not None and not is_real_number(max_fail_fraction):
        raise OptionValueError("max_fail_fraction", max_fail_fraction,
                               "must be a number in [0, 1] or None")
    problems = [("epochs", options.epochs >= 1, "must be at least 1"),
                ("lr", options.lr > 0, "must be positive"),
                ("margin", options.margin >= 0, "must be >= 0"),
                ("freeze", options.freeze in FREEZE_CHOICES,
                 f"must be one of {', '.join(FREEZE_CHOICES)}"),
                ("freeze_epochs", options.freeze_epochs >= 0, "must be >= 0"),
                ("sample_rate", options.sample_rate is None or options.sample_rate >= 4000,
                 "must be at least 4000"),
                ("dev_speakers",
                 options.dev_speakers is None or options.dev_speakers >= MIN_DEV_SPEAKERS,
                 f"must be at least {MIN_DEV_SPEAKERS}"),
                ("num_avg", options.num_avg >= 1, "must be at least 1"),
                # the model's BatchNorm layers need two utterances per training batch
                ("batch_size", options.batch_size is None or options.batch_size >= MIN_BATCH_SIZE,
                 f"must be at least {MIN_BATCH_SIZE} (BatchNorm after pooling needs two "
                 f"utterances per batch); leave it out for the source config's"),
                ("num_workers", options.num_workers is None or options.num_workers >= 0,
                 "must be >= 0"),
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


def _check_out_holds_no_input(out_dir: str, inputs: Sequence[Tuple[str, str]]) -> None:
    """:class:`OutputExistsError` when OUT is, or holds, one of the run's ``inputs``
    (``(what, path)``): writing OUT, or ``--overwrite`` replacing it, would destroy it."""
    for what, path in inputs:
        if _is_within(path, out_dir):
            raise OutputExistsError(f"{option_setting('out_dir', out_dir)} is or holds {what} "
                                    f"{path}; choose an {option_name('out_dir')} that holds "
                                    f"none of the inputs")


def _run_inputs(checkpoint: str, config_path: str, data: FinetuneData
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
    """Whether OUT holds every file :func:`_finetune` publishes (the run finished): the
    calibration too, unless its ``finetune.json`` records why none was written
    (``calibration_skipped``: too few dev trials to fit one)."""
    if not all(os.path.isfile(os.path.join(out_dir, name)) for name in PUBLISHED
               if name != CALIBRATION_NAME):
        return False
    if os.path.isfile(os.path.join(out_dir, CALIBRATION_NAME)):
        return True
    report = read_json_or_none(os.path.join(out_dir, REPORT_NAME))
    return isinstance(report, dict) and bool(report.get("calibration_skipped"))


def _claim_output(out_dir: str, request: Dict[str, Any], overwrite: bool) -> bool:
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
                    _read_dev_utterance(entry, rate)
                except AudioInputError:
                    continue
                read_now.append(entry.key)
        if read_now:
            mended.append(f"{len(read_now)} dev utterance(s) skipped at its evaluation read "
                          f"now ({listed_names(read_now, 5)})")
    return mended, lost


def _check_audio_unchanged(report: Dict[str, Any], corpus: FinetuneCorpus,
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


def _write_body_init(checkpoint: str, path: str, left_out: Sequence[str] = ()) -> None:
    """The source's weights without its head (the new head starts from random weights) and
    without the tensors named in ``left_out`` (see :func:`_rate_bound_buffers`). An existing
    ``path`` is kept unless it holds one of them (written by an earlier version)."""
    if os.path.isfile(path) and not (left_out and
                                     set(left_out) & set(read_checkpoint(path, lazy=True))):
        return
    state = model_state_of(read_checkpoint(checkpoint))
    save_torch({key: value for key, value in state.items()
                if not key.startswith(HEAD_PREFIX) and key not in left_out}, path)


def _rate_bound_buffers(dataset_args: DatasetArgs, rate: int) -> List[str]:
    """State keys of the source front-end's buffers when training changes its rate to
    ``rate``: TFMel's DFT kernels and mel banks are computed from its window, hop and rate
    when it is built, never learnt, so the new rate's front-end makes its own (the
    trainer's model_init takes a state without any of them). Its parameters, if any, are
    kept. Empty at the source's rate, or when the front-end is not inside the model (fbank).
    """
    if rate == dataset_args.resample_rate or dataset_args.frontend == "fbank":
        return []
    from wespeaker_py.frontend.factory import build_frontend, built_buffers
    return [FRONTEND_PREFIX + name
            for name in built_buffers(build_frontend(dataset_args, pretrained=False))]


def _top_level_parameters(model_config: ModelConfig) -> List[str]:
    """Names of the speaker model's top-level modules that hold parameters, in order."""
    from wespeaker_py.runtime.builder import build_untrained
    model = build_untrained(model_config)   # on the meta device: names only
    return [name for name, module in model.named_children()
            if any(True for _ in module.parameters())]


def _phase_trains(freeze: str) -> str:
    """What trains in a phase that freezes ``freeze`` (see :func:`_frozen_prefixes`)."""
    return {"body": "the new head only", "front": "all but the first layer"}.get(
        freeze, "everything")


def _phase_label(freeze: str) -> str:
    """The word a phase that freezes ``freeze`` puts before its epochs in its progress bars
    and log lines (``frozen epoch 1/1``, ``full epoch 3/5``): each phase counts from 1."""
    return "full" if freeze == "none" else "frozen"


def _frozen_prefixes(freeze: str, modules: List[str]) -> List[str]:
    if freeze == "front":
        return [modules[0] + "."]
    if freeze == "body":
        return [name + "." for name in modules]
    return []


def _reopen_last_epoch(last: str, mark: str) -> None:
    """Undo a phase's stop at its last epoch on skipped data (``mark``, see
    :data:`SKIPPED_DATA_MARK`): remove that epoch's checkpoint ``last``, so that the phase
    resumes from the one before it (or from its start), then the mark."""
    logger.info("%s: the phase stopped at its last epoch for skipping too much of its data; "
                "training that epoch again", mark)
    # in this order, a run killed in between still trains the epoch again
    for path in (last, mark):
        if os.path.isfile(path):
            os.remove(path)


def _train_phase(config: Dict[str, Any], label: str, note_narrow_band: bool) -> str:
    """Train one phase (resuming its newest checkpoint); return its last checkpoint.

    ``label``: the phase's word in the trainer's progress bars and log lines;
    ``note_narrow_band``: whether the trainer warns about narrow-band utterances (the first
    phase only: every phase reads the same data). An epoch that skipped too much of its
    data stops the phase with the trainer's message, whose advice to raise the config key
    becomes :func:`_raise_fail_fraction`'s (finetune writes the config itself). Stopped
    at its last epoch, the phase is marked (:data:`SKIPPED_DATA_MARK`) and a rerun trains
    that epoch again rather than take its checkpoint as the phase's end."""
    from wespeaker_py.train.trainer import RAISE_FAIL_FRACTION as RAISE_CONFIG_KEY
    from wespeaker_py.train.trainer import TrainingDataError, run_training
    layout = Layout(config["exp_dir"])
    last = layout.checkpoint_path(config["num_epochs"])
    mark = os.path.join(config["exp_dir"], SKIPPED_DATA_MARK)
    if os.path.isfile(mark):
        _reopen_last_epoch(last, mark)
    elif os.path.isfile(last):
        logger.info("%s is trained", config["exp_dir"])
        return last
    done = checkpoints_by_epoch(layout.model_dir)
    if done:
        newest = done[-1]
        config = dict(config, checkpoint=os.path.join(layout.model_dir, newest))
        logger.info("resuming %s from %s", config["exp_dir"], newest)
    try:
        run_training(TrainConfig.from_dict(config), resume_hint=resume_hint(), label=label,
                     note_narrow_band=note_narrow_band)
    except ConfigError as error:
        raise ConfigError(f"fine-tuning config of {config['exp_dir']}: {error}") from None
    except TrainingDataError as error:
        message = str(error)
        if not message.endswith(RAISE_CONFIG_KEY):   # not the check of skipped data
            raise
        # the last checkpoint is absent before training: present now, the stop was there
        on_last = os.path.isfile(last)
        if on_last:
            with atomic_open(mark, "w", encoding="utf-8") as out:
                out.write(message + "\n")
        raise TrainingDataError(message.removesuffix(RAISE_CONFIG_KEY)
                                + _raise_fail_fraction(on_last)) from None
    return last


DevAudio = Dict[int, Dict[str, np.ndarray]]  # heard rate -> {utterance: samples at it}


def _read_dev_utterance(entry: TableEntry, rate: int) -> Tuple[int, np.ndarray]:
    """The rate ``entry``'s audio is heard at (its file's, or ``rate`` when that is lower)
    and its [-1, 1] samples at that rate, segments cut out; :class:`AudioInputError` for
    audio that cannot be read (missing, truncated, silent, ...)."""
    with open_audio(entry.wav) as handle:
        heard = min(int(handle.samplerate), rate)
        voiced = apply_vad(handle, entry.vad) if entry.vad else handle
        # the int16 scale; arrays passed back in are read as [-1, 1] floats
        return heard, read_checked(voiced, heard) / INT16_SCALE


def _dev_audio(data: FinetuneData, rate: int) -> Tuple[DevAudio, Dict[str, str]]:
    """The dev utterances (segments cut out, as training reads them) by the rate they are
    heard at -- their file's own, or ``rate`` when that is lower -- as [-1, 1] samples at
    that rate; and ``{utterance: why}`` of those that cannot be read, each skipped with a
    warning naming its file (their trials drop out)."""
    audio: DevAudio = {}
    skipped: Dict[str, str] = {}
    for entry in data.dev:
        try:
            heard, samples = _read_dev_utterance(entry, rate)
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


def _score_dev(model, audio: DevAudio, trials: List, what: str) -> Dict[str, Any]:
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


def _load_source(source: str, device: Optional[str], config: Optional[str]):
    """The source model, for the dev figures before fine-tuning. An experiment folder
    whose recipe scored with a mean vector is said to be scored without one here, in
    place of load_model's advice of ``mean_vec=``, a setting finetune lacks."""
    model = load_model(source, device=device, config=config, note_recipe_mean=False)
    if model.mean_vec is None and recipe_mean_vectors(source):
        logger.info("%s: its recipe scored with a mean vector subtracted; the dev scores "
                    "before and after fine-tuning are cosines without one, as the new model "
                    "scores", source)
    return model


def _publish(staged_dir: str, out_dir: str) -> None:
    """Copy the evaluated model's ``avg_model.pt``, then its ``config.yaml``, from the
    experiment folder ``staged_dir`` into OUT, each file atomically: the last of
    :data:`PUBLISHED`, written once OUT holds the calibration and the record."""
    staged_layout = Layout(staged_dir)
    for name, staged in ((WEIGHTS_NAME, staged_layout.avg_model_path),
                         (CONFIG_NAME, staged_layout.config_path)):
        with atomic_path(os.path.join(out_dir, name)) as tmp:
            shutil.copyfile(staged, tmp)


def _source_files(source: str, checkpoint: str, config_path: str) -> Dict[str, str]:
    """SHA-256 of each file the run reads from the source: its checkpoint and config, and
    the companion files that its dev figures go through (its mean vector and band fills,
    by their names at ``source``'s companion prefix)."""
    used = companions_at(companion_prefix(source), [MEAN_NAME, BAND_FILL_NAME])
    return {name: file_digest(path) for name, path in
            [("checkpoint", checkpoint), ("config", config_path), *used.items()]}


def _request(source: str, checkpoint: str, config_path: str, data: FinetuneData,
             options: FinetuneOptions) -> Dict[str, Any]:
    """What ``work/request.json`` records of the run: the source's files and a digest of
    each (:func:`_source_files`), the data folders, the options and a digest of each data
    list."""
    return {"source": os.path.abspath(checkpoint), "config": os.path.abspath(config_path),
            SOURCE_FILES: _source_files(source, checkpoint, config_path),
            "data": data.source, "mix_data": data.mix_source, "options": options.as_dict(),
            "lists": list_digests(data)}


def _folders_as_read(data: FinetuneData, data_dir: str, mix_data: Optional[str],
                     lists_dir: str) -> Dict[str, str]:
    """``{role: folder}`` (``data``, ``mix_data``) of the data for the next steps' commands:
    the Kaldi lists of each folder as read, written under ``lists_dir``, or the folder
    given where those are not written (a folder of segments)."""
    folders = {role: folder for role, folder in (("data", data_dir), ("mix_data", mix_data))
               if folder}
    folders.update(write_data_lists(data, lists_dir))
    return folders


def _kept_phases(work: str, options: FinetuneOptions, train_speakers: int
                 ) -> List[Dict[str, Any]]:
    """The run's phases: those recorded in ``work`` (:data:`PLAN_NAME`) when it started,
    which a resumed run keeps, else planned now (:func:`~wespeaker_py.finetune.config.phases`
    for ``train_speakers``) and recorded. ``--freeze auto`` counts the training speakers
    with a file that can be read: a rerun after a disk is mended would otherwise plan other
    phases and train them on the first plan's checkpoints."""
    path = os.path.join(work, PLAN_NAME)
    if not os.path.isfile(path):
        plan = phases(options, train_speakers)
        write_json_atomically(path, plan, indent=2, final_newline=True)
        return plan
    try:
        return check_phases(read_json_or_none(path))
    except ValueError as error:
        raise OutputExistsError(f"{path}: not the phases of a fine-tuning run ({error}); it "
                                f"records the plan of the run being resumed: remove "
                                f"{os.path.dirname(work)} to start the run again") from None


def _train_phases(plan: List[Dict[str, Any]], work: str, init: str, modules: List[str],
                  configure: Callable[..., Dict[str, Any]]) -> None:
    """Train the phases of ``plan`` in turn in ``work``, the first from ``init``, each later
    one from the last checkpoint of the one before; record each one's ``frozen_params``
    in it. ``configure``: :func:`phase_config` given what every phase shares."""
    last, epochs_before = init, 0
    run_epochs = sum(phase["epochs"] for phase in plan)
    for number, phase in enumerate(plan, 1):
        phase_dir = os.path.join(work, phase["name"])
        frozen = _frozen_prefixes(phase["freeze"], modules)
        label = _phase_label(phase["freeze"])
        # each phase is a training run of its own, whose log counts its epochs from 1
        logger.info("phase %d of %d (%s): the run's epochs %d-%d of %d, logged as %s epochs "
                    "1-%d, in %s", number, len(plan), _phase_trains(phase["freeze"]),
                    epochs_before + 1, epochs_before + phase["epochs"], run_epochs,
                    label, phase["epochs"], phase_dir)
        epochs_before += phase["epochs"]
        last = _train_phase(configure(exp_dir=phase_dir, model_init=last,
                                      epochs=phase["epochs"], frozen_params=frozen,
                                      init_head=last != init), label, number == 1)
        phase["frozen_params"] = frozen


def _average_last_phase(work: str, plan: List[Dict[str, Any]], num_avg: int
                        ) -> Tuple[str, List[str]]:
    """The last phase's experiment folder, its ``models/avg_model.pt`` written, and the
    checkpoints averaged into it (up to ``num_avg`` of the phase's last)."""
    # the averaged model stays an experiment folder (config.yaml, models/avg_model.pt) until
    # it is evaluated and calibrated: a failure leaves no half-made model in OUT
    final_dir = os.path.join(work, plan[-1]["name"])
    final_layout = Layout(final_dir)
    averaged = average_checkpoints(final_layout.model_dir, min(num_avg, plan[-1]["epochs"]),
                                   final_layout.avg_model_path)
    return final_dir, averaged


def _dev_record(before: Dict[str, Any], after: Dict[str, Any],
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


def _dev_calibration(model, after: Dict[str, Any], trials_path: str, out_dir: str
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


def finetune(source: str, data_dir: str, out_dir: str,
             options: Optional[FinetuneOptions] = None, device: Optional[str] = None,
             num_threads: Optional[int] = None, overwrite: bool = False,
             config: Optional[str] = None, mix_data: Optional[str] = None,
             log_summary: bool = True, max_fail_fraction: Optional[float] = None
             ) -> Dict[str, Any]:
    """Fine-tune ``source`` on the speakers of ``data_dir`` into the model folder ``out_dir``.

    ``source``: anything with PyTorch weights that :func:`~wespeaker_py.api.load_model`
    takes (``config`` for a bare checkpoint). ``mix_data``: a Kaldi folder of
    original-domain data whose speakers train too (never dev). Returns the
    ``finetune.json`` record, whose summary line and next steps are logged at INFO
    unless ``log_summary`` is False (the command prints them instead); a new model whose
    dev EER is above the source's is written all the same, with a warning. ``data_dir``
    may also be a folder of speaker folders
    (:mod:`~wespeaker_py.finetune.speaker_folders`). Computes with ``num_threads`` CPU
    threads (default: the rule of :mod:`wespeaker_py.utils.threads`). ``max_fail_fraction``:
    the trainer's config key of that name in each phase (None: left out, its default 0.5);
    like ``device`` it is not part of the request a rerun must match, so a run stopped for
    skipping too much of its data resumes with a higher one.
    An option of the wrong type or out of range raises :class:`OptionValueError`, bad data
    :class:`~wespeaker_py.finetune.data.FinetuneDataError`; an OUT that is or holds one
    of the inputs, or holds other files than a fine-tuning run,
    :class:`OutputExistsError`, as does one holding a run with other arguments unless
    ``overwrite``, which removes that run and starts again. ``overwrite`` also trains a
    finished run of the same arguments again; an unfinished one resumes, with it or
    without. Dev utterances that cannot be read are skipped (named in the log and in the
    record's ``dev_skipped``).
    """
    with using_threads(num_threads):
        report = _finetune(source, data_dir, out_dir, options or FinetuneOptions(), device,
                           overwrite, config, mix_data, max_fail_fraction)
    if log_summary:
        for line in (summary_line(report, out_dir), report.get("next_steps")):
            if line:
                logger.info("%s", line)
    return report


def _finetune(source: str, data_dir: str, out_dir: str, options: FinetuneOptions,
              device: Optional[str], overwrite: bool, config: Optional[str],
              mix_data: Optional[str], max_fail_fraction: Optional[float]) -> Dict[str, Any]:
    """:func:`finetune`'s work, in the threads it sets; returns the ``finetune.json`` record."""
    options = _checked_options(options, max_fail_fraction)
    check_device(device)
    config_path, checkpoint = torch_model_files(source, config)
    source_config = read_source_config(config_path)
    source_dataset_args = source_config.model.dataset_args
    rate = chosen_rate(source_dataset_args.frontend, options.sample_rate)
    corpus = read_finetune_corpus(data_dir, mix_data, sample_rate=rate)
    data = split_finetune_data(corpus, options.dev_speakers)
    rate = rate or data.sample_rate
    request = _request(source, checkpoint, config_path, data, options)
    _check_out_holds_no_input(out_dir, _run_inputs(checkpoint, config_path, data))
    report_path = os.path.join(out_dir, REPORT_NAME)
    if _claim_output(out_dir, request, overwrite):
        with open(report_path, encoding="utf-8") as handle:
            finished = json.load(handle)
        _check_audio_unchanged(finished, corpus, out_dir)
        logger.info("%s already holds this fine-tuning run", out_dir)
        return finished
    started = time.time()
    work = os.path.join(out_dir, WORK_DIR)
    data = kept_split(corpus, data, os.path.join(work, "data"))
    warn_about_split(corpus, data)
    train_data, train_label, trials_path = write_lists(data, os.path.join(work, "data"))
    folders = _folders_as_read(data, data_dir, mix_data, os.path.join(work, "lists"))
    init = os.path.join(work, INIT_NAME)
    _write_body_init(checkpoint, init, _rate_bound_buffers(source_dataset_args, rate))
    modules = _top_level_parameters(source_config.model)
    logger.info("fine-tuning %s on %d speakers (%d utterances that can be read) at %d Hz; "
                "dev: %d speakers, %d trials", source, len(data.train_speakers),
                data.train_utterances, rate, len(data.dev_speakers), len(data.trials))
    plan = _kept_phases(work, options, len(data.train_speakers))
    _train_phases(plan, work, init, modules, functools.partial(
        phase_config, source_config, options, train_data=train_data, train_label=train_label,
        num_utterances=len(data.train), sample_rate=rate, device=device,
        max_fail_fraction=max_fail_fraction))
    final_dir, averaged = _average_last_phase(work, plan, options.num_avg)
    train_seconds = time.time() - started

    audio, skipped = _dev_audio(data, rate)
    before = _score_dev(_load_source(source, device, config), audio, data.trials,
                        "the source")
    tuned = load_model(final_dir, device=device)
    after = _score_dev(tuned, audio, data.trials, "the new model")
    calibration, no_calibration = _dev_calibration(tuned, after, trials_path, out_dir)

    report = {"source": request["source"], "config": request["config"],
              "options": options.as_dict(), "data": data.summary(),
              "source_sample_rate": source_dataset_args.resample_rate,
              "sample_rate": rate, "phases": plan, "averaged": [os.path.basename(path)
                                                                for path in averaged],
              "dev": _dev_record(before, after, audio),
              "dev_skipped": skipped, UNREADABLE_FILES: sorted(data.unreadable),
              "calibration_cllr": calibration.cllr if calibration else None,
              "calibration_skipped": no_calibration,
              "train_seconds": round(train_seconds, 1), "weights": WEIGHTS_NOTE}
    report["next_steps"] = next_steps(source, out_dir, folders, report)
    write_json_atomically(report_path, report, indent=2, final_newline=True)
    _publish(final_dir, out_dir)
    warn_if_worse(report, out_dir)
    return report
