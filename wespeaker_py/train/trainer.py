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
from typing import List, Optional

import numpy as np
import torch
import torch.nn as nn

from wespeaker_py.config import TrainConfig
from wespeaker_py.dataset import Dataset
from wespeaker_py.dataset.stats import NARROW_BAND, SkipSummary
from wespeaker_py.train import builder
from wespeaker_py.train.checkpoint import restore_training_state
from wespeaker_py.train.distributed import (DistContext, barrier, gather_objects,
                                            init_distributed, shutdown_distributed)
from wespeaker_py.train.experiment import ExperimentFolder
from wespeaker_py.train.interrupt import StopRequest, TrainingStopped
from wespeaker_py.train.loop import EpochResult, EpochStopped, TrainingDataError, train_epoch
from wespeaker_py.train.plan import TrainingPlan, resolve
from wespeaker_py.train.step import (NonFiniteLossError, TrainingStep,
                                     keep_optimizer_state_on_device)
from wespeaker_py.utils.logging_utils import get_logger

__all__ = ["EpochResult", "NonFiniteLossError", "Trainer", "TrainingDataError", "run_training"]

logger = get_logger(__name__)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """One rank's model (start weights loaded), optimizer, schedules and step, from a plan.

    ``folder`` writes its checkpoints and scalars; by default an unopened folder of the
    plan's layout (no log files).
    """

    def __init__(self, plan: TrainingPlan, folder: Optional[ExperimentFolder] = None):
        self.plan = plan
        self.folder = folder or ExperimentFolder(plan.layout, plan.world)
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

    def save_interrupted(self, epoch: int, batch: int, totals: torch.Tensor,
                         epoch_start_rng=None) -> None:
        """Write models/interrupted.pt: the state after ``batch`` batches of ``epoch`` (rank 0)."""
        self.folder.save_interrupted(epoch, batch, self.plan.epoch_iter, self.plan.run_settings,
                                     self.plan.spk2id_digest, totals.tolist(),
                                     epoch_start_rng, self.model, self.optimizer,
                                     self.lr_scheduler, self.margin_scheduler,
                                     self.step.grad_scaler)


def run_training(config: TrainConfig, resume_hint: Optional[str] = None) -> List[EpochResult]:
    """Train as ``config`` says (see conf/*.yaml); return each epoch's averages.

    Call it in every process of a torchrun job, or alone for one process.
    ``resume_hint``: how a run stopped by a signal is continued, for its message (default:
    the same training command, with ``--checkpoint`` when one was given).
    """
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
                return _train(plan, folder, dataset, stop, resume_hint)
        finally:
            folder.close()
    finally:
        shutdown_distributed()


def _train(plan: TrainingPlan, folder: ExperimentFolder, dataset: Dataset,
           stop: Optional[StopRequest] = None,
           resume_hint: Optional[str] = None) -> List[EpochResult]:
    world, first_epoch, num_epochs = plan.world, plan.start.first_epoch, plan.num_epochs
    resume_at = plan.start.resume_at
    if world.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    logger.info("rank %d of %d trains on %s", world.rank, world.world_size, world.device)
    logger.info("%d utterances of %d speakers; %d batches per epoch on each of %d ranks",
                plan.num_utterances, len(plan.spk2id), plan.epoch_iter, world.world_size)
    if plan.projection_args["do_lm"]:
        logger.info("large-margin fine-tuning: a head of %d classes, speed perturbation %s "
                    "(as configured: WeSpeaker's LM stage keeps it too)", plan.num_classes,
                    "on" if plan.dataset_args.speed_perturb else "off")
    trainer = Trainer(plan, folder)
    if first_epoch > num_epochs:
        folder.finish_without_training(num_epochs, first_epoch)
        barrier(world)
        return []
    if world.is_main:
        builder.warn_speakers_unmatched(plan, dataset)
    loader = builder.build_loader(plan, dataset)
    trainer.restore()
    folder.save_config(plan)
    logger.info("training epochs %d to %d%s", first_epoch, num_epochs,
                f" (epoch {first_epoch} from its batch {resume_at.batch + 1})"
                if resume_at else "")

    history: List[EpochResult] = []
    data_total = SkipSummary()
    for epoch in range(first_epoch, num_epochs + 1):
        dataset.set_epoch(epoch)
        try:
            result = train_epoch(trainer, epoch, loader,
                                 resume_at if epoch == first_epoch else None, stop)
        except TrainingDataError:
            dataset.epoch_summary().log(f"epoch {epoch} training data on rank {world.rank}")
            raise
        except EpochStopped as stopped:
            trainer.save_interrupted(epoch, stopped.batch, stopped.totals,
                                     stopped.epoch_start_rng)
            _stopped(folder, world, f"epoch {epoch} after its batch {stopped.batch}",
                     resume_hint=resume_hint)
        epoch_data = _log_data_summary(dataset, world, epoch)
        if world.is_main and not data_total.narrow_band():
            _warn_narrow_band(epoch_data, dataset.settings.sample_rate, epoch)
        data_total.merge(epoch_data)
        logger.info("epoch %d done: loss %.4f acc %.2f lr %.3e margin %.3f (%d batches over "
                    "all ranks, %d skipped)", epoch, result.loss, result.accuracy, result.lr,
                    result.margin, result.batches, result.skipped_batches)
        folder.log_scalars(epoch * plan.epoch_iter, epoch_loss=result.loss,
                           epoch_accuracy=result.accuracy)
        if plan.should_save(epoch):
            trainer.save(epoch)
        folder.draw_curves()
        history.append(result)
        if stop is not None and epoch < num_epochs and stop.agreed(world):
            if plan.should_save(epoch):
                _stopped(folder, world, f"the end of epoch {epoch}",
                         plan.layout.checkpoint_path(epoch), resume_hint)
            trainer.save_interrupted(epoch + 1, 0, torch.zeros(5, dtype=torch.float64))
            _stopped(folder, world, f"the end of epoch {epoch}", resume_hint=resume_hint)
    if world.is_main:
        data_total.log(f"training data, epochs {first_epoch}-{num_epochs} "
                       f"(each epoch counts a key once)")
    barrier(world)
    return history


def _stopped(folder: ExperimentFolder, world: DistContext, where: str,
             saved: Optional[str] = None, resume_hint: Optional[str] = None) -> None:
    """End a run stopped by a signal once its state is saved (in ``saved``, by default
    interrupted.pt): TrainingStopped, its message ending in ``resume_hint`` (by default,
    bin.train's: the same command, with its ``--checkpoint``)."""
    barrier(world)
    if resume_hint is None:
        how = (f" with --checkpoint {folder.standing_path} (the recipes pass the newest "
               f"checkpoint)" if folder.standing_path else "")
        resume_hint = f"run the same command{how} to continue from there"
    saved = saved or folder.layout.interrupted_path
    raise TrainingStopped(f"stopped on a signal at {where}, its state saved in {saved}; "
                          f"{resume_hint}")


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


def _warn_narrow_band(summary: SkipSummary, model_rate: int, epoch: int) -> None:
    """Warn when ``summary`` counts utterances that came narrow-band for the model.

    Said by the main process for the whole job (the dataloader workers only count),
    the first epoch that has any; every epoch's summary line keeps counting them."""
    for rate, count in sorted(summary.narrow_band().items()):
        reason = NARROW_BAND.format(rate)
        logger.warning("epoch %d: %d training utterance(s) came at %d Hz (e.g. %s) for a "
                       "model built for %d Hz: they are upsampled, but the band above %d Hz "
                       "stays empty, and training chunks get no band fill; each epoch's "
                       "summary counts them as %s (warned once)", epoch, count, rate,
                       ", ".join(summary.examples.get(reason, [])), model_rate, rate // 2,
                       reason)


def _log_data_summary(dataset: Dataset, world: DistContext, epoch: int) -> SkipSummary:
    """The epoch's skip and repair counts over all workers and ranks, logged once by rank 0."""
    gathered = gather_objects(dataset.epoch_summary().to_dict(), world)
    merged = SkipSummary.merged(SkipSummary.from_dict(data) for data in gathered)
    if world.is_main:
        merged.log(f"epoch {epoch} training data over {world.world_size} rank(s)")
    return merged
