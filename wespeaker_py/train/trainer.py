"""The training loop: batches of waveforms -> features on the device -> model -> head -> loss.

:func:`run_training` is stage 3 of the recipe: it reads the data lists, builds
the front-end, model, head, optimizer and schedules from the config, resumes or
initialises from a checkpoint, trains epoch by epoch (one process, or one per
device under torchrun) and writes ``exp_dir/models/model_<epoch>.pt``.

Two kinds of front-end: fbank runs without gradients before the model; an SSL
front-end (``dataset_args.frontend: s3prl``) is part of the model
(``model.frontend``), runs inside the training step and trains with it (its
WavLM weights only when not frozen, its layer weights always).
"""
from __future__ import annotations

import logging
import math
import os
import random
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from wespeaker_py.dataset import Dataset, collate_train, spk2id_from_utt2spk
from wespeaker_py.frontend.ssl import frontend_param_groups
from wespeaker_py.train import builder
from wespeaker_py.train.checkpoint import (capture_rng_state, epoch_from_name,
                                           is_training_checkpoint, load_model_init, load_weights,
                                           model_state_of, parameter_digest, read_checkpoint,
                                           restore_training_state, save_training_checkpoint)
from wespeaker_py.train.distributed import (DistContext, all_ranks_true, all_reduce_sum,
                                            barrier, gather_objects, init_distributed,
                                            shutdown_distributed, wrap_ddp)
from wespeaker_py.config import (ConfigError, TrainConfig, as_train_config, require_keys,
                                 save_config)
from wespeaker_py.utils.file_utils import read_key_value
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

_AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """The loss (or the gradient norm) became NaN or infinite; the weights were not updated."""


@dataclass
class EpochResult:
    """One epoch over all ranks: mean loss and accuracy (%), batch counts summed."""

    epoch: int
    loss: float
    accuracy: float
    batches: int
    skipped_batches: int
    lr: float
    margin: float


class TrainingStep(nn.Module):
    """Inputs and labels -> (logits, loss): the part of a step that DDP wraps.

    The inputs are features, or waveforms when the model holds its front-end
    (``model.frontend``, an SSL front-end). The head runs in float32 outside
    autocast: its cosines feed an arccos-like margin that bf16 would round badly.
    """

    def __init__(self, model: nn.Module, criterion: nn.Module):
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.model_holds_frontend = isinstance(getattr(model, "frontend", None), nn.Module)

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor):
        feats = self.model.frontend(inputs) if self.model_holds_frontend else inputs
        embeddings = self.model(feats)
        with torch.autocast(device_type=feats.device.type, enabled=False):
            return self.model.projection.logits_and_loss(embeddings.float(), labels,
                                                         self.criterion)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """One rank's training state and the per-epoch loop.

    ``frontend`` is the fbank front-end, or None when the model holds its own
    (``model.frontend``).
    """

    def __init__(self, config: Mapping[str, Any], ctx: DistContext, model: nn.Module,
                 frontend: Optional[nn.Module], optimizer: torch.optim.Optimizer, lr_scheduler,
                 margin_scheduler, epoch_iter: int, model_dir: str,
                 summary_writer: Optional[Any] = None):
        self.config = config
        self.ctx = ctx
        self.model = model
        self.frontend = frontend
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.margin_scheduler = margin_scheduler
        self.epoch_iter = epoch_iter
        self.model_dir = model_dir
        self.summary_writer = summary_writer
        self.step_module = wrap_ddp(TrainingStep(model, nn.CrossEntropyLoss(
            **(config.get("loss_args") or {}))), ctx)
        self.amp_enabled = bool(config.get("enable_amp", False))
        self.amp_dtype = _AMP_DTYPES[config.get("amp_dtype", "bfloat16")]
        use_scaler = self.amp_enabled and self.amp_dtype == torch.float16
        self.grad_scaler = torch.amp.GradScaler(ctx.device.type) if use_scaler else None
        self.grad_clip = config.get("grad_clip") or 0.0
        self.nonfinite_policy = config.get("nonfinite_loss", "raise")
        self.log_interval = max(1, int(config.get("log_batch_interval", 100)))

    # -- one optimisation step -------------------------------------------------
    def _autocast(self):
        if not self.amp_enabled:
            return nullcontext()
        return torch.autocast(device_type=self.ctx.device.type, dtype=self.amp_dtype)

    def _nonfinite(self, what: str, value: float, epoch: int, batch: int) -> None:
        message = (f"non-finite {what} ({value}) at epoch {epoch}, batch {batch} "
                   f"(lr {self.lr_scheduler.get_lr():.3g}, "
                   f"margin {self.margin_scheduler.get_margin():.3g}); "
                   f"the weights were not updated")
        if self.nonfinite_policy == "raise":
            raise NonFiniteLossError(message + ". Lower the learning rate, turn off "
                                     "enable_amp, or set nonfinite_loss: skip to drop such batches")
        logger.warning("%s; batch skipped", message)

    def _discard_step(self) -> None:
        """Drop this step's gradients; under DDP first let the reducer finish its round."""
        if self.ctx.is_distributed:
            zero = sum((p * 0.0).sum() for p in self.model.parameters() if p.requires_grad)
            zero.backward()
        self.optimizer.zero_grad(set_to_none=True)

    def _forward(self, batch: Mapping[str, Any]):
        """Features on the device, then model and head: (logits, loss, labels)."""
        inputs = batch["wavs"].to(self.ctx.device, non_blocking=True)
        labels = batch["labels"].to(self.ctx.device, non_blocking=True)
        if self.frontend is not None:
            with torch.no_grad():
                inputs = self.frontend(inputs)
        with self._autocast():
            logits, loss = self.step_module(inputs, labels)
        return logits, loss, labels

    def _update(self, loss: torch.Tensor, epoch: int, batch: int) -> bool:
        """Backward and optimizer step; False when a non-finite gradient norm stopped it."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            # float16: the scaler skips steps with inf/NaN gradients by design
            self.grad_scaler.scale(loss).backward()
            if self.grad_clip > 0:
                self.grad_scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
            return True
        loss.backward()
        if self.grad_clip > 0:
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip).item()
            if not math.isfinite(norm):
                self._nonfinite("gradient norm", norm, epoch, batch)
                self.optimizer.zero_grad(set_to_none=True)
                return False
        self.optimizer.step()
        return True

    # -- one epoch -------------------------------------------------------------
    def train_epoch(self, epoch: int, loader: DataLoader) -> EpochResult:
        """Run up to ``epoch_iter`` batches of ``loader`` and return the epoch's averages.

        The next batch is fetched before the backward pass so that all ranks can
        agree, in the same collective as the loss check, whether another step
        follows: a rank whose data runs out early ends the epoch for everyone
        instead of leaving the others waiting in an all-reduce.
        """
        self.step_module.train()
        if self.frontend is not None:
            self.frontend.train()
        device = self.ctx.device
        # Correct-prediction counts stay on the device so that only logging syncs on them.
        correct_total = torch.zeros((), dtype=torch.long, device=device)
        interval_correct = torch.zeros((), dtype=torch.long, device=device)
        loss_total, samples, steps, skipped = 0.0, 0, 0, 0
        interval_loss, interval_samples = 0.0, 0
        progress = tqdm(total=self.epoch_iter, desc=f"epoch {epoch}", unit="batch",
                        disable=not self.ctx.is_main, leave=False, dynamic_ncols=True)
        batches = iter(loader)
        batch = next(batches, None)
        more = all_ranks_true([batch is not None], self.ctx)[0]
        index = 0
        while more:
            iteration = (epoch - 1) * self.epoch_iter + index
            lr = self.lr_scheduler.step(iteration)
            self.margin_scheduler.step(iteration)
            logits, loss, labels = self._forward(batch)
            loss_value = loss.item()
            batch = next(batches, None) if index + 1 < self.epoch_iter else None
            finite, more = all_ranks_true([math.isfinite(loss_value), batch is not None],
                                          self.ctx)
            steps += 1
            if not finite:
                self._nonfinite("loss", loss_value, epoch, index + 1)
                self._discard_step()
                skipped += 1
            elif not self._update(loss, epoch, index + 1):
                skipped += 1
            else:
                correct = (logits.detach().argmax(dim=1) == labels).sum()
                correct_total += correct
                interval_correct += correct
                loss_total += loss_value * labels.numel()
                interval_loss += loss_value * labels.numel()
                samples += labels.numel()
                interval_samples += labels.numel()
            progress.update(1)
            index += 1
            if index % self.log_interval == 0 and interval_samples:
                mean_loss = interval_loss / interval_samples
                accuracy = 100.0 * interval_correct.item() / interval_samples
                margin = self.margin_scheduler.get_margin()
                progress.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{accuracy:.1f}")
                logger.info("epoch %d batch %d/%d lr %.3e margin %.3f loss %.4f acc %.2f",
                            epoch, index, self.epoch_iter, lr, margin, mean_loss, accuracy)
                self.log_scalars(iteration, loss=mean_loss, accuracy=accuracy, lr=lr,
                                 margin=margin)
                interval_loss, interval_samples = 0.0, 0
                interval_correct.zero_()
        # closing the iterator ends the dataset's epoch (it logs its skip summary)
        del batches
        progress.close()
        if steps < self.epoch_iter:
            logger.info("epoch %d: the data ran out after %d of %d batches",
                        epoch, steps, self.epoch_iter)
        totals = all_reduce_sum(torch.tensor(
            [loss_total, float(correct_total.item()), samples, steps, skipped],
            dtype=torch.float64, device=device), self.ctx).tolist()
        total_samples = max(1.0, totals[2])
        return EpochResult(epoch=epoch, loss=totals[0] / total_samples,
                           accuracy=100.0 * totals[1] / total_samples,
                           batches=int(totals[3]), skipped_batches=int(totals[4]),
                           lr=self.lr_scheduler.get_lr(),
                           margin=self.margin_scheduler.get_margin())

    def log_scalars(self, step: int, **values: float) -> None:
        """Add ``train/<name>`` scalars to the tensorboard log (when there is one)."""
        if self.summary_writer is not None:
            for name, value in values.items():
                self.summary_writer.add_scalar(f"train/{name}", value, step)

    # -- checkpoints -----------------------------------------------------------
    def save(self, epoch: int) -> Optional[str]:
        """Write model_<epoch>.pt on rank 0; every rank contributes its RNG state.

        Each rank's parameter digest is gathered too: ranks that drifted apart
        (a DDP desynchronisation) stop the run here rather than average into
        nonsense later.
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
        save_training_checkpoint(path, self.model, self.optimizer, self.lr_scheduler,
                                 self.margin_scheduler, epoch,
                                 [state["rng"] for state in states], digests, self.grad_scaler)
        logger.info("saved %s", path)
        return path


_PACKAGE_LOGGER = "wespeaker_py"


def _log_to_file(path: str) -> Callable[[], None]:
    """Copy the package's INFO-and-above records into ``path``; return the undo function."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    if root.handlers and root.handlers[0].formatter is not None:
        handler.setFormatter(root.handlers[0].formatter)
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    package = logging.getLogger(_PACKAGE_LOGGER)
    level = package.level
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    package.addHandler(handler)

    def undo() -> None:
        package.removeHandler(handler)
        package.setLevel(level)
        handler.close()

    return undo


def _summary_writer(exp_dir: str):
    """A tensorboard SummaryWriter under exp_dir/tensorboard, or None without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(os.path.join(exp_dir, "tensorboard"))


def build_loader(config: Mapping[str, Any], dataset) -> DataLoader:
    """The DataLoader over the training Dataset with ``dataloader_args``."""
    args = dict(config["dataloader_args"])
    num_workers = int(args.get("num_workers", 0))
    loader_args = {"batch_size": args["batch_size"], "num_workers": num_workers,
                   "pin_memory": bool(args.get("pin_memory", False)),
                   "drop_last": bool(args.get("drop_last", True)),
                   "collate_fn": collate_train}
    if num_workers > 0:
        # no persistent workers: the Dataset reads its epoch when an iterator starts
        loader_args["prefetch_factor"] = args.get("prefetch_factor") or 2
    return DataLoader(dataset, **loader_args)


def _existing_checkpoints(model_dir: str) -> List[str]:
    if not os.path.isdir(model_dir):
        return []
    return sorted(name for name in os.listdir(model_dir) if epoch_from_name(name) is not None)


def _should_save(epoch: int, config: Mapping[str, Any]) -> bool:
    num_epochs = config["num_epochs"]
    return (epoch % config.get("save_epoch_interval", 5) == 0
            or epoch > num_epochs - config.get("num_avg", 10) or epoch == num_epochs)


def _link_final_model(model_dir: str, num_epochs: int) -> None:
    """Point model_dir/final_model.pt at the last epoch's checkpoint (atomically)."""
    link = os.path.join(model_dir, "final_model.pt")
    tmp = link + ".tmp"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(f"model_{num_epochs}.pt", tmp)
    os.replace(tmp, link)


def _load_start_weights(config: Mapping[str, Any], model: nn.Module):
    """Apply ``model_init`` and ``checkpoint`` weights; return (checkpoint, start_epoch).

    A checkpoint of a frozen SSL front-end run has no WavLM weights; the model
    keeps its pretrained ones (see :func:`load_weights`). That is how the next
    step of the WavLM recipe starts from the frozen step's ``avg_model.pt``.
    """
    if config.get("model_init"):
        logger.info("initialising the model from %s", config["model_init"])
        load_model_init(model, config["model_init"])
    path = config.get("checkpoint")
    if not path:
        return None, 1
    checkpoint = read_checkpoint(path)
    if is_training_checkpoint(checkpoint):
        load_weights(model, checkpoint["model"], path, allow_head_truncation=False)
        return checkpoint, int(checkpoint["epoch"]) + 1
    # A bare state_dict (avg_model.pt copied to model_0.pt for LM fine-tuning,
    # or a WeSpeaker checkpoint): weights only, training continues after the
    # epoch in its name.
    load_weights(model, model_state_of(checkpoint), path, allow_head_truncation=True)
    logger.info("loaded the weights of %s (no optimizer or scheduler state)", path)
    return None, (epoch_from_name(path) or 0) + 1


def run_training(config: Union[TrainConfig, Mapping[str, Any]]) -> List[EpochResult]:
    """Train as ``config`` says (see conf/*.yaml); return each epoch's averages.

    Call it in every process of a torchrun job, or alone for one process.
    """
    config = as_train_config(config)  # a checked copy: model_args.feat_dim: -1 gets filled in
    require_keys(config, ["exp_dir", "data_type", "train_data", "train_label"])
    ctx = init_distributed(config.get("gpus"))
    stop_file_log = (_log_to_file(os.path.join(config["exp_dir"], "train.log"))
                     if ctx.is_main else None)
    try:
        return _train(config, ctx)
    finally:
        if stop_file_log is not None:
            stop_file_log()
        shutdown_distributed()


def _log_model_size(config: Mapping[str, Any], model: nn.Module) -> None:
    def millions(prefix: str) -> float:
        return sum(param.numel() for name, param in model.named_parameters()
                   if name.startswith(prefix)) / 1e6

    frontend = millions("frontend.")
    speaker = millions("") - frontend - millions("projection.")
    if frontend:
        trainable = sum(param.numel() for param in model.frontend.parameters()
                        if param.requires_grad) / 1e6
        logger.info("%s: %.2fM parameters without the head, after a front-end of %.2fM "
                    "(%.2fM trained)", config["model"], speaker, frontend, trainable)
    else:
        logger.info("%s: %.2fM parameters without the head", config["model"], speaker)


def _build_trainer(config: Mapping[str, Any], ctx: DistContext, frontend: nn.Module,
                   num_speakers: int, epoch_iter: int, model_dir: str):
    """Model (with start weights), optimizer and schedules; return (trainer, checkpoint, epoch).

    An SSL ``frontend`` becomes ``model.frontend``; fbank stays outside the
    model. ``checkpoint`` is the training state to restore (None unless
    resuming); ``epoch`` the first epoch to train.
    """
    holds_frontend = builder.model_holds_frontend(config)
    model = builder.build_model(config, num_speakers, frontend if holds_frontend else None)
    _log_model_size(config, model)
    checkpoint, start_epoch = _load_start_weights(config, model)
    model.to(ctx.device)
    if not holds_frontend:
        frontend.to(ctx.device)
    if config.get("channels_last"):
        model.to(memory_format=torch.channels_last)
    if config.get("compile"):
        model.compile()  # in place: the state_dict keys stay those of the model
    # the WavLM weights of a joint run learn at lr * dataset_args.s3prl_args.lr_scale
    optimizer = builder.build_optimizer(config, frontend_param_groups(model))
    lr_scheduler = builder.build_lr_scheduler(config, optimizer, epoch_iter, ctx.world_size)
    margin_scheduler = builder.build_margin_scheduler(config, model.projection, epoch_iter)
    writer = _summary_writer(config["exp_dir"]) if ctx.is_main else None
    trainer = Trainer(config, ctx, model, None if holds_frontend else frontend, optimizer,
                      lr_scheduler, margin_scheduler, epoch_iter, model_dir,
                      summary_writer=writer)
    return trainer, checkpoint, start_epoch


def _train(config: Dict[str, Any], ctx: DistContext) -> List[EpochResult]:
    exp_dir = config["exp_dir"]
    model_dir = os.path.join(exp_dir, "models")
    if not config.get("checkpoint") and _existing_checkpoints(model_dir):
        raise ConfigError(f"{model_dir} already holds checkpoints; pass --checkpoint to resume "
                          f"or choose another exp_dir")
    os.makedirs(model_dir, exist_ok=True)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    set_seed(config["seed"] + ctx.rank)
    logger.info("rank %d of %d trains on %s", ctx.rank, ctx.world_size, ctx.device)

    spk2id = spk2id_from_utt2spk(config["train_label"])
    num_utterances = len(read_key_value(config["train_label"]))
    epoch_iter = builder.epoch_iterations(config, num_utterances, ctx.world_size)
    logger.info("%d utterances of %d speakers; %d batches per epoch on each of %d ranks",
                num_utterances, len(spk2id), epoch_iter, ctx.world_size)
    if config.get("do_lm"):
        logger.info("large-margin fine-tuning: speed perturbation off, the head keeps "
                    "%d classes", builder.num_classes(config, len(spk2id)))
    frontend = builder.build_frontend(config)
    # saved below as exp_dir/config.yaml with the size filled in, as WeSpeaker does
    config["model_args"] = builder.resolve_feat_dim(config, frontend)["model_args"]
    trainer, checkpoint, start_epoch = _build_trainer(config, ctx, frontend, len(spk2id),
                                                      epoch_iter, model_dir)
    dataset = Dataset(config["data_type"], config["train_data"],
                      builder.effective_dataset_args(config), spk2id=spk2id,
                      reverb_data=config.get("reverb_data"), noise_data=config.get("noise_data"),
                      seed=config["seed"])
    loader = build_loader(config, dataset)
    # Generators are restored last, after everything above that draws from them.
    if checkpoint is not None:
        restore_training_state(checkpoint, config["checkpoint"], trainer.optimizer,
                               trainer.lr_scheduler, trainer.margin_scheduler, ctx.rank,
                               ctx.world_size, trainer.grad_scaler)
    if ctx.is_main:
        save_config(config, os.path.join(exp_dir, "config.yaml"))
    logger.info("training epochs %d to %d", start_epoch, config["num_epochs"])

    history: List[EpochResult] = []
    for epoch in range(start_epoch, config["num_epochs"] + 1):
        dataset.set_epoch(epoch)
        result = trainer.train_epoch(epoch, loader)
        logger.info("epoch %d done: loss %.4f acc %.2f lr %.3e margin %.3f (%d batches over "
                    "all ranks, %d skipped)", epoch, result.loss, result.accuracy, result.lr,
                    result.margin, result.batches, result.skipped_batches)
        trainer.log_scalars(epoch * epoch_iter, epoch_loss=result.loss,
                            epoch_accuracy=result.accuracy)
        if _should_save(epoch, config):
            trainer.save(epoch)
        history.append(result)
    if ctx.is_main and start_epoch <= config["num_epochs"]:
        _link_final_model(model_dir, config["num_epochs"])
    if trainer.summary_writer is not None:
        trainer.summary_writer.close()
    barrier(ctx)
    return history
