"""Speaker models by their WeSpeaker names.

Each family lives in its own module, named in :data:`_FAMILIES`, which exposes
``MODELS``: a dict from the WeSpeaker model name (``ResNet34``,
``ECAPA_TDNN_GLOB_c512``, ...) to a factory taking the config's ``model_args``.
A family may also expose ``GENERIC_MODELS``: WeSpeaker's generic class names
(``ResNet``, ``ECAPA_TDNN``, ``ReDimNet``, ...), which WeSpeaker's
``get_speaker_model`` accepts too and which take the whole architecture as
``model_args``. Models are looked up by their exact name in one index of every
family's names; a name two families (or both tables of one) give is an error
when the index is built.

Beside its tables, a family module states what is particular to its models, each
read where it is used and each optional unless said otherwise:

- ``FRONTEND``: the front-end its models read (:func:`model_frontend`), else fbank;
- ``RECIPE_MODEL_ARGS`` (needed by :mod:`~wespeaker_py.models.complexity`, the
  model table and the model tests): each model name's ``model_args`` in the
  VoxCeleb v2 recipe, beyond the input size;
- ``RECIPE_FEAT_DIM``: the recipe's input size, where it is not 80 mel bins;
- ``INPUT_SIZE_KEY``: the ``model_args`` key of the input size, where it is not
  ``feat_dim``;
- ``DEPLOYED_FORM_ARGS``: the ``model_args`` of the inference-time form, where a
  model has one (RepVGG).

Family modules are imported on first lookup, so that importing the package stays cheap.
"""
from __future__ import annotations

import difflib
import importlib
import os
from types import ModuleType
from typing import Callable, Dict, Iterable, List, NamedTuple, Tuple

import torch.nn as nn

from wespeaker_py.config.schema import FRONTENDS
from wespeaker_py.models.protocol import ModelArgError, SpeakerModel

__all__ = ["ModelArgError", "SpeakerModel", "check_frontend", "family_module",
           "family_module_name", "get_model", "list_models", "model_factory", "model_frontend"]

# The family modules, in any order: a model is found by its exact name.
_FAMILIES = ("redimnet2", "redimnet", "samresnet", "xi_vector", "tdnn", "ecapa_tdnn", "resnet",
             "repvgg", "campplus", "eres2net", "res2net", "gemini_dfresnet",
             "w2vbert_adapter_mfa", "whisper_pmfa")


class _Entry(NamedTuple):
    """One name of the model index: its factory, its family module, and whether it is
    one of WeSpeaker's generic names (``GENERIC_MODELS``)."""

    factory: Callable[..., nn.Module]
    family: ModuleType
    generic: bool


def _index() -> Dict[str, _Entry]:
    """Every registered model name with its entry; a ValueError naming both places if
    two tables give one name.

    Built from the family tables at each call (a few dozen names), so that it always
    agrees with them.
    """
    index: Dict[str, _Entry] = {}
    places: Dict[str, str] = {}
    for module_name in _FAMILIES:
        family = importlib.import_module(f"{__name__}.{module_name}")
        for table, generic in (("MODELS", False), ("GENERIC_MODELS", True)):
            for name, factory in getattr(family, table, {}).items():
                place = f"{family.__name__}.{table}"
                if name in index:
                    raise ValueError(f"model name {name!r} is given by both {places[name]} and "
                                     f"{place}; a model name must pick one model")
                index[name], places[name] = _Entry(factory, family, generic), place
    return index


def _shared_start(names: Iterable[str]) -> str:
    """The start ``names`` share, case aside (whisper_PMFA is also spelt Whisper_PMFA)."""
    return os.path.commonprefix([name.casefold() for name in names])


def _families_by_start() -> List[Tuple[str, str, List[str]]]:
    """For each family: the start its names share (case-folded), its module name, and
    its names, sorted; what the error for an unknown name points to."""
    names_by_family: Dict[str, List[str]] = {}
    for name, entry in _index().items():
        names_by_family.setdefault(entry.family.__name__.rpartition(".")[2], []).append(name)
    return [(_shared_start(names), module_name, sorted(names))
            for module_name, names in names_by_family.items()]


def _unknown_model(name: str) -> ValueError:
    """The error for a model name no family gives: it names the config key, and the names
    of the family whose names all start as ``name`` does, else the closest known names."""
    families = _families_by_start()
    matching = [family for family in families
                if family[0] and name.casefold().startswith(family[0])]
    if matching:
        _, module_name, names = max(matching, key=lambda family: len(family[0]))
        hint = f"the {module_name} family offers {', '.join(names)}"
    else:
        close = difflib.get_close_matches(name, list_models(generic=True), n=5, cutoff=0.6)
        starts = sorted(names[0][:len(start)] for start, _, names in families if start)
        hint = (f"closest known names: {', '.join(close)}" if close else
                f"known names start with {', '.join(starts)}")
    return ValueError(f"config key 'model' is {name!r}, which is no known model; {hint} "
                      f"(models.list_models(generic=True) lists them all)")


def _entry(name: str) -> _Entry:
    """The index entry of model ``name``; the error of :func:`_unknown_model` if none."""
    entry = _index().get(name)
    if entry is None:
        raise _unknown_model(name)
    return entry


def family_module(name: str) -> ModuleType:
    """The family module that gives model ``name``, whose constants (``FRONTEND``,
    ``RECIPE_MODEL_ARGS``, ...) describe it."""
    return _entry(name).family


def family_module_name(name: str) -> str:
    """The name of the family module (``resnet``, ``ecapa_tdnn``, ...) that gives model ``name``."""
    return family_module(name).__name__.rpartition(".")[2]


def list_models(generic: bool = False) -> List[str]:
    """The named model variants :func:`get_model` accepts, sorted.

    With ``generic``, also WeSpeaker's generic class names (``ResNet``,
    ``ECAPA_TDNN``, ...), which need architecture ``model_args`` (``block``,
    ``num_blocks``, ...) beyond the recipe's ``feat_dim`` and ``embed_dim``.
    """
    return sorted(name for name, entry in _index().items() if generic or not entry.generic)


def model_factory(name: str) -> Callable[..., nn.Module]:
    """The factory of the speaker model called ``name`` (a WeSpeaker model name), which
    takes the config's ``model_args``; a ValueError naming the config key ``model`` and
    the names that come closest if no model has that name."""
    return _entry(name).factory


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
    return getattr(family_module(name), "FRONTEND", "fbank")


# Front-ends whose features only their own models read, and whose models read nothing else
# (FRONTENDS' exclusive entries).
_EXCLUSIVE_FRONTENDS = tuple(name for name, choice in FRONTENDS.items() if choice.exclusive)


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
