"""Experiment configs: YAML loading, dotted command-line overrides, validation, saving.

A config is a nested dict with the keys of WeSpeaker's VoxCeleb v2 configs.
:data:`TRAIN_SCHEMA` lists every key the trainer understands and the type of
its value; :func:`validate_config` rejects anything else with an error naming
the dotted key (``dataset_args.filter_args.min_num_frames``), so a typo never
silently falls back to a default.

Overrides come from the command line as ``--dotted.key value`` (or
``--dotted.key=value``). The value is read as YAML (``0.2`` is a float,
``True`` a bool, ``[0,1]`` a list, ``null`` None) except where the schema
expects a string, where the text is kept as typed (``--exp_dir 2024`` stays
the string ``"2024"``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from wespeaker_py.utils.file_utils import atomic_open


class ConfigError(ValueError):
    """A config file or override is malformed; the message names the key (dotted)."""


@dataclass(frozen=True)
class Field:
    """Schema entry for one config key.

    ``kinds`` lists accepted value kinds (``int``, ``float``, ``bool``, ``str``,
    ``list``, ``dict``); ``float`` also accepts integers. A ``dict`` field with
    ``children`` accepts exactly those sub-keys; without ``children`` it is an
    open mapping whose contents the consumer checks (``model_args`` goes to the
    model's constructor). ``choices`` restricts the allowed values.
    """

    kinds: Tuple[str, ...]
    nullable: bool = False
    choices: Optional[Tuple[Any, ...]] = None
    children: Optional[Mapping[str, "Field"]] = None
    required: bool = False

    @property
    def is_open_dict(self) -> bool:
        return "dict" in self.kinds and self.children is None


def _f(*kinds: str, **kwargs) -> Field:
    return Field(kinds=tuple(kinds), **kwargs)


def _section(children: Mapping[str, Field], **kwargs) -> Field:
    return Field(kinds=("dict",), children=dict(children), **kwargs)


def _open(**kwargs) -> Field:
    return Field(kinds=("dict",), **kwargs)


# The fbank options the on-device front-end (wespeaker_py.frontend.FbankFeatures) takes.
_FBANK_ARGS = _section({
    "num_mel_bins": _f("int"),
    "frame_shift": _f("float"),
    "frame_length": _f("float"),
    "dither": _f("float"),
})

# The SSL front-end (wespeaker_py.frontend.ssl.SSLFrontend, ``frontend: s3prl``): WeSpeaker's
# keys, plus ours: gradient_checkpointing, lr_scale (learning-rate factor for the WavLM weights
# in joint training) and frozen_bf16 (bf16 autocast for a frozen WavLM on CUDA).
_S3PRL_ARGS = _section({
    "upstream_args": _section({
        "name": _f("str"),
        "path_or_url": _f("str", nullable=True),
        "normalize": _f("bool"),
        "extra_conf": _open(nullable=True),
    }),
    "download_dir": _f("str", nullable=True),
    "multilayer_feature": _f("bool"),
    "layer": _f("int"),
    "frozen": _f("bool"),
    "frame_shift": _f("float"),
    "frame_length": _f("float"),
    "gradient_checkpointing": _f("bool"),
    "lr_scale": _f("float"),
    "frozen_bf16": _f("bool"),
})

DATASET_ARGS_SCHEMA: Dict[str, Field] = {
    "sample_num_per_epoch": _f("int"),
    "shuffle": _f("bool"),
    "shuffle_args": _section({"shuffle_size": _f("int")}),
    "filter": _f("bool"),
    "filter_args": _section({"min_num_frames": _f("int"), "max_num_frames": _f("int")}),
    "resample_rate": _f("int"),
    "speed_perturb": _f("bool"),
    "speed_perturb_mode": _f("str", choices=("random", "expanded")),
    "num_frms": _f("int"),
    "aug_prob": _f("float"),
    "augment_on": _f("str", choices=("cpu", "device")),
    "frontend": _f("str", choices=("fbank", "s3prl")),
    "fbank_args": _FBANK_ARGS,
    "s3prl_args": _S3PRL_ARGS,
    # blocks of WeSpeaker front-ends this toolkit does not implement: accepted, unused
    "w2vbert_args": _open(),
    "whisper_encoder_args": _open(),
    "tfmel_args": _open(),
    "cmvn": _f("bool"),
    "cmvn_args": _section({"norm_mean": _f("bool"), "norm_var": _f("bool")}),
    "spec_aug": _f("bool"),
    "spec_aug_args": _section({
        "num_t_mask": _f("int"),
        "num_f_mask": _f("int"),
        "max_t": _f("int"),
        "max_f": _f("int"),
        "prob": _f("float"),
    }),
}

TRAIN_SCHEMA: Dict[str, Field] = {
    # experiment and run control
    "exp_dir": _f("str", required=True),
    "gpus": _f("str", "list", "int", nullable=True),
    "num_avg": _f("int"),
    "enable_amp": _f("bool"),
    "amp_dtype": _f("str", choices=("bfloat16", "float16")),
    "compile": _f("bool"),
    "channels_last": _f("bool"),
    "grad_clip": _f("float", nullable=True),
    "nonfinite_loss": _f("str", choices=("raise", "skip")),
    "seed": _f("int"),
    "num_epochs": _f("int", required=True),
    "save_epoch_interval": _f("int"),
    "log_batch_interval": _f("int"),
    # data (the paths usually come from the command line)
    "data_type": _f("str", choices=("raw", "shard")),
    "train_data": _f("str"),
    "train_label": _f("str"),
    "reverb_data": _f("str", nullable=True),
    "noise_data": _f("str", nullable=True),
    "checkpoint": _f("str", nullable=True),
    "dataloader_args": _section({
        "batch_size": _f("int"),
        "num_workers": _f("int"),
        "pin_memory": _f("bool"),
        "prefetch_factor": _f("int", nullable=True),
        "drop_last": _f("bool"),
    }, required=True),
    "dataset_args": _section(DATASET_ARGS_SCHEMA, required=True),
    # model and head
    "model": _f("str", required=True),
    "model_init": _f("str", nullable=True),
    "model_args": _open(required=True),
    "projection_args": _open(required=True),
    "margin_scheduler": _f("str", choices=("MarginScheduler",)),
    "margin_update": _section({
        "initial_margin": _f("float"),
        "final_margin": _f("float"),
        "increase_start_epoch": _f("int"),
        "fix_start_epoch": _f("int"),
        "update_margin": _f("bool"),
        "increase_type": _f("str", choices=("exp", "linear")),
    }),
    "loss": _f("str", choices=("CrossEntropyLoss",)),
    "loss_args": _open(),
    # optimisation
    "optimizer": _f("str", choices=("SGD", "Adam", "AdamW"), required=True),
    "optimizer_args": _open(),
    "scheduler": _f("str", choices=("ExponentialDecrease",), required=True),
    "scheduler_args": _section({
        "initial_lr": _f("float"),
        "final_lr": _f("float"),
        "warm_up_epoch": _f("float"),
        "warm_from_zero": _f("bool"),
    }, required=True),
    "do_lm": _f("bool"),
}

# What a key means when a config leaves it out (WeSpeaker's behaviour for its own keys).
TRAIN_DEFAULTS: Dict[str, Any] = {
    "gpus": None,
    "num_avg": 10,
    "enable_amp": False,
    "amp_dtype": "bfloat16",
    "compile": False,
    "channels_last": False,
    "grad_clip": None,
    "nonfinite_loss": "raise",
    "seed": 42,
    "save_epoch_interval": 5,
    "log_batch_interval": 100,
    "data_type": "shard",
    "reverb_data": None,
    "noise_data": None,
    "checkpoint": None,
    "model_init": None,
    "margin_scheduler": "MarginScheduler",
    "loss": "CrossEntropyLoss",
    "loss_args": {},
    "optimizer_args": {},
    "do_lm": False,
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key repeated in one mapping."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found duplicate key {key!r}", key_node.start_mark)
        seen[key] = True
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _construct_unique_mapping)


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


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return type(value).__name__


def _accepts(field: Field, value: Any) -> bool:
    if value is None:
        return field.nullable
    kind = _kind_of(value)
    return kind in field.kinds or (kind == "int" and "float" in field.kinds)


def _describe(field: Field) -> str:
    text = " or ".join(field.kinds)
    return text + " or null" if field.nullable else text


def _check_value(key: str, field: Field, value: Any) -> None:
    if not _accepts(field, value):
        raise ConfigError(f"config key '{key}' must be {_describe(field)}, "
                          f"got {_kind_of(value)} {value!r}")
    if field.choices is not None and value is not None and value not in field.choices:
        raise ConfigError(f"config key '{key}' must be one of {list(field.choices)}, "
                          f"got {value!r}")
    if field.children is not None and isinstance(value, dict):
        _check_mapping(value, field.children, prefix=key + ".")


def _check_mapping(mapping: Mapping[str, Any], schema: Mapping[str, Field], prefix: str) -> None:
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            where = f"under '{prefix[:-1]}'" if prefix else "at the top level"
            raise ConfigError(f"unknown config key '{dotted}'; known keys {where}: "
                              f"{', '.join(sorted(schema))}")
        _check_value(dotted, schema[key], value)


def validate_config(config: Mapping[str, Any],
                    schema: Mapping[str, Field] = None) -> None:
    """Raise :class:`ConfigError` for an unknown key, a wrong type or a missing required key."""
    schema = TRAIN_SCHEMA if schema is None else schema
    _check_mapping(config, schema, prefix="")
    for key, field in schema.items():
        if field.required and key not in config:
            raise ConfigError(f"config key '{key}' is required but missing")


def require_keys(config: Mapping[str, Any], keys: Sequence[str]) -> None:
    """Raise :class:`ConfigError` unless every dotted key in ``keys`` is set (not None)."""
    for dotted in keys:
        node: Any = config
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            raise ConfigError(f"config key '{dotted}' must be set "
                              f"(in the YAML or as --{dotted} on the command line)")


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


def _field_at(schema: Mapping[str, Field], parts: Sequence[str]) -> Optional[Field]:
    """The schema field for a dotted path; None inside an open dict; error when unknown."""
    level: Optional[Mapping[str, Field]] = schema
    field: Optional[Field] = None
    for depth, part in enumerate(parts):
        if level is None:
            return None  # below an open dict: the consumer validates
        if part not in level:
            parent = ".".join(parts[:depth])
            where = f"under '{parent}'" if parent else "at the top level"
            raise ConfigError(f"unknown config key '{'.'.join(parts)}'; known keys {where}: "
                              f"{', '.join(sorted(level))}")
        field = level[part]
        level = field.children
        if field.is_open_dict and depth + 1 < len(parts):
            return None
    return field


def _parse_value(raw: str, field: Optional[Field]) -> Any:
    if field is not None and field.kinds == ("str",) and raw not in ("null", "~"):
        return raw
    try:
        return yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        return raw


def apply_override(config: Dict[str, Any], dotted_key: str, raw_value: str,
                   schema: Mapping[str, Field] = None) -> None:
    """Set ``config[dotted_key]`` from command-line text, typed by YAML and the schema.

    Missing intermediate sections are created. Inside an open mapping
    (``model_args``) a key that already holds a value keeps its type
    (an int may become a float).
    """
    schema = TRAIN_SCHEMA if schema is None else schema
    parts = dotted_key.split(".")
    field = _field_at(schema, parts)
    value = _parse_value(raw_value, field)
    node = config
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{dotted_key}': "
                              f"'{'.'.join(parts[:depth + 1])}' is not a mapping")
        node = child
    leaf = parts[-1]
    if field is None and node.get(leaf) is not None and value is not None:
        old_kind, new_kind = _kind_of(node[leaf]), _kind_of(value)
        if old_kind != new_kind and not (old_kind == "float" and new_kind == "int"):
            raise ConfigError(f"config key '{dotted_key}' holds {old_kind} {node[leaf]!r}; "
                              f"the override gives {new_kind} {value!r}")
    if field is not None:
        _check_value(dotted_key, field, value)
    node[leaf] = value


def load_config(path: str, overrides: Sequence[Tuple[str, str]] = (),
                schema: Mapping[str, Field] = None,
                defaults: Mapping[str, Any] = None) -> Dict[str, Any]:
    """Read ``path``, apply ``(dotted_key, text)`` overrides, fill defaults, validate.

    ``defaults`` (``TRAIN_DEFAULTS`` by default) fill top-level keys the file
    leaves out, so the saved config states every setting the run used.
    """
    schema = TRAIN_SCHEMA if schema is None else schema
    defaults = TRAIN_DEFAULTS if defaults is None else defaults
    config = read_yaml(path)
    _check_mapping(config, schema, prefix="")
    for dotted_key, raw_value in overrides:
        apply_override(config, dotted_key, raw_value, schema)
    for key, value in defaults.items():
        config.setdefault(key, copy.deepcopy(value))
    validate_config(config, schema)
    return config


def save_config(config: Mapping[str, Any], path: str) -> None:
    """Write ``config`` as YAML (key order kept), atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(_plain(config), handle, sort_keys=False, default_flow_style=False)


def _plain(value: Any) -> Any:
    """Turn tuples into lists so that safe_dump writes plain YAML."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
