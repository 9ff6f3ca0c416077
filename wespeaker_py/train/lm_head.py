"""The head size of a large-margin fine-tuning run: that of the weights it starts from.

An LM run trains without speed perturbation, but its head must load the base
run's head, which has three classes per speaker when the base run used speed
perturbation and one otherwise. The start weights (``checkpoint``, else
``model_init``) say which.
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Dict, Optional, Sequence, Tuple

import torch

from wespeaker_py.config import TrainConfig
from wespeaker_py.models.projections import get_projection
from wespeaker_py.runtime.checkpoint import (HEAD_PREFIX, CheckpointMismatchError,
                                             model_state_of, read_checkpoint)

Shapes = Dict[str, Tuple[int, ...]]


@lru_cache(maxsize=4)
def _checkpoint_head_shapes(path: str, mtime_ns: int, size: int) -> Shapes:
    """Shapes of the head tensors in a checkpoint; the key includes its mtime and size."""
    state = model_state_of(read_checkpoint(path))
    return {key: tuple(value.shape) for key, value in state.items() if key.startswith(HEAD_PREFIX)}


def _head_shapes(config: TrainConfig, num_class: int) -> Shapes:
    projection_args = dict(config.projection_args, do_lm=True)
    with torch.device("meta"):
        head = get_projection(projection_args, embed_dim=config.model_args["embed_dim"],
                              num_class=num_class)
    return {HEAD_PREFIX + key: tuple(value.shape) for key, value in head.state_dict().items()}


def start_weights_num_classes(config: TrainConfig,
                              candidates: Sequence[int]) -> Optional[int]:
    """Which of ``candidates`` (class counts) the head of the start weights was built for.

    None when the config names no start weights or they have no head.

    Raises:
        CheckpointMismatchError: the head fits none of the candidates; the
            message names the tensor, its shape and the shape for each candidate.
    """
    path = config.checkpoint or config.model_init
    if not path:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    stat = os.stat(path)
    found = _checkpoint_head_shapes(path, stat.st_mtime_ns, stat.st_size)
    if not found:
        return None
    expected = {count: _head_shapes(config, count) for count in candidates}
    for count, shapes in expected.items():
        if shapes == found:
            return count
    keys = sorted(set(found).union(*expected.values()))
    differing = ([k for k in keys if all(s.get(k) != found.get(k) for s in expected.values())]
                 or [k for k in keys if any(s.get(k) != found.get(k) for s in expected.values())])
    key = differing[0]
    options = " or ".join(f"{expected[count].get(key)} for {count} classes"
                          for count in candidates)
    raise CheckpointMismatchError(
        f"{path}: tensor '{key}' has shape {found.get(key)} in the checkpoint, but the "
        f"large-margin fine-tuning head needs {options} (base run without / with speed "
        f"perturbation)")
