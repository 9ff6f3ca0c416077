"""The ``HEADS`` table (config/heads.py): builder, list of choices and key checks come from it;
a key that only another head takes is a warning naming it and the heads that take it."""
import dataclasses
import glob
import inspect
import logging
import os
import re

import pytest
import yaml

from wespeaker_py.config.heads import HEADS, HeadChoice, HeadKey, keys_of_other_heads
from wespeaker_py.models.projections import get_projection
from train_helpers import TOY_HEAD, ToyHead

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_head_registered_in_the_table_is_built_listed_and_its_keys_known(monkeypatch):
    monkeypatch.setitem(HEADS, "toy", HeadChoice(TOY_HEAD,
                                                 keys={"bias_init": HeadKey(0.0, float)}))
    head = get_projection({"project_type": "toy", "bias_init": 0.5}, embed_dim=4, num_class=3)
    assert isinstance(head, ToyHead) and head.linear.bias.tolist() == [0.5] * 3
    with pytest.raises(ValueError, match=r"projection_args.bias_init is '1', which is not a "
                                         r"number"):
        get_projection({"project_type": "toy", "bias_init": "1"}, embed_dim=4, num_class=3)
    with pytest.raises(ValueError, match=rf"unknown head 'cosface'; choose one of "
                                         rf"{re.escape(', '.join(HEADS))}$"):
        get_projection({"project_type": "cosface"}, embed_dim=4, num_class=3)
    assert keys_of_other_heads({"project_type": "arc_margin", "bias_init": 1.0}) == {
        "bias_init": ["toy"]}


def _heads_taking(key):
    """The heads of the table that take ``key``, in its order."""
    return [name for name, head in HEADS.items() if key in head.keys]


def test_keys_of_other_heads_name_each_key_and_every_head_that_takes_it(monkeypatch):
    # a head added to the table that shares K with the sub-center head is named beside it
    monkeypatch.setitem(HEADS, "toy", HeadChoice(TOY_HEAD,
                                                 keys={"K": HeadKey(3, int, minimum=1)}))
    args = {"project_type": "add_margin", "K": 3, "curvature": 9.0, "t": 5}
    assert keys_of_other_heads(args) == {key: _heads_taking(key) for key in ("K", "curvature",
                                                                             "t")}
    assert {"arc_margin_intertopk_subcenter", "toy"} <= set(_heads_taking("K"))
    assert keys_of_other_heads({"project_type": "sphere", "margin": 0.2}) == {
        "margin": _heads_taking("margin")}
    assert "sphere" not in _heads_taking("margin") and "add_margin" in _heads_taking("margin")
    get_projection(args, embed_dim=4, num_class=3)  # a warning, not an error


@pytest.mark.parametrize("project_type", list(HEADS))
def test_keys_wespeaker_puts_in_every_block_are_no_ones_business(project_type):
    # its train.py writes embed_dim, num_class, do_lm; its configs give every head scale and
    # easy_margin (its sphereface2 configs carry easy_margin: false)
    args = {"project_type": project_type, "scale": 32.0, "easy_margin": False, "do_lm": False,
            "embed_dim": 4, "num_class": 3}
    assert keys_of_other_heads(args) == {}
    get_projection(args, embed_dim=4, num_class=3)


def _shipped_projection_args():
    paths = sorted(glob.glob(os.path.join(REPO, "conf", "*.yaml"))
                   + glob.glob(os.path.join(REPO, "examples", "**", "*.yaml"), recursive=True))
    for path in paths:
        with open(path) as handle:
            config = yaml.safe_load(handle)
        if isinstance(config, dict) and "projection_args" in config:
            # the plan adds do_lm, as WeSpeaker's trainer does
            yield path, dict(config["projection_args"], do_lm=config.get("do_lm", False))


def test_no_shipped_config_has_a_key_its_head_ignores():
    shipped = dict(_shipped_projection_args())
    assert len(shipped) > 30
    assert {path: keys_of_other_heads(args) for path, args in shipped.items()
            if keys_of_other_heads(args)} == {}


def test_a_key_of_another_head_is_a_warning_naming_it_in_training(corpus, tmp_path, caplog):
    from train_helpers import plan_of, tiny_config
    from wespeaker_py.train.builder import check_model_builds
    config = tiny_config(str(tmp_path), corpus, projection_args={
        "project_type": "add_margin", "scale": 16.0, "K": 3, "curvature": 9.0})
    with caplog.at_level(logging.WARNING):
        check_model_builds(plan_of(config))
    told = [record.getMessage() for record in caplog.records
            if record.levelno == logging.WARNING]
    for key in ("K", "curvature"):
        assert (f"config key 'projection_args.{key}' is ignored: project_type add_margin takes "
                f"no {key} ({' and '.join(_heads_taking(key))} does)") in told


@pytest.mark.parametrize("project_type, key, expected", [
    ("arc_margin_intertopk_subcenter", "k", r"; did you mean 'K'\? \(project_type "
                                            r"arc_margin_intertopk_subcenter takes scale, margin, "
                                            r"easy_margin, K, mp, k_top, do_lm\)$"),
    ("ham_margin", "curvture", r"; did you mean 'curvature'\? \(project_type ham_margin takes "
                               r"scale, margin, curvature\)$"),
    ("softmax", "bias", r" \(project_type softmax takes no keys of its own\)$"),
], ids=["case", "typo", "no_keys"])
def test_a_key_no_head_takes_is_named_with_the_keys_of_the_chosen_head(
        project_type, key, expected):
    with pytest.raises(ValueError, match=rf"^unknown config key 'projection_args.{key}'"
                                         rf"{expected}"):
        get_projection({"project_type": project_type, key: 1}, embed_dim=4, num_class=3)


@pytest.mark.parametrize("key, value, kind", [("easy_margin", "yes", "true or false"),
                                              ("margin_type", 3, "a string"),
                                              ("do_lm", 1, "true or false")])
def test_every_key_is_checked_against_its_kind_in_the_table(key, value, kind):
    with pytest.raises(ValueError, match=f"projection_args.{key} is {value!r}, which is not "
                                         f"{kind}"):
        get_projection({"project_type": "sphereface2", key: value}, embed_dim=4, num_class=3)


def test_each_head_takes_its_keys_as_arguments_of_the_same_name():
    for name, head in HEADS.items():
        parameters = inspect.signature(head.factory()).parameters
        assert set(head.keys) | set(head.fixed) <= set(parameters), name
    rules = {}
    for head in HEADS.values():
        for key, spec in head.keys.items():
            # one kind and one range per key, whichever head declares it
            rule = dataclasses.replace(spec, default=None)
            assert rules.setdefault(key, rule) == rule, key
