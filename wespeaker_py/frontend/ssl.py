"""SSL front-end: WavLM hidden states -> frame features for any speaker model.

This is the counterpart of WeSpeaker's ``S3prlFrontend`` (``frontend: s3prl``),
built on ``transformers.WavLMModel`` instead of s3prl, and loading weights only
from a local path. What it computes, step by step, mirrors s3prl's WavLM
upstream and ``Featurizer`` as WeSpeaker uses them:

1. int16-scale waveforms are scaled to [-1, 1] (WeSpeaker hands s3prl
   torchaudio's [-1, 1] samples); inputs shorter than 0.05 s are zero-padded
   to 0.05 s;
2. for checkpoints trained on normalised input (WavLM Large: layer-norm conv
   blocks) each waveform is normalised to zero mean and unit variance
   (``F.layer_norm`` over the samples), as s3prl's WavLM wrapper does;
3. the hidden states are the input of every transformer layer plus the
   encoder output (for the pre-norm Large layout that is the output after the
   final layer norm): ``num_hidden_layers + 1`` states, like s3prl's hooks;
4. every state is cut or padded (repeating its last frame) to
   ``samples // 320 + 1`` frames, s3prl's length convention;
5. optionally (``upstream_args.normalize``) each state is layer-normalised;
6. the states are combined by a softmax-weighted sum with learnable weights
   (initialised to zero: a plain average), or one state is chosen (``layer``);
7. the config's CMVN: mean over time subtracted, optionally divided by the
   standard deviation (WeSpeaker's ``apply_cmvn``).

The transformer loop is driven here rather than through
``WavLMModel(output_hidden_states=True)`` because what transformers returns as
the last hidden state differs between its versions; the loop uses
transformers' own modules, so the weights and the maths are transformers'.
Neither s3prl's layer drop nor transformers' SpecAugment-style masking is
applied.

``transformers`` is imported only when weights are loaded.
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from wespeaker_py.audio import INT16_SCALE
from wespeaker_py.config import ConfigError, DatasetArgs, UpstreamArgs, as_dataset_args
from wespeaker_py.frontend.specaug import apply_cmvn, cmvn_flags
from wespeaker_py.frontend.wavlm_convert import (dropped_mask_emb, load_hf_directory,
                                                 load_original_checkpoint, original_to_hf_names,
                                                 renamed_state)
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

DEFAULT_DOWNLOAD_DIR = "./s3prl_hub"
MIN_SECONDS = 0.05
UPSTREAM_PREFIX = "frontend.upstream."
LAYER_WEIGHTS_KEY = "frontend.layer_weights"
# WeSpeaker's S3prlFrontend: s3prl's S3PRLUpstream -> its WavLM expert -> the original
# WavLM module, and s3prl's Featurizer beside it
S3PRL_WAVLM_PREFIX = "frontend.upstream.upstream.model."
S3PRL_FEATURIZER_WEIGHTS = "frontend.featurizer.weights"
_S3PRL_PREFIXES = ("frontend.upstream.upstream.", "frontend.featurizer.")
_S3PRL_FRONTEND = "a WeSpeaker/s3prl WavLM front-end (WeSpeaker's S3prlFrontend)"


def resolve_weights_path(upstream_args: UpstreamArgs, download_dir: Optional[str]) -> str:
    """Where the WavLM weights are read from.

    ``upstream_args.path_or_url`` when set (a Hugging Face directory or an
    original checkpoint file), else ``<download_dir>/<name>`` (by default
    ``./s3prl_hub/wavlm_large``). URLs are refused: nothing is downloaded at
    run time.
    """
    path = upstream_args.path_or_url
    if path is None:
        path = os.path.join(download_dir or DEFAULT_DOWNLOAD_DIR, upstream_args.name)
    if "://" in path:
        raise ValueError(
            f"dataset_args.s3prl_args.upstream_args.path_or_url is a URL ({path}); weights are "
            f"never downloaded at run time: download them once and give the local path")
    return path


def load_wavlm(path: str) -> nn.Module:
    """``transformers.WavLMModel`` from a local HF directory or an original checkpoint file."""
    if os.path.isdir(path):
        return load_hf_directory(path)
    if os.path.isfile(path):
        logger.info("converting the original WavLM checkpoint %s in memory (convert it once with "
                    "`python -m wespeaker_py.bin.convert_checkpoint wavlm` to skip this)", path)
        return load_original_checkpoint(path)
    raise FileNotFoundError(
        f"WavLM weights not found at {path}: place there either a Hugging Face WavLM directory "
        f"(config.json + model.safetensors, e.g. a copy of microsoft/wavlm-large) or the "
        f"original checkpoint file (WavLM-Large.pt, the file s3prl's wavlm_large loads), or set "
        f"dataset_args.s3prl_args.upstream_args.path_or_url to where they are")


class SSLFrontend(nn.Module):
    """WavLM front-end: waveforms ``[B, samples]`` (int16 scale) -> features ``[B, frames, dim]``.

    Args:
        upstream: a ``transformers.WavLMModel`` (see :func:`load_wavlm`).
        multilayer_feature: learnable softmax-weighted sum over all hidden states.
        layer: use this one hidden state (0 = input of the first transformer
            layer, ``num_hidden_layers`` = encoder output); -1 with
            ``multilayer_feature`` False means the encoder output.
        frozen: WavLM stays in eval mode and runs without gradients (in bf16
            autocast on CUDA when ``frozen_bf16``); the layer weights still train.
        frame_shift: must equal WavLM's hop (320 samples) in ms at ``sample_rate``.
        normalize_hidden_states: layer-normalise every hidden state (s3prl's
            ``upstream_args.normalize``).
        norm_mean, norm_var: CMVN over time after the combination.
        gradient_checkpointing: recompute transformer layers in the backward
            pass (joint training with long chunks).
        lr_scale: learning-rate factor for WavLM's weights in joint training,
            read by :func:`frontend_param_groups`.
        wav_scale: factor from the input scale to [-1, 1].
    """

    def __init__(self, upstream: nn.Module, multilayer_feature: bool = True, layer: int = -1,
                 frozen: bool = False, frame_shift: float = 20, sample_rate: int = 16000,
                 normalize_hidden_states: bool = False, norm_mean: bool = True,
                 norm_var: bool = False, gradient_checkpointing: bool = False,
                 lr_scale: float = 1.0, frozen_bf16: bool = True,
                 wav_scale: float = 1.0 / INT16_SCALE) -> None:
        super().__init__()
        config = upstream.config
        self.upstream = upstream
        self.num_hidden_states = config.num_hidden_layers + 1
        self.hop = math.prod(config.conv_stride)
        if frame_shift * sample_rate != self.hop * 1000:
            raise ValueError(
                f"dataset_args.s3prl_args.frame_shift: WavLM gives one frame every {self.hop} "
                f"samples; {frame_shift} ms at {sample_rate} Hz is "
                f"{frame_shift * sample_rate / 1000:g} samples")
        if layer != -1 and multilayer_feature:
            raise ValueError("dataset_args.s3prl_args: multilayer_feature must be False when "
                             f"layer is set (layer={layer})")
        if not -1 <= layer < self.num_hidden_states:
            raise ValueError(f"dataset_args.s3prl_args.layer must be -1 or in "
                             f"[0, {self.num_hidden_states - 1}], got {layer}")
        self.multilayer_feature = multilayer_feature
        self.layer = layer
        self.frozen = frozen
        self.frozen_bf16 = frozen_bf16
        self.sample_rate = sample_rate
        # WavLM checkpoints with layer-normalised conv blocks (Large) were
        # trained on per-utterance normalised waveforms, the others (Base) not.
        self.normalize_waveform = config.feat_extract_norm == "layer"
        self.normalize_hidden_states = normalize_hidden_states
        self.norm_mean = norm_mean
        self.norm_var = norm_var
        self.gradient_checkpointing = gradient_checkpointing
        self.lr_scale = float(lr_scale)
        self.wav_scale = wav_scale
        self.output_dim = config.hidden_size
        self.layer_weights = (nn.Parameter(torch.zeros(self.num_hidden_states))
                              if multilayer_feature else None)
        self._set_requires_grad()
        if frozen:
            self.upstream.eval()

    def _set_requires_grad(self) -> None:
        """Train what the output depends on, unless frozen.

        The pre-training mask vector is never used (WeSpeaker freezes it too);
        with a single chosen layer the layers above it and the final norm are
        unused as well, and leaving them trainable would upset DDP.
        """
        for name, param in self.upstream.named_parameters():
            param.requires_grad_(not self.frozen and name != "masked_spec_embed")
        if not self.multilayer_feature and self.layer != -1 and not self.frozen:
            encoder = self.upstream.encoder
            unused = list(encoder.layers[self.layer:])
            # the pre-norm (Large) layout applies the encoder norm after the last layer
            last = self.num_hidden_states - 1
            if self.upstream.config.do_stable_layer_norm and self.layer < last:
                unused.append(encoder.layer_norm)
            for module in unused:
                module.requires_grad_(False)

    @classmethod
    def from_dataset_args(cls, dataset_args: Union[DatasetArgs, Mapping[str, Any]]
                          ) -> "SSLFrontend":
        """Build from WeSpeaker's ``dataset_args`` (``frontend: s3prl``), checked by the schema.

        Uses ``s3prl_args`` (see :class:`~wespeaker_py.config.S3prlArgs`; its
        ``frame_length`` only sizes the input chunks, which the pipeline reads),
        ``resample_rate``, ``cmvn`` and ``cmvn_args``. Settings this front-end
        cannot honour raise :class:`~wespeaker_py.config.ConfigError` naming the key.
        """
        config = as_dataset_args(dataset_args)
        if config.frontend != "s3prl":
            raise ConfigError(f"config key 'dataset_args.frontend' is {config.frontend!r}; "
                              f"SSLFrontend handles 's3prl'")
        args = config.s3prl_args
        upstream_args = args.upstream_args
        if not upstream_args.name.startswith("wavlm"):
            raise ConfigError(f"config key 'dataset_args.s3prl_args.upstream_args.name' must "
                              f"name a WavLM model (wavlm_large, ...), got {upstream_args.name!r}")
        if upstream_args.extra_conf:
            raise ConfigError("config key 'dataset_args.s3prl_args.upstream_args.extra_conf' "
                              "is not supported")
        if config.spec_aug:
            raise ConfigError("config key 'dataset_args.spec_aug': SpecAugment is not "
                              "supported with frontend: s3prl")
        path = resolve_weights_path(upstream_args, args.download_dir)
        norm_mean, norm_var = cmvn_flags(config)
        return cls(load_wavlm(path),
                   multilayer_feature=args.multilayer_feature, layer=args.layer,
                   frozen=args.frozen, frame_shift=args.frame_shift,
                   sample_rate=config.resample_rate,
                   normalize_hidden_states=upstream_args.normalize,
                   norm_mean=norm_mean, norm_var=norm_var,
                   gradient_checkpointing=args.gradient_checkpointing,
                   lr_scale=args.lr_scale, frozen_bf16=args.frozen_bf16)

    def output_size(self) -> int:
        """Feature dimension (the value for ``model_args.feat_dim: -1``)."""
        return self.output_dim

    def train(self, mode: bool = True) -> "SSLFrontend":
        super().train(mode)
        if self.frozen:
            self.upstream.eval()
        return self

    def num_frames(self, num_samples: int) -> int:
        """Frames for ``num_samples`` input samples (s3prl's ``samples // hop + 1``)."""
        return num_samples // self.hop + 1

    def _states_needed(self) -> int:
        if self.multilayer_feature or self.layer == -1:
            return self.num_hidden_states
        return self.layer + 1

    def _run_layer(self, layer: nn.Module, hidden: torch.Tensor,
                   position_bias: Optional[torch.Tensor]):
        # keyword arguments: the positional order differs between transformers versions
        outputs = layer(hidden, attention_mask=None, position_bias=position_bias)
        return outputs[0], outputs[1]

    def hidden_states(self, wavs: torch.Tensor) -> List[torch.Tensor]:
        """WavLM's hidden states for ``wavs`` ``[B, samples]``, each ``[B, frames, dim]``.

        Every row is taken as a full-length signal (no padding mask). With a
        single chosen ``layer`` the states above it are not computed.
        """
        if wavs.dim() != 2:
            raise ValueError(f"wavs must be [batch, samples], got shape {tuple(wavs.shape)}")
        num_samples = wavs.shape[1]
        x = wavs.float() * self.wav_scale
        min_samples = int(MIN_SECONDS * self.sample_rate)
        if num_samples < min_samples:
            x = F.pad(x, (0, min_samples - num_samples))
        if self.normalize_waveform:
            x = F.layer_norm(x, x.shape[-1:])
        upstream, encoder = self.upstream, self.upstream.encoder
        stable = upstream.config.do_stable_layer_norm
        features = upstream.feature_extractor(x).transpose(1, 2)
        hidden, _ = upstream.feature_projection(features)
        hidden = hidden + encoder.pos_conv_embed(hidden)
        if not stable:
            hidden = encoder.layer_norm(hidden)
        hidden = encoder.dropout(hidden)
        needed = self._states_needed()
        states = [hidden]
        position_bias = None
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in encoder.layers[:needed - 1]:
            if checkpointing:
                hidden, position_bias = checkpoint(self._run_layer, layer, hidden, position_bias,
                                                   use_reentrant=False)
            else:
                hidden, position_bias = self._run_layer(layer, hidden, position_bias)
            states.append(hidden)
        if stable and needed == self.num_hidden_states:
            states[-1] = encoder.layer_norm(states[-1])
        frames = self.num_frames(num_samples)
        return [_fit_frames(state, frames) for state in states]

    def _upstream_context(self, device: torch.device):
        if not self.frozen:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        if self.frozen_bf16 and device.type == "cuda":
            stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
        return stack

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        with self._upstream_context(wavs.device):
            states = self.hidden_states(wavs)
        if self.frozen:
            states = [state.float() for state in states]
        if self.normalize_hidden_states:
            states = [F.layer_norm(state, state.shape[-1:]) for state in states]
        if self.multilayer_feature:
            weights = torch.softmax(self.layer_weights, dim=-1)
            feats = (weights.view(-1, 1, 1, 1) * torch.stack(states)).sum(dim=0)
        else:
            feats = states[-1]
        return apply_cmvn(feats, self.norm_mean, self.norm_var)

    def extra_repr(self) -> str:
        return (f"hidden_states={self.num_hidden_states}, dim={self.output_dim}, "
                f"multilayer_feature={self.multilayer_feature}, layer={self.layer}, "
                f"frozen={self.frozen}, normalize_waveform={self.normalize_waveform}, "
                f"norm_mean={self.norm_mean}, norm_var={self.norm_var}, "
                f"gradient_checkpointing={self.gradient_checkpointing}, lr_scale={self.lr_scale}")


def _fit_frames(state: torch.Tensor, frames: int) -> torch.Tensor:
    """Cut ``state`` to ``frames`` frames, or pad it by repeating its last frame."""
    have = state.shape[1]
    if have >= frames:
        return state[:, :frames]
    return torch.cat([state, state[:, -1:].expand(-1, frames - have, -1)], dim=1)


def _ssl_frontend_of(model: nn.Module) -> Optional[SSLFrontend]:
    frontend = getattr(model, "frontend", None)
    return frontend if isinstance(frontend, SSLFrontend) else None


def frontend_state_dict_for_checkpoint(model: nn.Module,
                                       include_frozen: bool = False) -> Dict[str, torch.Tensor]:
    """``model.state_dict()``, without a frozen SSL front-end's WavLM weights unless asked.

    The layer weights (``frontend.layer_weights``) always stay. A checkpoint
    without ``frontend.upstream.*`` is completed from the pretrained path by
    :func:`with_pretrained_frontend_weights` when it is loaded.
    """
    state = model.state_dict()
    frontend = _ssl_frontend_of(model)
    if include_frozen or frontend is None or not frontend.frozen:
        return state
    return {key: value for key, value in state.items() if not key.startswith(UPSTREAM_PREFIX)}


def is_s3prl_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` holds a front-end saved by WeSpeaker's ``S3prlFrontend``."""
    return any(key.startswith(_S3PRL_PREFIXES) for key in state)


def _s3prl_featurizer_weights(frontend: SSLFrontend, state: Mapping[str, torch.Tensor],
                              source: str) -> Dict[str, torch.Tensor]:
    """s3prl's featurizer weights as this front-end's layer weights (or nothing, see below)."""
    weights = state.get(S3PRL_FEATURIZER_WEIGHTS)
    if frontend.layer_weights is not None:
        expected = tuple(frontend.layer_weights.shape)
        if weights is None:
            raise ValueError(f"{source}: tensor '{S3PRL_FEATURIZER_WEIGHTS}' is missing from "
                             f"{_S3PRL_FRONTEND}; it holds the layer weights of "
                             f"multilayer_feature")
        if tuple(weights.shape) != expected:
            raise ValueError(f"{source}: tensor '{S3PRL_FEATURIZER_WEIGHTS}' of {_S3PRL_FRONTEND} "
                             f"has shape {tuple(weights.shape)} but the model has one weight per "
                             f"hidden state {expected}")
        return {LAYER_WEIGHTS_KEY: weights}
    # Without multilayer_feature, WeSpeaker's forward never reads the featurizer's weights
    # (one weight per hidden state, or a single one with a chosen layer): nothing to place.
    expected = (frontend.num_hidden_states if frontend.layer == -1 else 1,)
    if weights is not None and tuple(weights.shape) != expected:
        raise ValueError(f"{source}: tensor '{S3PRL_FEATURIZER_WEIGHTS}' of {_S3PRL_FRONTEND} "
                         f"has shape {tuple(weights.shape)}, not the {expected} of this "
                         f"config's layer={frontend.layer}")
    return {}


def from_s3prl_layout(model: nn.Module, state: Mapping[str, torch.Tensor],
                      source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """``state`` with a WeSpeaker/s3prl WavLM front-end's tensors under this package's names.

    WeSpeaker's ``S3prlFrontend`` saves WavLM as
    ``frontend.upstream.upstream.model.<original WavLM name>`` and the softmax layer
    weights as ``frontend.featurizer.weights``. The WavLM tensors are renamed for the
    model's own WavLM as an original checkpoint's are
    (:func:`~wespeaker_py.frontend.wavlm_convert.renamed_state`, ``mask_emb`` dropped
    where it keeps no masking vector), the featurizer weights become
    ``frontend.layer_weights``. A state of any other layout, or a model without an SSL
    front-end, comes back unchanged. A tensor that cannot be placed, a missing or
    misshapen one, or one of this package's front-end tensors beside the s3prl ones
    raises ValueError naming it.
    """
    frontend = _ssl_frontend_of(model)
    if frontend is None or not is_s3prl_layout(state):
        return dict(state)
    wavlm: Dict[str, torch.Tensor] = {}
    converted: Dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith(S3PRL_WAVLM_PREFIX):
            wavlm[key[len(S3PRL_WAVLM_PREFIX):]] = tensor
        elif not key.startswith("frontend."):
            converted[key] = tensor
        elif key == S3PRL_FEATURIZER_WEIGHTS:
            continue   # placed (or only checked) below
        elif key == LAYER_WEIGHTS_KEY or (key.startswith(UPSTREAM_PREFIX)
                                          and not key.startswith(_S3PRL_PREFIXES)):
            raise ValueError(f"{source}: tensor '{key}' is in this package's layout, beside "
                             f"the tensors of {_S3PRL_FRONTEND} (the layouts are mixed)")
        else:
            raise ValueError(f"{source}: tensor '{key}' of {_S3PRL_FRONTEND} has no "
                             f"counterpart in this package's WavLM front-end")
    own = frontend.upstream.state_dict()
    names = original_to_hf_names(frontend.upstream.config, list(own))
    renamed = renamed_state(dropped_mask_emb(wavlm, names), names, own,
                            f"{source}: {_S3PRL_FRONTEND}", key_prefix=S3PRL_WAVLM_PREFIX)
    converted.update({UPSTREAM_PREFIX + name: tensor for name, tensor in renamed.items()})
    converted.update(_s3prl_featurizer_weights(frontend, state, source))
    logger.info("%s: converting %s into this package's names (%d WavLM tensors)", source,
                _S3PRL_FRONTEND, len(renamed))
    return converted


def with_pretrained_frontend_weights(model: nn.Module, state: Mapping[str, torch.Tensor],
                                     source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """``state`` in this package's names, completed with the model's own (pretrained) WavLM
    weights where it has none; every path that loads a model's state goes through here.

    A front-end saved by WeSpeaker's ``S3prlFrontend`` is renamed first
    (:func:`from_s3prl_layout`). A checkpoint holds either all of
    ``frontend.upstream.*`` or none of it (a frozen run's checkpoint); partly missing
    WavLM weights raise ValueError naming the first missing tensor. Pass the result to
    a strict loader.
    """
    frontend = _ssl_frontend_of(model)
    if frontend is None:
        return dict(state)
    state = from_s3prl_layout(model, state, source)
    own = {key: value for key, value in model.state_dict().items()
           if key.startswith(UPSTREAM_PREFIX)}
    present = [key for key in own if key in state]
    if not present:
        completed = dict(state)
        completed.update(own)
        return completed
    missing = [key for key in own if key not in state]
    if missing:
        raise ValueError(f"{source}: tensor '{missing[0]}' is missing while other WavLM weights "
                         f"are present ({len(missing)} missing)")
    return dict(state)


def frontend_param_groups(model: nn.Module) -> List[Dict[str, Any]]:
    """Optimizer parameter groups with an ``lr_scale`` entry each.

    The SSL front-end's trainable WavLM weights get the front-end's
    ``lr_scale``; everything else (speaker model, head, layer weights) 1.0.
    The scheduler multiplies its learning rate by each group's ``lr_scale``.
    Empty groups are left out.
    """
    frontend = _ssl_frontend_of(model)
    upstream_ids = ({id(param) for param in frontend.upstream.parameters()}
                    if frontend is not None else set())
    main = [param for param in model.parameters()
            if param.requires_grad and id(param) not in upstream_ids]
    groups = [{"params": main, "lr_scale": 1.0}] if main else []
    if frontend is not None:
        upstream = [param for param in frontend.upstream.parameters() if param.requires_grad]
        if upstream:
            groups.append({"params": upstream, "lr_scale": frontend.lr_scale})
    return groups
