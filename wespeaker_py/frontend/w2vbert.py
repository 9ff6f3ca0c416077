"""W2V-BERT 2.0 front-end (WeSpeaker's ``frontend: w2vbert``), optionally with LoRA.

Waveforms become the encoder's input features (the processor of
facebook/w2v-bert-2.0, computed batched in torch by
:class:`~wespeaker_py.frontend.w2vbert_features.W2VBertFeatures`), then run
through ``transformers.Wav2Vec2BertModel``. The front-end returns every hidden
state, the input of the first conformer layer and the output of each layer
(``num_hidden_layers + 1`` states, what transformers 4.x returned with
``output_hidden_states``), side by side on the feature axis:
``[B, frames, (num_hidden_layers + 1) * hidden_size]``, one frame per 20 ms.
:class:`~wespeaker_py.models.w2vbert_adapter_mfa.W2VBert_Adapter_MFA` reads them.

The layer loop is driven here, with transformers' own modules, because what
transformers collects as hidden states has changed between its versions (and
a layer skipped by LayerDrop must still give a state, as it did in 4.x).

Parameters keep WeSpeaker's names: the network is ``encoder`` (its
pre-training mask vector removed), or with LoRA ``encoder.base_model.model``
as ``peft`` wraps it (``...linear_q.base_layer.weight``,
``...linear_q.lora_A.default.weight``). Weights are only read from disk.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, Any, List, Mapping, Optional, Union

import torch
import torch.nn as nn

from wespeaker_py.config import ConfigError, DatasetArgs, W2vbertArgs, as_dataset_args
from wespeaker_py.frontend.w2vbert_features import W2VBertFeatures
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.torch_files import read_checkpoint

if TYPE_CHECKING:
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

    from wespeaker_py.config.schema import LoraArgs

logger = get_logger(__name__)

DEFAULT_MODEL_NAME = "facebook/w2v-bert-2.0"
LORA_MARK = "lora_"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def resolve_model_dir(args: W2vbertArgs) -> str:
    """The local directory of ``w2vbert_args.model_name``.

    A directory is used as it is; otherwise the name is looked up in the local
    Hugging Face cache (``download_dir`` as cache directory when given), never
    downloaded. FileNotFoundError says what to do.
    """
    name = args.model_name
    if os.path.isdir(name):
        return name
    if "://" in name:
        raise FileNotFoundError(
            f"dataset_args.w2vbert_args.model_name is a URL ({name}); weights are never "
            f"downloaded at run time: download them once and give the local directory")
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(name, local_files_only=True, cache_dir=args.download_dir)
    except Exception:   # not a hub name, or not in the cache: one message for both
        raise FileNotFoundError(
            f"W2V-BERT model {name!r} (dataset_args.w2vbert_args.model_name) is neither a "
            f"directory nor in the local Hugging Face cache: download it once (e.g. "
            f"`huggingface-cli download facebook/w2v-bert-2.0 --local-dir DIR`) and set "
            f"model_name to that directory") from None


def _read_config(model_dir: str, config_file: Optional[str]) -> "Wav2Vec2BertConfig":
    from transformers import Wav2Vec2BertConfig

    if config_file:
        path = os.path.join(model_dir, config_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"dataset_args.w2vbert_args.model_config_file: {path} "
                                    f"does not exist")
        with open(path) as handle:
            return Wav2Vec2BertConfig(**json.load(handle))
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise FileNotFoundError(f"{model_dir} has no config.json: it is not a Hugging Face "
                                f"W2V-BERT directory")
    return Wav2Vec2BertConfig.from_pretrained(model_dir)


def _weights_file(model_dir: str) -> Optional[str]:
    for name in WEIGHT_FILES:
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            return path
    return None


def _read_weights(path: str) -> Mapping[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path, device="cpu")
    return read_checkpoint(path, weights_only=True, what="a W2V-BERT state dict")


def load_w2vbert(args: W2vbertArgs, pretrained: bool = True) -> "Wav2Vec2BertModel":
    """``Wav2Vec2BertModel`` from the local directory that ``args`` names.

    ``pretrained=False`` builds the architecture only (random weights), for a
    caller that loads every weight from a checkpoint next; it needs no
    directory then (a missing one means W2V-BERT 2.0's architecture). With a
    ``model_config_file`` the weights that fit the architecture it describes are
    taken and the rest is left at random, as WeSpeaker does (for pruned
    models); the counts are logged.
    """
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

    try:
        model_dir = resolve_model_dir(args)
    except FileNotFoundError:
        if pretrained or args.model_config_file:
            raise
        # transformers' defaults describe facebook/w2v-bert-2.0: a trained model (config +
        # checkpoint) embeds without the pretrained directory; a checkpoint of another
        # shape fails to load, naming the tensor
        logger.warning("W2V-BERT model %r (dataset_args.w2vbert_args.model_name) is not on "
                       "this machine: its architecture is taken to be %s's (transformers' "
                       "Wav2Vec2BertConfig defaults); the checkpoint supplies every weight",
                       args.model_name, DEFAULT_MODEL_NAME)
        return Wav2Vec2BertModel(Wav2Vec2BertConfig())
    config = _read_config(model_dir, args.model_config_file)
    if not pretrained:
        return Wav2Vec2BertModel(config)
    weights = _weights_file(model_dir)
    if weights is None:
        raise FileNotFoundError(f"no W2V-BERT weights in {model_dir} (looked for "
                                f"{' or '.join(WEIGHT_FILES)})")
    if not args.model_config_file:
        return Wav2Vec2BertModel.from_pretrained(model_dir, local_files_only=True)
    model = Wav2Vec2BertModel(config)
    own = model.state_dict()
    state = _read_weights(weights)
    fitting = {key: value for key, value in state.items()
               if key in own and own[key].shape == value.shape}
    model.load_state_dict(fitting, strict=False)
    logger.info("W2V-BERT from %s with %s: %d of %d tensors taken from %s", model_dir,
                args.model_config_file, len(fitting), len(own), weights)
    return model


def _lora_config(lora: "LoraArgs"):
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.lora_alpha,
                      target_modules=list(lora.target_modules),
                      lora_dropout=lora.lora_dropout, bias=lora.bias,
                      task_type="FEATURE_EXTRACTION")


def _import_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ConfigError("config key 'dataset_args.w2vbert_args.use_lora' needs the peft "
                          "package: pip install 'wespeaker_py[ssl]'") from None


class W2VBertFrontend(nn.Module):
    """W2V-BERT front-end: waveforms ``[B, samples]`` (int16 scale) -> all hidden states.

    Args:
        encoder: a ``transformers.Wav2Vec2BertModel`` (see :func:`load_w2vbert`).
        frozen: the pretrained weights do not train and the encoder stays in
            eval mode (LoRA weights still train, their dropout follows the
            training mode); without LoRA the encoder then runs without gradients.
        lora: wrap the encoder with these LoRA settings (``peft``), or None.
        sample_rate: input sample rate (the features are defined at 16 kHz).
    """

    def __init__(self, encoder: nn.Module, frozen: bool = True,
                 lora: Optional["LoraArgs"] = None, sample_rate: int = 16000):
        super().__init__()
        config = encoder.config
        if hasattr(encoder, "masked_spec_embed"):
            del encoder.masked_spec_embed   # pre-training masking only; WeSpeaker drops it too
        if lora is not None:
            _import_peft()
            from peft import get_peft_model
            encoder = get_peft_model(encoder, _lora_config(lora))
        self.encoder = encoder
        self.features = W2VBertFeatures(sample_rate=sample_rate)
        self.sample_rate = sample_rate
        self.frozen = frozen
        self.use_lora = lora is not None
        self.hidden_size = config.hidden_size
        self.num_hidden_states = config.num_hidden_layers + 1
        self.output_dim = self.num_hidden_states * self.hidden_size
        for name, param in self.encoder.named_parameters():
            param.requires_grad_(LORA_MARK in name or not frozen)
        self.train(self.training)

    @classmethod
    def from_dataset_args(cls, dataset_args: Union[DatasetArgs, Mapping[str, Any]],
                          pretrained: bool = True) -> "W2VBertFrontend":
        """Build from WeSpeaker's ``dataset_args`` (``frontend: w2vbert``).

        ``pretrained=False``: the architecture from the model directory's
        config only, for loading a checkpoint that holds every weight.
        """
        config = as_dataset_args(dataset_args)
        if config.frontend != "w2vbert":
            raise ConfigError(f"config key 'dataset_args.frontend' is {config.frontend!r}; "
                              f"W2VBertFrontend handles 'w2vbert'")
        args = config.w2vbert_args
        lora = args.lora_config_args if args.use_lora else None
        if lora is not None:
            _import_peft()
        return cls(load_w2vbert(args, pretrained), frozen=args.frozen, lora=lora,
                   sample_rate=config.resample_rate)

    @property
    def network(self) -> nn.Module:
        """The ``Wav2Vec2BertModel`` itself (inside the LoRA wrapper when there is one)."""
        return self.encoder.base_model.model if self.use_lora else self.encoder

    def output_size(self) -> int:
        """Hidden size of one state (the value WeSpeaker puts in ``model_args.feat_dim``)."""
        return self.hidden_size

    def num_frames(self, num_samples: int) -> int:
        """Frames (20 ms) for ``num_samples`` input samples; 0 below
        ``features.min_samples`` (35 ms), which give no normalisable frame."""
        if num_samples < self.features.min_samples:
            return 0
        return self.features.num_frames(num_samples)

    @property
    def drops_layers(self) -> bool:
        """Whether training may skip encoder layers (LayerDrop on trainable weights), which
        leaves their parameters without gradients in some steps."""
        return not self.frozen and self.network.config.layerdrop > 0

    def train(self, mode: bool = True) -> "W2VBertFrontend":
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
            for name, module in self.encoder.named_modules():
                if LORA_MARK in name:
                    module.train(mode)
        return self

    def hidden_states(self, wavs: torch.Tensor) -> List[torch.Tensor]:
        """The ``num_hidden_layers + 1`` states for ``wavs`` ``[B, samples]``, each
        ``[B, frames, hidden_size]``; every row is a full-length signal.

        An odd number of fbank frames gives a last frame that is half padding; as
        with the Hugging Face processor and WeSpeaker, the encoder masks it (zeroed
        input, no attention to it, zeroed before the convolutions), and its states
        are still returned.
        """
        network = self.network
        encoder = network.encoder
        feats, valid = self.features.features_and_mask(wavs)
        hidden, _ = network.feature_projection(feats)
        attention = None
        if valid is not None:
            hidden = hidden.masked_fill(~valid.unsqueeze(-1), 0.0)
            attention = _attention_mask(network.config, hidden, valid)
        hidden = encoder.dropout(hidden)
        positions = (encoder.embed_positions(hidden)
                     if encoder.embed_positions is not None else None)
        states = [hidden]
        layerdrop = network.config.layerdrop if encoder.training else 0.0
        for layer in encoder.layers:
            if layerdrop > 0 and torch.rand([]) < layerdrop:
                states.append(hidden)
                continue
            out = layer(hidden, attention_mask=attention, relative_position_embeddings=positions,
                        conv_attention_mask=valid)
            hidden = out[0] if isinstance(out, tuple) else out
            states.append(hidden)
        return states

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        if wavs.shape[-1] < self.features.min_samples:   # too short: no frame, not an error
            return wavs.new_zeros(wavs.shape[0], 0, self.output_dim)
        needs_grad = not self.frozen or self.use_lora
        with contextlib.nullcontext() if needs_grad else torch.no_grad():
            states = self.hidden_states(wavs)
        return torch.cat(states, dim=-1)

    def extra_repr(self) -> str:
        return (f"hidden_states={self.num_hidden_states}, dim={self.hidden_size}, "
                f"frozen={self.frozen}, lora={self.use_lora}, sample_rate={self.sample_rate}")


def _attention_mask(config: Any, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The self-attention mask transformers' encoder builds from the frame mask ``valid``."""
    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError:   # transformers 4.x: an additive mask over the keys
        blocked = (~valid)[:, None, None, :].to(hidden.dtype) * torch.finfo(hidden.dtype).min
        return blocked.expand(-1, 1, valid.shape[1], -1)
    return create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=valid)


def merge_lora(frontend: W2VBertFrontend) -> W2VBertFrontend:
    """The same front-end with its LoRA weights merged into the encoder (peft's
    ``merge_and_unload``); parameter names become those of a front-end without LoRA.

    The merge happens in place: ``frontend`` itself must not be used afterwards.
    """
    if not frontend.use_lora:
        raise ValueError("the W2V-BERT front-end has no LoRA weights to merge")
    merged = frontend.encoder.merge_and_unload()
    return W2VBertFrontend(merged, frozen=frontend.frozen, lora=None,
                           sample_rate=frontend.sample_rate)
