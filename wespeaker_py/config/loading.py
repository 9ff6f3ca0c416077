"""Reading configs (YAML, dotted command-line overrides), checking them, and saving them.

Overrides come from the command line as ``--dotted.key value`` (or
``--dotted.key=value``). The value is read as YAML (``0.2`` is a float,
``True`` a bool, ``[0,1]`` a list, ``null`` None) except where the schema
expects a string, where the text is kept as typed (``--exp_dir 2024`` stays
the string ``"2024"``). A float key also takes ``1e-3``, which YAML 1.1 reads
as a string, in a file as on the command line.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import yaml

from wespeaker_py.config.fields import (ConfigError, as_float, block_to_dict, hint_at, is_bool,
                                        is_text, parse_block, unknown_key_error)
from wespeaker_py.config.schema import DatasetArgs, ModelConfig, TrainConfig
from wespeaker_py.utils.atomic_files import atomic_open
from wespeaker_py.utils.booleans import BOOL_WORDS_TEXT, parse_bool
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key repeated in one mapping with another value
    (WeSpeaker's own redimnet.yaml repeats one with the same value: a warning), and reads
    ``!!python/tuple`` (what WeSpeaker's trainer saves for ``--gpus 0,1``) as a list."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep=False):
    first: Dict[Any, Tuple[Any, yaml.Mark]] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        value = loader.construct_object(value_node, deep=True)
        mark = key_node.start_mark
        if key not in first:
            first[key] = (value, mark)
        elif first[key][0] != value:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found duplicate key {key!r} with another value than on line "
                f"{first[key][1].line + 1}", mark)
        else:
            logger.warning("%s:%d: key %r repeats line %d with the same value; one is used",
                           mark.name, mark.line + 1, key, first[key][1].line + 1)
    return loader.construct_mapping(node, deep=deep)


def _construct_tuple_as_list(loader: _UniqueKeyLoader, node: yaml.SequenceNode) -> List[Any]:
    return loader.construct_sequence(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _construct_unique_mapping)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:python/tuple", _construct_tuple_as_list)


def read_yaml(path: str) -> Dict[str, Any]:
    """Read a YAML mapping; syntax errors and repeated keys name the file and line."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = yaml.load(handle, Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


def parse_override_args(argv: Sequence[str]) -> List[Tuple[str, str]]:
    """Split ``['--a.b', '1', '--c=x']`` into ``[('a.b', '1'), ('c', 'x')]``."""
    pairs: List[Tuple[str, str]] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"expected an override '--dotted.key value', got {token!r}")
        body = token[2:]
        if "=" in body:
            key, raw = body.split("=", 1)
            index += 1
        else:
            if index + 1 >= len(argv) or argv[index + 1].startswith("--"):
                raise ConfigError(f"override --{body} has no value")
            key, raw = body, argv[index + 1]
            index += 2
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"malformed override key {key!r}")
        pairs.append((key, raw))
    return pairs


def _kind_of(value: Any) -> str:
    return "bool" if isinstance(value, bool) else type(value).__name__


def _parse_text(raw: str, text_only: bool) -> Any:
    if text_only and raw not in ("null", "~"):
        return raw
    try:
        return yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        return raw


def _override_bool(dotted_key: str, raw: str) -> bool:
    try:
        return parse_bool(raw)
    except ValueError:
        raise ConfigError(f"config key '{dotted_key}' must be bool ({BOOL_WORDS_TEXT}), "
                          f"got {raw!r}") from None


def apply_override(config: Dict[str, Any], dotted_key: str, raw_value: str,
                   schema: type = TrainConfig) -> None:
    """Set ``config[dotted_key]`` (a plain mapping) from command-line text.

    The text is typed by YAML and the schema; an unknown key is an error. A bool key
    (also one inside an open mapping that already holds a bool) takes the words of
    :func:`~wespeaker_py.utils.booleans.parse_bool`, as a bin's boolean flag does.
    Missing intermediate sections are created. Inside an open mapping
    (``model_args``) a key that already holds a value keeps its type (a float
    takes an int, or a string that reads as a number, such as ``1e-4``). The
    value itself is checked when the config is parsed.
    """
    parts = dotted_key.split(".")
    hint = hint_at(schema, parts)
    value = _parse_text(raw_value, is_text(hint))
    if is_bool(hint) and value is not None:
        value = _override_bool(dotted_key, raw_value)
    node = config
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{dotted_key}': "
                              f"'{'.'.join(parts[:depth + 1])}' is not a mapping")
        node = child
    leaf = parts[-1]
    inside_open_mapping = hint is None
    if inside_open_mapping and node.get(leaf) is not None and value is not None:
        old_kind, new_kind = _kind_of(node[leaf]), _kind_of(value)
        if old_kind == "bool":
            value = _override_bool(dotted_key, raw_value)
        elif old_kind == "float" and as_float(value) is not None:
            value = as_float(value)  # an int, or "1e-4" (a string to YAML 1.1)
        elif old_kind != new_kind:
            raise ConfigError(f"config key '{dotted_key}' holds {old_kind} {node[leaf]!r}; "
                              f"the override gives {new_kind} {value!r}")
    node[leaf] = value


def load_config(path: str, overrides: Sequence[Tuple[str, str]] = ()) -> TrainConfig:
    """Read a training config, apply ``(dotted_key, text)`` overrides, check, fill defaults."""
    data = read_yaml(path)
    for dotted_key, raw_value in overrides:
        apply_override(data, dotted_key, raw_value)
    return TrainConfig.from_dict(data)


def load_model_config(path: str) -> ModelConfig:
    """Read an experiment's ``config.yaml`` for inference (:func:`model_config_from`)."""
    return model_config_from(read_yaml(path), path)


def model_config_from(data: Mapping[str, Any], source: str) -> ModelConfig:
    """The :class:`ModelConfig` of a config mapping read from the file ``source``:
    ``model``, ``model_args``, ``dataset_args`` checked; the training keys (checked when
    it trained) are ignored. Every error starts with ``source``.

    A top-level key that is not a training key (every key WeSpeaker's trainer or ours
    writes is one) is a :class:`ConfigError` naming it, the file and the closest known
    key: a misspelt ``dataset_args`` would otherwise leave its settings unused.
    """
    known = {field.name for field in dataclasses.fields(TrainConfig)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{source}: {unknown_key_error(key, '', known)}")
    model_keys = {name: data[name] for name in ("model", "model_args", "dataset_args")
                  if name in data}
    try:
        return parse_block(ModelConfig, model_keys, "")
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def as_dataset_args(dataset_args: Union[DatasetArgs, Mapping[str, Any], None]) -> DatasetArgs:
    """A checked :class:`DatasetArgs` from the block or from a ``dataset_args`` mapping."""
    if isinstance(dataset_args, DatasetArgs):
        return dataset_args
    return parse_block(DatasetArgs, {} if dataset_args is None else dataset_args,
                       "dataset_args")


def config_to_dict(config: Any) -> Dict[str, Any]:
    """A config block as plain data (what :func:`save_config` writes)."""
    return block_to_dict(config)


def save_config(config: Any, path: str) -> None:
    """Write a config (every key, defaults included) as YAML, atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config_to_dict(config), handle, sort_keys=False,
                       default_flow_style=False)
