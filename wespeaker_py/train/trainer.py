"""Stage 3 of the recipe: resolve the config into a plan, build from it, train epoch by epoch.

    config -> resolve (plan.py) -> Trainer (builder.py: model, optimizer, schedules;
    step.py) -> per epoch: train_epoch (loop.py) -> ExperimentFolder.save_checkpoint

:func:`run_training` trains in one process, or in each process of a torchrun
job, and writes ``exp_dir/models/model_<epoch>.pt``.

Two kinds of front-end: fbank runs without gradients before the model; an SSL
front-end (``dataset_args.frontend: s3prl``) is part of the model
(``model.frontend``), runs inside the training step and trains with it (its
WavLM weights only when not frozen, its layer weights always).
"""
from __future__ import annotations

import random
from typing import Any, Iterable, List, Mapping, NoReturn, Optional

import numpy as np
import torch
import torch.nn as nn

from wespeaker_py.config import TrainConfig
from wespeaker_py.dataset import Dataset
from wespeaker_py.dataset.stats import NARROW_BAND, SkipSummary
from wespeaker_py.errors import exit_status, one_line
from wespeaker_py.train import builder
from wespeaker_py.train.checkpoint import restore_training_state
from wespeaker_py.train.distributed import (DistContext, barrier, gather_objects,
                                            init_distributed, shutdown_distributed,
                                            unused_gpus_note)
from wespeaker_py.train.experiment import FINAL_MODEL, ExperimentFolder
from wespeaker_py.train.interrupt import (InterruptedAt, RunControl, StopRequest,
                                          TrainingStopped, launcher_pid, watch_launcher)
from wespeaker_py.train.loop import (DataLoaderFailedError, EpochPosition, EpochResult,
                                     EpochStopped, NonFiniteLossError, TrainingDataError,
                                     train_epoch, zero_totals)
from wespeaker_py.train.plan import TrainingPlan, resolve
from wespeaker_py.train.step import TrainingStep, keep_optimizer_state_on_device
from wespeaker_py.utils.atomic_files import DiskFullError
from wespeaker_py.utils.logging_utils import get_logger

__all__ = ["DataLoaderFailedError", "EpochResult", "NonFiniteLossError", "Trainer",
           "TrainingDataError", "run_training"]

logger = get_logger(__name__)

# how to train on regardless, the end of the message of an epoch that skipped too much; a
# caller that writes the config itself (wespeaker-py finetune) puts its own way in its place
RAISE_FAIL_FRACTION = "raise max_fail_fraction (a config key; 1: never stop)"


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """One rank's model (start weights loaded), optimizer, schedules and step, from a plan.

    ``folder`` writes its checkpoints and scalars; by default an unopened folder of the
    plan's layout (no log files). ``label``: names the run's epochs in its progress bars
    and log lines (see :meth:`epoch_name`).
    """

    def __init__(self, plan: TrainingPlan, folder: Optional[ExperimentFolder] = None,
                 label: Optional[str] = None):
        self.plan = plan
        self.folder = folder or ExperimentFolder(plan.layout, plan.world)
        self.label = label
        device = plan.world.device
        model = builder.build_model(plan)
        _log_model_size(plan, model)
        builder.load_start_weights(plan, model)
        model.to(device)
        fbank = None if plan.model_holds_frontend else plan.frontend.to(device)
        if plan.channels_last:
            model.to(memory_format=torch.channels_last)
        if plan.compile:
            model.compile()  # in place: the state_dict keys stay those of the model
        self.model = model
        self.optimizer = builder.build_optimizer(plan, model)
        self.lr_scheduler = builder.build_lr_scheduler(plan, self.optimizer)
        self.margin_scheduler = builder.build_margin_scheduler(plan, model.projection)
        self.step = TrainingStep(plan, model, fbank, self.optimizer)

    def labelled(self, text: str) -> str:
        """``text`` of a log line after the run's label, when it has one (a run that is part
        of a larger job, a fine-tuning phase: ``full training epochs 1 to 5``)."""
        return f"{self.label} {text}" if self.label else text

    def epoch_name(self, epoch: int) -> str:
        """``epoch`` as the log lines name it: ``epoch 3``, or ``full epoch 3`` (see
        :meth:`labelled`)."""
        return self.labelled(f"epoch {epoch}")

    def progress_name(self, epoch: int) -> str:
        """``epoch``'s progress bar title: :meth:`epoch_name`, out of the run's epochs when
        the run has a label (``full epoch 3/5``)."""
        name = self.epoch_name(epoch)
        return f"{name}/{self.plan.num_epochs}" if self.label else name

    def restore(self) -> None:
        """Put back the optimizer, schedules and this rank's generators of a resumed run,
        then release the start weights (:meth:`~wespeaker_py.train.plan.StartWeights.release`).

        Call it last, after everything that draws from the generators.
        """
        start = self.plan.start
        if start.training_state is not None:
            restore_training_state(start.training_state, start.path, self.optimizer,
                                   self.lr_scheduler, self.margin_scheduler, self.plan.world,
                                   builder.trained_parameter_keys(self.plan),
                                   self.step.grad_scaler)
            keep_optimizer_state_on_device(self.optimizer, self.plan.world.device)
        start.release()

    def save(self, epoch: int) -> None:
        """Write model_<epoch>.pt through the experiment folder (rank 0)."""
        self.folder.save_checkpoint(epoch, epoch == self.plan.num_epochs,
                                    self.plan.run_settings, self.plan.spk2id_digest, self.model,
                                    self.optimizer, self.lr_scheduler, self.margin_scheduler,
                                    self.step.grad_scaler)

    def save_periodically(self, epoch: int, position: EpochPosition) -> None:
        """:meth:`save_interrupted` for a save of ``save_minute_interval``, a safety net: one
        that finds the disk full is a warning, and training goes on (a stop's save, or an
        epoch's checkpoint, still ends the run there)."""
        try:
            self.save_interrupted(epoch, position)
        except DiskFullError as error:
            logger.warning("%s; training goes on without this periodic save (the state saved "
                           "before it stays whole)", error)

    def save_interrupted(self, epoch: int, position: EpochPosition) -> None:
        """Write models/interrupted.pt: the state at ``position`` in ``epoch`` (rank 0)."""
        self.folder.save_interrupted(epoch, position.batch, self.plan.epoch_iter,
                                     self.plan.run_settings, self.plan.spk2id_digest,
                                     position.totals.tolist(), position.epoch_start_rng,
                                     self.model, self.optimizer, self.lr_scheduler,
                                     self.margin_scheduler, self.step.grad_scaler)


def run_training(config: TrainConfig, resume_hint: Optional[str] = None,
                 label: Optional[str] = None,
                 note_narrow_band: bool = True) -> List[EpochResult]:
    """Train as ``config`` says (see conf/*.yaml); return each epoch's averages.

    Call it in every process of a torchrun job, or alone for one process.
    ``resume_hint``: how a run stopped by a signal is continued, for its message (default:
    the same training command, with ``--checkpoint`` when one was given). ``label``: for a
    run that is part of a larger job (a fine-tuning phase), a word its progress bars and
    log lines put before each epoch (``frozen epoch 1/1``; see :meth:`Trainer.epoch_name`).
    ``note_narrow_band``: warn, once, about utterances that came narrow-band for the model
    (False where an earlier part of the job would have warned about the same data).
    """
    launcher = launcher_pid()   # before joining the job, which may take long
    world = init_distributed(config.gpus)
    try:
        # before resolve: building an SSL front-end draws from the generators
        set_seed(config.seed + world.rank)
        plan = resolve(config, world)
        # what the model and the data lists refuse is refused before exp_dir is made
        builder.check_model_builds(plan)
        dataset = builder.build_dataset(plan)
        folder = ExperimentFolder(plan.layout, world)
        folder.standing = plan.start.standing
        folder.standing_path = config.checkpoint
        try:
            folder.open(resuming=plan.start.path is not None)
            with StopRequest() as stop:
                watch_launcher(launcher, stop)
                control = RunControl(stop, world, config.save_minute_interval)
                return _train(plan, folder, dataset, control, resume_hint, label,
                              note_narrow_band)
        except (Exception, KeyboardInterrupt) as error:
            stopped = (_disk_full_stop(error, folder, resume_hint)
                       if isinstance(error, DiskFullError) else error)
            if world.is_main:   # train.log's last word, before it is closed
                logger.error("training stopped: %s", stop_reason(stopped))
            if stopped is error:
                raise
            raise stopped from error
        finally:
            folder.close()
    finally:
        shutdown_distributed()


def stop_reason(error: BaseException) -> str:
    """Why ``error`` ended a run, in one line: what the command prints for it
    (:func:`~wespeaker_py.errors.one_line`), ``interrupted`` for Ctrl-C, and the
    error's type first for one it keeps the traceback of (a bug)."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    text = one_line(error)
    return text if exit_status(error) is not None else f"{type(error).__name__}: {text}"


def _train(plan: TrainingPlan, folder: ExperimentFolder, dataset: Dataset,
           control: Optional[RunControl] = None, resume_hint: Optional[str] = None,
           label: Optional[str] = None, note_narrow_band: bool = True) -> List[EpochResult]:
    world, first_epoch, num_epochs = plan.world, plan.start.first_epoch, plan.num_epochs
    resume_at = plan.start.resume_at
    if world.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    _log_run(plan)
    trainer = Trainer(plan, folder, label)
    if first_epoch > num_epochs:
        folder.finish_without_training(num_epochs, first_epoch)
        barrier(world)
        return []
    if world.is_main:
        builder.warn_speakers_unmatched(plan, dataset)
    loader = builder.build_loader(plan, dataset)
    trainer.restore()
    folder.save_config(plan)
    logger.info("%s", trainer.labelled(f"training epochs {first_epoch} to {num_epochs}"
                                       + (f" ({resume_at.goes_on_at()})" if resume_at else "")))

    history: List[EpochResult] = []
    data_total = SkipSummary()
    for epoch in range(first_epoch, num_epochs + 1):
        dataset.set_epoch(epoch)
        resumed = resume_at if epoch == first_epoch else None
        result = _run_epoch(trainer, epoch, dataset, loader, resumed, control, resume_hint)
        # an epoch resumed after its last batch read no data: nothing to count
        epoch_data = (SkipSummary() if resumed is not None and resumed.after_last_batch
                      else _log_data_summary(dataset, world, trainer.epoch_name(epoch)))
        if note_narrow_band and world.is_main and not data_total.narrow_band():
            _warn_narrow_band(epoch_data, dataset.settings.sample_rate,
                              trainer.epoch_name(epoch))
        data_total.merge(epoch_data)
        logger.info("%s done: loss %.4f acc %.2f lr %.3e margin %.3f (%d batches over "
                    "all ranks, %d skipped)", trainer.epoch_name(epoch), result.loss,
                    result.accuracy, result.lr, result.margin, result.batches,
                    result.skipped_batches)
        _check_applied_steps(result, trainer.epoch_name(epoch), world)
        folder.log_scalars(epoch * plan.epoch_iter, epoch_loss=result.loss,
                           epoch_accuracy=result.accuracy)
        _end_of_epoch(trainer, epoch, epoch_data, control, resume_hint)
        history.append(result)
    if world.is_main:
        data_total.log(f"training data, epochs {first_epoch}-{num_epochs} (each epoch counts "
                       f"an utterance once, the run a bad noise or RIR file once)")
    barrier(world)
    return history


def _log_run(plan: TrainingPlan) -> None:
    """Log where this rank trains, on how much data, and a large-margin stage's head."""
    world = plan.world
    fallback = f" ({unused_gpus_note(world.unused_gpus)})" if world.unused_gpus else ""
    logger.info("rank %d of %d trains on %s%s", world.rank, world.world_size, world.device,
                fallback)
    logger.info("%d utterances of %d speakers; %d batches per epoch on each of %d ranks",
                plan.num_utterances, len(plan.spk2id), plan.epoch_iter, world.world_size)
    if plan.projection_args["do_lm"]:
        logger.info("large-margin fine-tuning: a head of %d classes, speed perturbation %s "
                    "(as configured: WeSpeaker's LM stage keeps it too)", plan.num_classes,
                    "on" if plan.dataset_args.speed_perturb else "off")


def _run_epoch(trainer: Trainer, epoch: int, dataset: Dataset,
               loader: Iterable[Mapping[str, Any]],
               resumed: Optional[InterruptedAt], control: Optional[RunControl],
               resume_hint: Optional[str]) -> EpochResult:
    """Train ``epoch`` (:func:`~wespeaker_py.train.loop.train_epoch`) and return its averages.

    An epoch that ends early ends the run: out of data, after logging this rank's skip
    counts; on a signal (TrainingStopped), a non-finite step with ``nonfinite_loss: raise``
    (NonFiniteLossError, saying how to go on) or a failed data loader in one process
    (DataLoaderFailedError), after saving the state in interrupted.pt; a failed data loader
    under torchrun saves nothing (see DataLoaderFailedError).
    """
    world, folder = trainer.plan.world, trainer.folder
    try:
        return train_epoch(trainer, epoch, loader, resumed, control)
    except TrainingDataError:
        dataset.epoch_summary().log(f"{trainer.epoch_name(epoch)} training data on rank "
                                    f"{world.rank}")
        raise
    except EpochStopped as stopped:
        trainer.save_interrupted(epoch, stopped.position)
        _stopped(folder, world, f"{trainer.epoch_name(epoch)} after its batch "
                                f"{stopped.position.batch}", resume_hint=resume_hint)
    except NonFiniteLossError as failed:
        trainer.save_interrupted(epoch, failed.position)
        barrier(world)
        raise NonFiniteLossError(
            f"{failed}. The state after batch {failed.position.batch} (the non-finite "
            f"step(s) undone) is saved in {folder.layout.interrupted_path}: "
            f"{_resume_hint(folder, resume_hint)}, with nonfinite_loss: skip to drop such "
            f"batches from there on; a lower learning rate or enable_amp: false changes "
            f"the run's settings, so such a rerun trains again from the checkpoint it "
            f"starts from instead", failed.position) from None
    except DataLoaderFailedError as failed:
        if failed.position is None:
            raise DataLoaderFailedError(
                f"{failed}; under torchrun the other ranks wait for this one's next step, so "
                f"nothing more is saved: run the same command (the recipes pass the newest "
                f"checkpoint) to continue from the last checkpoint or periodic save") from failed
        trainer.save_interrupted(epoch, failed.position)
        where = (f"after batch {failed.position.batch}" if failed.position.batch
                 else "as the epoch began")
        raise DataLoaderFailedError(
            f"{failed}; the state {where} is saved in {folder.layout.interrupted_path}: "
            f"{_resume_hint(folder, resume_hint)}", failed.position) from failed


def _end_of_epoch(trainer: Trainer, epoch: int, data: SkipSummary,
                  control: Optional[RunControl], resume_hint: Optional[str]) -> None:
    """After ``epoch``'s averages are logged: write model_<epoch>.pt when the plan keeps
    it and redraw the curves; stop when the epoch skipped too much of its ``data``
    (:func:`_check_skipped_data`); then, before the last epoch, the ranks agree whether to
    save the state (interrupted.pt at the next epoch's start) or to stop (TrainingStopped)."""
    plan, folder = trainer.plan, trainer.folder
    world = plan.world
    saved = plan.should_save(epoch)
    if saved:
        trainer.save(epoch)
        if control is not None:
            control.saved()
    folder.draw_curves()
    _check_skipped_data(trainer, epoch, data, saved, resume_hint)
    if control is None or epoch == plan.num_epochs:
        return
    # the epoch's end is a log point; a periodic save falls here unless model_<epoch>.pt
    # was just written
    agreed = control.agree(log_point=not saved)
    if agreed.stop and saved:
        _stopped(folder, world, f"the end of {trainer.epoch_name(epoch)}",
                 plan.layout.checkpoint_path(epoch), resume_hint)
    at_next_epoch = EpochPosition(0, zero_totals(), None)
    if agreed.stop:
        trainer.save_interrupted(epoch + 1, at_next_epoch)
        control.saved()
    elif agreed.save:
        trainer.save_periodically(epoch + 1, at_next_epoch)
        control.saved()
    if agreed.stop:
        _stopped(folder, world, f"the end of {trainer.epoch_name(epoch)}",
                 resume_hint=resume_hint)


def _check_skipped_data(trainer: Trainer, epoch: int, data: SkipSummary, saved: bool,
                        resume_hint: Optional[str]) -> None:
    """Stop the run (TrainingDataError) when ``epoch`` skipped more than the plan's
    ``max_fail_fraction`` of the utterances it read or of the shards it opened (``data``:
    its summary over all ranks, the same on each), as a list job fails: a wrong path or an
    unmounted disk would otherwise train every epoch on what is left. The epoch is kept
    first: in model_<epoch>.pt when ``saved``, else in interrupted.pt."""
    plan = trainer.plan
    beyond = data.skipped_beyond(plan.max_fail_fraction)
    if not beyond:
        return
    if saved:
        path = plan.layout.checkpoint_path(epoch)
    else:
        trainer.save_interrupted(epoch + 1, EpochPosition(0, zero_totals(), None))
        path = plan.layout.interrupted_path
    barrier(plan.world)
    if epoch != plan.num_epochs:
        then = f"once the data is fixed, {_resume_hint(trainer.folder, resume_hint)}"
    elif resume_hint is None:   # bin.train, the recipes: the saved epoch makes the run finished
        then = (f"this was the run's last epoch: to train it again once the data is fixed, "
                f"remove it ({FINAL_MODEL} points at it) and run the same command from the "
                f"checkpoint before it (the recipes take the newest one left)")
    else:   # the caller (fine-tuning) says how its run trains that epoch again
        then = "this was the run's last epoch: train it again once the data is fixed"
    raise TrainingDataError(
        f"{trainer.epoch_name(epoch)} skipped {' and '.join(beyond)}, more than "
        f"max_fail_fraction {plan.max_fail_fraction:g}: {data.describe_skipped()}. A wrong path "
        f"or a disk that is not mounted? {path} is saved; {then}; to train on what is left "
        f"instead, {RAISE_FAIL_FRACTION}")


def _stopped(folder: ExperimentFolder, world: DistContext, where: str,
             saved: Optional[str] = None, resume_hint: Optional[str] = None) -> NoReturn:
    """End a run stopped by a signal once its state is saved (in ``saved``, by default
    interrupted.pt): TrainingStopped, its message ending in ``resume_hint`` (by default,
    bin.train's: the same command, with its ``--checkpoint``)."""
    barrier(world)
    saved = saved or folder.layout.interrupted_path
    raise TrainingStopped(f"stopped on a signal at {where}, its state saved in {saved}; "
                          f"{_resume_hint(folder, resume_hint)}")


def _resume_hint(folder: ExperimentFolder, resume_hint: Optional[str]) -> str:
    """How to continue a run from its saved state: ``resume_hint``, by default bin.train's
    (the same command, with its ``--checkpoint``)."""
    if resume_hint is not None:
        return resume_hint
    how = (f" with --checkpoint {folder.standing_path} (the recipes pass the newest "
           f"checkpoint)" if folder.standing_path else "")
    return f"run the same command{how} to continue from there"


def _disk_full_stop(error: DiskFullError, folder: ExperimentFolder,
                    resume_hint: Optional[str]) -> DiskFullError:
    """The error that ends a run whose save met a full disk: what was not written, and how
    to go on from the last state that was (the files before it are whole)."""
    return DiskFullError(error.path, error.cause,
                         f"free space there, then {_resume_hint(folder, resume_hint)}")


def _check_applied_steps(result: EpochResult, epoch_name: str, world: DistContext) -> None:
    """With ``nonfinite_loss: skip``: stop a run whose epoch (``epoch_name`` in the logs)
    applied no step (its weights are still those the epoch began with), and warn (rank 0)
    when it dropped more than half of them."""
    skipped, batches = result.skipped_batches, result.batches
    if skipped == batches:
        raise NonFiniteLossError(
            f"{epoch_name} applied no training step: all {batches} batches (over all "
            f"ranks) had a non-finite loss or gradients and were dropped (nonfinite_loss: "
            f"skip), so the weights are still those the epoch began with; the run stops "
            f"rather than go on without training and saves nothing for this epoch. Lower the "
            f"learning rate or turn off enable_amp, and train again from the last checkpoint")
    if world.is_main and 2 * skipped > batches:
        logger.warning("%s dropped %d of its %d batches (over all ranks) for a "
                       "non-finite loss or gradients (nonfinite_loss: skip): it trained on "
                       "%d only; if this goes on, lower the learning rate or turn off "
                       "enable_amp", epoch_name, skipped, batches, batches - skipped)


def _log_model_size(plan: TrainingPlan, model: nn.Module) -> None:
    def count(prefix: str, trained_only: bool = False) -> int:
        return sum(param.numel() for name, param in model.named_parameters()
                   if name.startswith(prefix) and (param.requires_grad or not trained_only))

    name = plan.model_config.model
    frontend = count("frontend.")
    speaker = count("") - frontend - count("projection.")
    if frontend:
        logger.info("%s: %s parameters without the head, after a front-end of %s "
                    "(%s trained)", name, parameter_count(speaker),
                    parameter_count(frontend), parameter_count(count("frontend.", True)))
    else:
        logger.info("%s: %s parameters without the head", name, parameter_count(speaker))
    if plan.frozen_params:
        logger.info("frozen parameters: %s; %s parameters train, the head's %s of them",
                    ", ".join(repr(prefix) for prefix in plan.frozen_params),
                    parameter_count(count("", True)),
                    parameter_count(count("projection.", True)))


def parameter_count(number: int) -> str:
    """``number`` of parameters for a log: ``1.23M`` from 10,000 on, else in full."""
    return f"{number / 1e6:.2f}M" if number >= 10_000 else f"{number:,}"


def _warn_narrow_band(summary: SkipSummary, model_rate: int, epoch_name: str) -> None:
    """Warn when ``summary`` counts utterances that came narrow-band for the model.

    Said by the main process for the whole job (the dataloader workers only count),
    the first epoch that has any; every epoch's summary line keeps counting them."""
    for rate, count in sorted(summary.narrow_band().items()):
        reason = NARROW_BAND.format(rate)
        logger.warning("%s: %d training utterance(s) came at %d Hz (e.g. %s) for a "
                       "model built for %d Hz: they are upsampled, but the band above %d Hz "
                       "stays empty, and training chunks get no band fill; each epoch's "
                       "summary counts them as %s (warned once)", epoch_name, count, rate,
                       ", ".join(summary.examples.get(reason, [])), model_rate, rate // 2,
                       reason)


def _log_data_summary(dataset: Dataset, world: DistContext, epoch_name: str) -> SkipSummary:
    """The epoch's skip and repair counts over all workers and ranks, logged once by rank 0
    (``epoch_name``: the epoch as the logs name it)."""
    gathered = gather_objects(dataset.epoch_summary().to_dict(), world)
    merged = SkipSummary.merged(SkipSummary.from_dict(data) for data in gathered)
    if world.is_main:
        merged.log(f"{epoch_name} training data over {world.world_size} rank(s)")
    return merged
