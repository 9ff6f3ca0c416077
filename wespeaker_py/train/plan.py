"""The training plan: a config resolved once into everything a run needs to know.

:func:`resolve` reads the data lists, builds the feature front-end (whose output
size fills ``model_args.feat_dim: -1``), reads the start weights, decides the head
size, and works out the per-rank epoch length and the optimizer's settings.
Everything after it reads the frozen :class:`TrainingPlan`; nothing recomputes what
it holds.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from wespeaker_py.config import (ConfigError, DataloaderArgs, DatasetArgs, MarginUpdate,
                                 ModelConfig, SchedulerArgs, TrainConfig, config_to_dict)
from wespeaker_py.dataset import spk2id_from_utt2spk
from wespeaker_py.errors import WespeakerError, did_you_mean
from wespeaker_py.dataset.augment import check_augment_list
from wespeaker_py.frontend.factory import build_frontend, model_feat_dim
from wespeaker_py.io.layout import ExperimentLayout
from wespeaker_py.models import model_factory
from wespeaker_py.models.projections import get_projection
from wespeaker_py.runtime.builder import (check_model_frontend, frontend_model_args,
                                          model_argument_names)
from wespeaker_py.runtime.checkpoint import HEAD_PREFIX, model_state_of
from wespeaker_py.train.checkpoint import (checkpoint_name, epoch_from_name,
                                           is_training_checkpoint, speaker_map_digest)
from wespeaker_py.train.distributed import DistContext
from wespeaker_py.train.interrupt import (INTERRUPTED_NAME, ContinuedSettings, InterruptedAt,
                                          Lineage, continued_settings, find_interrupted,
                                          standing_of, training_settings)
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.tables import read_key_value
from wespeaker_py.utils.torch_files import read_checkpoint

logger = get_logger(__name__)

# WeSpeaker measures its learning rates against this per-step batch size.
REFERENCE_BATCH_SIZE = 64
# Speed perturbation (0.9x, 1.1x) turns each speaker into three classes.
SPEED_PERTURB_CLASS_FACTOR = 3
AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Layout(ExperimentLayout):
    """Where a run's outputs go inside ``exp_dir``: the experiment folder's files
    (:class:`~wespeaker_py.io.layout.ExperimentLayout`) and the training checkpoints."""

    @property
    def interrupted_path(self) -> str:
        return os.path.join(self.model_dir, INTERRUPTED_NAME)

    def checkpoint_path(self, epoch: int) -> str:
        return os.path.join(self.model_dir, checkpoint_name(epoch))


@dataclass
class StartWeights:
    """The weights a run starts from, each file read once.

    ``init_state``: the model state of ``model_init`` (its head left out unless the
    config's ``model_init_head``; see :func:`~wespeaker_py.train.builder.load_start_weights`).
    ``state``: that of ``checkpoint``; ``training_state`` is the whole checkpoint
    when it is a training checkpoint (optimizer, schedules and RNG states for an
    exact resume), else None (a bare state_dict such as ``avg_model.pt``: weights
    only, with the LM head rule). The trainer drops the three (:meth:`release`)
    once they are loaded. ``continued``: how this run's settings differ from those the
    training checkpoint records (None: not a training checkpoint).
    """

    init_path: Optional[str] = None
    init_state: Optional[Mapping[str, torch.Tensor]] = None
    path: Optional[str] = None
    state: Optional[Mapping[str, torch.Tensor]] = None
    training_state: Optional[Mapping[str, Any]] = None
    first_epoch: int = 1
    resume_at: Optional[InterruptedAt] = None   # from interrupted.pt: the batch to go on after
    standing: Lineage = Lineage(0, None)         # the checkpoint this run continues
    continued: Optional[ContinuedSettings] = None

    def release(self) -> None:
        """Drop the start tensors (the model's and optimizer's copies remain): a W2V-BERT
        checkpoint with its optimizer state holds gigabytes on every rank."""
        self.init_state = self.state = self.training_state = None


@dataclass(frozen=True)
class TrainingPlan:
    """Everything a training run reads, resolved once by :func:`resolve`."""

    config: TrainConfig  # as exp_dir/config.yaml records it (feat_dim filled in); nothing else
    world: DistContext
    layout: Layout
    # data
    data_type: str
    train_data: str
    train_label: str  # the utt2spk spk2id was read from
    reverb_data: Optional[str]
    noise_data: Optional[str]
    dataset_args: DatasetArgs
    dataloader_args: DataloaderArgs
    spk2id: Dict[str, int]
    spk2id_digest: str  # checkpoint.speaker_map_digest of spk2id
    num_utterances: int
    epoch_iter: int  # batches per epoch on each rank
    max_fail_fraction: float  # an epoch that skipped more of what it read stops the run
    seed: int
    # model, head and front-end
    model_config: ModelConfig  # model_args.feat_dim filled in
    projection_args: Dict[str, Any]  # do_lm included
    num_classes: int
    frontend: nn.Module
    model_holds_frontend: bool  # an SSL front-end trains inside the model as model.frontend
    channels_last: bool
    compile: bool
    start: StartWeights
    model_init_head: bool  # model_init's head loads too
    frozen_params: List[str]  # prefixes of the parameters that do not train
    run_settings: Dict[str, Any]  # what a run continuing a stopped one must share (interrupt.py)
    # optimisation
    optimizer: str
    optimizer_args: Dict[str, Any]  # lr filled in from scheduler_args (its optimizer_lr)
    scheduler: str
    scheduler_args: SchedulerArgs
    lr_scale_ratio: float  # global batch / WeSpeaker's 64 (ExponentialDecrease, TriAngular2)
    margin_update: MarginUpdate
    num_epochs: int
    # the step
    amp_dtype: Optional[torch.dtype]  # None: no autocast
    grad_clip: float
    nonfinite_loss: str
    loss: str  # a key of config.schema.LOSSES
    loss_args: Dict[str, Any]
    # logging and checkpoints
    log_batch_interval: int
    save_epoch_interval: int
    num_avg: int

    def should_save(self, epoch: int) -> bool:
        """Every ``save_epoch_interval`` epochs, each of the last ``num_avg``, and the last."""
        return (epoch % self.save_epoch_interval == 0 or epoch > self.num_epochs - self.num_avg
                or epoch == self.num_epochs)


_REQUIRED = ("exp_dir", "data_type", "train_data", "train_label")


def resolve(config: TrainConfig, world: DistContext) -> TrainingPlan:
    """The plan of ``config`` for this process of ``world``.

    Builds the feature front-end, so seed the generators first (an SSL
    front-end draws from them before its weights load).
    """
    _check_required_keys(config)
    check_model_frontend(config)
    dataset_args = config.dataset_args
    if dataset_args.aug_prob > 0:
        _check_augment_data(config, world)
    spk2id = spk2id_from_utt2spk(config.train_label)
    num_utterances = len(read_key_value(config.train_label))
    batch_size = config.dataloader_args.batch_size
    epoch_iter = epoch_iterations(dataset_args, num_utterances, batch_size, world.world_size)
    run_settings = training_settings(config_to_dict(config))
    spk2id_digest = speaker_map_digest(spk2id)
    start = _start_weights(config, world.world_size, epoch_iter, run_settings, spk2id_digest)
    projection_args = dict(config.projection_args, do_lm=config.do_lm)
    frontend = _build_frontend(dataset_args)
    holds_frontend = dataset_args.frontend != "fbank"
    model_args = frontend_model_args(config.model_args, dataset_args.frontend,
                                     model_feat_dim(frontend))
    _check_frontend_layers(model_args, frontend)
    optimizer_args = dict(config.optimizer_args)
    optimizer_args.setdefault("lr", config.scheduler_args.optimizer_lr)
    return TrainingPlan(
        config=dataclasses.replace(config, model_args=model_args),
        world=world, layout=Layout(config.exp_dir),
        data_type=config.data_type, train_data=config.train_data,
        train_label=config.train_label,
        reverb_data=config.reverb_data, noise_data=config.noise_data,
        dataset_args=dataset_args, dataloader_args=config.dataloader_args, spk2id=spk2id,
        spk2id_digest=spk2id_digest,
        num_utterances=num_utterances, epoch_iter=epoch_iter,
        max_fail_fraction=config.max_fail_fraction,
        seed=config.seed,
        model_config=ModelConfig(model=config.model, model_args=model_args,
                                 dataset_args=dataset_args),
        projection_args=projection_args,
        num_classes=num_classes(config.dataset_args.speed_perturb, len(spk2id),
                                projection_args, model_args["embed_dim"],
                                start if config.do_lm else None),
        frontend=frontend, model_holds_frontend=holds_frontend,
        channels_last=config.channels_last, compile=config.compile, start=start,
        model_init_head=config.model_init_head, frozen_params=list(config.frozen_params),
        run_settings=run_settings,
        optimizer=config.optimizer, optimizer_args=optimizer_args,
        scheduler=config.scheduler, scheduler_args=config.scheduler_args,
        lr_scale_ratio=world.world_size * batch_size / REFERENCE_BATCH_SIZE,
        margin_update=config.margin_update, num_epochs=config.num_epochs,
        amp_dtype=AMP_DTYPES[config.amp_dtype] if config.enable_amp else None,
        grad_clip=config.grad_clip or 0.0, nonfinite_loss=config.nonfinite_loss,
        loss=config.loss, loss_args=dict(config.loss_args),
        log_batch_interval=config.log_batch_interval,
        save_epoch_interval=config.save_epoch_interval, num_avg=config.num_avg)


def _check_required_keys(config: TrainConfig) -> None:
    """A ConfigError naming the first of the keys every run needs that ``config`` leaves
    unset."""
    for key in _REQUIRED:
        if getattr(config, key) is None:
            raise ConfigError(f"config key '{key}' must be set "
                              f"(in the YAML or as --{key} on the command line)")
    if "embed_dim" not in config.model_args:
        raise ConfigError(f"config key 'model_args.embed_dim' is required (the head's input "
                          f"size){_misspelt_embed_dim(config)}")
    embed_dim = config.model_args["embed_dim"]
    if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
        raise ConfigError(f"config key 'model_args.embed_dim' must be an integer >= 1 (the "
                          f"head's input size), got {embed_dim!r}")


def _misspelt_embed_dim(config: TrainConfig) -> str:
    """``, but model_args has 'embed_dims'; did you mean 'embed_dim'?`` for the first key of
    ``model_args`` close to ``embed_dim`` that the model takes no argument of (``hid_dim`` of
    XVEC is no misspelling), or an empty string."""
    try:
        # a factory taking **kwargs names none: embed_dim is missing all the same
        takes = model_argument_names(model_factory(config.model)) or []
    except ValueError:   # an unknown model, which check_model_frontend names next
        takes = []
    for key in config.model_args:
        hint = "" if key in takes else did_you_mean(str(key), ["embed_dim"])
        if hint:
            return f", but model_args has '{key}'{hint}"
    return ""


def _check_augment_data(config: TrainConfig, world: DistContext) -> None:
    """The RIR and noise lists of a run that augments (``dataset_args.aug_prob`` > 0) name
    files (see :func:`check_augment_list`); without either, a warning on the main rank."""
    # a list whose every file is missing would train unaugmented, without a word
    for path, what, key in ((config.reverb_data, "RIR", "reverb_data"),
                            (config.noise_data, "noise", "noise_data")):
        if path:
            check_augment_list(path, what, key)
    if not (config.reverb_data or config.noise_data) and world.is_main:
        # WeSpeaker trains on without augmentation too: a warning, not an error
        logger.warning("dataset_args.aug_prob is %g but no --reverb_data or --noise_data "
                       "was given: training runs without augmentation",
                       config.dataset_args.aug_prob)


def _start_weights(config: TrainConfig, world_size: int, epoch_iter: int,
                   run_settings: Mapping[str, Any], spk2id_digest: str) -> StartWeights:
    """The weights the run starts from: ``model_init`` and ``checkpoint`` read, or the
    ``interrupted.pt`` a stopped run of the same settings left, with how this run's settings
    differ from a training checkpoint's."""
    initialisation = repr((config.model, sorted(config.model_args.items()),
                           sorted(config.projection_args.items()), config.seed))
    start = continue_interrupted(read_start_weights(config.model_init, config.checkpoint),
                                 Layout(config.exp_dir).interrupted_path, initialisation,
                                 world_size, epoch_iter, run_settings)
    if start.training_state is None:
        return start
    return dataclasses.replace(start, continued=continued_settings(
        start.training_state, start.path, start.first_epoch, run_settings, spk2id_digest))


def check_data_files(config: TrainConfig) -> None:
    """``train_data`` and ``train_label``, where set, name files: a ConfigError naming the key
    and the path otherwise. Run it before anything is written to exp_dir (an unset key is
    :func:`resolve`'s to report)."""
    for key in ("train_data", "train_label"):
        path = getattr(config, key)
        if path is not None and (not os.path.exists(path) or os.path.isdir(path)):
            problem = "is a folder, not a list file" if os.path.isdir(path) else "does not exist"
            raise ConfigError(f"config key '{key}': {path} {problem}")


def _build_frontend(dataset_args: DatasetArgs) -> nn.Module:
    """fbank -> CMN -> SpecAugment, or a front-end with weights (WavLM, W2V-BERT, Whisper);
    bad arguments are ConfigErrors."""
    try:
        return build_frontend(dataset_args)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err)) from None


def _check_frontend_layers(model_args: Dict[str, Any], frontend: nn.Module) -> None:
    """A model over W2V-BERT's hidden states must be built for as many as it gets."""
    layers = model_args.get("num_frontend_hidden_layers")
    have = getattr(frontend, "num_hidden_states", None)
    if layers is not None and have is not None and layers != have - 1:
        raise ConfigError(f"config key 'model_args.num_frontend_hidden_layers' is {layers} but "
                          f"the front-end's model has {have - 1} layers")


def read_start_weights(model_init: Optional[str], checkpoint: Optional[str]) -> StartWeights:
    """Read ``model_init`` and ``checkpoint`` (either may be None) once.

    Training continues after the checkpoint's epoch: the one stored in a
    training checkpoint, else the one in its name (``model_0.pt``: the
    averaged model the recipe copies in for LM fine-tuning). A stopped run's
    ``interrupted.pt`` is refused: it is taken up by :func:`continue_interrupted`.
    """
    init_state = model_state_of(read_checkpoint(model_init)) if model_init else None
    if not checkpoint:
        return StartWeights(init_path=model_init or None, init_state=init_state)
    loaded = read_checkpoint(checkpoint)
    if "interrupted_at" in loaded:
        at = InterruptedAt.from_dict(loaded["interrupted_at"])
        started = (f"--checkpoint the epoch-{at.after.epoch} checkpoint it started from"
                   if at.after.epoch else "no --checkpoint (it started from the beginning)")
        raise WespeakerError(
            f"--checkpoint {checkpoint} is a run stopped in epoch {at.epoch} after its batch "
            f"{at.batch}: it is continued, not started from (its epoch's first {at.batch} "
            f"batches would be trained twice); run the stopped command again, with "
            f"{started}, and it takes the file up")
    if is_training_checkpoint(loaded):
        return StartWeights(init_path=model_init or None, init_state=init_state,
                            path=checkpoint, state=loaded["model"], training_state=loaded,
                            first_epoch=int(loaded["epoch"]) + 1)
    return StartWeights(init_path=model_init or None, init_state=init_state, path=checkpoint,
                        state=model_state_of(loaded),
                        first_epoch=(epoch_from_name(checkpoint) or 0) + 1)


def continue_interrupted(start: StartWeights, interrupted_path: str, initialisation: str,
                         world_size: int, epoch_iter: int,
                         settings: Optional[Mapping[str, Any]] = None) -> StartWeights:
    """``start``, or the ``interrupted.pt`` at ``interrupted_path`` that a stopped run left
    from it on ``world_size`` ranks of ``epoch_iter`` batches per epoch with ``settings`` (see
    :func:`~wespeaker_py.train.interrupt.find_interrupted`); ``initialisation`` names a
    start from random weights.

    Either way ``standing`` names the checkpoint the run continues (see
    :mod:`wespeaker_py.train.interrupt`). A file of a stop at an epoch's end (batch 0)
    is a checkpoint of that epoch like any other: ``resume_at`` stays None.
    """
    standing = standing_of(start.training_state,
                           start.state if start.state is not None else start.init_state,
                           start.first_epoch - 1, initialisation)
    loaded = find_interrupted(interrupted_path, standing, world_size, epoch_iter, settings)
    if loaded is None:
        return dataclasses.replace(start, standing=standing)
    at = InterruptedAt.from_dict(loaded["interrupted_at"])
    return dataclasses.replace(start, path=interrupted_path,
                               state=loaded["model"], training_state=loaded,
                               first_epoch=at.epoch, resume_at=at if at.batch else None,
                               standing=standing)


def num_classes(speed_perturb: bool, num_speakers: int, projection_args: Dict[str, Any],
                embed_dim: int, lm_start: Optional[StartWeights] = None) -> int:
    """Rows of the classification head, by WeSpeaker's rule: three per speaker (each
    speed its own class) when ``dataset_args.speed_perturb`` is on, else one.

    Large-margin fine-tuning (``lm_start``: its start weights) is no exception.
    WeSpeaker's trainer sets the flag off for it only after its data pipeline is
    built, so its LM stage trains with speed perturbation as configured, and so
    does ours. With the flag off, a 3x head it starts from gives its first rows, the
    speakers at normal speed (:func:`~wespeaker_py.runtime.checkpoint.load_weights`).

    Raises:
        ConfigError: the flag is on but the LM start weights hold a head of one row
            per speaker (a base run without speed perturbation), which cannot take
            the speed classes.
    """
    if not speed_perturb:
        return num_speakers
    classes = num_speakers * SPEED_PERTURB_CLASS_FACTOR
    state = lm_start.state if lm_start is not None else None
    found = {key: tuple(value.shape) for key, value in (state or {}).items()
             if key.startswith(HEAD_PREFIX)}
    if found and found == _head_shapes(projection_args, embed_dim, num_speakers):
        raise ConfigError(f"config key 'dataset_args.speed_perturb' is on, which trains "
                          f"{classes} classes (one per speaker and speed), but "
                          f"{lm_start.path} holds a head of {num_speakers} (a run without "
                          f"speed perturbation); set dataset_args.speed_perturb: False to "
                          f"fine-tune it")
    return classes


def _head_shapes(projection_args: Dict[str, Any], embed_dim: int,
                 num_class: int) -> Dict[str, Tuple[int, ...]]:
    with torch.device("meta"):  # shapes only
        head = get_projection(projection_args, embed_dim=embed_dim, num_class=num_class)
    return {HEAD_PREFIX + key: tuple(value.shape) for key, value in head.state_dict().items()}


def epoch_iterations(dataset_args: DatasetArgs, num_utterances: int, batch_size: int,
                     world_size: int) -> int:
    """Batches per epoch on each rank: samples per epoch / world size / batch size.

    ``sample_num_per_epoch`` (when > 0) replaces the number of training
    utterances, which speed perturbation in ``expanded`` mode triples.
    """
    samples = dataset_args.sample_num_per_epoch
    if not samples:
        samples = num_utterances
        if dataset_args.speed_perturb and dataset_args.speed_perturb_mode == "expanded":
            samples *= SPEED_PERTURB_CLASS_FACTOR
    iterations = samples // world_size // batch_size
    if iterations <= 0:
        raise ConfigError(f"{samples} samples per epoch cannot fill one batch of {batch_size} "
                          f"on each of {world_size} ranks")
    return iterations
