"""Per-iteration learning-rate and margin schedules (WeSpeaker's formulas).

Every scheduler is driven by the global iteration ``(epoch - 1) * epoch_iter + batch``
and is a pure function of it, so resuming only needs the iteration number. The run
counts it with its own ``epoch_iter``: one that continues a checkpoint with epochs of
another length (another batch size) starts epoch E at the fraction ``(E - 1) /
num_epochs`` of its schedule, as WeSpeaker's schedulers do after its ``--checkpoint``.
The config's ``scheduler`` names the learning-rate ones in
:data:`~wespeaker_py.config.schema.SCHEDULERS`.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Union

import torch

from wespeaker_py.models.projections import ProjectionHead


class ExponentialDecrease:
    """Exponential decay from ``initial_lr`` to ``final_lr`` over the whole run, with warm-up.

    The decayed rate at iteration ``t`` of ``T = num_epochs * epoch_iter`` is
    ``initial_lr * (final_lr / initial_lr) ** (t / T)``, multiplied by a
    coefficient that accounts for the effective batch size:
    ``scale_ratio = world_size * batch_size / 64`` (64 is WeSpeaker's reference
    batch). During the first ``warm_up_epoch`` epochs the coefficient ramps
    linearly, from 0 when ``warm_from_zero`` and otherwise from 1 (only when
    ``scale_ratio > 1``), up to ``scale_ratio``.

    A parameter group with an ``lr_scale`` entry (an SSL front-end's weights,
    see :func:`~wespeaker_py.frontend.ssl.frontend_param_groups`) gets the rate
    times its scale; :meth:`step` and :meth:`get_lr` report the unscaled rate.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, num_epochs: int, epoch_iter: int,
                 initial_lr: float, final_lr: float, warm_up_epoch: float = 6,
                 scale_ratio: float = 1.0, warm_from_zero: bool = False):
        if epoch_iter <= 0:
            raise ValueError(f"epoch_iter must be positive, got {epoch_iter}")
        if initial_lr <= 0 or final_lr <= 0:
            raise ValueError(f"initial_lr and final_lr must be positive, "
                             f"got {initial_lr} and {final_lr}")
        self.optimizer = optimizer
        self.max_iter = num_epochs * epoch_iter
        self.initial_lr = initial_lr
        self.final_lr = final_lr
        self.scale_ratio = scale_ratio
        self.warm_up_iter = warm_up_epoch * epoch_iter
        self.warm_from_zero = warm_from_zero
        self.current_iter = 0
        self.last_lr = initial_lr

    def coefficient(self, iteration: int) -> float:
        """The batch-size/warm-up multiplier at ``iteration``."""
        if iteration < self.warm_up_iter:
            progress = iteration / self.warm_up_iter
            if self.warm_from_zero:
                return self.scale_ratio * progress
            if self.scale_ratio > 1:
                return (self.scale_ratio - 1.0) * progress + 1.0
        return self.scale_ratio

    def lr_at(self, iteration: int) -> float:
        """The learning rate applied at ``iteration``."""
        decay = math.exp(iteration / self.max_iter * math.log(self.final_lr / self.initial_lr))
        return self.coefficient(iteration) * self.initial_lr * decay

    def step(self, iteration: int) -> float:
        """Set every parameter group's lr (times its ``lr_scale``) for ``iteration``.

        Returns the unscaled rate.
        """
        self.current_iter = iteration
        lr = self.lr_at(iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.last_lr = lr
        return lr

    def get_lr(self) -> float:
        """The unscaled rate of the last :meth:`step` (``initial_lr`` before the first)."""
        return self.last_lr

    def state_dict(self) -> Dict[str, Any]:
        return {"current_iter": self.current_iter}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.current_iter = int(state["current_iter"])
        self.last_lr = self.lr_at(self.current_iter)


class TriAngular2(ExponentialDecrease):
    """WeSpeaker's ``TriAngular2``: triangular cycles whose height shrinks by
    ``reduce_lr_diff_ratio`` (a half by default) each cycle (Smith's "triangular2" policy,
    arXiv:1506.01186), with ExponentialDecrease's warm-up.

    A cycle lasts ``C = cycle_step * epoch_iter`` iterations: at iteration ``t``,
    ``p = t % C`` into cycle ``n = t // C``, the rate rises linearly from ``final_lr``
    to the cycle's peak ``final_lr + (initial_lr - final_lr) * reduce_lr_diff_ratio ** n``
    over the first ``S = C // 2`` iterations (``p <= S``) and falls back over the rest.
    That rate is multiplied by ExponentialDecrease's coefficient (warm-up from 1, and
    only when ``scale_ratio > 1``; there is no ``warm_from_zero``, as in WeSpeaker).

    A fractional ``C`` (``cycle_step`` 2.5 of 7 batches) leaves more than ``S`` iterations
    after the peak; the fall stops at ``final_lr`` there, where WeSpeaker's formula goes
    on below it, even to a negative rate.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, num_epochs: int, epoch_iter: int,
                 initial_lr: float, final_lr: float, warm_up_epoch: float = 6,
                 scale_ratio: float = 1.0, cycle_step: float = 2,
                 reduce_lr_diff_ratio: float = 0.5):
        super().__init__(optimizer, num_epochs, epoch_iter, initial_lr, final_lr,
                         warm_up_epoch=warm_up_epoch, scale_ratio=scale_ratio)
        self.cycle_iter = cycle_step * epoch_iter
        self.half_cycle = self.cycle_iter // 2
        if self.half_cycle <= 0:
            raise ValueError(f"cycle_step {cycle_step:g} of {epoch_iter} batches per epoch "
                             f"is a cycle of {self.cycle_iter:g} batches; it needs at least 2")
        self.reduce_lr_diff_ratio = reduce_lr_diff_ratio

    def lr_at(self, iteration: int) -> float:
        """The learning rate applied at ``iteration``."""
        point = iteration % self.cycle_iter
        peak = self.final_lr + (self.initial_lr - self.final_lr) * (
            self.reduce_lr_diff_ratio ** (iteration // self.cycle_iter))
        if point <= self.half_cycle:
            lr = self.final_lr + (peak - self.final_lr) * point / self.half_cycle
        else:
            lr = max(self.final_lr, peak - (peak - self.final_lr)
                     * (point - self.half_cycle) / self.half_cycle)
        return self.coefficient(iteration) * lr


class _IterationSchedule:
    """What the warm-up schedules share: the state is the iteration of the last step.

    A subclass gives :meth:`group_lrs`, the unscaled rate of each parameter group;
    :meth:`step` multiplies each by the group's ``lr_scale`` (an SSL front-end's
    weights, see :func:`~wespeaker_py.frontend.ssl.frontend_param_groups`; 1 when
    absent, so the rates are WeSpeaker's).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, epoch_iter: int):
        if epoch_iter <= 0:
            raise ValueError(f"epoch_iter must be positive, got {epoch_iter}")
        self.optimizer = optimizer
        self.current_iter = 0

    def group_lrs(self, iteration: int) -> List[float]:
        """Each parameter group's rate at ``iteration``, before its ``lr_scale``."""
        raise NotImplementedError

    def lr_at(self, iteration: int) -> float:
        """The first parameter group's rate at ``iteration``, before its ``lr_scale``."""
        return self.group_lrs(iteration)[0]

    def step(self, iteration: int) -> float:
        """Set every parameter group's lr (times its ``lr_scale``) for ``iteration``.

        Returns the unscaled rate of the first group.
        """
        self.current_iter = iteration
        lrs = self.group_lrs(iteration)
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lrs[0]

    def get_lr(self) -> float:
        """The unscaled rate of the last :meth:`step` (of iteration 0 before the first)."""
        return self.lr_at(self.current_iter)

    def state_dict(self) -> Dict[str, Any]:
        return {"current_iter": self.current_iter}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.current_iter = int(state["current_iter"])


class WarmupLRWithStepDecay(_IterationSchedule):
    """WeSpeaker's ``WarmupLR_withStepDecay``: linear warm-up, then a drop every few epochs.

    Each parameter group's base rate is its lr when the scheduler is built
    (``optimizer_args.lr``). At iteration ``t`` the group's rate is the base
    times ``(t + 1) / (W + 1)`` while ``t < W = warmup_step * epoch_iter``, then
    times ``gamma ** ((t - W) // (decay_step * epoch_iter))``, or 1 when
    ``decay_step <= 0``. Each group's rate is further multiplied by its
    ``lr_scale`` (WeSpeaker has none; absent means 1). ``num_epochs`` and
    ``scale_ratio`` are taken as every scheduler is built and unused, as in
    WeSpeaker: the rate does not follow the global batch size.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, num_epochs: int, epoch_iter: int,
                 warmup_step: int, decay_step: int, gamma: float = 0.1,
                 scale_ratio: float = 1.0):
        super().__init__(optimizer, epoch_iter)
        self.warmup_iter = warmup_step * epoch_iter
        self.decay_iter = decay_step * epoch_iter if decay_step > 0 else 0
        self.gamma = gamma
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]

    def factor(self, iteration: int) -> float:
        """The multiplier of the base rates at ``iteration``."""
        if iteration < self.warmup_iter:
            return (iteration + 1) / (self.warmup_iter + 1)
        if self.decay_iter > 0:
            return self.gamma ** ((iteration - self.warmup_iter) // self.decay_iter)
        return 1.0

    def group_lrs(self, iteration: int) -> List[float]:
        factor = self.factor(iteration)
        return [base * factor for base in self.base_lrs]


class WarmupCosineScheduler(_IterationSchedule):
    """WeSpeaker's ``WarmupCosineScheduler``: linear warm-up, half-cosine decay, then flat.

    At iteration ``t`` the rate is ``max_lr * t / W`` while ``t < W = warmup_epoch *
    epoch_iter`` (no warm-up when ``W`` is 0), then ``min_lr + (max_lr - min_lr) *
    (1 + cos(pi * (t - W) / (F - W))) / 2`` while ``t < F = int(fix_epoch *
    epoch_iter)``, then ``min_lr``. Every parameter group gets that rate, times
    its ``lr_scale`` (WeSpeaker has none; absent means 1). ``num_epochs`` and
    ``scale_ratio`` are taken as every scheduler is built and unused, as in
    WeSpeaker: the rate does not follow the global batch size.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, num_epochs: int, epoch_iter: int,
                 min_lr: float, max_lr: float, warmup_epoch: float, fix_epoch: float,
                 scale_ratio: float = 1.0):
        super().__init__(optimizer, epoch_iter)
        if min_lr > max_lr:
            raise ValueError(f"min_lr ({min_lr}) must be <= max_lr ({max_lr})")
        self.min_lr = min_lr
        self.max_lr = max_lr
        self.warmup_iter = warmup_epoch * epoch_iter
        self.fix_iter = int(fix_epoch * epoch_iter)

    def lr_at(self, iteration: int) -> float:
        """The rate at ``iteration``, before a group's ``lr_scale``."""
        if iteration < self.warmup_iter:
            return self.max_lr * iteration / self.warmup_iter
        if iteration < self.fix_iter:
            progress = (iteration - self.warmup_iter) / (self.fix_iter - self.warmup_iter)
            return self.min_lr + 0.5 * (self.max_lr - self.min_lr) * (
                1.0 + math.cos(math.pi * progress))
        return self.min_lr

    def group_lrs(self, iteration: int) -> List[float]:
        return [self.lr_at(iteration)] * len(self.optimizer.param_groups)


LRScheduler = Union[ExponentialDecrease, TriAngular2, WarmupLRWithStepDecay,
                    WarmupCosineScheduler]


class MarginScheduler:
    """Raise the head's margin from ``initial_margin`` to ``final_margin``.

    The margin holds ``initial_margin`` before epoch ``increase_start_epoch``,
    rises between it and ``fix_start_epoch`` and holds ``final_margin``
    afterwards. The rise is linear in the iteration, or for ``exp`` follows
    ``1 - exp(p * ln(1e-3 / (1 + 1e-6)))`` with ``p`` the fraction of the rise
    elapsed: fast at first, then levelling off (WeSpeaker's curve). With
    ``update_margin`` false the margin is left alone after being set to
    ``initial_margin``. A head whose ``margin_schedulable`` is false (softmax,
    SphereFace's fixed multiplier) is never given a margin. Every step also gives
    the head the iteration (``set_iteration``): SphereFace's annealing follows it,
    so a resume restores it with the iteration number.
    """

    _EXP_FLOOR = 1e-3

    def __init__(self, head: ProjectionHead, epoch_iter: int, increase_start_epoch: int,
                 fix_start_epoch: int, initial_margin: float, final_margin: float,
                 update_margin: bool = True, increase_type: str = "exp"):
        if increase_type not in ("exp", "linear"):
            raise ValueError(f"increase_type must be 'exp' or 'linear', got {increase_type!r}")
        self.head = head
        self.increase_start_iter = (increase_start_epoch - 1) * epoch_iter
        self.fix_start_iter = (fix_start_epoch - 1) * epoch_iter
        self.initial_margin = initial_margin
        self.final_margin = final_margin
        self.increase_type = increase_type
        self.schedulable = head.margin_schedulable
        self.update_margin = update_margin and self.schedulable
        self.current_iter = 0
        if self.schedulable:
            head.update(margin=initial_margin)

    def margin_at(self, iteration: int) -> float:
        """The margin the schedule prescribes at ``iteration``."""
        if iteration >= self.fix_start_iter:
            return self.final_margin
        if iteration < self.increase_start_iter:
            return self.initial_margin
        progress = (iteration - self.increase_start_iter) / (
            self.fix_start_iter - self.increase_start_iter)
        if self.increase_type == "exp":
            ratio = 1.0 - math.exp(progress * math.log(self._EXP_FLOOR / (1.0 + 1e-6)))
        else:
            ratio = progress
        return self.initial_margin + (self.final_margin - self.initial_margin) * ratio

    def step(self, iteration: int) -> None:
        """Set the head's margin for ``iteration`` (not when updates are off or the head has
        none to schedule), and tell the head (``set_iteration``) which iteration it is."""
        self.current_iter = iteration
        self.head.set_iteration(iteration)
        if self.update_margin:
            self.head.update(margin=self.margin_at(iteration))

    def get_margin(self) -> float:
        return float(getattr(self.head, "margin", 0.0))

    def state_dict(self) -> Dict[str, Any]:
        return {"current_iter": self.current_iter, "margin": self.get_margin()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.current_iter = int(state["current_iter"])
        if self.schedulable:
            self.head.update(margin=float(state["margin"]))
