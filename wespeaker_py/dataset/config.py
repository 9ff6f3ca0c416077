"""The ``dataset_args`` block of a WeSpeaker config, checked and resolved for the pipeline.

Defaults are WeSpeaker's. Keys that configure the device-side front-end
(``spec_aug``, ``cmvn``, the mel settings of ``fbank_args``, SSL front-end
blocks) are accepted and ignored here, except ``frame_shift``/``frame_length``
(or ``hop_length``/``win_length`` in samples) that turn frames into samples.
An unknown key or a wrong type is an error naming ``dataset_args.<key>``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

# Front-end argument blocks WeSpeaker recipes use; "<frontend>_args" is also accepted.
FRONTEND_ARG_BLOCKS = frozenset(["fbank_args", "s3prl_args", "w2vbert_args",
                                 "whisper_encoder_args", "tfmel_args"])
DEVICE_SIDE_KEYS = frozenset(["spec_aug", "spec_aug_args", "cmvn", "cmvn_args"])
SPEED_PERTURB_MODES = ("random", "expanded")
# Where speed perturbation and noise/reverb arithmetic run; "cpu" when the key is absent,
# so that a Dataset used on its own yields finished chunks (see device_augment.py).
AUGMENT_PLACES = ("cpu", "device")


class DatasetConfigError(ValueError):
    """A ``dataset_args`` key is unknown or has a bad value; the message names the key."""


def _check(value: Any, kind: type, name: str, minimum: Optional[float] = None):
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise DatasetConfigError(f"dataset_args.{name}: expected {kind.__name__}, "
                                 f"got {value!r}")
    if minimum is not None and value < minimum:
        raise DatasetConfigError(f"dataset_args.{name}: must be >= {minimum}, got {value!r}")
    return value


def _sub_block(args: Mapping, name: str, allowed: Dict[str, tuple]) -> Dict[str, Any]:
    block = args.get(name) or {}
    if not isinstance(block, Mapping):
        raise DatasetConfigError(f"dataset_args.{name}: expected a mapping, got {block!r}")
    values = {}
    for key, value in block.items():
        if key not in allowed:
            raise DatasetConfigError(f"dataset_args.{name}.{key}: unknown key")
        kind, minimum = allowed[key]
        values[key] = _check(value, kind, f"{name}.{key}", minimum)
    return values


@dataclass(frozen=True)
class PipelineConfig:
    """Resolved input-pipeline settings."""

    sample_num_per_epoch: int = 0
    shuffle: bool = False
    shuffle_size: int = 2500
    filter: bool = True
    min_num_frames: int = 100
    max_num_frames: int = 800
    resample_rate: int = 16000
    speed_perturb: bool = True
    speed_perturb_mode: str = "random"
    num_frms: int = 200
    aug_prob: float = 0.6
    augment_on: str = "cpu"
    frontend: str = "fbank"
    frame_shift_ms: float = 10.0
    frame_length_ms: float = 25.0

    @classmethod
    def from_dataset_args(cls, args: Optional[Mapping]) -> "PipelineConfig":
        """Validate a ``dataset_args`` mapping and resolve defaults."""
        args = dict(args or {})
        frontend = args.get("frontend", "fbank")
        frontend = _check(frontend, str, "frontend")
        known = {"sample_num_per_epoch", "shuffle", "shuffle_args", "filter", "filter_args",
                 "resample_rate", "speed_perturb", "speed_perturb_mode", "num_frms",
                 "aug_prob", "augment_on", "frontend"} | FRONTEND_ARG_BLOCKS | DEVICE_SIDE_KEYS
        known.add(f"{frontend}_args")
        for key in args:
            if key not in known:
                raise DatasetConfigError(f"dataset_args.{key}: unknown key")
        values: Dict[str, Any] = {"frontend": frontend}
        scalars = {"sample_num_per_epoch": (int, 0), "shuffle": (bool, None),
                   "filter": (bool, None), "resample_rate": (int, 1),
                   "speed_perturb": (bool, None), "num_frms": (int, 1),
                   "aug_prob": (float, 0.0)}
        for key, (kind, minimum) in scalars.items():
            if key in args:
                values[key] = _check(args[key], kind, key, minimum)
        if values.get("aug_prob", 0.0) > 1.0:
            raise DatasetConfigError(f"dataset_args.aug_prob: must be <= 1, got {args['aug_prob']}")
        if "speed_perturb_mode" in args:
            mode = _check(args["speed_perturb_mode"], str, "speed_perturb_mode")
            if mode not in SPEED_PERTURB_MODES:
                raise DatasetConfigError(f"dataset_args.speed_perturb_mode: expected one of "
                                         f"{SPEED_PERTURB_MODES}, got {mode!r}")
            values["speed_perturb_mode"] = mode
        if "augment_on" in args:
            place = _check(args["augment_on"], str, "augment_on")
            if place not in AUGMENT_PLACES:
                raise DatasetConfigError(f"dataset_args.augment_on: expected one of "
                                         f"{AUGMENT_PLACES}, got {place!r}")
            values["augment_on"] = place
        shuffle_args = _sub_block(args, "shuffle_args", {"shuffle_size": (int, 1)})
        if "shuffle_size" in shuffle_args:
            values["shuffle_size"] = shuffle_args["shuffle_size"]
        filter_args = _sub_block(args, "filter_args", {"min_num_frames": (int, 0),
                                                       "max_num_frames": (int, 1)})
        values.update(filter_args)
        values.update(_frame_params(args.get(f"{frontend}_args") or {}, frontend,
                                    values.get("resample_rate", cls.resample_rate)))
        config = cls(**values)
        if config.max_num_frames < config.min_num_frames:
            raise DatasetConfigError("dataset_args.filter_args: max_num_frames "
                                     f"{config.max_num_frames} < min_num_frames "
                                     f"{config.min_num_frames}")
        return config


def _frame_params(block: Mapping, frontend: str, resample_rate: int) -> Dict[str, float]:
    """Frame shift/length in ms from the front-end block (WeSpeaker's ``_get_frame_params``)."""
    name = f"{frontend}_args"
    if not isinstance(block, Mapping):
        raise DatasetConfigError(f"dataset_args.{name}: expected a mapping, got {block!r}")
    params = {}
    if block.get("hop_length") is not None:
        hop = _check(block["hop_length"], int, f"{name}.hop_length", 1)
        params["frame_shift_ms"] = float(hop * 1000 // resample_rate)
    elif "frame_shift" in block:
        params["frame_shift_ms"] = _check(block["frame_shift"], float, f"{name}.frame_shift", 0)
    if block.get("win_length") is not None:
        win = _check(block["win_length"], int, f"{name}.win_length", 1)
        params["frame_length_ms"] = float(win * 1000 // resample_rate)
    elif "frame_length" in block:
        params["frame_length_ms"] = _check(block["frame_length"], float,
                                           f"{name}.frame_length", 0)
    return params
