"""The experiment config: one typed schema for loading, overrides, checking and saving.

    from wespeaker_py.config import load_config, save_config
    config = load_config("conf/resnet34.yaml", [("model_args.embed_dim", "192")])
    config.dataset_args.fbank_args.num_mel_bins   # typed, defaults filled in
"""
from wespeaker_py.config.fields import ConfigError
from wespeaker_py.config.gpus import parse_gpus
from wespeaker_py.config.loading import (apply_override, as_dataset_args, config_to_dict,
                                         load_config, load_model_config, model_config_from,
                                         parse_override_args, read_yaml, save_config)
from wespeaker_py.config.schema import (CmvnArgs, DataloaderArgs, DatasetArgs,
                                        ExponentialDecreaseArgs, FbankArgs, FilterArgs,
                                        MarginUpdate, ModelConfig, S3prlArgs, SchedulerArgs,
                                        ShuffleArgs, SpecAugArgs, TfmelArgs, TrainConfig,
                                        TriAngular2Args, UpstreamArgs, W2vbertArgs,
                                        WarmupCosineArgs, WarmupStepDecayArgs,
                                        WhisperEncoderArgs)

__all__ = ["CmvnArgs", "ConfigError", "DataloaderArgs", "DatasetArgs",
           "ExponentialDecreaseArgs", "FbankArgs", "FilterArgs", "MarginUpdate", "ModelConfig",
           "S3prlArgs", "SchedulerArgs", "ShuffleArgs", "SpecAugArgs", "TfmelArgs",
           "TrainConfig", "TriAngular2Args", "UpstreamArgs", "W2vbertArgs", "WarmupCosineArgs",
           "WarmupStepDecayArgs", "WhisperEncoderArgs", "apply_override", "as_dataset_args",
           "config_to_dict", "load_config", "load_model_config", "model_config_from",
           "parse_gpus", "parse_override_args", "read_yaml", "save_config"]
