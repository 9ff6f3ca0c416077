"""Tiny random Whisper checkpoints in OpenAI's format, for tests, dry runs and benchmarks."""
from __future__ import annotations

from typing import Dict

import torch

from wespeaker_py.frontend.whisper import MAX_POSITIONS, WhisperEncoder
from wespeaker_py.utils.atomic_files import save_torch


def tiny_whisper_dims(num_layers: int = 3, n_mels: int = 80, width: int = 16,
                      heads: int = 2) -> Dict[str, int]:
    """OpenAI's ``dims`` of a Whisper with a ``num_layers``-block, ``width``-wide audio
    encoder (Whisper's 1500 audio positions) and a one-block text decoder (100 tokens)."""
    return {"n_mels": n_mels, "n_vocab": 100, "n_audio_ctx": MAX_POSITIONS,
            "n_audio_state": width, "n_audio_head": heads, "n_audio_layer": num_layers,
            "n_text_ctx": 448, "n_text_state": width, "n_text_head": heads, "n_text_layer": 1}


def write_random_whisper(path: str, dims: Dict[str, int], seed: int = 0) -> None:
    """Save ``{"dims": dims, "model_state_dict": ...}`` as OpenAI's checkpoints are, in
    float16: every encoder tensor (``encoder.conv1``, ..., ``encoder.blocks.<i>``,
    ``encoder.ln_post``), random but for the sinusoidal positions, and a few decoder
    tensors (the decoder is never read here)."""
    generator = torch.Generator().manual_seed(seed)
    layers = dims["n_audio_layer"]
    encoder = WhisperEncoder(dims["n_mels"], dims["n_audio_state"], dims["n_audio_head"],
                             layers, 0, layers - 1)
    state = {}
    for name, tensor in encoder.state_dict().items():
        if name.startswith("ln_post2."):   # WeSpeaker's addition, not OpenAI's
            continue
        noise = torch.randn(tensor.shape, generator=generator)
        if tensor.dim() > 1 and name != "positional_embedding":
            tensor = noise / tensor[0].numel() ** 0.5   # unit gain for unit-variance input
        elif name.endswith("ln.weight"):
            tensor = 1.0 + 0.1 * noise
        elif tensor.dim() == 1:
            tensor = 0.1 * noise
        state[f"encoder.{name}"] = tensor.half()
    width, text = dims["n_audio_state"], dims["n_text_state"]
    state["encoder.ln_post.weight"] = (1.0 + 0.1 * torch.randn(width, generator=generator)).half()
    state["encoder.ln_post.bias"] = (0.1 * torch.randn(width, generator=generator)).half()
    state["decoder.token_embedding.weight"] = torch.randn(
        dims["n_vocab"], text, generator=generator).half()
    state["decoder.positional_embedding"] = torch.randn(
        dims["n_text_ctx"], text, generator=generator).half()
    state["decoder.ln.weight"] = torch.ones(text).half()
    state["decoder.ln.bias"] = torch.zeros(text).half()
    save_torch({"dims": dict(dims), "model_state_dict": state}, path)
