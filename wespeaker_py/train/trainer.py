"""Stage 3 of the recipe: build everything from the config, then train epoch by epoch.

:func:`run_training` reads the data lists, builds the front-end, model, head,
optimizer and schedules, resumes or initialises from a checkpoint, trains (one
process, or one per device under torchrun) and writes
``exp_dir/models/model_<epoch>.pt``. The step lives in :mod:`.step`, the
epoch in :mod:`.loop`, the experiment folder's rules in :mod:`.experiment`.

Two kinds of front-end: fbank runs without gradients before the model; an SSL
front-end (``dataset_args.frontend: s3prl``) is part of the model
(``model.frontend``), runs inside the training step and trains with it (its
WavLM weights only when not frozen, its layer weights always).
"""
from __future__ import annotations

import os
import random
from typing import Any, Iterable, List, Mapping, Optional, Union

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from wespeaker_py.config import (DataloaderArgs, TrainConfig, as_train_config, require_keys,
                                 save_config)
from wespeaker_py.dataset import Dataset, collate_train, spk2id_from_utt2spk
from wespeaker_py.dataset.stats import SkipSummary
from wespeaker_py.frontend.ssl import frontend_param_groups
from wespeaker_py.train import builder, experiment
from wespeaker_py.train.checkpoint import (capture_rng_state, parameter_digest,
                                           restore_training_state, save_training_checkpoint)
from wespeaker_py.train.distributed import (DistContext, barrier, gather_objects,
                                            init_distributed, shutdown_distributed)
from wespeaker_py.train.loop import EpochResult, LoopSettings, TrainingDataError, train_epoch
from wespeaker_py.train.step import (NonFiniteLossError, StepRunner, StepSettings,
                                     keep_optimizer_state_on_device)
from wespeaker_py.utils.file_utils import read_key_value
from wespeaker_py.utils.logging_utils import get_logger

__all__ = ["EpochResult", "NonFiniteLossError", "Trainer", "TrainingDataError", "run_training"]

logger = get_logger(__name__)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """One rank's training state: the step, the schedules, and checkpoint writing.

    ``frontend`` is the fbank front-end, or None when the model holds its own
    (``model.frontend``). The config is read here, once, into the step's,
    the loop's and the experiment's settings.
    """

    def __init__(self, config: TrainConfig, ctx: DistContext, model: nn.Module,
                 frontend: Optional[nn.Module], optimizer: torch.optim.Optimizer, lr_scheduler,
                 margin_scheduler, epoch_iter: int, model_dir: str,
                 summary_writer: Optional[Any] = None):
        self.ctx = ctx
        self.model = model
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.margin_scheduler = margin_scheduler
        self.model_dir = model_dir
        self.summary_writer = summary_writer
        self.step = StepRunner(StepSettings.from_config(config), ctx, model, frontend, optimizer)
        self.loop_settings = LoopSettings.from_config(config, epoch_iter)

    @property
    def grad_scaler(self) -> Optional[torch.amp.GradScaler]:
        return self.step.grad_scaler

    def train_epoch(self, epoch: int, batches: Iterable[Mapping[str, Any]]) -> EpochResult:
        """Train one epoch of ``epoch_iter`` batches (see :func:`~.loop.train_epoch`)."""
        return train_epoch(self.step, self.loop_settings, self.ctx, epoch, batches,
                           self.lr_scheduler, self.margin_scheduler, self.log_scalars)

    def log_scalars(self, step: int, **values: float) -> None:
        """Add ``train/<name>`` scalars to the tensorboard log (when there is one)."""
        if self.summary_writer is not None:
            for name, value in values.items():
                self.summary_writer.add_scalar(f"train/{name}", value, step)

    def save(self, epoch: int, is_last: bool = False) -> Optional[str]:
        """Write model_<epoch>.pt on rank 0; every rank contributes its RNG state.

        Each rank's parameter digest is gathered too: ranks that drifted apart
        (a DDP desynchronisation) stop the run here rather than average into
        nonsense later. The last epoch's checkpoint gets ``final_model.pt``
        before it appears.
        """
        states = gather_objects({"rng": capture_rng_state(),
                                 "params": parameter_digest(self.model)}, self.ctx)
        if not self.ctx.is_main:
            return None
        digests = [state["params"] for state in states]
        if len(set(digests)) != 1:
            differing = [rank for rank, digest in enumerate(digests) if digest != digests[0]]
            raise RuntimeError(f"after epoch {epoch} the parameters of ranks {differing} differ "
                               f"from rank 0's: the DDP replicas are out of sync")
        path = os.path.join(self.model_dir, f"model_{epoch}.pt")
        link = (lambda: experiment.link_final_model(self.model_dir, epoch)) if is_last else None
        save_training_checkpoint(path, self.model, self.optimizer, self.lr_scheduler,
                                 self.margin_scheduler, epoch,
                                 [state["rng"] for state in states], digests, self.grad_scaler,
                                 before_publish=link)
        logger.info("saved %s", path)
        return path


def build_loader(args: DataloaderArgs, dataset, device: torch.device) -> DataLoader:
    """The DataLoader over the training Dataset with the config's ``dataloader_args``.

    Batches for a CUDA device are always pinned (``pin_memory`` only matters
    elsewhere, where pinning is useless): the step copies them with
    ``non_blocking``, which is asynchronous only from pinned memory. No
    persistent workers: the Dataset reads its epoch when an iterator starts.
    """
    loader_args = {"batch_size": args.batch_size, "num_workers": args.num_workers,
                   "pin_memory": device.type == "cuda", "drop_last": args.drop_last,
                   "collate_fn": collate_train}
    if args.num_workers > 0:
        loader_args["prefetch_factor"] = args.prefetch_factor or 2
    return DataLoader(dataset, **loader_args)


def run_training(config: Union[TrainConfig, Mapping[str, Any]]) -> List[EpochResult]:
    """Train as ``config`` says (see conf/*.yaml); return each epoch's averages.

    Call it in every process of a torchrun job, or alone for one process. The
    config (typed, or a mapping) is checked into a copy of its own here:
    ``model_args.feat_dim: -1`` gets filled in.
    """
    config = as_train_config(config)
    require_keys(config, ["exp_dir", "data_type", "train_data", "train_label"])
    settings = experiment.ExperimentSettings.from_config(config)
    ctx = init_distributed(config.gpus)
    stop_file_log = (experiment.log_to_file(os.path.join(settings.exp_dir, "train.log"))
                     if ctx.is_main else None)
    try:
        return _train(config, settings, ctx)
    finally:
        if stop_file_log is not None:
            stop_file_log()
        shutdown_distributed()


def _log_model_size(config: TrainConfig, model: nn.Module) -> None:
    def millions(prefix: str) -> float:
        return sum(param.numel() for name, param in model.named_parameters()
                   if name.startswith(prefix)) / 1e6

    frontend = millions("frontend.")
    speaker = millions("") - frontend - millions("projection.")
    if frontend:
        trainable = sum(param.numel() for param in model.frontend.parameters()
                        if param.requires_grad) / 1e6
        logger.info("%s: %.2fM parameters without the head, after a front-end of %.2fM "
                    "(%.2fM trained)", config.model, speaker, frontend, trainable)
    else:
        logger.info("%s: %.2fM parameters without the head", config.model, speaker)


def _build_trainer(config: TrainConfig, settings: experiment.ExperimentSettings,
                   ctx: DistContext, frontend: nn.Module, num_speakers: int, epoch_iter: int):
    """Model (with start weights), optimizer and schedules; return (trainer, checkpoint, epoch).

    An SSL ``frontend`` becomes ``model.frontend``; fbank stays outside the
    model. ``checkpoint`` is the training state to restore (None unless
    resuming); ``epoch`` the first epoch to train.
    """
    holds_frontend = builder.model_holds_frontend(config)
    model = builder.build_model(config, num_speakers, frontend if holds_frontend else None)
    _log_model_size(config, model)
    checkpoint, start_epoch = experiment.load_start_weights(settings, model)
    model.to(ctx.device)
    if not holds_frontend:
        frontend.to(ctx.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    if config.compile:
        model.compile()  # in place: the state_dict keys stay those of the model
    # the WavLM weights of a joint run learn at lr * dataset_args.s3prl_args.lr_scale
    optimizer = builder.build_optimizer(config, frontend_param_groups(model))
    lr_scheduler = builder.build_lr_scheduler(config, optimizer, epoch_iter, ctx.world_size)
    margin_scheduler = builder.build_margin_scheduler(config, model.projection, epoch_iter)
    writer = experiment.summary_writer(settings.exp_dir) if ctx.is_main else None
    trainer = Trainer(config, ctx, model, None if holds_frontend else frontend, optimizer,
                      lr_scheduler, margin_scheduler, epoch_iter, settings.model_dir,
                      summary_writer=writer)
    return trainer, checkpoint, start_epoch


def _train(config: TrainConfig, settings: experiment.ExperimentSettings,
           ctx: DistContext) -> List[EpochResult]:
    experiment.prepare_model_dir(settings, ctx.is_main)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    set_seed(config.seed + ctx.rank)
    logger.info("rank %d of %d trains on %s", ctx.rank, ctx.world_size, ctx.device)

    spk2id = spk2id_from_utt2spk(config.train_label)
    num_utterances = len(read_key_value(config.train_label))
    epoch_iter = builder.epoch_iterations(config, num_utterances, ctx.world_size)
    logger.info("%d utterances of %d speakers; %d batches per epoch on each of %d ranks",
                num_utterances, len(spk2id), epoch_iter, ctx.world_size)
    if config.do_lm:
        logger.info("large-margin fine-tuning: speed perturbation off, the head keeps "
                    "%d classes", builder.num_classes(config, len(spk2id)))
    frontend = builder.build_frontend(config)
    # saved below as exp_dir/config.yaml with the size filled in, as WeSpeaker does
    config.model_args = builder.resolve_feat_dim(config, frontend).model_args
    trainer, checkpoint, start_epoch = _build_trainer(config, settings, ctx, frontend,
                                                      len(spk2id), epoch_iter)
    if start_epoch > settings.num_epochs:
        if ctx.is_main:
            experiment.finish_without_training(settings, start_epoch)
        barrier(ctx)
        return []
    dataset = Dataset(config.data_type, config.train_data,
                      builder.effective_dataset_args(config), spk2id=spk2id,
                      reverb_data=config.reverb_data, noise_data=config.noise_data,
                      seed=config.seed, repeat=True)
    loader = build_loader(config.dataloader_args, dataset, ctx.device)
    # Generators are restored last, after everything above that draws from them.
    if checkpoint is not None:
        restore_training_state(checkpoint, settings.checkpoint, trainer.optimizer,
                               trainer.lr_scheduler, trainer.margin_scheduler, ctx.rank,
                               ctx.world_size, trainer.grad_scaler)
        keep_optimizer_state_on_device(trainer.optimizer, ctx.device)
    if ctx.is_main:
        save_config(config, os.path.join(settings.exp_dir, "config.yaml"))
    logger.info("training epochs %d to %d", start_epoch, settings.num_epochs)

    history: List[EpochResult] = []
    data_total = SkipSummary()
    for epoch in range(start_epoch, settings.num_epochs + 1):
        dataset.set_epoch(epoch)
        try:
            result = trainer.train_epoch(epoch, loader)
        except TrainingDataError:
            dataset.epoch_summary().log(f"epoch {epoch} training data on rank {ctx.rank}")
            raise
        data_total.merge(_log_data_summary(dataset, ctx, epoch))
        logger.info("epoch %d done: loss %.4f acc %.2f lr %.3e margin %.3f (%d batches over "
                    "all ranks, %d skipped)", epoch, result.loss, result.accuracy, result.lr,
                    result.margin, result.batches, result.skipped_batches)
        trainer.log_scalars(epoch * epoch_iter, epoch_loss=result.loss,
                            epoch_accuracy=result.accuracy)
        if settings.should_save(epoch):
            trainer.save(epoch, is_last=epoch == settings.num_epochs)
        history.append(result)
    if ctx.is_main:
        data_total.log(f"training data, epochs {start_epoch}-{settings.num_epochs} "
                       f"(each epoch counts a key once)")
    if trainer.summary_writer is not None:
        trainer.summary_writer.close()
    barrier(ctx)
    return history


def _log_data_summary(dataset: Dataset, ctx: DistContext, epoch: int) -> SkipSummary:
    """The epoch's skip and repair counts over all workers and ranks, logged once by rank 0."""
    gathered = gather_objects(dataset.epoch_summary().to_dict(), ctx)
    merged = SkipSummary.merged(SkipSummary.from_dict(data) for data in gathered)
    if ctx.is_main:
        merged.log(f"epoch {epoch} training data over {ctx.world_size} rank(s)")
    return merged
