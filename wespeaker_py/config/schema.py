"""The experiment config, one dataclass per block of WeSpeaker's YAML.

The keys, their types, defaults (WeSpeaker's behaviour when a key is left out)
and allowed ranges are declared here once; loading, command-line overrides,
every consumer and the saved ``config.yaml`` use these classes.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Literal, Optional, Union

from wespeaker_py.config.choices import (ArgsBlocks, Choice, FrontendChoice, args_union,
                                         one_of)
from wespeaker_py.config.fields import ConfigError, convert_value, parse_block, setting
from wespeaker_py.config.gpus import parse_gpus
from wespeaker_py.config.heads import check_projection_args
from wespeaker_py.utils.list_jobs import DEFAULT_MAX_FAIL_FRACTION


def _block(cls):
    """Declare a config block: a keyword-only, mutable dataclass."""
    return dataclasses.dataclass(kw_only=True)(cls)


# ---- dataset_args -------------------------------------------------------------------------

# the one rate of Whisper's feature extractor (whisper_encoder_args.sample_rate and the
# whisper_encoder entry of FRONTENDS)
WHISPER_SAMPLE_RATE = 16000


@_block
class ShuffleArgs:
    """``dataset_args.shuffle_args``: size of the shuffle buffer (utterances)."""

    shuffle_size: int = setting(2500, minimum=1)


@_block
class FilterArgs:
    """``dataset_args.filter_args``: utterance lengths kept for training.

    Counted as WeSpeaker does: ``n`` frames are ``n`` frame shifts of samples of the
    file as read (``min_num_frames: 100`` at a 10 ms shift keeps 1 s and longer).
    """

    min_num_frames: int = setting(100, minimum=0)
    max_num_frames: int = setting(800, minimum=1)

    def _finish(self, where: str) -> None:
        if self.max_num_frames < self.min_num_frames:
            raise ConfigError(f"config key '{where}.max_num_frames' must be >= min_num_frames "
                              f"({self.min_num_frames}), got {self.max_num_frames}")


@_block
class FbankArgs:
    """``dataset_args.fbank_args``: Kaldi-compatible fbank on the training device.

    ``dither`` applies in training only (extraction never dithers); 1.0 when left
    out, as WeSpeaker's ``compute_fbank``.
    """

    num_mel_bins: int = setting(80, minimum=1)
    frame_shift: float = setting(10.0, above=0)  # ms
    frame_length: float = setting(25.0, above=0)  # ms
    dither: float = setting(1.0, minimum=0)


@_block
class CmvnArgs:
    """``dataset_args.cmvn_args``: per-utterance mean (and variance) normalisation."""

    norm_mean: bool = True
    norm_var: bool = False


@_block
class SpecAugArgs:
    """``dataset_args.spec_aug_args``: SpecAugment (WeSpeaker's defaults).

    ``batch_mask`` (ours) chooses WeSpeaker's mode, one draw for the whole batch;
    the default, false, draws for each utterance: WeSpeaker's own code marks the
    shared draw as a to-do, and a batch masked all or nothing makes whole
    steps plain or augmented instead of each utterance with probability ``prob``.
    It is saved only when set, as WeSpeaker passes this block whole to its
    ``spec_aug()``, which takes no such keyword.
    """

    num_t_mask: int = setting(1, minimum=0)
    num_f_mask: int = setting(1, minimum=0)
    max_t: int = setting(10, minimum=0)
    max_f: int = setting(8, minimum=0)
    prob: float = setting(0.6, minimum=0, maximum=1)
    batch_mask: bool = setting(False, written_when_set=True)


@_block
class UpstreamArgs:
    """``dataset_args.s3prl_args.upstream_args``: which SSL model, and where its weights are."""

    name: str
    path_or_url: Optional[str] = None
    normalize: bool = False
    extra_conf: Optional[Dict[str, Any]] = None


@_block
class S3prlArgs:
    """``dataset_args.s3prl_args``: the SSL (WavLM) front-end, ``frontend: s3prl``.

    WeSpeaker's keys plus ours: ``gradient_checkpointing``, ``lr_scale``
    (learning-rate factor of the WavLM weights in joint training) and
    ``frozen_bf16`` (bf16 autocast for a frozen WavLM on CUDA).
    """

    upstream_args: UpstreamArgs
    download_dir: Optional[str] = None
    multilayer_feature: bool = True
    layer: int = setting(-1, minimum=-1)
    frozen: bool = False
    # WavLM gives one frame per 320 samples (20 ms at 16 kHz) ...
    frame_shift: float = setting(20.0, above=0)
    # ... from a 400-sample (25 ms) receptive field
    frame_length: float = setting(25.0, above=0)
    # ours (WeSpeaker's S3prlFrontend takes no such arguments)
    gradient_checkpointing: bool = setting(False, written_when_set=True)
    lr_scale: float = setting(1.0, minimum=0, written_when_set=True)
    frozen_bf16: bool = setting(True, written_when_set=True)


@_block
class LoraArgs:
    """``dataset_args.w2vbert_args.lora_config_args``: LoRA on W2V-BERT (``peft``'s keys)."""

    r: int = setting(16, minimum=1)
    lora_alpha: float = setting(32.0, above=0)
    target_modules: List[str] = setting(factory=lambda: ["linear_q", "linear_v"])
    lora_dropout: float = setting(0.1, minimum=0, maximum=1)
    bias: Literal["none", "all", "lora_only"] = "none"


@_block
class W2vbertArgs:
    """``dataset_args.w2vbert_args``: the W2V-BERT 2.0 front-end, ``frontend: w2vbert``.

    ``model_name`` is a local Hugging Face directory, or a hub name already in the
    local Hugging Face cache (nothing is downloaded). ``frozen`` keeps the
    pretrained weights fixed (LoRA weights still train); ``model_config_file``
    names a config JSON inside that directory to build from instead of its
    ``config.json``. bitsandbytes quantisation (``use_bnb``) is not supported.
    ``frame_shift`` and ``frame_length`` (ms) only size training chunks and the
    length filter, on the 10 ms fbank grid the features are computed on, as in
    WeSpeaker.
    """

    model_name: str = "facebook/w2v-bert-2.0"
    download_dir: Optional[str] = None
    frozen: bool = True
    use_bnb: bool = False
    bnb_config_args: Optional[Dict[str, Any]] = None
    use_lora: bool = False
    lora_config_args: Optional[LoraArgs] = None
    model_config_file: Optional[str] = None
    # ours (WeSpeaker's W2VBert front-end takes no such arguments)
    frame_shift: float = setting(10.0, above=0, written_when_set=True)
    frame_length: float = setting(25.0, above=0, written_when_set=True)

    def _finish(self, where: str) -> None:
        if self.use_bnb:
            raise ConfigError(f"config key '{where}.use_bnb': bitsandbytes quantisation is not "
                              f"supported; set it to false")
        if self.use_lora and self.lora_config_args is None:
            self.lora_config_args = LoraArgs()


@_block
class WhisperEncoderArgs:
    """``dataset_args.whisper_encoder_args``: Whisper's encoder, ``frontend: whisper_encoder``.

    WeSpeaker's keys and defaults. The first ``num_blocks`` encoder blocks are built
    (``output_size`` wide, ``n_head`` heads, on ``n_mels`` mel bands); the outputs of
    blocks ``layer_st..layer_ed`` (0-based) are the features. ``model_path`` is OpenAI's
    checkpoint file (``large-v2.pt``), never downloaded; without it the encoder starts
    at random. ``frozen`` fixes every encoder weight. ``sample_rate`` must be 16000
    (WeSpeaker takes the rate from ``dataset_args.resample_rate``, which must be too).
    Training chunks and the length filter count frames of 10 ms and 25 ms, WeSpeaker's
    defaults for a front-end block without ``frame_shift`` and ``frame_length``.
    """

    frozen: bool = False
    n_mels: Literal[80, 128] = 80
    num_blocks: int = setting(24, minimum=1)
    output_size: int = setting(1280, minimum=4)
    n_head: int = setting(20, minimum=1)
    layer_st: int = setting(16, minimum=0)
    layer_ed: int = setting(23, minimum=0)
    model_path: Optional[str] = None
    # WeSpeaker passes the rate itself (dataset_args.resample_rate): written only when set
    sample_rate: int = setting(WHISPER_SAMPLE_RATE, minimum=1,
                               written_when_set=True)

    def _finish(self, where: str) -> None:
        if self.layer_st > self.layer_ed:
            raise ConfigError(f"config key '{where}.layer_st' ({self.layer_st}) must be <= "
                              f"layer_ed ({self.layer_ed})")
        if self.layer_ed >= self.num_blocks:
            raise ConfigError(f"config key '{where}.layer_ed' ({self.layer_ed}) must be < "
                              f"num_blocks ({self.num_blocks}): blocks count from 0")
        if self.output_size % self.n_head:
            raise ConfigError(f"config key '{where}.output_size' ({self.output_size}) must be "
                              f"a multiple of n_head ({self.n_head})")
        if self.output_size % 2:
            raise ConfigError(f"config key '{where}.output_size' ({self.output_size}) must be "
                              f"even (half sine, half cosine position codes)")
        if self.sample_rate != WHISPER_SAMPLE_RATE:
            raise ConfigError(f"config key '{where}.sample_rate' must be {WHISPER_SAMPLE_RATE} "
                              f"(Whisper's rate), got {self.sample_rate}")

    @property
    def frame_shift(self) -> float:
        """Milliseconds of a training-chunk frame shift (WeSpeaker's default, 10)."""
        return 10.0

    @property
    def frame_length(self) -> float:
        """Milliseconds of a training-chunk frame (WeSpeaker's default, 25)."""
        return 25.0


@_block
class TfmelArgs:
    """``dataset_args.tfmel_args``: the TFMel front-end of ReDimNet2, ``frontend: tfmel``.

    WeSpeaker's ``TFMelFrontend`` keys and defaults; the sample rate is
    ``dataset_args.resample_rate``, and ``f_max`` may not pass half of it (the mel
    bands above would cover no frequency bin).
    """

    n_fft: int = setting(512, minimum=1)
    win_length: int = setting(400, minimum=1)
    hop_length: int = setting(160, minimum=1)
    f_min: float = setting(20.0, minimum=0)
    f_max: float = setting(7600.0, above=0)
    n_mels: int = setting(80, minimum=1)
    do_spec_aug: bool = False
    norm_signal: bool = False
    do_preemph: bool = True
    freq_mask_width: List[int] = setting(factory=lambda: [0, 8])
    time_mask_width: List[int] = setting(factory=lambda: [0, 10])
    eps: float = setting(1.0e-8, above=0)

    def _finish(self, where: str) -> None:
        if self.win_length > self.n_fft:
            raise ConfigError(f"config key '{where}.win_length' ({self.win_length}) must be "
                              f"<= n_fft ({self.n_fft})")
        if self.f_min >= self.f_max:
            raise ConfigError(f"config key '{where}.f_min' ({self.f_min:g}) must be below "
                              f"f_max ({self.f_max:g})")
        for name in ("freq_mask_width", "time_mask_width"):
            low_high = getattr(self, name)
            if len(low_high) != 2 or not 0 <= low_high[0] < low_high[1]:
                raise ConfigError(f"config key '{where}.{name}' must be [low, high] with "
                                  f"0 <= low < high, got {low_high}")


# TfmelArgs' sizes in samples (the others are in Hz, bands or flags): at another rate they
# change with it to keep their length in ms
TFMEL_SAMPLE_FIELDS = ("n_fft", "win_length", "hop_length")

# dataset_args.frontend: value -> what that front-end is (FrontendChoice). A new front-end is
# an entry here, its settings block and its DatasetArgs field named by ``block``; the
# schema, the factory, export, model checks and the resume check read this table.
FRONTENDS = {
    "fbank": FrontendChoice(
        "wespeaker_py.frontend.features:FbankFeatures", FbankArgs, block="fbank_args",
        feat_dim_source="dataset_args.fbank_args.num_mel_bins", exportable=True),
    # WavLM also runs at another rate given a frame shift that matches its hop, as in
    # WeSpeaker, so its rate is not enforced
    "s3prl": FrontendChoice(
        "wespeaker_py.frontend.ssl:SSLFrontend", S3prlArgs, block="s3prl_args",
        feat_dim_source="dataset_args.s3prl_args (the SSL model's hidden size)",
        args_required=True, sample_rate=16000),
    "tfmel": FrontendChoice(
        "wespeaker_py.frontend.tfmel:TFMelFeatures", TfmelArgs, block="tfmel_args",
        feat_dim_source="dataset_args.tfmel_args.n_mels", own_norm=True, exportable=True,
        exclusive=True),
    "w2vbert": FrontendChoice(
        "wespeaker_py.frontend.w2vbert:W2VBertFrontend", W2vbertArgs, block="w2vbert_args",
        feat_dim_source="dataset_args.w2vbert_args (the W2V-BERT model's hidden size)",
        sample_rate=16000, rate_only=True, own_norm=True, exclusive=True,
        takes_pretrained=True),
    "whisper_encoder": FrontendChoice(
        "wespeaker_py.frontend.whisper:WhisperFrontend", WhisperEncoderArgs,
        block="whisper_encoder_args",
        feat_dim_source="dataset_args.whisper_encoder_args (output_size x "
                        "(layer_ed - layer_st + 1))",
        sample_rate=WHISPER_SAMPLE_RATE, rate_only=True, exclusive=True,
        takes_pretrained=True),
}
# front-ends whose feature extractor takes one sample rate only: dataset_args.resample_rate
# must be it
FIXED_SAMPLE_RATES = {name: choice.sample_rate for name, choice in FRONTENDS.items()
                      if choice.rate_only}
# the rate each pretrained front-end's weights learnt from: fine-tuning resamples other data
# to it
PRETRAINED_SAMPLE_RATES = {name: choice.sample_rate for name, choice in FRONTENDS.items()
                           if choice.sample_rate is not None}


def frontend_choice(name: str) -> FrontendChoice:
    """The :data:`FRONTENDS` entry of ``dataset_args.frontend`` ``name``; another name is a
    :class:`ConfigError` listing the front-ends."""
    if name not in FRONTENDS:
        raise ConfigError(f"config key 'dataset_args.frontend' must be one of "
                          f"{list(FRONTENDS)}, got {name!r}")
    return FRONTENDS[name]


@_block
class DatasetArgs:
    """``dataset_args``: the input pipeline and the feature front-end.

    What each ``frontend`` is, block and rules, is its entry of :data:`FRONTENDS`.
    ``fbank_args`` is filled with its defaults for ``frontend: fbank``;
    ``s3prl_args`` must be given for ``frontend: s3prl``; ``tfmel_args`` is
    filled with its defaults for ``frontend: tfmel``, which normalises its own
    output (``cmvn`` and ``spec_aug`` must be false: ``tfmel_args.do_spec_aug``
    is its SpecAugment). ``w2vbert_args`` is filled with its defaults for
    ``frontend: w2vbert``, whose model normalises its own input (``cmvn`` and
    ``spec_aug`` must be false). ``whisper_encoder_args`` is filled with its defaults
    for ``frontend: whisper_encoder`` (16 kHz only); its features go through ``cmvn``
    and ``spec_aug`` as fbank's do. A front-end of :data:`FIXED_SAMPLE_RATES` needs
    ``resample_rate`` to be its rate. Blocks of front-ends other than the chosen one are
    checked and unused.
    """

    sample_num_per_epoch: int = setting(0, minimum=0)  # 0: the number of utterances
    shuffle: bool = False
    shuffle_args: ShuffleArgs = setting(factory=ShuffleArgs)
    filter: bool = True
    filter_args: FilterArgs = setting(factory=FilterArgs)
    resample_rate: int = setting(16000, minimum=1)
    speed_perturb: bool = True
    speed_perturb_mode: Literal["random", "expanded"] = "random"
    num_frms: int = setting(200, minimum=1)
    aug_prob: float = setting(0.6, minimum=0, maximum=1)
    # where speed perturbation and noise/reverb arithmetic run; "cpu" when the key is
    # absent, so that a Dataset used on its own yields finished chunks (device_augment.py)
    augment_on: Literal["cpu", "device"] = "cpu"
    # a name of FRONTENDS (evaluated when a config is checked, so it follows the table)
    frontend: one_of(FRONTENDS) = "fbank"
    fbank_args: Optional[FbankArgs] = None
    s3prl_args: Optional[S3prlArgs] = None
    w2vbert_args: Optional[W2vbertArgs] = None
    whisper_encoder_args: Optional[WhisperEncoderArgs] = None
    tfmel_args: Optional[TfmelArgs] = None
    cmvn: bool = True
    cmvn_args: CmvnArgs = setting(factory=CmvnArgs)
    spec_aug: bool = False
    spec_aug_args: SpecAugArgs = setting(factory=SpecAugArgs)

    def _finish(self, where: str) -> None:
        choice = FRONTENDS[self.frontend]
        if getattr(self, choice.block) is None:
            if choice.args_required:
                raise ConfigError(f"config key '{where}.{choice.block}' is required when "
                                  f"{where}.frontend is {self.frontend}")
            setattr(self, choice.block, choice.args())
        if self.frontend == "tfmel":
            self._check_tfmel_band(where)
        if choice.rate_only and self.resample_rate != choice.sample_rate:
            raise ConfigError(f"config key '{where}.resample_rate' must be "
                              f"{choice.sample_rate} with {where}.frontend {self.frontend} (its "
                              f"pretrained weights or feature extractor take "
                              f"{choice.sample_rate} Hz only), got {self.resample_rate}")
        if choice.own_norm:
            for key in ("cmvn", "spec_aug"):
                if getattr(self, key):
                    raise ConfigError(f"config key '{where}.{key}' must be false with "
                                      f"{where}.frontend {self.frontend} (as in WeSpeaker's "
                                      f"configs: its features are normalised by their own "
                                      f"front-end or model)")

    def _check_tfmel_band(self, where: str) -> None:
        """TFMel's mel bands must end at or below the Nyquist frequency."""
        nyquist = self.resample_rate / 2
        if self.tfmel_args.f_max > nyquist:
            raise ConfigError(f"config key '{where}.tfmel_args.f_max' ({self.tfmel_args.f_max:g} "
                              f"Hz) must be <= half of {where}.resample_rate ({nyquist:g} Hz): "
                              f"the mel bands above it would cover no frequency bin")

    @property
    def frontend_args(self) -> Union[FbankArgs, S3prlArgs, TfmelArgs, W2vbertArgs,
                                     WhisperEncoderArgs]:
        """The argument block of the chosen front-end."""
        return getattr(self, FRONTENDS[self.frontend].block)

    @property
    def frame_shift_ms(self) -> float:
        """Milliseconds between feature frames of the chosen front-end."""
        if self.frontend == "tfmel":
            return 1000.0 * self.tfmel_args.hop_length / self.resample_rate
        return self.frontend_args.frame_shift

    @property
    def frame_length_ms(self) -> float:
        """Milliseconds of waveform in one feature frame of the chosen front-end."""
        if self.frontend == "tfmel":
            return 1000.0 * self.tfmel_args.win_length / self.resample_rate
        return self.frontend_args.frame_length


# ---- training blocks -----------------------------------------------------------------------

# The smallest training batch: a BatchNorm after pooling (ECAPA, CAM++, the embedding
# layers) cannot normalise one sample.
MIN_BATCH_SIZE = 2


@_block
class DataloaderArgs:
    """``dataloader_args``: the torch DataLoader of the training input pipeline.

    ``batch_size`` must be at least :data:`MIN_BATCH_SIZE`: BatchNorm in training
    cannot normalise a single sample.
    """

    batch_size: int = setting(minimum=1)   # and >= MIN_BATCH_SIZE, which _finish explains
    num_workers: int = setting(0, minimum=0)
    pin_memory: bool = False
    prefetch_factor: Optional[int] = setting(None, minimum=1)
    drop_last: bool = True
    # torch DataLoader options that WeSpeaker's trainer would pass through as well:
    # how workers start (default: the platform's, fork on Linux), and seconds to wait
    # for a batch before failing (0: forever), so that a stuck worker stops the run
    multiprocessing_context: Optional[Literal["fork", "spawn", "forkserver"]] = setting(
        None, written_when_set=True)
    timeout: float = setting(0.0, minimum=0, written_when_set=True)

    def _finish(self, where: str) -> None:
        if self.batch_size < MIN_BATCH_SIZE:
            raise ConfigError(f"config key '{where}.batch_size' must be >= {MIN_BATCH_SIZE}, "
                              f"got {self.batch_size}: a BatchNorm after pooling needs at "
                              f"least {MIN_BATCH_SIZE} samples per batch in training")


@_block
class MarginUpdate:
    """``margin_update``: the margin schedule of the head.

    Every key but ``increase_type`` is required, as WeSpeaker's MarginScheduler
    has no defaults for them. ``epoch_iter``, which WeSpeaker's trainer writes into
    its saved config, is accepted and ignored (see :data:`TRAINER_WRITTEN_KEYS`).
    """

    initial_margin: float
    final_margin: float
    # 0 (WeSpeaker's redimnet2_lm.yaml) acts as 1: the schedule starts before step 0
    increase_start_epoch: int = setting(minimum=0)
    fix_start_epoch: int = setting(minimum=0)
    update_margin: bool
    increase_type: Literal["exp", "linear"] = "exp"
    epoch_iter: Optional[int] = setting(None, minimum=0, written_when_set=True)

    def _finish(self, where: str) -> None:
        if self.fix_start_epoch < self.increase_start_epoch:
            raise ConfigError(f"config key '{where}.fix_start_epoch' must be >= "
                              f"increase_start_epoch ({self.increase_start_epoch}), "
                              f"got {self.fix_start_epoch}")


# Keys that WeSpeaker's trainer computes and writes into the saved config.yaml
# (scheduler_args and margin_update): accepted, so that its experiments' configs load, and
# ignored, as its trainer overwrites them too. The lr factor comes from world size x batch
# size, the length from num_epochs, the batches per epoch from the data.
TRAINER_WRITTEN_KEYS = frozenset({"scale_ratio", "num_epochs", "epoch_iter"})


def schedule_settings(block: Any) -> Dict[str, Any]:
    """A scheduler_args or margin_update block as its scheduler's keyword arguments:
    the keys of :data:`TRAINER_WRITTEN_KEYS` left out."""
    return {name: value for name, value in dataclasses.asdict(block).items()
            if name not in TRAINER_WRITTEN_KEYS}


@_block
class _DecayArgs:
    """The ``scheduler_args`` keys that ExponentialDecrease and TriAngular2 share: the two
    rates, the warm-up, and the keys WeSpeaker's trainer writes (:data:`TRAINER_WRITTEN_KEYS`).

    Each block's own keys come after these in the saved ``config.yaml``.
    """

    initial_lr: float = setting(above=0)
    final_lr: float = setting(above=0)
    warm_up_epoch: float = setting(6.0, minimum=0)
    scale_ratio: Optional[float] = setting(None, above=0)
    num_epochs: Optional[int] = setting(None, minimum=1)
    epoch_iter: Optional[int] = setting(None, minimum=0, written_when_set=True)

    @property
    def optimizer_lr(self) -> Optional[float]:
        """The optimizer's lr when ``optimizer_args`` has none (None: it must have one)."""
        return self.initial_lr


@_block
class ExponentialDecreaseArgs(_DecayArgs):
    """``scheduler_args`` of ``scheduler: ExponentialDecrease``: warm-up and decay.

    The optimizer starts at ``initial_lr`` unless ``optimizer_args.lr`` is given.
    """

    warm_from_zero: bool = False


@_block
class TriAngular2Args(_DecayArgs):
    """``scheduler_args`` of ``scheduler: TriAngular2``: cycles between ``final_lr`` and a
    peak that starts at ``initial_lr`` and comes ``reduce_lr_diff_ratio`` times closer to
    ``final_lr`` each cycle of ``cycle_step`` epochs, with ExponentialDecrease's warm-up
    (no ``warm_from_zero``, which WeSpeaker's TriAngular2 does not take).

    The optimizer starts at ``initial_lr`` unless ``optimizer_args.lr`` is given.
    """

    cycle_step: float = setting(2.0, above=0)
    reduce_lr_diff_ratio: float = setting(0.5, minimum=0)


@_block
class WarmupStepDecayArgs:
    """``scheduler_args`` of ``scheduler: WarmupLR_withStepDecay``, in epochs.

    The rate rises linearly to ``optimizer_args.lr`` (required) over ``warmup_step``
    epochs, then is multiplied by ``gamma`` every ``decay_step`` epochs (never when
    ``decay_step <= 0``).
    """

    warmup_step: int = setting(minimum=0)
    decay_step: int
    gamma: float = setting(0.1, minimum=0)
    scale_ratio: Optional[float] = setting(None, above=0)
    num_epochs: Optional[int] = setting(None, minimum=1)
    epoch_iter: Optional[int] = setting(None, minimum=0, written_when_set=True)

    @property
    def optimizer_lr(self) -> Optional[float]:
        """The optimizer's lr when ``optimizer_args`` has none (None: it must have one)."""
        return None


@_block
class WarmupCosineArgs:
    """``scheduler_args`` of ``scheduler: WarmupCosineScheduler``, in epochs.

    The rate rises linearly from 0 to ``max_lr`` over ``warmup_epoch`` epochs, falls
    along a half cosine to ``min_lr`` at epoch ``fix_epoch`` and stays there. It is
    set every step, so ``optimizer_args.lr`` may be left out (``max_lr`` then).
    """

    min_lr: float = setting(minimum=0)
    max_lr: float = setting(above=0)
    warmup_epoch: float = setting(minimum=0)
    fix_epoch: float = setting(minimum=0)
    scale_ratio: Optional[float] = setting(None, above=0)
    num_epochs: Optional[int] = setting(None, minimum=1)
    epoch_iter: Optional[int] = setting(None, minimum=0, written_when_set=True)

    def _finish(self, where: str) -> None:
        if self.min_lr > self.max_lr:
            raise ConfigError(f"config key '{where}.min_lr' must be <= max_lr "
                              f"({self.max_lr}), got {self.min_lr}")

    @property
    def optimizer_lr(self) -> Optional[float]:
        """The optimizer's lr when ``optimizer_args`` has none (None: it must have one)."""
        return self.max_lr


# ``scheduler``: its values (WeSpeaker's names), each with its ``scheduler_args`` block and
# its schedule; the one place a learning-rate schedule is added
SCHEDULERS = {
    "ExponentialDecrease": Choice("wespeaker_py.train.schedulers:ExponentialDecrease",
                                  ExponentialDecreaseArgs),
    "TriAngular2": Choice("wespeaker_py.train.schedulers:TriAngular2", TriAngular2Args),
    "WarmupLR_withStepDecay": Choice("wespeaker_py.train.schedulers:WarmupLRWithStepDecay",
                                     WarmupStepDecayArgs),
    "WarmupCosineScheduler": Choice("wespeaker_py.train.schedulers:WarmupCosineScheduler",
                                    WarmupCosineArgs),
}
SchedulerArgs = args_union(SCHEDULERS)


@_block
class CrossEntropyLossArgs:
    """``loss_args`` of ``loss: CrossEntropyLoss``: the keyword arguments of torch's
    ``CrossEntropyLoss`` that a YAML value can give and the training step takes (a mean
    over the batch; class weights would need a tensor). Checked here, passed on as given.
    """

    ignore_index: int = -100
    label_smoothing: float = setting(0.0, minimum=0, maximum=1)
    reduction: Literal["mean"] = "mean"


# ``loss``: its values (torch's names), each with the block that checks ``loss_args`` and
# the criterion it builds; the one place a loss is added
LOSSES = {"CrossEntropyLoss": Choice("torch.nn:CrossEntropyLoss", CrossEntropyLossArgs)}

# ``optimizer``: its values (torch's names); ``optimizer_args`` is open (OPTIMIZER_KEYS below
# are checked here, the optimizer takes the rest); the one place an optimizer is added
OPTIMIZERS = {"SGD": Choice("torch.optim:SGD"), "Adam": Choice("torch.optim:Adam"),
              "AdamW": Choice("torch.optim:AdamW")}


# optimizer_args is open: torch's optimizer checks the whole mapping; these keys are checked
# here
OPTIMIZER_KEYS = {"lr": float, "momentum": float, "weight_decay": float, "nesterov": bool}


def _check_open_keys(block: Dict[str, Any], types: Dict[str, type], where: str) -> None:
    """Check (and convert, as the schema's own keys are) the keys of an open block we know."""
    for key, kind in types.items():
        if key not in block:
            continue
        value = block[key] = convert_value(kind, block[key], f"{where}.{key}")
        if kind is float and value < 0 or key == "lr" and value <= 0:
            bound = "> 0" if key == "lr" else ">= 0"
            raise ConfigError(f"config key '{where}.{key}' must be {bound}, got {value!r}")


@_block
class ModelConfig:
    """What a trained model needs to be rebuilt: ``model``, ``model_args``, ``dataset_args``.

    Extraction and export read an experiment's ``config.yaml`` into this
    (:func:`~wespeaker_py.config.load_model_config`); :class:`TrainConfig` has
    these keys too.
    """

    model: str
    model_args: Dict[str, Any]
    dataset_args: DatasetArgs = setting(factory=DatasetArgs)


@_block
class TrainConfig(ModelConfig):
    """A whole training config: the keys of WeSpeaker's VoxCeleb v2 configs, and ours.

    Keys left out get the defaults below, which are WeSpeaker's where its code has
    one; the keys WeSpeaker's training reads without a default (``seed``,
    ``num_avg``, ``save_epoch_interval``, ``margin_update``, ...) are required,
    and ``data_type``, ``train_data`` and ``train_label`` when training starts. The
    saved ``exp_dir/config.yaml`` states them all. ``train_data``/``train_label``
    usually come from the command line and are required only when training starts.
    """

    # experiment and run control
    exp_dir: str
    # device ids by local rank in any form parse_gpus reads ("[0,1]", "0,1", 0, [0, 1]);
    # kept as a list ([]: the CPU; None: any visible GPU by local rank)
    gpus: Union[str, List[int], int, None] = None
    num_avg: int = setting(minimum=1)
    enable_amp: bool = False
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    compile: bool = False
    channels_last: bool = False
    grad_clip: Optional[float] = setting(None, minimum=0)
    nonfinite_loss: Literal["raise", "skip"] = "raise"
    seed: int = setting(minimum=0)
    num_epochs: int = setting(minimum=1)
    save_epoch_interval: int = setting(minimum=1)
    log_batch_interval: int = setting(100, minimum=1)
    # ours: minutes between saves of models/interrupted.pt (at a log point; 0: never), the
    # most a run killed outright loses
    save_minute_interval: float = setting(30.0, minimum=0)
    # ours: the run stops after an epoch (its checkpoint saved) that skipped more than this
    # fraction of the utterances (or shards) it read, as a list job does
    max_fail_fraction: float = setting(DEFAULT_MAX_FAIL_FRACTION, minimum=0, maximum=1)
    # data (the paths usually come from the command line)
    # required when training starts (WeSpeaker's recipes pass it on the command line)
    data_type: Optional[Literal["raw", "shard"]] = None
    train_data: Optional[str] = None
    train_label: Optional[str] = None
    reverb_data: Optional[str] = None
    noise_data: Optional[str] = None
    checkpoint: Optional[str] = None
    dataloader_args: DataloaderArgs
    # model and head (model, model_args, dataset_args: see ModelConfig)
    model_init: Optional[str] = None
    # ours: load model_init's head too (it must have exactly this run's shapes); WeSpeaker
    # never does, and neither do we by default. Fine-tuning's later phases set it
    model_init_head: bool = setting(False, written_when_set=True)
    # ours: names (or name prefixes, e.g. "layer1." or "" for all) of parameters of the model
    # with its head (``projection.*``) that do not train; used by fine-tuning
    frozen_params: List[str] = setting(factory=list)
    # checked against the table of heads (HEADS, config/heads.py); saved with the keys given
    projection_args: Dict[str, Any]
    margin_scheduler: Literal["MarginScheduler"] = "MarginScheduler"
    margin_update: MarginUpdate
    # the names of LOSSES, OPTIMIZERS and SCHEDULERS (these annotations are evaluated when a
    # config is checked, so they follow the tables)
    loss: one_of(LOSSES) = "CrossEntropyLoss"
    loss_args: Dict[str, Any] = setting(factory=dict)
    # optimisation
    optimizer: one_of(OPTIMIZERS)
    optimizer_args: Dict[str, Any] = setting(factory=dict)
    scheduler: one_of(SCHEDULERS)
    scheduler_args: args_union(SCHEDULERS) = setting(
        variants=("scheduler", ArgsBlocks(SCHEDULERS)))
    do_lm: bool = False

    def _finish(self, where: str) -> None:
        self.gpus = parse_gpus(self.gpus)
        checked_loss = parse_block(LOSSES[self.loss].args, self.loss_args, "loss_args")
        self.loss_args = {key: getattr(checked_loss, key) for key in self.loss_args}
        self.projection_args = check_projection_args(self.projection_args, read_text=True)
        _check_open_keys(self.optimizer_args, OPTIMIZER_KEYS, "optimizer_args")
        if "lr" not in self.optimizer_args and self.scheduler_args.optimizer_lr is None:
            raise ConfigError(f"config key 'optimizer_args.lr' is required with scheduler "
                              f"{self.scheduler} (the rate it warms up to and decays from)")

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainConfig":
        """Check a config mapping and fill its defaults."""
        return parse_block(cls, data)
