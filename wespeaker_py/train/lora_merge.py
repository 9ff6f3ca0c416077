"""Merge a W2V-BERT front-end's LoRA weights into its encoder (run_w2v.sh stage 5).

The LoRA step (``w2vbert_s1_lora.yaml``) trains low-rank updates beside frozen
W2V-BERT weights; the joint fine-tuning step after it has no LoRA. Merging
folds each update into the weight it adapts and renames the front-end's
tensors to those of a front-end without LoRA, so the merged model starts the
next step as an ordinary checkpoint. The speaker model and the head pass
through unchanged.
"""
from __future__ import annotations

from typing import Dict

import torch

from wespeaker_py.config import ConfigError, load_model_config
from wespeaker_py.frontend.w2vbert import W2VBertFrontend, merge_lora
from wespeaker_py.runtime.checkpoint import (FRONTEND_PREFIX, load_weights, model_state_of,
                                             read_checkpoint)
from wespeaker_py.utils.atomic_files import save_torch


def merged_state(config_path: str, checkpoint_path: str) -> Dict[str, torch.Tensor]:
    """The model state of ``checkpoint_path`` with its front-end's LoRA merged.

    ``config_path`` is the LoRA step's config (its ``config.yaml``): it must
    have ``frontend: w2vbert`` with ``use_lora: true``. The front-end tensors
    must match that config exactly (errors name the tensor).
    """
    config = load_model_config(config_path)
    args = config.dataset_args
    if args.frontend != "w2vbert" or not args.w2vbert_args.use_lora:
        raise ConfigError(f"{config_path}: config key 'dataset_args.w2vbert_args.use_lora' must "
                          f"be true with dataset_args.frontend w2vbert (the LoRA step's config)")
    state = model_state_of(read_checkpoint(checkpoint_path))
    frontend = W2VBertFrontend.from_dataset_args(args, pretrained=False)
    load_weights(frontend, {key[len(FRONTEND_PREFIX):]: tensor for key, tensor in state.items()
                            if key.startswith(FRONTEND_PREFIX)}, checkpoint_path)
    merged = merge_lora(frontend)
    result = {key: tensor for key, tensor in state.items()
              if not key.startswith(FRONTEND_PREFIX)}
    result.update({FRONTEND_PREFIX + key: tensor.detach().clone()
                   for key, tensor in merged.state_dict().items()})
    return result


def merge_lora_checkpoint(config_path: str, checkpoint_in: str, checkpoint_out: str) -> int:
    """Write ``checkpoint_in`` with its LoRA merged to ``checkpoint_out`` (atomically, as a
    bare state dict); returns the number of tensors written."""
    state = merged_state(config_path, checkpoint_in)
    save_torch(state, checkpoint_out)
    return len(state)
