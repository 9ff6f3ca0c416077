"""Every range the config schema declares with setting() is enforced at its bound.

The schema is the oracle for which bounds exist: the walk below finds each bounded
key of every block reachable from TrainConfig (variant blocks included), gives it a
value just outside its bound (expecting a refusal naming the dotted key) and the bound
itself, or the next value inside an exclusive one (expecting no refusal of that key).
A second test keeps the bounds from going missing: each number the schema takes has
a range, or is named in UNBOUNDED as free on purpose.
"""
import dataclasses
import glob
import math
import os
import typing
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from wespeaker_py.config import ConfigError, TrainConfig, load_config
from wespeaker_py.config.fields import is_block, parse_block

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = sorted(glob.glob(os.path.join(REPO_ROOT, "conf", "*.yaml"))
                 + glob.glob(os.path.join(REPO_ROOT, "examples", "*", "conf", "*.yaml"))
                 + glob.glob(os.path.join(REPO_ROOT, "examples", "*", "*", "conf", "*.yaml")))
# setting()'s metadata names: inclusive, then exclusive bounds
INCLUSIVE = ("minimum", "maximum")
EXCLUSIVE = ("above", "below")
# numbers the schema takes without a range, on purpose (block.key)
UNBOUNDED = {"TrainConfig.gpus", "MarginUpdate.initial_margin", "MarginUpdate.final_margin",
             "WarmupStepDecayArgs.decay_step"}


def _members(hint: Any) -> Tuple[Any, ...]:
    """The types a hint is made of (a union's members, a list's or dict's item types)."""
    if typing.get_origin(hint) in (typing.Union, list, dict):
        return tuple(inner for arg in typing.get_args(hint) for inner in _members(arg))
    return (hint,)


def _blocks() -> Dict[type, str]:
    """Every block reachable from TrainConfig, with the dotted key of its first place."""
    found: Dict[type, str] = {}

    def visit(block: type, where: str) -> None:
        if block in found:
            return
        found[block] = where
        hints = typing.get_type_hints(block)
        for field in dataclasses.fields(block):
            key = f"{where}.{field.name}" if where else field.name
            inner = list(_members(hints[field.name]))
            variants = field.metadata.get("variants")
            if variants is not None:
                inner += [m for choice in variants[1].values() for m in _members(choice)]
            for member in inner:
                if is_block(member):
                    visit(member, key)

    visit(TrainConfig, "")
    return found


def _bounds(field: dataclasses.Field) -> Dict[str, float]:
    return {name: field.metadata[name] for name in INCLUSIVE + EXCLUSIVE
            if field.metadata.get(name) is not None}


def _is_float(hint: Any) -> bool:
    return float in _members(hint)


def _example_values() -> Dict[type, Dict[str, Any]]:
    """One valid block of each kind, as the shipped configs give it (keys set by the file
    or filled with their defaults): the values of the keys before the one under test."""
    examples: Dict[type, Dict[str, Any]] = {}

    def collect(value: Any) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            examples.setdefault(type(value), {field.name: getattr(value, field.name)
                                              for field in dataclasses.fields(value)})
            for field in dataclasses.fields(value):
                collect(getattr(value, field.name))
        elif isinstance(value, (list, tuple)):
            for item in value:
                collect(item)
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)

    for path in SHIPPED:
        collect(load_config(path))
    return examples


def _inside(name: str, bound: float, as_float: bool) -> float:
    """The bound itself for an inclusive bound, the nearest value inside an exclusive one."""
    if name in INCLUSIVE:
        return bound
    step = 1 if name == "above" else -1
    return math.nextafter(bound, step * math.inf) if as_float else math.floor(bound) + step


def _outside(name: str, bound: float, as_float: bool) -> float:
    """The nearest value beyond the bound (the bound itself for an exclusive one)."""
    if name in EXCLUSIVE:
        return bound
    step = -1 if name == "minimum" else 1
    return math.nextafter(bound, step * math.inf) if as_float else int(bound) + step


def _cases() -> Iterator[Tuple[type, str, str, str, float, bool]]:
    for block, where in _blocks().items():
        hints = typing.get_type_hints(block)
        for field in dataclasses.fields(block):
            for name, bound in _bounds(field).items():
                yield block, where, field.name, name, bound, _is_float(hints[field.name])


CASES = list(_cases())


@pytest.fixture(scope="module")
def examples() -> Dict[type, Dict[str, Any]]:
    return _example_values()


def _valid_data(block: type, key: str, examples: Dict[type, Dict[str, Any]]) -> Dict[str, Any]:
    """Values for the keys before ``key`` that the block takes: an example's, or for a block
    no shipped config uses, a value within the range of each required number."""
    data: Dict[str, Any] = {}
    hints = typing.get_type_hints(block)
    for field in dataclasses.fields(block):
        if field.name == key:
            return data
        if block in examples:
            data[field.name] = examples[block][field.name]
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            assert _bounds(field), f"{block.__name__}.{field.name}: give an example config"
            name, bound = next(iter(_bounds(field).items()))
            data[field.name] = _inside(name, bound, _is_float(hints[field.name]))
    raise AssertionError(f"{block.__name__} has no key {key}")


def _parse(block: type, where: str, data: Dict[str, Any]) -> None:
    # instances from the examples go in as mappings, as a YAML file gives them
    plain = {name: dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
             for name, value in data.items()}
    parse_block(block, plain, where)


def test_the_walk_finds_the_schemas_bounds():
    keys = {f"{block.__name__}.{key}" for block, _, key, *_ in CASES}
    assert len(CASES) >= 60
    assert {"FbankArgs.dither", "SpecAugArgs.prob", "DataloaderArgs.batch_size",
            "TrainConfig.max_fail_fraction"} <= keys


@pytest.mark.parametrize("block, where, key, name, bound, as_float", CASES,
                         ids=[f"{where or 'top'}.{key}-{name}" for _, where, key, name, *_
                              in CASES])
def test_a_value_just_outside_a_bound_is_refused_naming_the_key(block, where, key, name, bound,
                                                                as_float, examples):
    dotted = f"{where}.{key}" if where else key
    data = _valid_data(block, key, examples)
    with pytest.raises(ConfigError, match=f"config key '{dotted}' must be"):
        _parse(block, where, dict(data, **{key: _outside(name, bound, as_float)}))
    try:
        _parse(block, where, dict(data, **{key: _inside(name, bound, as_float)}))
    except ConfigError as error:   # checks across keys may refuse, never this key's range
        assert getattr(error, "key", None) != dotted, str(error)


def test_every_number_the_schema_takes_has_a_range_or_is_free_on_purpose():
    unbounded: List[str] = []
    for block in _blocks():
        hints = typing.get_type_hints(block)
        for field in dataclasses.fields(block):
            hint = hints[field.name]
            scalars = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,)
            takes_number = {int, float} & set(scalars)   # lists are checked by _finish
            if takes_number and not _bounds(field):
                unbounded.append(f"{block.__name__}.{field.name}")
    assert set(unbounded) == UNBOUNDED
