"""``projection_args``: one table of heads (config/heads.py ``HEADS``) that the config check,
as a config loads, and the head builder read."""
import os
import re
import subprocess
import sys

import pytest
import yaml

from wespeaker_py.config import ConfigError, load_config, read_yaml
from wespeaker_py.config.heads import HEADS, HeadChoice, HeadKey
from wespeaker_py.models.projections import get_projection
from train_helpers import TOY_HEAD, ToyHead

RESNET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf",
                      "resnet.yaml")


def _load(**projection_args):
    """conf/resnet.yaml with ``projection_args`` keys set from the command line."""
    return load_config(RESNET, [(f"projection_args.{key}", value)
                                for key, value in projection_args.items()])


def test_the_keys_and_defaults_are_those_heads_took_before_the_table_moved():
    # WeSpeaker's keys and defaults (its get_projection's), pinned: a config means what it did
    assert {name: {key: spec.default for key, spec in head.keys.items()}
            for name, head in HEADS.items()} == {
        "arc_margin": {"scale": 32.0, "margin": 0.0, "easy_margin": False},
        "arc_margin_intertopk_subcenter": {"scale": 32.0, "margin": 0.0, "easy_margin": False,
                                           "K": 3, "mp": 0.06, "k_top": 5, "do_lm": False},
        "add_margin": {"scale": 32.0, "margin": 0.0},
        "ham_margin": {"scale": 32.0, "margin": 0.0, "curvature": 1.0},
        "sphere": {},
        "sphereface2": {"scale": 32.0, "margin": 0.0, "t": 3, "lanbuda": 0.7,
                        "margin_type": "C"},
        "softmax": {}}
    assert HEADS["sphere"].fixed == {"margin": 4}


def test_a_mistyped_head_is_refused_as_the_config_loads():
    with pytest.raises(ConfigError, match=rf"^projection_args.project_type: unknown head "
                                          rf"'arc_margn'; choose one of "
                                          rf"{re.escape(', '.join(HEADS))}$"):
        _load(project_type="arc_margn")


def test_a_head_left_unnamed_is_refused_as_the_config_loads(tmp_path):
    config = read_yaml(RESNET)
    del config["projection_args"]["project_type"]
    path = tmp_path / "no_head.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"^config key 'projection_args.project_type' is "
                                          r"required \(one of arc_margin, "):
        load_config(str(path))


def test_a_count_that_is_no_integer_is_refused_as_the_config_loads():
    with pytest.raises(ConfigError, match=r"^projection_args.K is 3.5, which is not an "
                                          r"integer$"):
        _load(project_type="arc_margin_intertopk_subcenter", K="3.5")


def test_a_negative_margin_is_refused_as_the_config_loads():
    with pytest.raises(ConfigError, match=r"^config key 'projection_args.margin' must be "
                                          r">= 0, got -1$"):
        _load(margin="-1")


def _bounded_keys():
    """(head, key, a value beyond the key's range, its bound as the error writes it) for each
    bound in the table."""
    for name, head in HEADS.items():
        for key, spec in head.keys.items():
            if spec.minimum is not None:
                yield name, key, str(spec.minimum - 1), f">= {spec.minimum}"
            if spec.maximum is not None:
                yield name, key, str(spec.maximum + 1), f"<= {spec.maximum}"
            if spec.above is not None:
                yield name, key, str(spec.above), f"> {spec.above}"
            if spec.choices is not None:
                yield name, key, "X", " or ".join(repr(choice) for choice in spec.choices)


@pytest.mark.parametrize("project_type, key, value, bound", list(_bounded_keys()))
def test_every_bound_of_the_table_is_checked_as_the_config_loads(project_type, key, value,
                                                                 bound):
    with pytest.raises(ConfigError, match=rf"^config key 'projection_args.{key}' must be "
                                          rf"{re.escape(bound)}, got "):
        _load(project_type=project_type, **{key: value})


def test_the_shipped_values_are_within_the_table():
    config = _load(project_type="sphereface2", margin="0.2", t="3", lanbuda="0.7",
                   margin_type="C")
    assert config.projection_args == {"project_type": "sphereface2", "scale": 32.0,
                                      "easy_margin": False, "margin": 0.2, "t": 3,
                                      "lanbuda": 0.7, "margin_type": "C"}


def test_a_head_registered_in_the_table_is_accepted_checked_and_built(monkeypatch):
    monkeypatch.setitem(HEADS, "toy", HeadChoice(
        TOY_HEAD, keys={"bias_init": HeadKey(0.0, float, minimum=0)}))
    config = _load(project_type="toy", bias_init="0.5")
    head = get_projection(config.projection_args, embed_dim=4, num_class=3)
    assert isinstance(head, ToyHead) and head.linear.bias.tolist() == [0.5] * 3
    with pytest.raises(ConfigError, match=r"^config key 'projection_args.bias_init' must be "
                                          r">= 0, got -1$"):
        _load(project_type="toy", bias_init="-1")
    # a key the table declares but the class does not take is named when the head is built
    monkeypatch.setitem(HEADS, "toy", HeadChoice(
        TOY_HEAD, keys={"bias": HeadKey(0.0, float)}))
    with pytest.raises(ConfigError, match=r"^config key 'projection_args.bias': "
                                          rf"{TOY_HEAD} takes no argument 'bias'"):
        get_projection({"project_type": "toy"}, embed_dim=4, num_class=3)


def test_the_table_needs_no_torch():
    script = ("import sys, wespeaker_py.config.schema, wespeaker_py.config.heads as h; "
              "print('torch' in sys.modules, len(h.HEADS))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "7"]
