"""``projection_args.project_type``: the margin heads, in one table (:data:`HEADS`) that the
config check (:func:`check_projection_args`, when a config is loaded) and the head builder
(``models/projections.get_projection``) both read.

An entry names the head's class as ``"module:Class"``, imported only when a head is built so
that ``config/`` imports no torch, and the ``projection_args`` keys the head takes, each with
its default, kind and allowed values. ``projection_args`` is not a block with one field per
key, as ``loss_args`` is: WeSpeaker's configs give every head ``scale`` and ``easy_margin``,
its trainer writes ``embed_dim``, ``num_class`` and ``do_lm`` into the block, and a key that
only another head takes is a warning (:func:`keys_of_other_heads`), not an error.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Tuple

from wespeaker_py.config.choices import Choice
from wespeaker_py.config.fields import ConfigError, as_float, convert_value
from wespeaker_py.errors import did_you_mean


@dataclasses.dataclass(frozen=True)
class HeadKey:
    """A ``projection_args`` key of a head: its value when the key is left out, its kind
    (``int``: a count; ``float``: any number; ``bool``; ``str``) and what it may be:
    ``minimum``/``maximum`` are inclusive bounds, ``above`` an exclusive lower bound,
    ``choices`` the values a ``str`` key takes (None: any)."""

    default: Any
    kind: type
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    above: Optional[float] = None
    choices: Optional[Tuple[str, ...]] = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadChoice(Choice):
    """One ``project_type``: ``builds`` is the head's class, called with ``embed_dim``,
    ``num_class``, the ``fixed`` arguments and a keyword argument of the same name for each
    of its ``keys`` (:meth:`build_head`). The keys take the place of ``args``, which heads
    leave None."""

    keys: Mapping[str, HeadKey] = dataclasses.field(default_factory=dict)
    # arguments the head is always built with, which no config key sets
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def build_head(self, settings: Mapping[str, Any], embed_dim: int, num_class: int) -> Any:
        """The head of the checked ``projection_args`` ``settings``: the value of each of its
        keys, or the key's default where it is left out."""
        values = {key: settings.get(key, spec.default) for key, spec in self.keys.items()}
        return self.build("projection_args", values, embed_dim, num_class, **self.fixed)


# keys that several heads take, declared once so that they mean the same to each
_SCALE = HeadKey(32.0, float, above=0)
# the margin scheduler sets the margin from the first step on
_START_MARGIN = HeadKey(0.0, float, minimum=0)
_EASY_MARGIN = HeadKey(False, bool)

# ``projection_args.project_type``: WeSpeaker's names; the one place a head is added
HEADS: Dict[str, HeadChoice] = {
    "arc_margin": HeadChoice("wespeaker_py.models.projections:ArcMarginProduct", keys={
        "scale": _SCALE, "margin": _START_MARGIN, "easy_margin": _EASY_MARGIN}),
    "arc_margin_intertopk_subcenter": HeadChoice(
        "wespeaker_py.models.projections:ArcMarginProduct_intertopk_subcenter", keys={
            "scale": _SCALE, "margin": _START_MARGIN, "easy_margin": _EASY_MARGIN,
            "K": HeadKey(3, int, minimum=1), "mp": HeadKey(0.06, float, minimum=0),
            "k_top": HeadKey(5, int, minimum=0), "do_lm": HeadKey(False, bool)}),
    "add_margin": HeadChoice("wespeaker_py.models.projections:AddMarginProduct", keys={
        "scale": _SCALE, "margin": _START_MARGIN}),
    "ham_margin": HeadChoice("wespeaker_py.models.projections:HyperbolicAMSoftmax", keys={
        "scale": _SCALE, "margin": _START_MARGIN, "curvature": HeadKey(1.0, float, above=0)}),
    # as WeSpeaker's: the multiplier is always 4
    "sphere": HeadChoice("wespeaker_py.models.projections:SphereProduct", fixed={"margin": 4}),
    "sphereface2": HeadChoice("wespeaker_py.models.projections:SphereFace2", keys={
        "scale": _SCALE, "margin": _START_MARGIN, "t": HeadKey(3, float, above=0),
        "lanbuda": HeadKey(0.7, float, minimum=0, maximum=1),
        "margin_type": HeadKey("C", str, choices=("A", "C"))}),
    "softmax": HeadChoice("wespeaker_py.models.projections:LinearSoftmax"),
}

# Keys of every block, whatever the head: WeSpeaker's train.py writes embed_dim, num_class and
# do_lm into it, and its configs give every head scale and easy_margin (its sphereface2 ones
# too). A head that has no use for them takes no notice of them.
_EVERY_BLOCK_KEYS = frozenset({"project_type", "embed_dim", "num_class", "do_lm", "scale",
                               "easy_margin"})
_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _key_specs() -> Dict[str, HeadKey]:
    """Each key of a head in :data:`HEADS`, with its declaration (one kind and range per key,
    whichever head declares it)."""
    return {key: spec for head in HEADS.values() for key, spec in head.keys.items()}


def _of_kind(value: Any, kind: type, read_text: bool) -> Optional[Any]:
    """``value`` as a key of ``kind`` holds it, or None when it is not of that kind: a float
    key takes an integer (kept one: WeSpeaker's ``t: 3`` is saved as written), and with
    ``read_text`` text that reads as a number, as a float."""
    if kind is float and isinstance(value, str):
        return as_float(value) if read_text else None
    kinds = (int, float) if kind is float else kind
    # a bool is an int to Python, but no number to a config
    if isinstance(value, kinds) and (kind is bool or not isinstance(value, bool)):
        return value
    return None


def _checked_value(key: str, value: Any, spec: HeadKey, read_text: bool) -> Any:
    """``value`` of ``projection_args.<key>`` as its key holds it; a :class:`ConfigError`
    where it is not of the key's kind or not among the values the key takes."""
    held = _of_kind(value, spec.kind, read_text)
    if held is None:
        raise ConfigError(f"projection_args.{key} is {value!r}, which is not "
                          f"{_KINDS[spec.kind]}")
    if spec.choices is not None and held not in spec.choices:
        bound = " or ".join(repr(choice) for choice in spec.choices)
    elif spec.minimum is not None and held < spec.minimum:
        bound = f">= {spec.minimum}"
    elif spec.maximum is not None and held > spec.maximum:
        bound = f"<= {spec.maximum}"
    elif spec.above is not None and held <= spec.above:
        bound = f"> {spec.above}"
    else:
        return held
    raise ConfigError(f"config key 'projection_args.{key}' must be {bound}, got {held!r}")


def check_projection_args(projection_args: Mapping[str, Any],
                          read_text: bool = False) -> Dict[str, Any]:
    """``projection_args`` checked against :data:`HEADS`: its ``project_type`` is a head of
    the table, and each key is one of every block or one a head takes, of that key's kind and
    among its values. Returns a copy, with text read as numbers (``read_text``); a
    :class:`ConfigError` names the first key that is wrong.

    ``read_text``: a float key takes text that reads as a finite number, as every float key
    of a config file or override does (YAML 1.1 reads ``3e1`` as text); the config sets it,
    a head built from a mapping of Python values does not.
    """
    if "project_type" not in projection_args:
        raise ConfigError(f"config key 'projection_args.project_type' is required (one of "
                          f"{', '.join(HEADS)})")
    project_type = convert_value(str, projection_args["project_type"],
                                 "projection_args.project_type")
    if project_type not in HEADS:
        raise ConfigError(f"projection_args.project_type: unknown head {project_type!r}; "
                          f"choose one of {', '.join(HEADS)}")
    head = HEADS[project_type]
    specs = {**_key_specs(), **head.keys}
    unknown = [key for key in projection_args if key not in _EVERY_BLOCK_KEYS | set(specs)]
    if unknown:
        raise _unknown_key(unknown[0], project_type, head)
    return {key: _checked_value(key, value, specs[key], read_text) if key in specs else value
            for key, value in projection_args.items()}


def _unknown_key(key: str, project_type: str, head: HeadChoice) -> ConfigError:
    """The error for a ``projection_args`` key no head takes: the keys ``head`` takes, and the
    closest of them (case aside: ``k`` for ``K``)."""
    hint = did_you_mean(key, head.keys, ignore_case=True)
    takes = ", ".join(head.keys) or "no keys of its own"
    return ConfigError(f"unknown config key 'projection_args.{key}'{hint} (project_type "
                       f"{project_type} takes {takes})")


def keys_of_other_heads(projection_args: Mapping[str, Any]) -> Dict[str, List[str]]:
    """The keys of ``projection_args`` that its head ignores but other heads take, each with
    the names of those heads. Keys of every block (WeSpeaker writes ``scale`` for a head
    without one) are not among them."""
    head = HEADS[projection_args["project_type"]]
    return {key: [name for name, other in HEADS.items() if key in other.keys]
            for key in projection_args
            if key not in head.keys and key not in _EVERY_BLOCK_KEYS}
