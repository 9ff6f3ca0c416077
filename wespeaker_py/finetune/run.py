"""Fine-tune a trained model on a folder of speakers: :func:`finetune`.

    source model + DIR -> read (data.py) -> split (split.py) -> body-only init
    weights -> one or two training phases (config.py; the trainer of
    :mod:`wespeaker_py.train`) -> average -> dev EER before and after ->
    calibration -> OUT

OUT is a model folder that :func:`~wespeaker_py.api.load_model` takes:
``config.yaml``, ``avg_model.pt``, ``calibration.json`` (fitted on the dev trials; none
when too few were scored: :func:`~wespeaker_py.finetune.dev.dev_calibration`) and
``finetune.json`` (what was done, and the dev figures before and after), written only once
the new model is evaluated and calibrated (until then it is the last phase's experiment
folder), the model files last (:data:`~wespeaker_py.finetune.request.PUBLISHED`);
a new model worse on dev than the source is written too, with a warning. The end of a
run logs (or, for the command, prints) the summary line of
:mod:`~wespeaker_py.finetune.report` and the next steps for the source's companion
files, which do not carry over. ``OUT/work`` keeps the lists
(the split's, and in ``work/lists`` each data folder's as read, for those next steps)
and each phase's experiment folder: a killed (or failed) run, started again with the
same arguments, resumes from the newest checkpoint (the trainer's resume) with the dev
speakers its lists were written with; a finished one is left as it is, unless the audio
it could not read then reads now
(:func:`~wespeaker_py.finetune.request.check_audio_unchanged`).
The same arguments: ``work/request.json`` records them with a digest of each data list
(wav.scp, utt2spk, segments; for a folder of speaker folders, of the lists made from
it) and of each file read from the source
(:func:`~wespeaker_py.finetune.request.run_request`), so that a data folder edited in
place, or a source replaced, is another request. The phases are planned once, when the
run starts, and kept in ``work`` (:data:`PLAN_NAME`). OUT never holds the run's inputs,
and ``overwrite`` only replaces an earlier fine-tuning run (a folder with
``work/request.json``): one with other arguments, or this one once finished, which trains
again; an unfinished run of the same arguments resumes with ``overwrite`` too.

This module runs those steps and trains the phases; the request and the claim on OUT are
:mod:`~wespeaker_py.finetune.request`'s, the dev figures and the calibration
:mod:`~wespeaker_py.finetune.dev`'s.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from wespeaker_py.api.loading import load_model, torch_model_files
from wespeaker_py.config import ConfigError, DatasetArgs, ModelConfig, TrainConfig
from wespeaker_py.finetune.config import (FinetuneOptions, check_device, check_phases,
                                          chosen_rate, named_as_flags, option_name, phase_config,
                                          phases, read_source_config)
from wespeaker_py.finetune.data import (FinetuneData, read_finetune_corpus, write_data_lists,
                                        write_lists)
from wespeaker_py.finetune.dev import (dev_audio, dev_calibration, dev_record, load_source,
                                       score_dev)
from wespeaker_py.finetune.report import next_steps, summary_line, warn_if_worse
from wespeaker_py.finetune.request import (UNREADABLE_FILES, OutputExistsError,
                                           check_audio_unchanged, check_out_holds_no_input,
                                           checked_options, claim_output, run_inputs,
                                           run_request)
from wespeaker_py.finetune.split import kept_split, split_finetune_data, warn_about_split
from wespeaker_py.io.layout import CONFIG_NAME, REPORT_NAME, WEIGHTS_NAME, WORK_DIR
from wespeaker_py.runtime.checkpoint import (FRONTEND_PREFIX, HEAD_PREFIX, model_state_of,
                                             read_checkpoint)
from wespeaker_py.train.average import average_checkpoints
from wespeaker_py.train.checkpoint import checkpoints_by_epoch
from wespeaker_py.train.plan import Layout
from wespeaker_py.utils.atomic_files import (atomic_open, atomic_path, read_json_or_none,
                                             save_torch, write_json_atomically)
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.threads import using_threads

logger = get_logger(__name__)

INIT_NAME = "init_body.pt"
# in OUT/work: the phases planned when the run started, which its resumption keeps
PLAN_NAME = "phases.json"
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


def _publish(staged_dir: str, out_dir: str) -> None:
    """Copy the evaluated model's ``avg_model.pt``, then its ``config.yaml``, from the
    experiment folder ``staged_dir`` into OUT, each file atomically: the last of
    :data:`~wespeaker_py.finetune.request.PUBLISHED`,
    written once OUT holds the calibration and the record."""
    staged_layout = Layout(staged_dir)
    for name, staged in ((WEIGHTS_NAME, staged_layout.avg_model_path),
                         (CONFIG_NAME, staged_layout.config_path)):
        with atomic_path(os.path.join(out_dir, name)) as tmp:
            shutil.copyfile(staged, tmp)


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
    An option of the wrong type or out of range raises
    :class:`~wespeaker_py.finetune.config.OptionValueError`, bad data
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
    options = checked_options(options, max_fail_fraction)
    check_device(device)
    config_path, checkpoint = torch_model_files(source, config)
    source_config = read_source_config(config_path)
    source_dataset_args = source_config.model.dataset_args
    rate = chosen_rate(source_dataset_args.frontend, options.sample_rate)
    corpus = read_finetune_corpus(data_dir, mix_data, sample_rate=rate)
    data = split_finetune_data(corpus, options.dev_speakers)
    rate = rate or data.sample_rate
    request = run_request(source, checkpoint, config_path, data, options)
    check_out_holds_no_input(out_dir, run_inputs(checkpoint, config_path, data))
    report_path = os.path.join(out_dir, REPORT_NAME)
    if claim_output(out_dir, request, overwrite):
        with open(report_path, encoding="utf-8") as handle:
            finished = json.load(handle)
        check_audio_unchanged(finished, corpus, out_dir)
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

    audio, skipped = dev_audio(data, rate)
    before = score_dev(load_source(source, device, config), audio, data.trials,
                       "the source")
    tuned = load_model(final_dir, device=device)
    after = score_dev(tuned, audio, data.trials, "the new model")
    calibration, no_calibration = dev_calibration(tuned, after, trials_path, out_dir)

    report = {"source": request["source"], "config": request["config"],
              "options": options.as_dict(), "data": data.summary(),
              "source_sample_rate": source_dataset_args.resample_rate,
              "sample_rate": rate, "phases": plan, "averaged": [os.path.basename(path)
                                                                for path in averaged],
              "dev": dev_record(before, after, audio),
              "dev_skipped": skipped, UNREADABLE_FILES: sorted(data.unreadable),
              "calibration_cllr": calibration.cllr if calibration else None,
              "calibration_skipped": no_calibration,
              "train_seconds": round(train_seconds, 1), "weights": WEIGHTS_NOTE}
    report["next_steps"] = next_steps(source, out_dir, folders, report)
    write_json_atomically(report_path, report, indent=2, final_newline=True)
    _publish(final_dir, out_dir)
    warn_if_worse(report, out_dir)
    return report
