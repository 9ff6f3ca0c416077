"""The training config of a fine-tuning phase, written from the source model's config.

Kept from the source: ``model``, ``model_args``, the head type and scale
(``projection_args``), and the feature settings of ``dataset_args``. Changed:
the sample rate (the data's, or ``--sample_rate``; fbank keeps its number of
mel bins, which then span 0 to half the new rate, and its frame length and
shift in milliseconds, as WeSpeaker's 8 kHz configs do; TFMel keeps its window
lengths in milliseconds and its top band's share of the spectrum), no speed
perturbation and no noise/reverb (fine-tuning data comes without augmentation
lists), a fixed margin, Adam at the given learning rate decaying tenfold over each
phase (a later phase starts at the peak again), and a new head for the data's
speakers (``model_init`` holds the body only). A front-end that takes one rate
only (WavLM, W2V-BERT, Whisper) keeps it: other data are resampled to it
(:func:`chosen_rate`). What is kept is copied as the source's file gives it (its keys
only, no defaults added); what is read from it comes from the schema's parse
(:class:`SourceConfig`).
"""
from __future__ import annotations

import contextlib
import copy
import os
import typing
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Literal, Mapping, Optional

from wespeaker_py.config import ConfigError, model_config_from, read_yaml
from wespeaker_py.config.fields import parse_block, setting
from wespeaker_py.config.schema import (MIN_BATCH_SIZE, PRETRAINED_SAMPLE_RATES,
                                        TFMEL_SAMPLE_FIELDS, DataloaderArgs, ModelConfig,
                                        TfmelArgs)
from wespeaker_py.errors import WespeakerError
# a fine-tuned model folder's work folder and request: read from here too, where they were
from wespeaker_py.io.layout import REQUEST_NAME, WORK_DIR  # noqa: F401
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.values import is_whole_number

logger = get_logger(__name__)

# the learning rate decays from --lr to --lr / LR_DECAY over each phase
LR_DECAY = 10.0
Freeze = Literal["auto", "none", "front", "body"]
FREEZE_CHOICES = typing.get_args(Freeze)
# what a planned phase freezes: auto is resolved when the phases are planned
PLANNED_FREEZES = tuple(choice for choice in FREEZE_CHOICES if choice != "auto")
# the keys of each phase that phases() plans and the trainer reads
PHASE_KEYS = ("name", "epochs", "freeze")
# --freeze auto freezes the body for the first epochs below this many training speakers
# (docs/finetune.md: better with 4 speakers, worse with 74)
FEW_SPEAKERS = 20
# dataloader_args.batch_size when the source config has none (the schema requires one)
SOURCE_BATCH_SIZE = 32
# the head for the data's speakers when the source config has no projection_args; its
# written out in full: WeSpeaker's get_projection reads scale and easy_margin with no
# default, so a fine-tuned config.yaml must name them to train there too
NEW_HEAD = {"project_type": "arc_margin", "scale": 32.0, "easy_margin": False}
# options that change how the data is loaded, not the weights: a run resumes with others
# from its last epoch checkpoint (the trainer continues an interrupted.pt mid-epoch only
# with the same num_workers, which decide how each epoch's data is split: RUN_ONLY_KEYS)
LOADER_ONLY_OPTIONS = ("num_workers",)


@dataclass(frozen=True)
class FinetuneOptions:
    """How to fine-tune; the defaults were chosen on the 8 kHz demo (docs/finetune.md).

    Each field's type and range are declared as a config block's are (:func:`setting`) and
    checked before any work (:func:`~wespeaker_py.finetune.request.checked_options`)."""

    epochs: int = setting(6, minimum=1)
    lr: float = setting(1e-3, above=0)  # the applied peak learning rate (Adam)
    margin: float = setting(0.2, minimum=0)
    freeze: Freeze = "auto"  # auto, none, front (the first layer) or body (all but the head)
    # the first epochs train with ``freeze``; the rest train everything
    freeze_epochs: int = setting(1, minimum=0)
    sample_rate: Optional[int] = setting(None, minimum=4000)  # default: the data's
    # default: a fifth of the speakers with 2+ utterances; at least
    # finetune.data.MIN_DEV_SPEAKERS (checked_options: that module imports this one)
    dev_speakers: Optional[int] = None
    # default: the source config's, at most the utterances
    batch_size: Optional[int] = setting(
        None, minimum=MIN_BATCH_SIZE, reason="BatchNorm after pooling needs two utterances "
        "per batch; leave it out for the source config's")
    # data loader workers; default: the source config's
    num_workers: Optional[int] = setting(None, minimum=0)
    num_avg: int = setting(2, minimum=1)  # last checkpoints averaged
    seed: int = 42

    def as_dict(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


# whether messages name the options as ``wespeaker-py finetune``'s flags (set by
# :func:`options_named_as_flags`) or, by default, as the keyword arguments of the Python API
_NAMED_AS_FLAGS: ContextVar[bool] = ContextVar("finetune_options_named_as_flags", default=False)
# the keyword arguments of finetune() whose flags have other names
FLAG_NAMES = {"source": "model", "data_dir": "data", "out_dir": "out"}
# every option a message may name as a ``{name}`` field: FinetuneOptions' fields and the
# keyword arguments of finetune() that the command has flags for
OPTION_NAMES = (*FinetuneOptions.__dataclass_fields__, *FLAG_NAMES, "mix_data", "device",
                "overwrite", "max_fail_fraction")


@contextlib.contextmanager
def options_named_as_flags() -> Iterator[None]:
    """Within it, fine-tuning's messages name the options as the command's flags
    (``--dev_speakers``, ``--out``); outside, as the API's keyword arguments
    (``dev_speakers``, ``out_dir``). ``wespeaker-py finetune`` runs inside it."""
    token = _NAMED_AS_FLAGS.set(True)
    try:
        yield
    finally:
        _NAMED_AS_FLAGS.reset(token)


def named_as_flags() -> bool:
    """Whether messages now name the options as flags (:func:`options_named_as_flags`)."""
    return _NAMED_AS_FLAGS.get()


def _flag(name: str) -> str:
    return "--" + FLAG_NAMES.get(name, name)


def option_name(name: str, flags: Optional[bool] = None) -> str:
    """The option ``name`` (a keyword argument) as the caller spells it: its flag for the
    command (``--out`` for ``out_dir``), ``name`` itself for Python; ``flags`` overrides
    :func:`named_as_flags`."""
    return _flag(name) if (named_as_flags() if flags is None else flags) else name


def option_setting(name: str, value: Any, flags: Optional[bool] = None) -> str:
    """The option ``name`` set to ``value`` as the caller gives it: ``--epochs 0`` for the
    command (``--overwrite`` for a switch set True), ``epochs=0`` for Python (``flags``: as
    in :func:`option_name`)."""
    if named_as_flags() if flags is None else flags:
        return _flag(name) if value is True else f"{_flag(name)} {value}"
    return f"{name}={value!r}"


def with_options_named(text: str, flags: Optional[bool] = None) -> str:
    """``text`` with its ``{name}`` fields (:data:`OPTION_NAMES`) filled by
    :func:`option_name`: ``lower {dev_speakers}`` reads ``lower dev_speakers`` from Python,
    ``lower --dev_speakers`` from the command."""
    return text.format(**{name: option_name(name, flags) for name in OPTION_NAMES})


class OptionValueError(WespeakerError):
    """An option of the wrong type or out of range (exit status 2). Its message names the
    options as the caller does (:func:`option_setting`): as the Python API takes them
    (``epochs=0: must be at least 1``), or within :func:`options_named_as_flags` as the
    command does (``--epochs 0: must be at least 1``); :meth:`as_flags` always the latter.

    ``problem`` may name options as ``{name}`` fields, filled in the same way."""

    def __init__(self, option: str, value: Any, problem: str) -> None:
        self.option, self.value, self.problem = option, value, problem
        super().__init__(self._worded(named_as_flags()))

    def as_flags(self) -> str:
        """The message as ``wespeaker-py finetune`` words it: options named by their flags."""
        return self._worded(True)

    def _worded(self, flags: bool) -> str:
        return (f"{option_setting(self.option, self.value, flags)}: "
                f"{with_options_named(self.problem, flags)}")


@dataclass(frozen=True)
class SourceConfig:
    """The source model's config, read once (:func:`read_source_config`).

    ``written``: the mapping as the file gives it, which a phase config copies its kept
    blocks from; ``model`` (``model``, ``model_args``, ``dataset_args``) and ``loader``
    (``dataloader_args``, with ``batch_size`` :data:`SOURCE_BATCH_SIZE` when it has none):
    the same parsed by the schema, defaults filled, which every setting is read from.
    """

    written: Dict[str, Any]
    model: ModelConfig
    loader: DataloaderArgs


def read_source_config(path: str) -> SourceConfig:
    """The source config at ``path``, read once; a :class:`ConfigError` naming the file and
    key for a missing model key or a value the schema refuses."""
    written = read_yaml(path)
    for key in ("model", "model_args"):
        if key not in written:
            raise ConfigError(f"{path}: config key '{key}' is missing")
    loader = written.get("dataloader_args") or {}
    if isinstance(loader, Mapping):
        loader = {"batch_size": SOURCE_BATCH_SIZE, **loader}
    try:
        parsed_loader = parse_block(DataloaderArgs, loader, "dataloader_args")
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return SourceConfig(written=written, model=model_config_from(written, path),
                        loader=parsed_loader)


def with_loader_options_of(recorded: Optional[Dict[str, Any]],
                           request: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """``recorded`` (an earlier run's request, None when unreadable) with ``request``'s
    values of :data:`LOADER_ONLY_OPTIONS`, for comparing the two: a run killed with its
    loader workers resumes with fewer (an older request may hold them, or lack them)."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("options"), dict):
        return recorded
    options = {key: value for key, value in recorded["options"].items()
               if key not in LOADER_ONLY_OPTIONS}
    options.update({key: request["options"][key] for key in LOADER_ONLY_OPTIONS
                    if key in request.get("options", {})})
    return dict(recorded, options=options)


def resolved_freeze(freeze: str, num_train_speakers: int) -> str:
    """``freeze`` itself, or for ``auto``: ``body`` below :data:`FEW_SPEAKERS` training
    speakers, else ``none``."""
    if freeze != "auto":
        return freeze
    return "body" if num_train_speakers < FEW_SPEAKERS else "none"


def phases(options: FinetuneOptions, num_train_speakers: int) -> List[Dict[str, Any]]:
    """``[{"name", "epochs", "freeze"}]``: a frozen first phase, then everything trains.

    ``freeze_epochs`` below ``epochs`` (the run's check refuses more); with one epoch in
    all the frozen phase is the whole run, and a warning says so."""
    freeze = resolved_freeze(options.freeze, num_train_speakers)
    if freeze == "none" or options.freeze_epochs == 0:
        return [{"name": "train", "epochs": options.epochs, "freeze": "none"}]
    if options.freeze_epochs >= options.epochs:
        logger.warning("%s with %s%s: the run's only epoch is the frozen one, so %s; %s",
                       option_setting("epochs", options.epochs),
                       option_setting("freeze", options.freeze),
                       f" ({freeze} for {num_train_speakers} training speakers)"
                       if options.freeze == "auto" else "",
                       "only the new head trains" if freeze == "body"
                       else "the first layer never trains",
                       with_options_named("give {epochs} 2 or more, or {freeze_epochs} 0, to "
                                          "train everything"))
        return [{"name": "train", "epochs": options.epochs, "freeze": freeze}]
    return [{"name": "frozen", "epochs": options.freeze_epochs, "freeze": freeze},
            {"name": "train", "epochs": options.epochs - options.freeze_epochs,
             "freeze": "none"}]


def check_phases(recorded: Any) -> List[Dict[str, Any]]:
    """``recorded`` (a plan read back from a file) as phases that :func:`phases` could have
    planned: a non-empty list of objects with :data:`PHASE_KEYS`, each ``name`` a folder name
    of its own, ``epochs`` a whole number >= 1 and ``freeze`` one of
    :data:`PLANNED_FREEZES`. Keys beyond those are let through (a later version's plan may
    carry more). Raises ValueError saying which phase and key is wrong."""
    if not isinstance(recorded, list) or not recorded:
        raise ValueError(f"not a non-empty list of phases (objects with "
                         f"{', '.join(PHASE_KEYS)})")
    names = set()
    for number, phase in enumerate(recorded, 1):
        if not isinstance(phase, dict):
            raise ValueError(f"phase {number} is a {type(phase).__name__}, not an object")
        missing = [key for key in PHASE_KEYS if key not in phase]
        if missing:
            raise ValueError(f"phase {number} has no {', '.join(missing)}")
        name, epochs, freeze = (phase[key] for key in PHASE_KEYS)
        if not isinstance(name, str) or name in ("", ".", "..") \
                or os.path.basename(name) != name or name in names:
            problem = f"name={name!r} is not a folder name of its own"
        elif not is_whole_number(epochs) or epochs < 1:
            problem = f"epochs={epochs!r} is not a whole number >= 1"
        elif freeze not in PLANNED_FREEZES:
            problem = f"freeze={freeze!r} is not one of {', '.join(PLANNED_FREEZES)}"
        else:
            names.add(name)
            continue
        raise ValueError(f"phase {number}: {problem}")
    return recorded


def check_device(device: Optional[str]) -> None:
    """Refuse a ``--device`` this machine does not have, before anything is written
    (:class:`~wespeaker_py.utils.device.DeviceUnavailableError`): the trainer would fall
    back to the CPU, and only the evaluation at the end would fail."""
    from wespeaker_py.utils.device import DeviceUnavailableError, parse_device, resolve_device
    parsed = None if device is None else parse_device(device)
    if parsed is None:   # none given, or "auto"
        return
    import torch  # not at --help time

    kind = parsed.type
    given = option_setting("device", device)
    if kind not in ("cpu", "cuda"):
        raise DeviceUnavailableError(f"{given}: fine-tuning runs on cpu, cuda or cuda:N only")
    if kind == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"{given}: CUDA is not available here; give "
                                     f"{option_setting('device', 'cpu')}, or leave "
                                     f"{option_name('device')} out (a GPU when there is one, "
                                     f"else the CPU)")
    resolve_device(device)  # a cuda:N beyond this machine's GPUs


def gpus_for(device: Optional[str]) -> Optional[str]:
    """The trainer's ``gpus`` for a ``--device`` (None or ``auto``: the first GPU when there
    is one)."""
    from wespeaker_py.utils.device import parse_device
    if device is None or parse_device(device) is None:
        return None
    if device == "cpu":
        return "[]"
    if device == "cuda":
        return "[0]"
    return f"[{int(device.split(':', 1)[1])}]"


def chosen_rate(frontend: str, requested: Optional[int]) -> Optional[int]:
    """The rate to train at that the data does not decide: ``requested`` (``--sample_rate``),
    else the rate the weights of the source's pretrained ``frontend`` learnt from (see
    :data:`~wespeaker_py.config.schema.PRETRAINED_SAMPLE_RATES`), else None (the data's rate).

    A ``requested`` rate that such a front-end does not take is a :class:`WespeakerError`,
    before anything is written.
    """
    fixed = PRETRAINED_SAMPLE_RATES.get(frontend)
    if fixed is not None and requested not in (None, fixed):
        raise WespeakerError(f"{option_setting('sample_rate', requested)}: the source "
                             f"model's front-end (dataset_args.frontend {frontend}) works at "
                             f"{fixed} Hz only; leave {option_name('sample_rate')} out (the "
                             f"data is resampled to {fixed} Hz)")
    return requested or fixed


def rate_dataset_args(source: SourceConfig, sample_rate: int) -> Dict[str, Any]:
    """The source's ``dataset_args`` as written, at ``sample_rate``: ``resample_rate``
    changes (fbank's mel bins, frame length and shift are rate-free), and so do TFMel's
    settings that depend on it."""
    parsed = source.model.dataset_args
    args = copy.deepcopy(dict(source.written.get("dataset_args") or {}))
    args["resample_rate"] = sample_rate
    if parsed.frontend == "tfmel" and parsed.resample_rate != sample_rate:
        args["tfmel_args"] = _tfmel_at_ratio(args.get("tfmel_args") or {}, parsed.tfmel_args,
                                             sample_rate / parsed.resample_rate)
    return args


def _tfmel_at_ratio(written: Mapping[str, Any], parsed: TfmelArgs,
                    ratio: float) -> Dict[str, Any]:
    """TFMel's arguments as ``written``, for a rate ``ratio`` times the old: its sizes in
    samples keep their length in ms, its top mel frequency ``f_max`` its share of the
    spectrum (so it stays below the new Nyquist frequency). Each is scaled from its
    ``parsed`` value, so keys left out scale from their defaults."""
    scaled = dict(written)
    for key in TFMEL_SAMPLE_FIELDS:
        scaled[key] = max(1, round(getattr(parsed, key) * ratio))
    scaled["f_max"] = parsed.f_max * ratio
    return scaled


def phase_config(source: SourceConfig, options: FinetuneOptions, *, exp_dir: str,
                 train_data: str, train_label: str, num_utterances: int, sample_rate: int,
                 model_init: str, epochs: int, frozen_params: List[str],
                 device: Optional[str], init_head: bool = False,
                 max_fail_fraction: Optional[float] = None) -> Dict[str, Any]:
    """The training config mapping of one phase (checked by ``TrainConfig.from_dict``);
    ``init_head``: ``model_init`` holds the head to go on with (a later phase);
    ``max_fail_fraction``: the config key of that name, left out when None (the trainer's
    default)."""
    batch_size = options.batch_size if options.batch_size is not None else \
        source.loader.batch_size
    batch_size = max(1, min(batch_size, num_utterances))
    workers = options.num_workers if options.num_workers is not None else \
        source.loader.num_workers
    dataset_args = rate_dataset_args(source, sample_rate)
    dataset_args.update(speed_perturb=False, aug_prob=0.0, sample_num_per_epoch=0)
    written = source.written
    projection = dict(written.get("projection_args") or NEW_HEAD)
    # the trainer applies lr * batch / 64 (WeSpeaker's rule): configure --lr as applied
    from wespeaker_py.train.plan import REFERENCE_BATCH_SIZE  # torch: not at --help time
    scale = REFERENCE_BATCH_SIZE / batch_size
    config = {
        "exp_dir": exp_dir, "gpus": gpus_for(device), "num_avg": min(options.num_avg, epochs),
        "seed": options.seed, "num_epochs": epochs, "save_epoch_interval": 1,
        "log_batch_interval": 20, "data_type": "raw", "train_data": train_data,
        "train_label": train_label,
        "dataloader_args": {"batch_size": batch_size, "num_workers": workers,
                            "pin_memory": False, "drop_last": True},
        "dataset_args": dataset_args,
        "model": written["model"], "model_args": dict(written["model_args"]),
        "model_init": model_init, "model_init_head": init_head,
        "frozen_params": frozen_params,
        "projection_args": projection,
        "margin_update": {"initial_margin": options.margin, "final_margin": options.margin,
                          "increase_start_epoch": 0, "fix_start_epoch": 0,
                          "update_margin": True, "increase_type": "exp"},
        "loss": "CrossEntropyLoss", "loss_args": {},
        "optimizer": "Adam", "optimizer_args": {"weight_decay": 1.0e-4},
        "scheduler": "ExponentialDecrease",
        "scheduler_args": {"initial_lr": options.lr * scale,
                           "final_lr": options.lr * scale / LR_DECAY,
                           "warm_up_epoch": 0.0, "warm_from_zero": False},
    }
    if max_fail_fraction is not None:
        config["max_fail_fraction"] = max_fail_fraction
    return config
