"""Per-iteration learning-rate and margin schedules (WeSpeaker's formulas).

Both schedulers are driven by the global iteration ``(epoch - 1) * epoch_iter + batch``
and are pure functions of it, so resuming only needs the iteration number.
"""
from __future__ import annotations

import math
from typing import Any, Dict

import torch


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


class MarginScheduler:
    """Raise the head's margin from ``initial_margin`` to ``final_margin``.

    The margin holds ``initial_margin`` before epoch ``increase_start_epoch``,
    rises between it and ``fix_start_epoch`` and holds ``final_margin``
    afterwards. The rise is linear in the iteration, or for ``exp`` follows
    ``1 - exp(p * ln(1e-3 / (1 + 1e-6)))`` with ``p`` the fraction of the rise
    elapsed: fast at first, then levelling off (WeSpeaker's curve). With
    ``update_margin`` false, or a head without ``update``, the margin is left
    alone after being set to ``initial_margin``. Every step also gives the head
    the iteration (``set_iteration``, where it has one): SphereFace's annealing
    follows it, so a resume restores it with the iteration number.
    """

    _EXP_FLOOR = 1e-3

    def __init__(self, head: torch.nn.Module, epoch_iter: int, increase_start_epoch: int,
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
        self.has_update = hasattr(head, "update")
        self.update_margin = update_margin and self.has_update
        self.follows_iteration = hasattr(head, "set_iteration")
        self.current_iter = 0
        if self.has_update:
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
        """Set the head's margin for ``iteration`` (not when updates are off), and tell a head
        that anneals by the step (``set_iteration``) which one it is."""
        self.current_iter = iteration
        if self.follows_iteration:
            self.head.set_iteration(iteration)
        if self.update_margin:
            self.head.update(margin=self.margin_at(iteration))

    def get_margin(self) -> float:
        return float(getattr(self.head, "margin", 0.0))

    def state_dict(self) -> Dict[str, Any]:
        return {"current_iter": self.current_iter, "margin": self.get_margin()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.current_iter = int(state["current_iter"])
        if self.has_update:
            self.head.update(margin=float(state["margin"]))
