"""One training step, queued on the device without reading anything back.

waveforms -> speed/noise/reverb (``augment_on: device``) -> features -> model -> head -> loss ->
backward -> clip -> optimizer step, kept only when the loss and the gradient
norm are finite. That flag is computed on the device and applied with
:class:`~wespeaker_py.train.rollback.StepRollback`; the step returns device
tensors (loss sum, correct count, flags) that the loop adds up and reads only
when it logs.

Under DDP the flag agrees on every rank: a rank whose loss is not finite
back-propagates NaN, the gradient all-reduce carries it to every rank, and each
rank's flag comes from the reduced gradients. With float16 the grad scaler
skips such a step by itself and the flag is the loss's, so the ranks agree on it
by one small all-reduce of their own.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from wespeaker_py.config.schema import LOSSES
from wespeaker_py.dataset.device_augment import augment_batch
from wespeaker_py.train.distributed import true_on_every_rank, wrap_ddp
from wespeaker_py.train.plan import TrainingPlan
from wespeaker_py.train.rollback import StepRollback


class ForwardLoss(nn.Module):
    """Inputs and labels -> (logits, loss): the part of a step that DDP wraps.

    The inputs are features, or waveforms when the model holds its front-end
    (``model.frontend``, an SSL front-end). The head runs in float32 outside
    autocast: its cosines feed an arccos-like margin that bf16 would round badly.
    """

    def __init__(self, model: nn.Module, criterion: nn.Module, model_holds_frontend: bool):
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.model_holds_frontend = model_holds_frontend

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


def stacked_total_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of ``tensors`` taken together: the norm of their norms.

    What ``nn.utils.get_total_norm`` computes (torch >= 2.6, one fused kernel per
    device and dtype); this is its stand-in on older torch.
    """
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(tensor)
                                                 for tensor in tensors]))


_total_norm = getattr(nn.utils, "get_total_norm", stacked_total_norm)


class TrainingStep:
    """Trains ``model`` (head as ``model.projection``) on one batch per call.

    ``fbank`` is the fbank front-end, run without gradients before the model,
    or None when the model holds its own front-end.
    """

    def __init__(self, plan: TrainingPlan, model: nn.Module, fbank: Optional[nn.Module],
                 optimizer: torch.optim.Optimizer):
        self.device = plan.world.device
        self.world = plan.world
        self.model = model
        self.fbank = fbank
        self.optimizer = optimizer
        self.amp_dtype = plan.amp_dtype
        self.grad_clip = plan.grad_clip
        criterion = LOSSES[plan.loss].build("loss_args", plan.loss_args)
        drops_layers = plan.model_holds_frontend and getattr(plan.frontend, "drops_layers",
                                                             False)
        self.forward_loss = wrap_ddp(ForwardLoss(model, criterion, plan.model_holds_frontend),
                                     plan.world, find_unused_parameters=drops_layers)
        # float16 needs loss scaling; the scaler skips steps with inf/NaN gradients itself
        self.grad_scaler = (torch.amp.GradScaler(self.device.type)
                            if self.amp_dtype == torch.float16 else None)
        keep_optimizer_state_on_device(optimizer, self.device)
        self.rollback = StepRollback(model, optimizer)
        self.params = [p for group in optimizer.param_groups for p in group["params"]]

    def train(self) -> None:
        """Put the model (and the fbank front-end) in training mode."""
        self.forward_loss.train()
        if self.fbank is not None:
            self.fbank.train()

    def __call__(self, batch: Mapping[str, Any]) -> StepOutcome:
        """Train on one collated host batch (``wavs``, ``labels``, ``keys``, augmentation plan)."""
        # speed perturbation and noise/reverb of augment_on: device happen here; the rows'
        # grouping is read from the host batch, so nothing waits
        inputs, labels = augment_batch(batch, self.device)
        self.rollback.snapshot()
        if self.fbank is not None:
            with torch.no_grad():
                inputs = self.fbank(inputs)
        autocast = (torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)
                    if self.amp_dtype is not None else nullcontext())
        with autocast:
            logits, loss = self.forward_loss(inputs, labels)
        loss = loss.float()
        loss_finite = torch.isfinite(loss.detach())
        self.optimizer.zero_grad(set_to_none=True)
        # x1.0 for a finite loss (bit-exact); NaN otherwise, so that every gradient, and
        # under DDP every rank's reduced gradient, says so too
        loss = loss * torch.where(loss_finite, 1.0, float("nan")).to(loss.dtype)
        if self.grad_scaler is not None:
            self._scaled_backward_and_step(loss)
            # every rank drops (or, with nonfinite_loss: raise, stops at) the same step
            good = true_on_every_rank(loss_finite, self.world)
        else:
            loss.backward()
            good = torch.isfinite(self._gradient_norm()) & loss_finite
            self.optimizer.step()
        self.rollback.keep_if(good)
        correct = (logits.detach().argmax(dim=1) == labels).sum()
        return StepOutcome(loss_sum=torch.where(good, loss.detach() * labels.numel(), 0.0),
                           correct=torch.where(good, correct, torch.zeros_like(correct)),
                           good=good, loss_finite=loss_finite,
                           keys=list(batch.get("keys") or []))

    def _gradient_norm(self) -> torch.Tensor:
        """The total gradient norm, after clipping to ``grad_clip`` when that is set."""
        if self.grad_clip > 0:
            return nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return torch.zeros((), device=self.device)
        return _total_norm(grads)

    def _scaled_backward_and_step(self, loss: torch.Tensor) -> None:
        """float16: backward and step through the grad scaler (which syncs)."""
        self.grad_scaler.scale(loss).backward()
        if self.grad_clip > 0:
            self.grad_scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
