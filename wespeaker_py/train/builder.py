"""A plan's parts: model with head and start weights, optimizer, schedules, data loader."""
from __future__ import annotations

import math
from typing import List, Mapping, Optional

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from wespeaker_py.config import ConfigError, MarginUpdate
from wespeaker_py.config.schema import OPTIMIZERS, SCHEDULERS, schedule_settings
from wespeaker_py.dataset import Dataset, collate_train
from wespeaker_py.frontend.factory import built_buffers
from wespeaker_py.frontend.ssl import frontend_param_groups
from wespeaker_py.config.heads import keys_of_other_heads
from wespeaker_py.models.projections import ProjectionHead, get_projection
from wespeaker_py.runtime.builder import build_speaker_model
from wespeaker_py.runtime.checkpoint import FRONTEND_PREFIX, HEAD_PREFIX, load_weights
from wespeaker_py.train.interrupt import WorkerIgnoringStops
from wespeaker_py.train.plan import TrainingPlan
from wespeaker_py.train.schedulers import LRScheduler, MarginScheduler
from wespeaker_py.utils.logging_utils import WorkerLogging, get_logger
from wespeaker_py.utils.processes import (check_temp_folder_for_workers, shared_memory_advice,
                                          warn_if_shared_memory_below)

logger = get_logger(__name__)

# how older torch begins the error of an optimizer built with fused=True over
# parameters not on a device its fused kernels support (``meta`` included)
_FUSED_DEVICE_CHECK = "`fused=True` requires all the params to be"


def build_model(plan: TrainingPlan) -> nn.Module:
    """The speaker model with its head as ``model.projection`` (and an SSL front-end as
    ``model.frontend``), random weights; see :func:`load_start_weights`."""
    model = build_speaker_model(plan.model_config)
    if plan.model_holds_frontend:
        model.add_module("frontend", plan.frontend)
    model.add_module("projection", _build_head(plan))
    freeze_parameters(model, plan.frozen_params)
    return model


def check_model_builds(plan: TrainingPlan) -> None:
    """Build the model and head on the meta device (no memory, no random draws), then the
    optimizer over its parameters and the learning-rate schedule over that optimizer, so
    that a ``model_args``, ``projection_args``, ``frozen_params``, ``optimizer_args`` or
    ``scheduler_args`` error is raised before the experiment folder is made; warn (rank 0)
    of each ``projection_args`` key that only another head takes, of a ``margin_update``
    that sets a margin for a head without one to schedule, and of a margin outside
    [0, pi/2]."""
    with torch.device("meta"):
        model = build_speaker_model(plan.model_config)
        model.add_module("projection", _build_head(plan))
    if plan.world.is_main:
        _warn_keys_of_other_heads(plan.projection_args)
        _warn_margin_update_unused(plan.margin_update, model.projection,
                                   plan.projection_args["project_type"])
        if model.projection.margin_schedulable:
            _warn_margins_out_of_range(plan.margin_update)
    names = [name for name, _ in model.named_parameters()]
    if plan.model_holds_frontend:
        names += [f"frontend.{name}" for name, _ in plan.frontend.named_parameters()]
    for prefix in plan.frozen_params:
        _named_by(prefix, names)
    try:
        optimizer = build_optimizer(plan, model)
    except RuntimeError as err:
        # older torch checks the device of fused=True's parameters as the optimizer is
        # built: meta is no device to judge by; the real build, on the real one, decides
        if _FUSED_DEVICE_CHECK not in str(err):
            raise
        return
    build_lr_scheduler(plan, optimizer)


def _build_head(plan: TrainingPlan) -> nn.Module:
    try:
        return get_projection(plan.projection_args,
                              embed_dim=plan.model_config.model_args["embed_dim"],
                              num_class=plan.num_classes)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _warn_keys_of_other_heads(projection_args: Mapping) -> None:
    # a warning, not an error: WeSpeaker's head builder ignores them too
    head = projection_args["project_type"]
    for key, heads in keys_of_other_heads(projection_args).items():
        logger.warning("config key 'projection_args.%s' is ignored: project_type %s takes no "
                       "%s (%s does)", key, head, key, " and ".join(heads))


def _warn_margin_update_unused(margin_update: MarginUpdate, head: ProjectionHead,
                               project_type: str) -> None:
    # a warning, not an error: WeSpeaker trains such a config, its margin unused
    # A schedule that keeps the margin at 0 asks for nothing such a head lacks.
    asks_for_margin = margin_update.initial_margin != 0 or (
        margin_update.update_margin and margin_update.final_margin != 0)
    if asks_for_margin and not head.margin_schedulable:
        logger.warning("config key 'margin_update' has no effect: project_type %s has no "
                       "margin to schedule (initial_margin %g, final_margin %g are ignored)",
                       project_type, margin_update.initial_margin, margin_update.final_margin)


def _warn_margins_out_of_range(margin_update: MarginUpdate) -> None:
    # a warning, not an error: WeSpeaker trains with any margin. A margin is an angle (or a
    # cosine offset) that separates classes only between 0 and pi/2.
    keys = ["initial_margin"] + (["final_margin"] if margin_update.update_margin else [])
    for key in keys:
        margin = getattr(margin_update, key)
        if not 0 <= margin <= math.pi / 2:
            logger.warning("config key 'margin_update.%s' is %g, outside [0, pi/2 = %.4g] "
                           "where a margin makes sense; training goes on with it, as "
                           "WeSpeaker's does", key, margin, math.pi / 2)


def _named_by(prefix: str, names: List[str]) -> List[str]:
    """The parameter ``names`` that start with a ``frozen_params`` prefix; none is an error."""
    named = [name for name in names if name.startswith(prefix)]
    if not named:
        raise ConfigError(f"config key 'frozen_params': {prefix!r} names no parameter of "
                          f"the model")
    return named


def freeze_parameters(model: nn.Module, prefixes) -> None:
    """Stop the parameters whose names start with one of ``prefixes`` from training.

    Their BatchNorm statistics still follow the training data (the model trains in
    train mode). A prefix that names no parameter is a ConfigError.
    """
    params = dict(model.named_parameters())
    for prefix in prefixes:
        for name in _named_by(prefix, list(params)):
            params[name].requires_grad_(False)


def load_start_weights(plan: TrainingPlan, model: nn.Module) -> None:
    """Load ``model_init``, then ``checkpoint``, as the plan read them.

    ``model_init`` initialises the model without its head, which starts from random
    weights as in WeSpeaker, unless the config's ``model_init_head`` asks for it (the
    second phase of ``wespeaker-py finetune`` goes on with the head its first phase
    trained). A bare state_dict checkpoint loads with the LM head rule (a larger head
    gives its first rows); a training checkpoint loads exactly. A checkpoint of a
    frozen SSL front-end run has no WavLM weights; the model keeps its pretrained ones.
    """
    start = plan.start
    if start.init_state is not None:
        _load_model_init(model, start.init_state, start.init_path,
                         plan.model_init_head, then=start.path)
    if start.state is not None:
        exact = start.training_state is not None
        load_weights(model, start.state, start.path, allow_head_truncation=not exact)
        if not exact:
            logger.info("loaded the weights of %s (no optimizer or scheduler state)",
                        start.path)


def _with_own_frontend_buffers(model: nn.Module, state: Mapping[str, torch.Tensor]
                               ) -> Mapping[str, torch.Tensor]:
    """``state`` completed with the buffers of ``model.frontend`` when it holds none of them.

    A front-end's buffers (TFMel's DFT kernels and mel banks) are computed from its
    settings when it is built, never learnt: a ``model_init`` may leave them all out, as
    ``wespeaker-py finetune``'s body init does at another rate than the source's. A state
    that holds some of them is left as it is, for the strict load to judge.
    """
    frontend = getattr(model, "frontend", None)
    if frontend is None:
        return state
    own = {FRONTEND_PREFIX + name: value for name, value in built_buffers(frontend).items()}
    if not own or any(key in state for key in own):
        return state
    return {**state, **own}


def _load_model_init(model: nn.Module, state: Mapping[str, torch.Tensor], path: str,
                     with_head: bool, then: Optional[str] = None) -> None:
    """``model_init``'s weights into ``model``; its head only ``with_head`` (then exactly).
    Front-end buffers it leaves out altogether are the model's own
    (:func:`_with_own_frontend_buffers`); anything else missing is an error. ``then``: the
    checkpoint whose weights replace these next (a resumed run), for the log."""
    state = _with_own_frontend_buffers(model, state)
    if not with_head:
        state = {key: value for key, value in state.items() if not key.startswith(HEAD_PREFIX)}
    if then is not None:   # as WeSpeaker's trainer: model_init first, the checkpoint over it
        logger.info("reading model_init %s first; the weights of %s replace it", path, then)
    elif with_head:
        logger.info("initialising the model from %s, its head included (model_init_head)",
                    path)
    else:
        logger.info("initialising the model from %s without its head: the head starts from "
                    "random weights", path)
    load_weights(model, state, path, allow_head_truncation=False,
                 allow_missing_head=not with_head)


def build_optimizer(plan: TrainingPlan, model: nn.Module) -> torch.optim.Optimizer:
    """The ``optimizer`` (:data:`~wespeaker_py.config.schema.OPTIMIZERS`) over the model's
    parameter groups; an ``optimizer_args`` key it takes no argument of is a ConfigError.

    The WavLM weights of a joint SSL run learn at ``lr * s3prl_args.lr_scale``
    (:func:`~wespeaker_py.frontend.ssl.frontend_param_groups`). Each group names
    its parameters (``param_names``, torch's own entry for them), so that a
    checkpoint's optimizer state can follow a parameter by name when another
    run trains other parameters (:func:`~wespeaker_py.train.checkpoint.load_optimizer_state`).
    """
    names = {id(param): name for name, param in model.named_parameters()}
    groups = [dict(group, param_names=[names[id(param)] for param in group["params"]])
              for group in frontend_param_groups(model)]
    try:
        return OPTIMIZERS[plan.optimizer].build("optimizer_args", plan.optimizer_args, groups)
    except ConfigError:   # a key it takes no argument of, named already
        raise
    except (TypeError, ValueError) as err:   # a value of the wrong type, or one it refuses
        raise ConfigError(f"config key 'optimizer_args' does not fit "
                          f"{plan.optimizer}: {err}") from None


def trained_parameter_keys(plan: TrainingPlan) -> List[str]:
    """The config keys that decide which parameters train: ``frozen_params``, and the
    ``frozen`` and ``use_lora`` keys of a front-end the model holds, where it has them."""
    keys = ["frozen_params"]
    name = plan.dataset_args.frontend
    args = getattr(plan.dataset_args, f"{name}_args", None)
    if plan.model_holds_frontend:
        keys.extend(f"dataset_args.{name}_args.{key}" for key in ("frozen", "use_lora")
                    if hasattr(args, key))
    return keys


def build_lr_scheduler(plan: TrainingPlan, optimizer: torch.optim.Optimizer) -> LRScheduler:
    """The learning-rate schedule ``scheduler`` (:data:`~wespeaker_py.config.schema.SCHEDULERS`),
    given the global batch against WeSpeaker's 64 (which only ExponentialDecrease and
    TriAngular2 apply); ``scheduler_args`` it refuses are a ConfigError."""
    try:
        return SCHEDULERS[plan.scheduler].build(
            "scheduler_args", schedule_settings(plan.scheduler_args), optimizer,
            num_epochs=plan.num_epochs, epoch_iter=plan.epoch_iter,
            scale_ratio=plan.lr_scale_ratio)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"config key 'scheduler_args' does not fit "
                          f"{plan.scheduler}: {err}") from None


def build_margin_scheduler(plan: TrainingPlan, head: ProjectionHead) -> MarginScheduler:
    """The margin schedule of the head (``margin_update``)."""
    return MarginScheduler(head, epoch_iter=plan.epoch_iter,
                           **schedule_settings(plan.margin_update))


def build_dataset(plan: TrainingPlan) -> Dataset:
    """The training data set, repeating its list so that every rank fills its epochs.

    A list of fewer items (shards, or utterances of a raw list) than ranks is a
    :class:`ConfigError` on every rank alike: a rank without items would stop alone
    at its first batch while the others wait for it in a collective.
    """
    dataset = Dataset(plan.data_type, plan.train_data, plan.dataset_args, spk2id=plan.spk2id,
                      reverb_data=plan.reverb_data, noise_data=plan.noise_data,
                      seed=plan.seed, repeat=True)
    ranks = plan.world.world_size
    if len(dataset.items) < ranks:
        what = "shards" if plan.data_type == "shard" else "utterances"
        advice = (" (make smaller shards: tools/make_shard_list.py --num_utts_per_shard)"
                  if plan.data_type == "shard" else "")
        raise ConfigError(f"{plan.train_data} lists {len(dataset.items)} {what} for {ranks} "
                          f"ranks: every rank needs at least one{advice}, or train on fewer")
    if plan.data_type == "raw" and not any(utt.spk in plan.spk2id for utt in dataset.items):
        first = dataset.items[0]
        raise ConfigError(f"config keys 'train_data' and 'train_label' do not match: no speaker "
                          f"of {plan.train_data} is in {plan.train_label} (the first: "
                          f"{first.key} of {first.spk!r}); give the utt2spk the list was made "
                          f"from")
    return dataset


def warn_speakers_unmatched(plan: TrainingPlan, dataset: Dataset) -> None:
    """Warn when a raw ``train_data`` and ``train_label`` disagree on speakers: utterances of a
    speaker the label file lacks are skipped every epoch; a label speaker without utterances
    is a class of the head that never trains. (A shard list's speakers are known only as
    its shards are read; their skips are counted each epoch.)"""
    if plan.data_type != "raw":
        return
    unknown = [utt for utt in dataset.items if utt.spk not in plan.spk2id]
    if unknown:
        logger.warning("%d of the %d utterances of %s have a speaker that %s does not list "
                       "(the first: %s of %r): they are skipped every epoch", len(unknown),
                       len(dataset.items), plan.train_data, plan.train_label, unknown[0].key,
                       unknown[0].spk)
    unheard = set(plan.spk2id) - {utt.spk for utt in dataset.items}
    if unheard:
        logger.warning("%d of the %d speakers of %s have no utterance in %s (the first: %r): "
                       "their classes of the head never train", len(unheard),
                       len(plan.spk2id), plan.train_label, plan.train_data, min(unheard))


def build_loader(plan: TrainingPlan, dataset: Dataset) -> DataLoader:
    """The DataLoader over ``dataset`` with the config's ``dataloader_args``.

    Batches for a CUDA device are always pinned (``pin_memory`` only matters
    elsewhere, where pinning is useless): the step copies them with
    ``non_blocking``, which is asynchronous only from pinned memory. No
    persistent workers: the Dataset reads its epoch when an iterator starts.
    """
    args = plan.dataloader_args
    loader_args = {"batch_size": args.batch_size, "num_workers": args.num_workers,
                   "pin_memory": plan.world.device.type == "cuda", "drop_last": args.drop_last,
                   "collate_fn": collate_train}
    check_temp_folder_for_workers(args.num_workers)
    if args.num_workers > 0:
        loader_args["prefetch_factor"] = args.prefetch_factor or 2
        if plan.world.is_main:
            _warn_if_batches_short_of_shared_memory(plan, dataset,
                                                    loader_args["prefetch_factor"])
        loader_args["worker_init_fn"] = WorkerIgnoringStops(WorkerLogging(
            plan.layout.log_path if plan.world.is_main else None))
        loader_args["multiprocessing_context"] = args.multiprocessing_context
        loader_args["timeout"] = args.timeout
    return DataLoader(dataset, **loader_args)


def _warn_if_batches_short_of_shared_memory(plan: TrainingPlan, dataset: Dataset,
                                            prefetch_factor: int) -> None:
    """Warn when /dev/shm has less free space than the batches the loader workers keep ready
    (``prefetch_factor`` each), which they hand over through it.

    Sized as what a worker returns (:func:`~wespeaker_py.dataset.collate_train`): whatever
    the front-end, ``batch_size`` waveform chunks of ``num_frms`` frames at
    ``resample_rate`` (``dataset.chunk_len`` float32 samples; features are made on the
    device). The least a batch holds: ``augment_on: device`` adds the speed change's margin
    and the noise and RIRs, and the other ranks on the machine share /dev/shm.
    """
    args = plan.dataloader_args
    batches = args.num_workers * prefetch_factor
    needed = batches * args.batch_size * dataset.chunk_len * 4   # float32 samples
    if args.timeout > 0:
        effect = (f"a worker that cannot put one there drops it, and training stops after "
                  f"{args.timeout:g} s without a batch (dataloader_args.timeout)")
    else:
        effect = ("a worker that cannot put one there drops it, and training waits for it "
                  "for ever (dataloader_args.timeout 0)")
    warn_if_shared_memory_below(
        needed, f"the {batches} batches the loader workers keep ready may take "
        f"({prefetch_factor} per worker, each {args.batch_size} waveform chunks of "
        f"{dataset.settings.num_frms} frames)", effect,
        shared_memory_advice("dataloader_args.num_workers 0"))
