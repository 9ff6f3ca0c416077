"""Undoing a training step on the device, without reading any tensor on the host.

A step whose loss or gradients are not finite must leave no trace: not in the
parameters, not in the optimizer's state (momentum, Adam moments and step
counts) and not in normalisation statistics, which the forward pass in train
mode has already updated. :class:`StepRollback` copies all of them before the
step and, after it, keeps each tensor's new value only where a device-side flag
says the step was good (``torch.where``), so the decision never stalls the
device queue.

The exception is the step in which the optimizer creates its state (the first
one): there is nothing to copy yet, so that step decides on the host, once.
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn as nn


class StepRollback:
    """Snapshot before a step, keep-or-restore after it."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.model = model
        self.optimizer = optimizer
        self._params = [param for group in optimizer.param_groups for param in group["params"]]
        self._live: List[torch.Tensor] = []
        self._copies: List[torch.Tensor] = []
        self._state_keys: Dict[int, List[str]] = {}

    def _state_snapshot_keys(self) -> Dict[int, List[str]]:
        return {id(param): sorted(self.optimizer.state[param])
                for param in self._params if param in self.optimizer.state}

    def _tensors(self) -> List[torch.Tensor]:
        """Parameters, optimizer state tensors and buffers, in a stable order."""
        tensors = [param.data for param in self._params]
        for param in self._params:
            state = self.optimizer.state.get(param, {})
            tensors += [state[key] for key in sorted(state) if torch.is_tensor(state[key])]
        tensors += [buffer for buffer in self.model.buffers()]
        return tensors

    def snapshot(self) -> None:
        """Copy the current state (reusing the copies of the previous step)."""
        self._state_keys = self._state_snapshot_keys()
        live = self._tensors()
        same_shapes = (len(live) == len(self._copies) and all(
            a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
            for a, b in zip(live, self._copies)))
        if same_shapes:
            torch._foreach_copy_(self._copies, live)
        else:
            self._copies = [tensor.detach().clone() for tensor in live]
        self._live = live

    def keep_if(self, good: torch.Tensor) -> None:
        """Keep the step's changes where ``good`` (a 0-dim bool tensor) holds, else undo them."""
        if self._state_snapshot_keys() != self._state_keys:
            # the optimizer created state in this step: decide on the host, once
            if not bool(good):
                self._restore_all()
            return
        for live, copy in zip(self._live, self._copies):
            flag = good if good.device == live.device else good.to(live.device)
            torch.where(flag, live, copy, out=live)

    def _restore_all(self) -> None:
        """Put every snapshotted tensor back and drop the state the optimizer just created."""
        for param in self._params:
            old_keys = self._state_keys.get(id(param))
            state = self.optimizer.state.get(param)
            if state is None:
                continue
            if old_keys is None:
                del self.optimizer.state[param]
            else:
                for key in [key for key in state if key not in old_keys]:
                    del state[key]
        for live, copy in zip(self._live, self._copies):
            live.copy_(copy)
