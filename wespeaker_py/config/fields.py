"""The machinery that turns YAML mappings into typed config dataclasses and back.

A config block is a dataclass whose field annotations say what each key
accepts: ``int``, ``float`` (an integer is accepted and stored as float, and
so is a string that reads as a finite number: YAML 1.1 reads ``1e-3`` and
``5.0e5`` as strings; a whole value is saved as an int), ``bool``, ``str``,
``Literal[...]`` (one of the listed values),
``Optional[...]`` (also null), a union of those, ``List[...]``,
``Dict[str, Any]`` (an open mapping that its consumer checks) or another
block, or a union of blocks chosen by an earlier key (``setting(variants=...)``).
Ranges come from :func:`setting`; checks across keys from a block's
``_finish(where)`` method, which may also fill defaults that depend on other
keys. Every error is one line naming the dotted key.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import typing
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from wespeaker_py.errors import WespeakerError, did_you_mean

Block = TypeVar("Block")


class ConfigError(WespeakerError, ValueError):
    """A config file or override is malformed; the message names the key (dotted)."""


def setting(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING,
            minimum: Optional[float] = None, maximum: Optional[float] = None,
            above: Optional[float] = None,
            variants: Optional[Tuple[str, Mapping[str, type]]] = None,
            written_when_set: bool = False) -> Any:
    """A dataclass field with a default and an allowed range.

    ``minimum``/``maximum`` are inclusive bounds, ``above`` an exclusive lower
    bound. No default and no factory make the key required. ``variants``,
    ``(key, blocks)``, makes the field the block ``blocks[value of key]``, ``key``
    being a field declared before it in the same block (its type a union of those
    blocks). ``written_when_set``: :func:`block_to_dict` leaves the key out while it
    has its default, for keys of ours in a block that WeSpeaker passes whole to a
    constructor (a front-end's arguments), which an unknown keyword would crash.
    """
    metadata = {"minimum": minimum, "maximum": maximum, "above": above,
                "variants": variants, "written_when_set": written_when_set}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def is_block(hint: Any) -> bool:
    """True for a config block (a dataclass type)."""
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _union_members(hint: Any) -> Tuple[Any, ...]:
    if typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def _non_null(hint: Any) -> Tuple[Any, ...]:
    return tuple(member for member in _union_members(hint) if member is not type(None))


def as_float(value: Any) -> Optional[float]:
    """``value`` as a float-typed key takes it, or None when it is no number.

    An int or float is taken as it is; a string when ``float()`` reads it as a
    finite number (``"1e-3"``: YAML 1.1 reads a number with an exponent as a string
    unless it has a dot and a signed exponent). A bool is no number.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    for kind, name in ((int, "int"), (float, "float"), (str, "str"), (dict, "dict")):
        if isinstance(value, kind):
            return name
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def _describe(hint: Any) -> str:
    names = []
    for member in _union_members(hint):
        origin = typing.get_origin(member) or member
        if member is type(None):
            continue
        if origin is typing.Literal:
            names.append(f"one of {list(typing.get_args(member))}")
        elif is_block(member) or origin in (dict, Mapping):
            names.append("dict")
        elif origin in (list, Sequence):
            names.append("list")
        else:
            names.append(getattr(member, "__name__", str(member)))
    text = " or ".join(names)
    return text + " or null" if type(None) in _union_members(hint) else text


def _convert_one(member: Any, value: Any, key: str) -> Tuple[bool, Any]:
    """(accepted, converted value) for one member of a field's type."""
    origin = typing.get_origin(member) or member
    if member is Any:
        return True, value
    if origin is typing.Literal:
        return value in typing.get_args(member) and not isinstance(value, bool), value
    if is_block(member):
        if isinstance(value, Mapping):
            return True, parse_block(member, value, key)
        return False, value
    if origin in (dict, Mapping):
        return isinstance(value, Mapping), copy.deepcopy(dict(value)) if isinstance(
            value, Mapping) else value
    if origin in (list, Sequence):
        return isinstance(value, (list, tuple)), list(value) if isinstance(
            value, (list, tuple)) else value
    if member is bool:
        return isinstance(value, bool), value
    if member is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if member is float:
        number = as_float(value)
        return number is not None, value if number is None else number
    if member is str:
        return isinstance(value, str), value
    raise TypeError(f"config field '{key}' has an unsupported type {member!r}")


def convert_value(hint: Any, value: Any, key: str) -> Any:
    """``value`` checked against ``hint`` (and converted: int to float, mappings to blocks)."""
    if value is None:
        if type(None) in _union_members(hint):
            return None
        raise ConfigError(f"config key '{key}' must be {_describe(hint)}, got null")
    for member in _non_null(hint):
        accepted, converted = _convert_one(member, value, key)
        if accepted:
            return converted
    literals = [m for m in _non_null(hint) if typing.get_origin(m) is typing.Literal]
    if literals and len(_non_null(hint)) == 1:
        raise ConfigError(f"config key '{key}' must be one of "
                          f"{list(typing.get_args(literals[0]))}, got {value!r}")
    raise ConfigError(f"config key '{key}' must be {_describe(hint)}, "
                      f"got {_kind_of(value)} {value!r}")


def _check_range(field: dataclasses.Field, value: Any, key: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    minimum, maximum, above = (field.metadata.get(name) for name in
                               ("minimum", "maximum", "above"))
    if minimum is not None and value < minimum:
        raise ConfigError(f"config key '{key}' must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"config key '{key}' must be <= {maximum}, got {value!r}")
    if above is not None and value <= above:
        raise ConfigError(f"config key '{key}' must be > {above}, got {value!r}")


def _dotted(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _hints(block_type: type) -> Dict[str, Any]:
    return typing.get_type_hints(block_type, include_extras=False)


def parse_block(block_type: Type[Block], data: Mapping[str, Any], where: str = "") -> Block:
    """Check ``data`` against ``block_type``; fill defaults; return the block.

    ``where`` is the dotted name of the block (empty at the top level).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key '{where}' must be dict, got {_kind_of(data)} {data!r}")
    hints = _hints(block_type)
    fields = {field.name: field for field in dataclasses.fields(block_type)}
    for name in data:
        if name not in fields:
            raise unknown_key_error(name, where, fields)
    values = {}
    for name, field in fields.items():
        key = _dotted(where, name)
        variants = field.metadata.get("variants")
        if variants is not None:
            selector, blocks = variants
            chosen = values.get(selector, fields[selector].default)
            hints[name] = blocks[chosen]
        if name in data:
            values[name] = convert_value(hints[name], data[name], key)
            _check_range(field, values[name], key)
        elif is_block(hints[name]):
            if field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"config key '{key}' is required but missing")
            values[name] = parse_block(hints[name], {}, key)  # its defaults, completed
        elif (field.default is dataclasses.MISSING
              and field.default_factory is dataclasses.MISSING):
            raise ConfigError(f"config key '{key}' is required but missing")
    block = block_type(**values)
    finish = getattr(block, "_finish", None)
    if finish is not None:
        finish(where)
    return block


def block_to_dict(block: Any) -> Dict[str, Any]:
    """A block as plain YAML-ready data; absent (null) sub-blocks and open mappings left out,
    and keys of ours ``written_when_set`` (see :func:`setting`) that have their default.

    A float-typed key with a whole value is written as an int (see :func:`_as_written`).
    """
    hints = _hints(type(block))
    plain: Dict[str, Any] = {}
    for field in dataclasses.fields(block):
        value = getattr(block, field.name)
        if field.metadata.get("written_when_set") and value == field.default:
            continue
        if value is None and any(is_block(member) or typing.get_origin(member) is dict
                                 or member is dict for member in _non_null(hints[field.name])):
            continue
        plain[field.name] = _plain(_as_written(hints[field.name], value))
    return plain


def _as_written(hint: Any, value: Any) -> Any:
    """A float-typed key's whole value as an int (``frame_shift: 10``), any other as it is.

    WeSpeaker's configs write such keys as ints, and its trainer needs some to be: it slices
    with a chunk length computed from ``frame_shift`` and ``frame_length``. An int serves
    wherever its code reads a float, and loading here takes it back as a float.
    """
    if isinstance(value, float) and value.is_integer() and float in _non_null(hint):
        return int(value)
    return value


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return block_to_dict(value)
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def unknown_key_error(name: Any, parent: str, known: Iterable[str],
                      key: Optional[str] = None) -> ConfigError:
    """The error for ``name``, which the block at ``parent`` ("": the top level) does not
    have: the closest of its ``known`` keys, and all of them. ``key``: the dotted key
    asked for, when it goes on below ``name`` (an override of a misspelt block's key)."""
    known = sorted(known)
    place = f"under '{parent}'" if parent else "at the top level"
    hint = did_you_mean(str(name), known)
    key = key or _dotted(parent, str(name))
    return ConfigError(f"unknown config key '{key}'{hint} (known keys {place}: "
                       f"{', '.join(known)})")


def hint_at(block_type: type, parts: Sequence[str]) -> Optional[Any]:
    """The type of the dotted key ``parts``; None inside an open mapping.

    Raises :class:`ConfigError` for a key the schema does not know.
    """
    hint: Any = block_type
    for depth, part in enumerate(parts):
        blocks = [member for member in _non_null(hint) if is_block(member)]
        if not blocks:
            return None  # below an open mapping: its consumer checks the value
        # a union of blocks (``variants``): the first that has the key
        owner = next((_hints(block) for block in blocks if part in _hints(block)), None)
        if owner is None:
            known = set().union(*(_hints(block) for block in blocks))
            raise unknown_key_error(part, ".".join(parts[:depth]), known, ".".join(parts))
        hint = owner[part]
    return hint


def is_text(hint: Optional[Any]) -> bool:
    """True when the field takes only a string (or null): override text stays as typed."""
    return hint is not None and _non_null(hint) == (str,)


def is_bool(hint: Optional[Any]) -> bool:
    """True when the field takes only a bool (or null): override text is read by
    :func:`~wespeaker_py.utils.booleans.parse_bool`."""
    return hint is not None and _non_null(hint) == (bool,)
