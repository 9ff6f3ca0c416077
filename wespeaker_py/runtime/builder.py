"""The one way to build a speaker model from a config, and a trained one from (config, checkpoint).

:func:`build_speaker_model` makes the architecture a config names (random
weights); training attaches its head and SSL front-end to it. :func:`build_untrained`
makes it from a config alone, its input size resolved, on the meta device by default:
what counts its parameters or names its modules. :func:`load_embedder`
makes what every user of a trained model runs: the config's front-end followed by
the speaker model with the checkpoint's weights, in eval mode. Extraction, the
Python API (torch), export and diarization all get their model from it.

A checkpoint's model state holds the speaker model, the training head under
``projection.`` (ignored here: embeddings come before the head) and, for a
model trained on an SSL front-end, that front-end under ``frontend.`` (a frozen
front-end's WavLM weights may be left out; they then come from the pretrained
weights the config names). Everything else must match the built model exactly.
A RepVGG model comes back fused into its deploy form. A loaded embedder knows its
identity (:mod:`.identity`), computed on first use.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Type, Union

import torch
import torch.nn as nn

from wespeaker_py.config import ConfigError, ModelConfig
from wespeaker_py.config.schema import FRONTENDS
from wespeaker_py.errors import ModelSourceError, WespeakerError, did_you_mean
from wespeaker_py.frontend.factory import build_frontend, model_feat_dim
from wespeaker_py.models import ModelArgError, check_frontend, model_factory
from wespeaker_py.models.repvgg import convert_to_deploy
from wespeaker_py.runtime.checkpoint import (FRONTEND_PREFIX, load_weights, model_state_of,
                                             read_checkpoint, split_checkpoint_state,
                                             state_in_model_names)
from wespeaker_py.runtime.identity import embedder_identity, frontend_settings

# Where each front-end's output size (what model_args.feat_dim must be) is set (FRONTENDS'
# feat_dim_source); a front-end not listed is named by its args block (:func:`_feat_dim_source`).
_FEAT_DIM_SOURCES = {name: choice.feat_dim_source for name, choice in FRONTENDS.items()}

# The checkpoint key that holds the speaker model's own arguments (ReDimNet2's checkpoints).
_MODEL_CONFIG_KEY = "model_config"


class _ArgsSource(NamedTuple):
    """Where model arguments come from, for the errors that name their keys."""

    where: str                      # "config key", or "<checkpoint>: checkpoint key"
    key: str                        # the mapping: "model_args" or "model_config"
    error: Type[WespeakerError]     # raised for a value that does not fit

    def name(self, arg: Optional[str] = None) -> str:
        """``config key 'model_args.feat_dim'`` (``arg`` given) or ``config key 'model_args'``."""
        return f"{self.where} '{self.key}{'.' + arg if arg else ''}'"


_CONFIG = _ArgsSource("config key", "model_args", ConfigError)


def check_model_frontend(config: ModelConfig) -> None:
    """ConfigError unless ``config.model`` is a known model (the error names ``model`` and
    the closest names) that reads the features of ``dataset_args.frontend`` (a TFMel config
    with an fbank model, or the reverse, fails here, before any data)."""
    _model_factory(config)


def feat_dim_left_to_frontend(model_args: Mapping[str, Any], frontend: str) -> bool:
    """Whether ``feat_dim`` is to be the front-end's output size: set to -1 (as WeSpeaker's
    SSL configs do), or left out (as its Whisper configs do; SimAM-ResNet's ``acoustic_dim``
    left out too) with a front-end other than fbank, whose size WeSpeaker's trainer writes
    into ``feat_dim``."""
    unset = "feat_dim" not in model_args and "acoustic_dim" not in model_args
    return model_args.get("feat_dim") == -1 or (unset and frontend != "fbank")


def _fill_feat_dim(model_args: Mapping[str, Any], frontend: str,
                   feat_dim: Optional[int]) -> Dict[str, Any]:
    """``model_args`` with a ``feat_dim`` left to the front-end set to ``feat_dim``; without
    ``feat_dim`` a left-out one stays out (the model's default) and -1 is an error."""
    if not feat_dim_left_to_frontend(model_args, frontend) or (
            feat_dim is None and "feat_dim" not in model_args):
        return dict(model_args)
    if feat_dim is None:
        raise ConfigError("config key 'model_args.feat_dim' is -1 (the front-end's size), "
                          "which only a front-end other than fbank (dataset_args.frontend) "
                          "fills in")
    return dict(model_args, feat_dim=feat_dim)


def _fit_frontend(model_args: Mapping[str, Any], frontend: str, frontend_dim: int,
                  source: _ArgsSource) -> Dict[str, Any]:
    """:func:`frontend_model_args` for arguments from ``source``."""
    for key in ("feat_dim", "acoustic_dim"):
        dim = model_args.get(key)
        if dim is None or dim == frontend_dim or (key == "feat_dim" and dim == -1
                                                  and frontend != "fbank"):
            continue
        raise source.error(f"{source.name(key)} is {dim} but the front-end makes "
                           f"{frontend_dim}-dim features ({_feat_dim_source(frontend)})")
    return _fill_feat_dim(model_args, frontend, frontend_dim)


def _feat_dim_source(frontend: str) -> str:
    """Where ``frontend``'s output size is set: its :data:`_FEAT_DIM_SOURCES` entry, else its
    ``dataset_args.<frontend>_args`` block."""
    return _FEAT_DIM_SOURCES.get(frontend, f"dataset_args.{frontend}_args")


def frontend_model_args(model_args: Mapping[str, Any], frontend: str,
                        frontend_dim: int) -> Dict[str, Any]:
    """``model_args`` checked against the front-end's output size, with ``feat_dim`` filled in.

    ``frontend`` is ``dataset_args.frontend`` and ``frontend_dim`` its output size
    (:func:`~wespeaker_py.frontend.factory.model_feat_dim`). ``feat_dim`` (or
    SimAM-ResNet's synonym ``acoustic_dim``) must equal it, except that a front-end
    other than fbank fills ``feat_dim: -1`` or a left-out ``feat_dim``, as WeSpeaker's
    trainer does. Training and loading a trained model both go through here.
    """
    return _fit_frontend(model_args, frontend, frontend_dim, _CONFIG)


def build_speaker_model(config: ModelConfig, feat_dim: Optional[int] = None) -> nn.Module:
    """``config.model`` built with ``config.model_args`` (no head, random weights).

    ``feat_dim``, the front-end's output size, fills a ``model_args.feat_dim`` left
    to the front-end (-1, or left out with a front-end other than fbank; see
    :func:`frontend_model_args`, which also checks a set one); without it -1 is an
    error and a left-out one stays out. An unknown model name, an argument the model does not
    take or a value it refuses, and a model with a front-end it does not read
    (:func:`check_model_frontend`) are ConfigErrors naming the key.
    """
    factory = _model_factory(config)
    model_args = _fill_feat_dim(config.model_args, config.dataset_args.frontend, feat_dim)
    return _construct(config.model, factory, model_args, _CONFIG)


def build_untrained(config: ModelConfig, device: Union[str, torch.device] = "meta") -> nn.Module:
    """The speaker model of ``config`` as a training run starts it (no head, untrained), on
    ``device``, with a ``model_args.feat_dim`` left to a front-end other than fbank
    (:func:`feat_dim_left_to_frontend`) set to that front-end's output size.

    On the default ``meta`` device nothing is allocated or initialised: shapes only, for
    counting parameters or naming modules. The front-end is built, for its size only, when
    ``feat_dim`` is left to it: its architecture on ``device``, except an SSL front-end
    (``s3prl``), which reads its WavLM weights for it, on the CPU (transformers loads no
    weights under a meta device); where they are missing that is a FileNotFoundError naming
    the path. What :func:`build_speaker_model` refuses is refused here too.
    """
    frontend = config.dataset_args.frontend
    feat_dim = None
    if frontend != "fbank" and feat_dim_left_to_frontend(config.model_args, frontend):
        with torch.device("cpu" if frontend == "s3prl" else device):
            feat_dim = model_feat_dim(build_frontend(config.dataset_args, pretrained=False))
    with torch.device(device):
        return build_speaker_model(config, feat_dim=feat_dim)


def _model_factory(config: ModelConfig) -> Callable[..., nn.Module]:
    """The factory of ``config.model``, checked against the front-end
    (:func:`check_model_frontend`)."""
    try:
        factory = model_factory(config.model)
        check_frontend(config.model, config.dataset_args.frontend)
    except ValueError as err:   # both name the key
        raise ConfigError(str(err)) from None
    return factory


def _construct(name: str, factory: Callable[..., nn.Module], model_args: Mapping[str, Any],
               source: _ArgsSource) -> nn.Module:
    """``factory(**model_args)``; what the model refuses is an error naming its key, and a key
    it has no argument for an error listing those it has (:func:`_check_argument_names`)."""
    _check_argument_names(name, factory, model_args, source)
    try:
        return factory(**model_args)
    except ModelArgError as err:
        raise source.error(f"{source.name(err.arg)} is {err.value!r}, which does not fit "
                           f"{name}: {err.reason}") from None
    except (TypeError, ValueError) as err:   # an unknown argument, or a value it refuses
        raise source.error(f"{source.name()} does not fit {name}: {err}") from None
    except RuntimeError as err:
        if "negative dimension" not in str(err):   # not the arguments' fault: a bug
            raise
        raise source.error(f"{source.name()} does not fit {name}: {err}") from err


def model_argument_names(factory: Callable[..., nn.Module]) -> Optional[List[str]]:
    """The ``model_args`` keys a model factory has a parameter for, in its order; None for
    a factory that also takes ``**kwargs``, which any key may fit."""
    parameters = inspect.signature(factory).parameters.values()
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return None
    return [parameter.name for parameter in parameters
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)]


def _check_argument_names(name: str, factory: Callable[..., nn.Module],
                          model_args: Mapping[str, Any], source: _ArgsSource) -> None:
    """An error naming the first key of ``model_args`` that ``factory`` has no parameter
    for, with the closest parameter name and all of them. A factory that takes ``**kwargs``
    passes them on unseen here: the TypeError of whatever refuses one is left to
    :func:`_construct`."""
    names = model_argument_names(factory)
    if names is None:
        return
    unknown = [key for key in model_args if key not in names]
    if not unknown:
        return
    hint = did_you_mean(unknown[0], names)
    raise source.error(f"{source.name()} does not fit {name}: '{source.key}.{unknown[0]}' is "
                       f"no argument of {name}{hint} ({name} takes {', '.join(names)})")


class SpeakerEmbedder(nn.Module):
    """Waveforms to embeddings: a feature front-end followed by the speaker model.

    ``settings`` are the front-end settings that enter :attr:`identity`
    (:func:`~wespeaker_py.runtime.identity.frontend_settings`).
    """

    def __init__(self, frontend: nn.Module, model: nn.Module,
                 settings: Optional[Dict[str, Any]] = None):
        super().__init__()
        self.frontend = frontend
        self.model = model
        self.settings = dict(settings or {})
        self._identity: Optional[str] = None

    @property
    def identity(self) -> str:
        """Digest of the weights and front-end settings (:mod:`~wespeaker_py.runtime.identity`),
        computed once."""
        if self._identity is None:
            self._identity = embedder_identity(self.model, self.frontend, self.settings)
        return self._identity

    def features(self, wavs: torch.Tensor) -> torch.Tensor:
        """``[B, samples]`` waveforms (int16 scale) to ``[B, frames, dim]`` features."""
        return self.frontend(wavs)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``[B, frames, dim]`` features to ``[B, embed_dim]`` embeddings."""
        return self.model(feats)


def load_embedder(config: ModelConfig, checkpoint_path: str) -> SpeakerEmbedder:
    """Front-end (``config.dataset_args``) and speaker model with the checkpoint's weights.

    The front-end is fbank, TFMel, an SSL model, W2V-BERT or Whisper
    (``dataset_args.frontend``); ``model_args`` must fit its output size
    (:func:`frontend_model_args`). With the TFMel front-end, a checkpoint that
    holds the model's arguments under ``model_config`` (ReDimNet2's) is built from
    them instead of ``model_args``, as WeSpeaker's extraction does.
    Head tensors are ignored; ``frontend.*`` tensors load strictly into the
    front-end, except that a frozen SSL front-end's missing WavLM weights come
    from its pretrained path and one saved by WeSpeaker's s3prl front-end is
    renamed into ours; any other missing, unexpected or misshapen tensor
    is a :class:`~wespeaker_py.runtime.checkpoint.CheckpointMismatchError`
    naming it. Comes back in eval mode, RepVGG fused into its deploy form.
    """
    checkpoint = read_checkpoint(checkpoint_path)
    model_config = checkpoint.get(_MODEL_CONFIG_KEY)
    speaker_state, frontend_state = split_checkpoint_state(model_state_of(checkpoint))
    del checkpoint   # a training checkpoint's optimizer state is not kept while building
    # the checkpoint holds a W2V-BERT or Whisper front-end's weights: only its
    # architecture is built
    frontend = build_frontend(config.dataset_args, pretrained=False).eval()
    model = _trained_model(config, model_config, checkpoint_path, model_feat_dim(frontend))
    load_weights(model, speaker_state, checkpoint_path, allow_head_truncation=False)
    model.eval()
    convert_to_deploy(model, inplace=True)
    embedder = SpeakerEmbedder(frontend, model, frontend_settings(config.dataset_args))
    completed = state_in_model_names(embedder, frontend_state, checkpoint_path)
    load_weights(frontend, {key[len(FRONTEND_PREFIX):]: tensor
                            for key, tensor in completed.items()},
                 checkpoint_path, allow_head_truncation=False, key_prefix=FRONTEND_PREFIX)
    return embedder.eval()


def _trained_model(config: ModelConfig, model_config: Any, checkpoint_path: str,
                   frontend_dim: int) -> nn.Module:
    """The speaker model a checkpoint was trained as (random weights): from ``model_args``,
    or, with the TFMel front-end, from ``model_config`` (what the checkpoint holds under
    that key, None for most) where it is a mapping (WeSpeaker's extraction then drops its
    internal spectrogram: ``spec: None``)."""
    frontend = config.dataset_args.frontend
    if frontend == "tfmel" and isinstance(model_config, Mapping):
        source = _ArgsSource(f"{checkpoint_path}: checkpoint key", _MODEL_CONFIG_KEY,
                             ModelSourceError)
        model_args = dict(model_config, spec=None)
    else:
        source, model_args = _CONFIG, config.model_args
    factory = _model_factory(config)
    return _construct(config.model, factory,
                      _fit_frontend(model_args, frontend, frontend_dim, source), source)
