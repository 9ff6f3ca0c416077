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

The same declarations check the options of the Python API (:func:`checked_fields`:
a dataclass built by a caller, its values read as Python's, not as YAML's).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import operator
import typing
from numbers import Real
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from wespeaker_py.errors import WespeakerError, did_you_mean
from wespeaker_py.utils.values import is_real_number, is_whole_number

Block = TypeVar("Block")


class ConfigError(WespeakerError, ValueError):
    """A config file or override is malformed; the message names the key (dotted)."""


class FieldValueError(ConfigError):
    """A value that its field's type or range refuses. ``key``: the dotted key; ``wanted``:
    what the field takes (``must be >= 1``); ``got``: the value as the message shows it
    (``str '8000'``); ``kind``: the value's kind where its type is wrong (``str``), None
    where the type is right but the value is not (out of range, not one of the choices).
    Callers that name their options otherwise build their own message from these."""

    def __init__(self, key: str, value: Any, wanted: str, got: str,
                 kind: Optional[str] = None) -> None:
        self.key, self.value, self.wanted, self.got, self.kind = key, value, wanted, got, kind
        super().__init__(f"config key '{key}' {wanted}, got {got}")


def setting(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING,
            minimum: Optional[float] = None, maximum: Optional[float] = None,
            above: Optional[float] = None, below: Optional[float] = None,
            unit: str = "", reason: str = "",
            variants: Optional[Tuple[str, Mapping[str, type]]] = None,
            written_when_set: bool = False) -> Any:
    """A dataclass field with a default and an allowed range.

    ``minimum``/``maximum`` are inclusive bounds, ``above``/``below`` exclusive
    ones; a message of a value out of range gives each bound with ``unit``
    (``seconds``) and then, in brackets, ``reason`` (why the range is what it is).
    No default and no factory make the key required. ``variants``,
    ``(key, blocks)``, makes the field the block ``blocks[value of key]``, ``key``
    being a field declared before it in the same block (its type a union of those
    blocks). ``written_when_set``: :func:`block_to_dict` leaves the key out while it
    has its default, for keys of ours in a block that WeSpeaker passes whole to a
    constructor (a front-end's arguments), which an unknown keyword would crash.
    """
    metadata = {"minimum": minimum, "maximum": maximum, "above": above, "below": below,
                "unit": unit, "reason": reason, "variants": variants,
                "written_when_set": written_when_set}
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


# how a message names a type's values to a Python caller (a config's writer reads "int")
_NAMES_IN_CODE = {int: "a whole number", float: "a number", str: "a string"}


def _describe(hint: Any, from_code: bool = False) -> str:
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
        elif from_code and member in _NAMES_IN_CODE:
            names.append(_NAMES_IN_CODE[member])
        else:
            names.append(getattr(member, "__name__", str(member)))
    text = " or ".join(names)
    if type(None) not in _union_members(hint):
        return text
    return text + (" or None" if from_code else " or null")


def _is_nan(value: Any) -> bool:
    return isinstance(value, Real) and value != value


def _convert_one(member: Any, value: Any, key: str, from_code: bool = False
                 ) -> Tuple[bool, Any]:
    """(accepted, converted value) for one member of a field's type; ``from_code``: as
    :func:`checked_fields` reads a caller's values."""
    origin = typing.get_origin(member) or member
    if member is Any:
        return True, value
    if origin is typing.Literal:
        return value in typing.get_args(member) and not isinstance(value, bool), value
    if is_block(member):
        if isinstance(value, Mapping):
            return True, parse_block(member, value, key, from_code=from_code)
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
        if from_code:   # numpy's integers too
            return is_whole_number(value), int(value) if is_whole_number(value) else value
        return isinstance(value, int) and not isinstance(value, bool), value
    if member is float:
        if from_code:   # any real number but NaN (a caller's NaN is a mistake), and no text
            accepted = is_real_number(value) and not _is_nan(value)
            return accepted, float(value) if accepted else value
        number = as_float(value)
        return number is not None, value if number is None else number
    if member is str:
        return isinstance(value, str), value
    raise TypeError(f"config field '{key}' has an unsupported type {member!r}")


def convert_value(hint: Any, value: Any, key: str, from_code: bool = False) -> Any:
    """``value`` checked against ``hint`` (and converted: int to float, mappings to blocks);
    a :class:`FieldValueError` when refused. ``from_code``: as :func:`checked_fields` reads
    a caller's values."""
    if value is None:
        if type(None) in _union_members(hint):
            return None
        null = "None" if from_code else "null"
        raise FieldValueError(key, value, f"must be {_describe(hint, from_code)}", null, null)
    for member in _non_null(hint):
        accepted, converted = _convert_one(member, value, key, from_code)
        if accepted:
            return converted
    literals = [m for m in _non_null(hint) if typing.get_origin(m) is typing.Literal]
    if literals and len(_non_null(hint)) == 1:
        raise FieldValueError(key, value, f"must be one of "
                              f"{list(typing.get_args(literals[0]))}", repr(value))
    if from_code and _is_nan(value):
        raise FieldValueError(key, value, f"must be {_describe(hint, from_code)}", "NaN", "NaN")
    kind = _kind_of(value)
    raise FieldValueError(key, value, f"must be {_describe(hint, from_code)}",
                          f"{kind} {value!r}", kind)


# the bounds of setting(): the name in a field's metadata, the bound as a config's message
# gives it, as a caller's does, and the test a value within it passes
_BOUNDS = (("minimum", ">=", "at least", operator.ge), ("above", ">", "above", operator.gt),
           ("maximum", "<=", "at most", operator.le), ("below", "<", "below", operator.lt))


def _check_range(field: dataclasses.Field, value: Any, key: str, from_code: bool = False
                 ) -> None:
    """A :class:`FieldValueError` for a number outside the bounds of ``field``: a config's
    message gives the bound it breaks (``must be >= 1``), a caller's (``from_code``) the
    whole range in words (``must be above 0 and below 1``). A NaN (a config's only:
    ``from_code`` refuses it as no number) passes, as it always has."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or _is_nan(value):
        return
    unit = f" {field.metadata['unit']}" if field.metadata.get("unit") else ""
    bounds = [(sign, words, field.metadata[name], within)
              for name, sign, words, within in _BOUNDS if field.metadata.get(name) is not None]
    for sign, _, bound, within in bounds:
        if not within(value, bound):
            wanted = (" and ".join(f"{words} {limit}{unit}" for _, words, limit, _ in bounds)
                      if from_code else f"{sign} {bound}{unit}")
            reason = field.metadata.get("reason")
            raise FieldValueError(key, value, f"must be {wanted}"
                                  + (f" ({reason})" if reason else ""), repr(value))


def _dotted(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _hints(block_type: type) -> Dict[str, Any]:
    return typing.get_type_hints(block_type, include_extras=False)


def parse_block(block_type: Type[Block], data: Mapping[str, Any], where: str = "",
                from_code: bool = False) -> Block:
    """Check ``data`` against ``block_type``; fill defaults; return the block.

    ``where`` is the dotted name of the block (empty at the top level); ``from_code``: read
    the values as :func:`checked_fields` does.
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
            values[name] = convert_value(hints[name], data[name], key, from_code)
            _check_range(field, values[name], key, from_code)
        elif is_block(hints[name]):
            if field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"config key '{key}' is required but missing")
            values[name] = parse_block(hints[name], {}, key, from_code)  # its defaults, completed
        elif (field.default is dataclasses.MISSING
              and field.default_factory is dataclasses.MISSING):
            raise ConfigError(f"config key '{key}' is required but missing")
    block = block_type(**values)
    finish = getattr(block, "_finish", None)
    if finish is not None:
        finish(where)
    return block


def checked_fields(block: Block, where: str = "") -> Block:
    """``block``, a dataclass built by Python code (an API's options), checked field by field
    against its declarations as :func:`parse_block` checks a config's keys, and returned
    anew with Python's ``int`` and ``float`` values.

    The values are read as a caller's, not as YAML's: ``int`` takes any integer (numpy's
    too) and ``float`` any real number but NaN, neither takes text, and a message names
    null ``None`` and words a range in full. The first value refused raises
    :class:`FieldValueError`. Checks across fields are the block's ``_finish``, as in
    :func:`parse_block`, or the caller's.
    """
    values = {field.name: getattr(block, field.name) for field in dataclasses.fields(block)}
    return parse_block(type(block), values, where, from_code=True)


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
