"""One training step, queued on the device without reading anything back.

waveforms -> speed/noise/reverb (``augment_on: device``) -> features -> model -> head -> loss ->
backward -> clip -> optimizer step, kept only when the loss and the gradient
norm are finite. That flag is computed on the device and applied with
:class:`~wespeaker_py.train.rollback.StepRollback`; the step returns device
tensors (loss sum, correct count, flags) that the loop adds up and reads only
when it logs.

Under DDP the flag agrees on every rank without a collective of its own: a
rank whose loss is not finite back-propagates NaN, the gradient all-reduce
carries it to every rank, and each rank's flag comes from the reduced
gradients.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.nn as nn

from wespeaker_py.config import TrainConfig
from wespeaker_py.dataset.device_augment import augment_batch
from wespeaker_py.train.distributed import DistContext, wrap_ddp
from wespeaker_py.train.rollback import StepRollback
from wespeaker_py.utils.cli_errors import RunFailedError

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class NonFiniteLossError(RunFailedError):
    """The loss or the gradients became NaN or infinite; that step changed nothing."""


@dataclass(frozen=True)
class StepSettings:
    """What the step reads from the config: precision, clipping, loss and NaN policy."""

    amp: bool = False
    amp_dtype: torch.dtype = torch.bfloat16
    grad_clip: float = 0.0
    nonfinite_policy: str = "raise"
    loss_args: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: TrainConfig) -> "StepSettings":
        """Read ``enable_amp``, ``amp_dtype``, ``grad_clip``, ``nonfinite_loss``, ``loss_args``."""
        return cls(amp=config.enable_amp, amp_dtype=AMP_DTYPES[config.amp_dtype],
                   grad_clip=config.grad_clip or 0.0, nonfinite_policy=config.nonfinite_loss,
                   loss_args=dict(config.loss_args))


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


@dataclass
class StepOutcome:
    """One step's results, all on the device: read them only when logging."""

    loss_sum: torch.Tensor   # sum of per-sample losses; 0 when the step was dropped
    correct: torch.Tensor    # correctly classified samples; 0 when dropped
    good: torch.Tensor       # bool: the step was applied (same on every rank)
    loss_finite: torch.Tensor  # bool: this rank's loss was finite
    keys: List[str]          # the batch's utterance keys, for messages


def keep_optimizer_state_on_device(optimizer: torch.optim.Optimizer,
                                   device: torch.device) -> None:
    """On CUDA, make Adam/AdamW keep their step counts on the device ("capturable").

    The rollback can then keep or undo them without a sync. Call it again after
    loading an optimizer state_dict, which brings back the saved setting.
    """
    if device.type != "cuda":
        return
    for group in optimizer.param_groups:
        if "capturable" not in group:
            continue
        group["capturable"] = True
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(device=param.device, dtype=torch.float32)


class StepRunner:
    """Runs training steps of ``model`` (head as ``model.projection``) with ``optimizer``.

    ``frontend`` is the fbank front-end, or None when the model holds its own.
    """

    def __init__(self, settings: StepSettings, ctx: DistContext, model: nn.Module,
                 frontend: Optional[nn.Module], optimizer: torch.optim.Optimizer):
        self.settings = settings
        self.ctx = ctx
        self.model = model
        self.frontend = frontend
        self.optimizer = optimizer
        self.module = wrap_ddp(TrainingStep(model, nn.CrossEntropyLoss(**settings.loss_args)),
                               ctx)
        use_scaler = settings.amp and settings.amp_dtype == torch.float16
        self.grad_scaler = torch.amp.GradScaler(ctx.device.type) if use_scaler else None
        keep_optimizer_state_on_device(optimizer, ctx.device)
        self.rollback = StepRollback(model, optimizer)
        self._params = [p for group in optimizer.param_groups for p in group["params"]]

    def train(self) -> None:
        """Put the model (and the fbank front-end) in training mode."""
        self.module.train()
        if self.frontend is not None:
            self.frontend.train()

    def _autocast(self):
        if not self.settings.amp:
            return nullcontext()
        return torch.autocast(device_type=self.ctx.device.type, dtype=self.settings.amp_dtype)

    def _gradient_norm(self) -> torch.Tensor:
        grads = [p.grad for p in self._params if p.grad is not None]
        if self.settings.grad_clip > 0:
            return nn.utils.clip_grad_norm_(self._params, self.settings.grad_clip)
        if not grads:
            return torch.zeros((), device=self.ctx.device)
        return nn.utils.get_total_norm(grads)

    def _backward_and_step(self, loss: torch.Tensor, loss_finite: torch.Tensor) -> torch.Tensor:
        """Backward and optimizer step; return the device flag "this step may stay"."""
        self.optimizer.zero_grad(set_to_none=True)
        # x1.0 for a finite loss (bit-exact); NaN otherwise, so that every
        # gradient, and under DDP every rank's reduced gradient, says so too
        poison = torch.where(loss_finite, 1.0, float("nan")).to(loss.dtype)
        if self.grad_scaler is not None:
            # float16: the scaler skips steps with inf/NaN gradients by design (and syncs)
            self.grad_scaler.scale(loss * poison).backward()
            if self.settings.grad_clip > 0:
                self.grad_scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self._params, self.settings.grad_clip)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
            return loss_finite
        (loss * poison).backward()
        good = torch.isfinite(self._gradient_norm()) & loss_finite
        self.optimizer.step()
        return good

    def __call__(self, batch: Mapping[str, Any]) -> StepOutcome:
        """Train on one collated host batch (``wavs``, ``labels``, ``keys``, augmentation plan)."""
        # speed perturbation and noise/reverb of dataset_args.augment_on: device happen
        # here; the rows' grouping is read from the host batch, so nothing waits
        inputs, labels = augment_batch(batch, self.ctx.device)
        self.rollback.snapshot()
        if self.frontend is not None:
            with torch.no_grad():
                inputs = self.frontend(inputs)
        with self._autocast():
            logits, loss = self.module(inputs, labels)
        loss = loss.float()
        loss_finite = torch.isfinite(loss.detach())
        good = self._backward_and_step(loss, loss_finite)
        self.rollback.keep_if(good)
        zero = torch.zeros((), device=loss.device)
        correct = (logits.detach().argmax(dim=1) == labels).sum()
        return StepOutcome(loss_sum=torch.where(good, loss.detach() * labels.numel(), zero),
                           correct=torch.where(good, correct, torch.zeros_like(correct)),
                           good=good, loss_finite=loss_finite,
                           keys=list(batch.get("keys") or []))
