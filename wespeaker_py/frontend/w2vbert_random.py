"""Randomly initialised W2V-BERT networks for tests, the recipe's dry runs and benchmarks."""
from __future__ import annotations

from typing import TYPE_CHECKING

from wespeaker_py.frontend.wavlm_random import write_random_model

if TYPE_CHECKING:
    from transformers import Wav2Vec2BertConfig


def tiny_w2vbert_config(num_layers: int = 2) -> "Wav2Vec2BertConfig":
    """W2V-BERT 2.0's layout (160-dim stacked fbank input, relative-key attention,
    depthwise conv module) at hidden size 32; no dropout or LayerDrop."""
    from transformers import Wav2Vec2BertConfig

    return Wav2Vec2BertConfig(
        hidden_size=32, num_hidden_layers=num_layers, num_attention_heads=2,
        intermediate_size=64, conv_depthwise_kernel_size=5, layerdrop=0.0,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        feat_proj_dropout=0.0, conformer_conv_dropout=0.0)


def write_random_w2vbert(out_dir: str, config: "Wav2Vec2BertConfig", seed: int = 0) -> None:
    """Save a randomly initialised ``Wav2Vec2BertModel(config)`` as a Hugging Face directory
    (a little noise on every tensor, see :func:`write_random_model`)."""
    from transformers import Wav2Vec2BertModel

    write_random_model(Wav2Vec2BertModel, config, out_dir, seed)
