"""Speaker models by their WeSpeaker names.

Each family lives in its own module, which exposes ``MODELS``: a dict from the
WeSpeaker model name (``ResNet34``, ``ECAPA_TDNN_GLOB_c512``, ...) to a factory
taking the config's ``model_args``. A family may also expose ``GENERIC_MODELS``:
WeSpeaker's generic class names (``ResNet``, ``ECAPA_TDNN``, ``ReDimNet``, ...),
which WeSpeaker's ``get_speaker_model`` accepts too and which take the whole
architecture as ``model_args``. Family modules are imported on first use so
that importing the package stays cheap.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable, Dict, List, Optional

import torch.nn as nn

from wespeaker_py.models.protocol import ModelArgError, SpeakerModel

__all__ = ["ModelArgError", "SpeakerModel", "check_frontend", "family_module_name", "get_model",
           "list_models", "model_factory", "model_frontend"]

# Longest prefixes first: "SimAM_ResNet" must win over "ResNet", "XI_VEC" over "XVEC",
# "ReDimNet2" over "ReDimNet". A family may have two (whisper_PMFA: WeSpeaker's code
# and its config spell it differently).
_FAMILY_BY_PREFIX = (
    ("ReDimNet2", "redimnet2"),
    ("ReDimNet", "redimnet"),
    ("SimAM_ResNet", "samresnet"),
    ("XI_VEC", "xi_vector"),
    ("XVEC", "tdnn"),
    ("ECAPA_TDNN", "ecapa_tdnn"),
    ("ResNet", "resnet"),
    ("REPVGG", "repvgg"),
    ("CAMPPlus", "campplus"),
    ("ERes2Net", "eres2net"),
    ("Res2Net", "res2net"),
    ("Gemini", "gemini_dfresnet"),
    ("W2VBert", "w2vbert_adapter_mfa"),
    ("whisper_PMFA", "whisper_pmfa"),
    ("Whisper_PMFA", "whisper_pmfa"),
)


def _family_of(name: str) -> Optional[str]:
    """The family module whose prefix ``name`` starts with, or None."""
    for prefix, module_name in _FAMILY_BY_PREFIX:
        if name.startswith(prefix):
            return module_name
    return None


def _unknown_model(name: str) -> ValueError:
    """The error for a model name :func:`get_model` does not know: it names the config key,
    and the names of the family the name's prefix picks, else the closest known names."""
    module_name = _family_of(name)
    if module_name is not None:
        hint = f"the {module_name} family offers {', '.join(sorted(_family_models(module_name)))}"
    else:
        known = list_models(generic=True)
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
        hint = (f"closest known names: {', '.join(close)}" if close else
                f"known names start with {', '.join(p for p, _ in _FAMILY_BY_PREFIX)}")
    return ValueError(f"config key 'model' is {name!r}, which is no known model; {hint} "
                      f"(models.list_models(generic=True) lists them all)")


def family_module_name(name: str) -> str:
    """The family module (``resnet``, ``ecapa_tdnn``, ...) that holds model ``name``."""
    module_name = _family_of(name)
    if module_name is None:
        raise _unknown_model(name)
    return module_name


def _family_models(module_name: str, generic: bool = True) -> Dict[str, object]:
    """A family's factories by name: its named variants, and its generic names if asked."""
    module = importlib.import_module(f"{__name__}.{module_name}")
    if not generic:
        return module.MODELS
    return {**module.MODELS, **getattr(module, "GENERIC_MODELS", {})}


def list_models(generic: bool = False) -> List[str]:
    """The named model variants :func:`get_model` accepts, sorted.

    With ``generic``, also WeSpeaker's generic class names (``ResNet``,
    ``ECAPA_TDNN``, ...), which need architecture ``model_args`` (``block``,
    ``num_blocks``, ...) beyond the recipe's ``feat_dim`` and ``embed_dim``.
    """
    names: List[str] = []
    for module_name in dict.fromkeys(module for _, module in _FAMILY_BY_PREFIX):
        names.extend(_family_models(module_name, generic))
    return sorted(names)


def model_factory(name: str) -> Callable[..., nn.Module]:
    """The factory of the speaker model called ``name`` (a WeSpeaker model name), which
    takes the config's ``model_args``; a ValueError naming the config key ``model`` and
    the names that come closest if no model has that name."""
    family = _family_models(family_module_name(name))
    if name not in family:
        raise _unknown_model(name)
    return family[name]


def get_model(name: str, **model_args) -> nn.Module:
    """Build the speaker model called ``name`` (a WeSpeaker model name).

    The model maps fbank-like features ``[B, frames, feat_dim]`` to embeddings
    ``[B, embed_dim]`` and follows :class:`SpeakerModel`. An argument value the
    model cannot be built with is a :class:`ModelArgError` naming it.
    """
    return model_factory(name)(**model_args)


def model_frontend(name: str) -> str:
    """The front-end family model ``name`` reads: ``"tfmel"`` for ReDimNet2,
    ``"w2vbert"`` for W2VBert_Adapter_MFA, ``"whisper_encoder"`` for whisper_PMFA,
    else ``"fbank"``.

    A family module that needs a particular front-end says so in ``FRONTEND``;
    the others read fbank-like features (fbank, or an SSL front-end's).
    """
    module = importlib.import_module(f"{__name__}.{family_module_name(name)}")
    return getattr(module, "FRONTEND", "fbank")


# Front-ends whose features only their own models read, and whose models read nothing else.
_EXCLUSIVE_FRONTENDS = ("tfmel", "w2vbert", "whisper_encoder")


def check_frontend(name: str, frontend: str) -> None:
    """Refuse a model and ``dataset_args.frontend`` that do not go together.

    TFMel features feed only the models trained on them (ReDimNet2), W2V-BERT's
    hidden states only W2VBert_Adapter_MFA and Whisper's block outputs only
    whisper_PMFA; those models read nothing else, as in WeSpeaker. Both keys are
    named in the error.
    """
    wanted = model_frontend(name)
    if (wanted in _EXCLUSIVE_FRONTENDS or frontend in _EXCLUSIVE_FRONTENDS) \
            and wanted != frontend:
        raise ValueError(f"config key 'model' is {name}, which reads {wanted} features, but "
                         f"'dataset_args.frontend' is {frontend}")
