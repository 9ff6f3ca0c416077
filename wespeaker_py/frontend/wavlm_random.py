"""Randomly initialised WavLM networks for tests, the mini recipe and benchmarks.

:func:`write_random_model` writes any Hugging Face model so (W2V-BERT's stand-ins too).

Both configs keep WavLM's conv strides (one frame per 320 samples, 20 ms at
16 kHz) and the Large layout (layer-normalised conv blocks, pre-norm
transformer), so they exercise the same code paths as WavLM Large.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn

from wespeaker_py.frontend.wavlm_convert import save_hf_directory

if TYPE_CHECKING:
    from transformers import WavLMConfig

_CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
_CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)


def tiny_wavlm_config(large_layout: bool = True) -> "WavLMConfig":
    """2 layers, hidden size 32, 16 conv channels, no dropout.

    ``large_layout=False`` gives the Base layout instead (group norm in the
    first conv block, post-norm transformer).
    """
    from transformers import WavLMConfig

    return WavLMConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, conv_kernel=_CONV_KERNELS, conv_stride=_CONV_STRIDES,
        conv_bias=False, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer" if large_layout else "group",
        do_stable_layer_norm=large_layout,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        feat_proj_dropout=0.0, layerdrop=0.0, num_buckets=320, max_bucket_distance=800)


def large_wavlm_config() -> "WavLMConfig":
    """The shape of WavLM Large: 24 layers, hidden 1024, 16 heads, FFN 4096, 512 conv channels."""
    from transformers import WavLMConfig

    return WavLMConfig(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        conv_dim=(512,) * 7, conv_kernel=_CONV_KERNELS, conv_stride=_CONV_STRIDES,
        conv_bias=False, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
        feat_extract_norm="layer", do_stable_layer_norm=True,
        hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
        feat_proj_dropout=0.1, layerdrop=0.0, num_buckets=320, max_bucket_distance=800)


def write_random_model(model_class: Callable[[Any], nn.Module], config: Any, out_dir: str,
                       seed: int = 0) -> None:
    """Save a randomly initialised Hugging Face ``model_class(config)`` as a directory.

    After transformers' own initialisation every tensor gets a little noise,
    so that no two tensors are equal (fresh layer norms are all ones and
    zeros) and a tensor put in the wrong place by a conversion shows.
    """
    torch.manual_seed(seed)
    model = model_class(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    save_hf_directory(model, out_dir)


def write_random_wavlm(out_dir: str, config: "WavLMConfig", seed: int = 0) -> None:
    """Save a randomly initialised ``WavLMModel(config)`` (see :func:`write_random_model`)."""
    from transformers import WavLMModel

    write_random_model(WavLMModel, config, out_dir, seed)
