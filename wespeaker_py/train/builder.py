"""Turning a training config into its parts: front-end, model with head, optimizer, schedules."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, List, Optional, Union

import torch
import torch.nn as nn

from wespeaker_py.frontend.factory import build_frontend as build_frontend_module
from wespeaker_py.models.assembly import build_speaker_model
from wespeaker_py.models.projections import get_projection
from wespeaker_py.train.lm_head import start_weights_num_classes
from wespeaker_py.train.schedulers import ExponentialDecrease, MarginScheduler
from wespeaker_py.config import ConfigError, DatasetArgs, TrainConfig

# WeSpeaker measures its learning rates against this per-step batch size.
REFERENCE_BATCH_SIZE = 64
# Speed perturbation (0.9x, 1.1x) turns each speaker into three classes.
SPEED_PERTURB_CLASS_FACTOR = 3

_OPTIMIZERS = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}


def effective_dataset_args(config: TrainConfig) -> DatasetArgs:
    """``dataset_args`` as the input pipeline should see them (a copy).

    Large-margin fine-tuning (``do_lm``) trains without speed perturbation, as
    WeSpeaker does.
    """
    if config.do_lm:
        return dataclasses.replace(config.dataset_args, speed_perturb=False)
    return dataclasses.replace(config.dataset_args)


def num_classes(config: TrainConfig, num_speakers: int) -> int:
    """Rows of the classification head.

    With speed perturbation each speed of a speaker is its own class (3x), as
    in WeSpeaker. An LM fine-tuning run (``do_lm``) trains without speed
    perturbation but keeps the head of the weights it starts from (1x or 3x,
    see :func:`~wespeaker_py.train.lm_head.start_weights_num_classes`).
    """
    speed_perturb = config.dataset_args.speed_perturb
    classes = num_speakers * (SPEED_PERTURB_CLASS_FACTOR if speed_perturb else 1)
    if config.do_lm:
        candidates = (num_speakers, num_speakers * SPEED_PERTURB_CLASS_FACTOR)
        classes = start_weights_num_classes(config, candidates) or classes
    return classes


def model_holds_frontend(config: TrainConfig) -> bool:
    """True when the front-end has weights and travels inside the model as ``model.frontend``.

    That is every front-end but fbank (WeSpeaker's rule): its weights train with
    the model and are saved under ``frontend.`` in the checkpoints.
    """
    return config.dataset_args.frontend != "fbank"


def _check_feature_dims(config: TrainConfig, frontend: nn.Module) -> None:
    model_args = config.model_args
    source = ("dataset_args.s3prl_args (the SSL model's hidden size)"
              if model_holds_frontend(config) else "dataset_args.fbank_args.num_mel_bins")
    for key in ("feat_dim", "acoustic_dim"):
        dim = model_args.get(key)
        if dim is None or dim == frontend.output_dim:
            continue
        if key == "feat_dim" and dim == -1 and model_holds_frontend(config):
            continue  # filled from the front-end by resolve_feat_dim
        raise ConfigError(f"config key 'model_args.{key}' is {dim} but the front-end makes "
                          f"{frontend.output_dim}-dim features ({source})")


def build_frontend(config: TrainConfig) -> nn.Module:
    """The on-device feature front-end named by ``dataset_args.frontend``.

    ``fbank``: fbank -> CMN -> SpecAugment (:class:`FbankFeatures`, no weights);
    ``s3prl``: the WavLM front-end (:class:`~wespeaker_py.frontend.ssl.SSLFrontend`),
    which :func:`build_model` attaches to the model. Bad arguments and missing
    WavLM weights raise :class:`ConfigError`.
    """
    try:
        frontend = build_frontend_module(effective_dataset_args(config))
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err)) from None
    _check_feature_dims(config, frontend)
    return frontend


def resolve_feat_dim(config: TrainConfig, frontend: nn.Module) -> TrainConfig:
    """``config`` with ``model_args.feat_dim: -1`` replaced by the front-end's output size.

    WeSpeaker's SSL configs leave the size to the front-end this way. A config
    with another value comes back as it is; otherwise a shallow copy with a new
    ``model_args``.
    """
    if config.model_args.get("feat_dim") != -1:
        return config
    return dataclasses.replace(config, model_args=dict(config.model_args,
                                                       feat_dim=frontend.output_dim))


def build_model(config: TrainConfig, num_speakers: int,
                frontend: Optional[nn.Module] = None) -> nn.Module:
    """The speaker model with its head attached as ``model.projection``.

    ``frontend``, when given (an SSL front-end), is attached as
    ``model.frontend`` and sizes ``model_args.feat_dim: -1``.
    """
    if frontend is not None:
        config = resolve_feat_dim(config, frontend)
    model_args = config.model_args
    if "embed_dim" not in model_args:
        raise ConfigError("config key 'model_args.embed_dim' is required (the head's input size)")
    model = build_speaker_model(config)
    if frontend is not None:
        model.add_module("frontend", frontend)
    projection_args = dict(config.projection_args, do_lm=config.do_lm)
    try:
        head = get_projection(projection_args, embed_dim=model_args["embed_dim"],
                              num_class=num_classes(config, num_speakers))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    model.add_module("projection", head)
    return model


def build_optimizer(config: TrainConfig,
                    parameters: Union[Iterable[torch.nn.Parameter], List[Dict[str, Any]]]
                    ) -> torch.optim.Optimizer:
    """SGD, Adam or AdamW with ``optimizer_args``; the lr starts at the schedule's initial_lr.

    ``parameters`` are parameters or groups with an ``lr_scale`` each
    (:func:`~wespeaker_py.frontend.ssl.frontend_param_groups`).
    """
    optimizer_args = dict(config.optimizer_args)
    optimizer_args.setdefault("lr", config.scheduler_args.initial_lr)
    try:
        return _OPTIMIZERS[config.optimizer](parameters, **optimizer_args)
    except TypeError as err:
        raise ConfigError(f"config key 'optimizer_args' does not fit "
                          f"{config.optimizer}: {err}") from None


def epoch_iterations(config: TrainConfig, num_utterances: int, world_size: int) -> int:
    """Batches per epoch on each rank: samples per epoch / world size / batch size.

    ``dataset_args.sample_num_per_epoch`` (when > 0) replaces the number of
    training utterances, which speed perturbation in ``expanded`` mode triples.
    """
    dataset_args = effective_dataset_args(config)
    samples = dataset_args.sample_num_per_epoch
    if not samples:
        samples = num_utterances
        if dataset_args.speed_perturb and dataset_args.speed_perturb_mode == "expanded":
            samples *= SPEED_PERTURB_CLASS_FACTOR
    batch_size = config.dataloader_args.batch_size
    iterations = samples // world_size // batch_size
    if iterations <= 0:
        raise ConfigError(f"{samples} samples per epoch cannot fill one batch of {batch_size} "
                          f"on each of {world_size} ranks")
    return iterations


def build_lr_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer,
                       epoch_iter: int, world_size: int) -> ExponentialDecrease:
    """The learning-rate schedule, scaled by the global batch against WeSpeaker's 64."""
    scale_ratio = world_size * config.dataloader_args.batch_size / REFERENCE_BATCH_SIZE
    return ExponentialDecrease(optimizer, num_epochs=config.num_epochs, epoch_iter=epoch_iter,
                               scale_ratio=scale_ratio,
                               **dataclasses.asdict(config.scheduler_args))


def build_margin_scheduler(config: TrainConfig, head: nn.Module,
                           epoch_iter: int) -> MarginScheduler:
    """The margin schedule of the head (``margin_update``)."""
    return MarginScheduler(head, epoch_iter=epoch_iter,
                           **dataclasses.asdict(config.margin_update))
