"""Whisper encoder front-end (WeSpeaker's ``frontend: whisper_encoder``, Whisper-PMFA).

Waveforms become Whisper's log-mel features
(:class:`~wespeaker_py.frontend.whisper_features.WhisperLogMel`, no gradients), then
run through the first ``num_blocks`` blocks of Whisper's audio encoder: two
convolutions with GELU (the second of stride 2: one frame per 20 ms), the sinusoidal
position embedding, pre-norm transformer blocks. The outputs of blocks
``layer_st..layer_ed`` (0-based, inclusive) are concatenated on the feature axis and
layer-normalised by a new LayerNorm (``ln_post2``): ``[B, frames, (layer_ed - layer_st
+ 1) * output_size]``, what :mod:`wespeaker_py.models.whisper_pmfa` pools. Then, as
WeSpeaker's training and extraction loops do for every front-end, the config's CMVN
(``dataset_args.cmvn``, on by default) and, in training, SpecAugment.

Parameter names are WeSpeaker's (``encoder.conv1``, ``encoder.blocks.<i>.attn.query``,
``encoder.ln_post2``, ...), which are OpenAI's for the encoder: the model's keys are
``frontend.encoder.*``. Pretrained weights come from OpenAI's checkpoint file
(``model_path``, e.g. ``large-v2.pt``), never downloaded.

Whisper's positions end at 1500 frames (30 s). Longer inputs keep their first 30 s
only, as in WeSpeaker, with a warning (the features' per-utterance maximum is still
taken over the whole input, as WeSpeaker's is).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections import Counter
from typing import Any, Dict, Mapping, NoReturn, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from wespeaker_py.config import (ConfigError, DatasetArgs, SpecAugArgs, WhisperEncoderArgs,
                                 as_dataset_args)
from wespeaker_py.frontend.specaug import apply_cmvn, cmvn_flags, spec_augment
from wespeaker_py.frontend.whisper_features import WhisperLogMel
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.torch_files import read_checkpoint

logger = get_logger(__name__)

MAX_POSITIONS = 1500   # Whisper's audio context: 30 s of 20 ms frames
KEY = "dataset_args.whisper_encoder_args"
# where WeSpeaker's whisper_encoder downloads large-v2.pt from, and its md5 (facts only:
# nothing is downloaded here)
LARGE_V2_URL = ("https://openaipublic.azureedge.net/main/whisper/models/"
                "81f7c96c852ee8fc832187b0132e569d6c3065a3252ed18e56effd0b6a73e524/large-v2.pt")
LARGE_V2_MD5 = "668764447eeda98eeba5ef7bfcb4cc3d"
# OpenAI's ``dims`` entries and the config keys that must agree with them
_DIMS_KEYS = (("n_mels", "n_mels"), ("n_audio_state", "output_size"),
              ("n_audio_head", "n_head"))


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """``[length, channels]`` sine then cosine position codes at geometric timescales from
    1 to ``max_timescale``, in float32 (Whisper's audio position embedding)."""
    half = channels // 2
    step = math.log(max_timescale) / (half - 1)
    rates = torch.exp(-step * torch.arange(half))
    angles = torch.arange(length)[:, None] * rates[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with Whisper's projections (``key`` without bias)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, dim = x.shape

        def split(projected: torch.Tensor) -> torch.Tensor:
            return projected.view(batch, frames, self.heads, -1).transpose(1, 2)

        mixed = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)),
                                               split(self.value(x)))
        return self.out(mixed.transpose(1, 2).reshape(batch, frames, dim))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: attention, then a 4x GELU MLP, each with a residual."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, heads)
        self.attn_ln = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.mlp_ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """Whisper's audio encoder cut to ``num_blocks`` blocks, with the outputs of blocks
    ``layer_st..layer_ed`` concatenated and normalised by ``ln_post2``.

    ``forward`` maps log-mel ``[B, mel_frames, n_mels]`` to ``[B, frames, width]``,
    ``frames = ceil(mel_frames / 2)`` up to :data:`MAX_POSITIONS`. Blocks after
    ``layer_ed`` do not change the output and are not run.
    """

    def __init__(self, n_mels: int, dim: int, heads: int, num_blocks: int, layer_st: int,
                 layer_ed: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(MAX_POSITIONS, dim))
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads) for _ in range(num_blocks))
        self.ln_post2 = nn.LayerNorm(dim * (layer_ed - layer_st + 1))
        self.layer_st = layer_st
        self.layer_ed = layer_ed

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        # conv2's first MAX_POSITIONS outputs read no further than mel frame 2 * MAX_POSITIONS
        x = mel[:, :2 * MAX_POSITIONS + 1].transpose(1, 2)
        x = F.gelu(self.conv2(F.gelu(self.conv1(x)))).transpose(1, 2)[:, :MAX_POSITIONS]
        x = x + self.positional_embedding[:x.shape[1]].to(x.dtype)
        outputs = []
        for block in self.blocks[:self.layer_ed + 1]:
            x = block(x)
            outputs.append(x)
        return self.ln_post2(torch.cat(outputs[self.layer_st:], dim=-1))


def _dims_error(key: str, path: str, config_value: Any, file_value: Any, what: str) -> NoReturn:
    raise ConfigError(f"config key '{KEY}.{key}' is {config_value}, but {path} "
                      f"({KEY}.model_path) has {what} {file_value}")


def _check_dims(dims: Mapping[str, Any], args: WhisperEncoderArgs, path: str) -> None:
    for name, key in _DIMS_KEYS:
        if name in dims and int(dims[name]) != getattr(args, key):
            _dims_error(key, path, getattr(args, key), dims[name], name)
    if "n_audio_layer" in dims and int(dims["n_audio_layer"]) < args.num_blocks:
        _dims_error("num_blocks", path, args.num_blocks, dims["n_audio_layer"],
                    "only n_audio_layer")
    if int(dims.get("n_audio_ctx", MAX_POSITIONS)) != MAX_POSITIONS:
        raise ConfigError(f"{path} ({KEY}.model_path) has n_audio_ctx {dims['n_audio_ctx']}; "
                          f"the encoder here has Whisper's {MAX_POSITIONS} positions")


def read_openai_checkpoint(path: str) -> Dict[str, Any]:
    """OpenAI's Whisper checkpoint ``{"dims": ..., "model_state_dict": ...}`` from ``path``
    (``dataset_args.whisper_encoder_args.model_path``); FileNotFoundError says where
    WeSpeaker takes large-v2 from; ModelSourceError (one line, naming the file) when it is no
    PyTorch checkpoint, ValueError when it has another layout."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Whisper checkpoint {path} ({KEY}.model_path) does not exist; weights are never "
            f"downloaded at run time: fetch OpenAI's large-v2.pt once (WeSpeaker's recipe "
            f"takes it from {LARGE_V2_URL}, md5 {LARGE_V2_MD5}) and set {KEY}.model_path to it")
    checkpoint = read_checkpoint(path, weights_only=True, what="an OpenAI Whisper checkpoint")
    if not (isinstance(checkpoint.get("dims"), Mapping)
            and isinstance(checkpoint.get("model_state_dict"), Mapping)):
        raise ValueError(f"{path} ({KEY}.model_path) is not an OpenAI Whisper checkpoint "
                         f"(a dict with 'dims' and 'model_state_dict')")
    return checkpoint


def _unused_kind(key: str, num_blocks: int) -> str:
    parts = key.split(".")
    if parts[:2] == ["encoder", "blocks"] and len(parts) > 2 and parts[2].isdigit() \
            and int(parts[2]) >= num_blocks:
        return f"encoder blocks {num_blocks} and above (the config builds {num_blocks})"
    return ".".join(parts[:2]) if parts[0] == "encoder" else parts[0]


def load_openai_encoder(encoder: WhisperEncoder, args: WhisperEncoderArgs) -> None:
    """Copy the encoder tensors of OpenAI's checkpoint ``args.model_path`` into ``encoder``.

    ``ln_post2`` is new (it stays a fresh LayerNorm); blocks beyond ``num_blocks``, the
    final ``ln_post`` and the decoder are not used. Both are logged, one line per kind.
    A checkpoint whose sizes differ from the config is a ConfigError naming the key.
    """
    path = args.model_path
    checkpoint = read_openai_checkpoint(path)
    _check_dims(checkpoint["dims"], args, path)
    state = checkpoint["model_state_dict"]
    own = encoder.state_dict()
    wanted = {f"encoder.{name}": name for name in own}
    new = [name for key, name in wanted.items() if key not in state]
    missing = [name for name in new if not name.startswith("ln_post2.")]
    if missing:
        raise ValueError(f"{path} ({KEY}.model_path) lacks the encoder tensor "
                         f"'encoder.{missing[0]}' ({len(missing)} missing)")
    loaded = {}
    for key, name in wanted.items():
        if key not in state:
            continue
        if state[key].shape != own[name].shape:
            raise ConfigError(f"{path} ({KEY}.model_path): tensor '{key}' has shape "
                              f"{tuple(state[key].shape)}, the encoder {KEY} describes "
                              f"{tuple(own[name].shape)}")
        loaded[name] = state[key]
    encoder.load_state_dict(loaded, strict=False)
    logger.info("Whisper encoder: %d tensors loaded from %s", len(loaded), path)
    if new:
        logger.info("Whisper encoder: new, not in the checkpoint (a fresh LayerNorm): %s",
                    ", ".join(f"encoder.{name}" for name in new))
    unused = Counter(_unused_kind(key, args.num_blocks) for key in state if key not in wanted)
    for kind, count in sorted(unused.items()):
        logger.info("Whisper encoder: not used from %s: %s (%d tensors)", path, kind, count)


class WhisperFrontend(nn.Module):
    """Whisper front-end: waveforms ``[B, samples]`` (int16 scale) -> ``[B, frames, dim]``.

    Args:
        encoder: the network (see :class:`WhisperEncoder`), its weights set.
        n_mels: mel bands of its input features.
        frozen: no encoder weight trains (``ln_post2`` included, as in WeSpeaker) and
            the encoder runs without gradients.
        norm_mean, norm_var: the config's CMVN over time on the output.
        spec_aug: SpecAugment with ``spec_aug_args`` on the output, in training only.
        sample_rate: input sample rate (must be 16000).
    """

    def __init__(self, encoder: WhisperEncoder, n_mels: int = 80, frozen: bool = False,
                 norm_mean: bool = True, norm_var: bool = False, spec_aug: bool = False,
                 spec_aug_args: Optional[SpecAugArgs] = None,
                 sample_rate: int = 16000) -> None:
        super().__init__()
        self.encoder = encoder
        self.features = WhisperLogMel(n_mels, sample_rate)
        self.sample_rate = sample_rate
        self.frozen = frozen
        self.norm_mean = norm_mean
        self.norm_var = norm_var
        self.spec_aug = spec_aug
        self.spec_aug_args = spec_aug_args or SpecAugArgs()
        self.output_dim = encoder.ln_post2.normalized_shape[0]
        self._warned_long = False
        for index, block in enumerate(encoder.blocks):
            # blocks after layer_ed do not reach the output: nothing to train there
            block.requires_grad_(not frozen and index <= encoder.layer_ed)
        for module in (encoder.conv1, encoder.conv2, encoder.ln_post2):
            module.requires_grad_(not frozen)

    @classmethod
    def from_dataset_args(cls, dataset_args: Union[DatasetArgs, Mapping[str, Any]],
                          pretrained: bool = True) -> "WhisperFrontend":
        """Build from WeSpeaker's ``dataset_args`` (``frontend: whisper_encoder``).

        With ``pretrained`` the encoder's weights come from ``model_path`` (random
        without one, as in WeSpeaker: a checkpoint or ``model_init`` must then supply
        them); ``pretrained=False`` builds the architecture only, from the config's
        sizes, for loading a checkpoint that holds every weight.
        """
        config = as_dataset_args(dataset_args)
        if config.frontend != "whisper_encoder":
            raise ConfigError(f"config key 'dataset_args.frontend' is {config.frontend!r}; "
                              f"WhisperFrontend handles 'whisper_encoder'")
        args = config.whisper_encoder_args
        encoder = WhisperEncoder(args.n_mels, args.output_size, args.n_head, args.num_blocks,
                                 args.layer_st, args.layer_ed)
        if pretrained and args.model_path:
            load_openai_encoder(encoder, args)
        elif pretrained:
            logger.info("%s.model_path is not set: the Whisper encoder starts from random "
                        "weights (a checkpoint or model_init must supply them)", KEY)
        norm_mean, norm_var = cmvn_flags(config)
        return cls(encoder, n_mels=args.n_mels, frozen=args.frozen,
                   norm_mean=norm_mean, norm_var=norm_var,
                   spec_aug=config.spec_aug, spec_aug_args=config.spec_aug_args,
                   sample_rate=config.resample_rate)

    def output_size(self) -> int:
        """Width of the output (WeSpeaker's ``model_args.feat_dim`` for the model):
        ``output_size * (layer_ed - layer_st + 1)``."""
        return self.output_dim

    def num_frames(self, num_samples: int) -> int:
        """Frames (20 ms) for ``num_samples`` samples, at most :data:`MAX_POSITIONS`; 0 below
        ``features.min_samples``."""
        return min(self._encoder_frames(num_samples), MAX_POSITIONS)

    def _encoder_frames(self, num_samples: int) -> int:
        """Encoder frames (conv2's stride 2 over the mel frames), before the 30 s cut."""
        return -(-self.features.num_frames(num_samples) // 2)

    def cuts_input(self, num_samples: int) -> bool:
        """Whether an input of ``num_samples`` samples is longer than Whisper's 30 s, so
        that only its first 30 s are embedded."""
        return self._encoder_frames(num_samples) > MAX_POSITIONS

    def _warn_if_long(self, num_samples: int) -> None:
        if self._warned_long or not self.cuts_input(num_samples):
            return
        self._warned_long = True
        logger.warning("Whisper front-end: an input of %.1f s is longer than Whisper's 30 s "
                       "(%d frames); only its first 30 s are used, as in WeSpeaker (warned "
                       "once; cut long recordings into pieces of up to 30 s to use all of "
                       "them)", num_samples / self.sample_rate, MAX_POSITIONS)

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        if wavs.shape[-1] < self.features.min_samples:   # too short: no frame, not an error
            return wavs.new_zeros(wavs.shape[0], 0, self.output_dim)
        self._warn_if_long(int(wavs.shape[-1]))
        with torch.no_grad():
            mel = self.features(wavs)
        with torch.no_grad() if self.frozen else contextlib.nullcontext():
            feats = self.encoder(mel)
        feats = apply_cmvn(feats, self.norm_mean, self.norm_var)
        if self.spec_aug and self.training:
            feats = spec_augment(feats, **dataclasses.asdict(self.spec_aug_args))
        return feats

    def extra_repr(self) -> str:
        encoder = self.encoder
        return (f"blocks={len(encoder.blocks)}, layers={encoder.layer_st}..{encoder.layer_ed}, "
                f"dim={self.output_dim}, frozen={self.frozen}, norm_mean={self.norm_mean}, "
                f"norm_var={self.norm_var}, sample_rate={self.sample_rate}, "
                f"training only: spec_aug={self.spec_aug}")
