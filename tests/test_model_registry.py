"""The model registry: a model is found by its exact name, whatever other names start with,
and everything the model table needs about it is stated in its family module."""
import importlib
import pkgutil
import sys
import types

import pytest
import torch.nn as nn

from wespeaker_py import models
from wespeaker_py.bin import model_summary
from wespeaker_py.cli.common import UsageError
from wespeaker_py.models import complexity, family_module_name, get_model, list_models


class Toy(nn.Module):
    """A linear map of each frame, averaged over time."""

    def __init__(self, feat_dim: int, embed_dim: int):
        super().__init__()
        self.linear = nn.Linear(feat_dim, embed_dim)

    def forward(self, x):
        return self.linear(x).mean(dim=1)


def _register_family(monkeypatch, **tables):
    """A family module ``toy_family`` with these tables, registered beside the real ones."""
    family = types.ModuleType(f"{models.__name__}.toy_family")
    vars(family).update(tables)
    monkeypatch.setitem(sys.modules, family.__name__, family)
    monkeypatch.setattr(models, "_FAMILIES", models._FAMILIES + ("toy_family",))
    return family


def test_a_model_whose_name_starts_like_another_familys_is_found_by_its_name(monkeypatch):
    _register_family(monkeypatch, MODELS={"ResNetToy": Toy},
                     RECIPE_MODEL_ARGS={"ResNetToy": {"embed_dim": 8}}, RECIPE_FEAT_DIM=24)
    assert "ResNetToy" in list_models()
    assert isinstance(get_model("ResNetToy", feat_dim=24, embed_dim=8), Toy)
    assert family_module_name("ResNetToy") == "toy_family"
    assert family_module_name("ResNet34") == "resnet"
    [row] = complexity.summarize_models(["ResNetToy"])
    assert (row.feat_dim, row.embed_dim, row.params) == (24, 8, 24 * 8 + 8)


def test_the_model_table_reads_a_models_facts_from_its_family(monkeypatch):
    _register_family(monkeypatch, MODELS={"ToyTDNN": Toy},
                     RECIPE_MODEL_ARGS={"ToyTDNN": {"embed_dim": 8}}, RECIPE_FEAT_DIM=24,
                     INPUT_SIZE_KEY="acoustic_dim", DEPLOYED_FORM_ARGS={"deploy": True})
    assert complexity.recipe_feat_dim("ToyTDNN") == 24
    assert complexity.recipe_model_args("ToyTDNN") == {"acoustic_dim": 24, "embed_dim": 8}
    assert complexity.recipe_model_args("ToyTDNN", 40, deployed=True) == {
        "acoustic_dim": 40, "embed_dim": 8, "deploy": True}


@pytest.mark.parametrize("tables, places", [
    ({"MODELS": {"ResNet34": Toy}},
     "wespeaker_py.models.resnet.MODELS and wespeaker_py.models.toy_family.MODELS"),
    ({"MODELS": {"ToyTDNN": Toy}, "GENERIC_MODELS": {"ToyTDNN": Toy}},
     "wespeaker_py.models.toy_family.MODELS and wespeaker_py.models.toy_family.GENERIC_MODELS"),
], ids=["two families", "both tables of one family"])
def test_a_name_given_twice_is_an_error_at_any_lookup(monkeypatch, tables, places):
    _register_family(monkeypatch, **tables)
    for lookup in (lambda: get_model("XVEC", feat_dim=80, embed_dim=8), list_models):
        with pytest.raises(ValueError, match=f"given by both {places}"):
            lookup()


def test_model_summary_names_a_model_without_recipe_arguments_before_building_any(monkeypatch):
    _register_family(monkeypatch, MODELS={"ToyTDNN": Toy})

    def built(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(complexity, "get_model", built)
    with pytest.raises(UsageError) as raised:   # one line, exit 2
        model_summary.main([])
    message = str(raised.value)
    assert "'ToyTDNN'" in message and "RECIPE_MODEL_ARGS of wespeaker_py.models.toy_family" \
        in message
    assert "--models" not in message


@pytest.mark.parametrize("module_name", sorted(module.name for module in
                                               pkgutil.iter_modules(models.__path__)))
def test_every_module_with_a_models_table_is_a_listed_family(module_name):
    module = importlib.import_module(f"{models.__name__}.{module_name}")
    assert not hasattr(module, "MODELS") or module_name in models._FAMILIES, (
        f"{module.__name__} defines MODELS but is not in _FAMILIES of {models.__name__}, so "
        f"none of its models can be found")
