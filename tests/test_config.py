"""The typed config: loading, dotted overrides, one-line errors naming the key, saving."""
import dataclasses
import glob
import os
import re
import stat

import pytest
import yaml

from train_helpers import CPU_WORLD
from wespeaker_py.config import (ConfigError, DatasetArgs, ModelConfig, TrainConfig,
                                 apply_override, as_dataset_args, load_config,
                                 load_model_config, parse_override_args, read_yaml,
                                 save_config)
from wespeaker_py.train.plan import resolve

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESNET34 = os.path.join(REPO_ROOT, "conf", "resnet34.yaml")
WAVLM = os.path.join(REPO_ROOT, "conf", "ecapa_tdnn_WavLM_frozen.yaml")
SHIPPED = sorted(glob.glob(os.path.join(REPO_ROOT, "conf", "*.yaml"))
                 + glob.glob(os.path.join(REPO_ROOT, "examples", "*", "conf", "*.yaml"))
                 + glob.glob(os.path.join(REPO_ROOT, "examples", "*", "*", "conf", "*.yaml")))


def write(tmp_path, config, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def test_every_shipped_config_loads_and_reloads_equal_after_saving(tmp_path):
    assert len(SHIPPED) >= 60  # conf/ and every example's conf/
    for path in SHIPPED:
        config = load_config(path)
        saved = str(tmp_path / "saved.yaml")
        save_config(config, saved)
        assert load_config(saved) == config, path


def test_loading_types_the_blocks_and_fills_defaults():
    config = load_config(RESNET34)
    assert isinstance(config, TrainConfig) and isinstance(config.dataset_args, DatasetArgs)
    assert config.dataset_args.fbank_args.frame_shift == 10.0  # int in the file, float here
    assert isinstance(config.dataset_args.fbank_args.frame_shift, float)
    assert config.nonfinite_loss == "raise" and config.grad_clip is None
    assert config.dataset_args.speed_perturb_mode == "random"
    assert config.dataset_args.frame_shift_ms == 10.0
    assert config.dataset_args.s3prl_args is None  # the unused front-end's block stays out
    # blocks are plain dataclasses: attributes only, no second (mapping) way in
    assert config.seed == 42
    with pytest.raises(TypeError):
        config["seed"]


def test_s3prl_frame_shift_defaults_to_wavlm_frames():
    # WavLM gives one frame per 320 samples: 20 ms at 16 kHz
    args = as_dataset_args({"frontend": "s3prl", "s3prl_args": {
        "upstream_args": {"name": "wavlm_large"}}})
    assert (args.frame_shift_ms, args.frame_length_ms) == (20.0, 25.0)
    assert args.fbank_args is None
    assert load_config(WAVLM).dataset_args.frame_shift_ms == 20.0
    with pytest.raises(ConfigError, match="'dataset_args.s3prl_args' is required when"):
        as_dataset_args({"frontend": "s3prl"})


def test_a_fixed_rate_front_end_refuses_another_resample_rate():
    # like whisper_encoder's (tests/test_whisper.py): each front-end of FIXED_SAMPLE_RATES
    args = {"frontend": "w2vbert", "cmvn": False, "w2vbert_args": {}}
    assert as_dataset_args(dict(args, resample_rate=16000)).resample_rate == 16000
    with pytest.raises(ConfigError, match=r"'dataset_args.resample_rate' must be 16000 with "
                                          r"dataset_args.frontend w2vbert .* got 8000"):
        as_dataset_args(dict(args, resample_rate=8000))


def test_wavlm_runs_at_another_rate_as_in_wespeaker_but_fine_tunes_at_its_own():
    from wespeaker_py.finetune.config import chosen_rate
    args = as_dataset_args({"frontend": "s3prl", "resample_rate": 8000,
                            "s3prl_args": {"upstream_args": {"name": "wavlm_large"}}})
    assert args.resample_rate == 8000
    assert chosen_rate("s3prl", None) == 16000


def test_the_block_of_another_front_end_is_checked_and_kept(tmp_path):
    config = read_yaml(RESNET34)
    config["dataset_args"]["whisper_encoder_args"] = {"n_mels": 128}
    loaded = load_config(write(tmp_path, config))
    assert loaded.dataset_args.frontend == "fbank"
    assert loaded.dataset_args.whisper_encoder_args.n_mels == 128
    save_config(loaded, str(tmp_path / "saved.yaml"))
    assert load_config(str(tmp_path / "saved.yaml")) == loaded
    config["dataset_args"]["whisper_encoder_args"] = {"n_mels": 128, "anything": [1, 2]}
    with pytest.raises(ConfigError, match="'dataset_args.whisper_encoder_args.anything'"):
        load_config(write(tmp_path, config))


def test_parse_override_args_accepts_both_forms():
    pairs = parse_override_args(["--model_args.embed_dim", "192", "--do_lm=True",
                                 "--exp_dir", "exp/a"])
    assert pairs == [("model_args.embed_dim", "192"), ("do_lm", "True"), ("exp_dir", "exp/a")]


@pytest.mark.parametrize("argv, message", [
    (["model_args.embed_dim", "192"], "expected an override"),
    (["--num_epochs"], "has no value"),
    (["--num_epochs", "--seed", "1"], "--num_epochs has no value"),
    (["--model_args..embed_dim", "1"], "malformed override key"),
])
def test_parse_override_args_errors(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_override_args(argv)


def test_overrides_are_typed_by_yaml_and_schema():
    config = load_config(RESNET34, [("model_args.embed_dim", "192"),
                                    ("dataset_args.aug_prob", "0.3"),
                                    ("dataset_args.speed_perturb", "False"),
                                    ("exp_dir", "2024"),
                                    ("train_data", "007"),
                                    ("gpus", "[0,1,2]"),
                                    ("model_init", "null"),
                                    ("scheduler_args.warm_up_epoch", "2"),
                                    ("dataset_args.spec_aug_args.max_t", "20")])
    assert config.model_args["embed_dim"] == 192
    assert config.dataset_args.aug_prob == 0.3
    assert config.dataset_args.speed_perturb is False
    assert config.exp_dir == "2024"  # the schema wants a string: kept as typed
    assert config.train_data == "007"
    assert config.gpus == [0, 1, 2]
    assert config.model_init is None
    assert config.scheduler_args.warm_up_epoch == 2.0
    assert isinstance(config.scheduler_args.warm_up_epoch, float)
    assert config.dataset_args.spec_aug_args.max_t == 20
    # untouched values survive
    assert config.dataset_args.num_frms == 200
    assert config.optimizer_args["nesterov"] is True


def test_float_keys_take_exponent_notation_yaml_reads_as_a_string(tmp_path):
    """YAML 1.1 reads 1e-3 and 5.0e5 (no dot, or an unsigned exponent) as strings."""
    text = open(RESNET34).read().replace("final_lr: 0.00005", "final_lr: 5e-5")
    text = text.replace("weight_decay: 0.0001", "weight_decay: 1e-4")
    assert "final_lr: 5e-5" in text and "weight_decay: 1e-4" in text
    path = tmp_path / "exp_notation.yaml"
    path.write_text(text)
    assert read_yaml(str(path))["scheduler_args"]["final_lr"] == "5e-5"
    config = load_config(str(path))
    assert config.scheduler_args.final_lr == 5e-5
    assert config.optimizer_args["weight_decay"] == 1e-4
    config = load_config(RESNET34, [("scheduler_args.initial_lr", "1e-3"),
                                    ("scheduler_args.final_lr", "5.0e5"),
                                    ("optimizer_args.weight_decay", "1e-4"),
                                    ("projection_args.scale", "3e1")])
    assert config.scheduler_args.initial_lr == 1e-3
    assert config.scheduler_args.final_lr == 5.0e5
    assert config.optimizer_args["weight_decay"] == 1e-4
    assert config.projection_args["scale"] == 30.0
    # saved as numbers: they read back as floats
    saved = str(tmp_path / "saved.yaml")
    save_config(config, saved)
    assert load_config(saved) == config


@pytest.mark.parametrize("key, value, message", [
    ("scheduler_args.initial_lr", "nan", "'scheduler_args.initial_lr' must be float, got str"),
    ("scheduler_args.initial_lr", "1e-3e", "'scheduler_args.initial_lr' must be float, got str"),
    ("optimizer_args.weight_decay", "inf", "'optimizer_args.weight_decay' holds float"),
    ("optimizer_args.momentum", "1e-3x", "'optimizer_args.momentum' holds float"),
    ("optimizer_args.lr", "1e-3x", "'optimizer_args.lr' must be float, got str"),
])
def test_a_float_key_rejects_text_that_is_no_finite_number(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(RESNET34, [(key, value)])


def test_override_creates_missing_sections_and_open_dict_keys():
    config = {"model_args": {"feat_dim": 80}}
    apply_override(config, "dataset_args.filter_args.min_num_frames", "50")
    apply_override(config, "model_args.two_emb_layer", "true")
    assert config["dataset_args"] == {"filter_args": {"min_num_frames": 50}}
    assert config["model_args"] == {"feat_dim": 80, "two_emb_layer": True}


@pytest.mark.parametrize("key, value, message", [
    ("dataset_args.num_frmz", "200", "unknown config key 'dataset_args.num_frmz'"),
    ("modle", "ResNet34", "unknown config key 'modle'"),
    ("dataset_args.filter_args.min_frames", "1",
     "unknown config key 'dataset_args.filter_args.min_frames'"),
    ("num_epochs", "ten", "config key 'num_epochs' must be int"),
    ("num_epochs", "1.5", "config key 'num_epochs' must be int"),
    ("enable_amp", "2", r"config key 'enable_amp' must be bool \(true/false, yes/no"),
    ("optimizer", "RMSprop", r"config key 'optimizer' must be one of \['SGD', 'Adam', 'AdamW'\]"),
    ("model_args.embed_dim", "big",
     "config key 'model_args.embed_dim' holds int 256; the override gives str 'big'"),
    ("dataset_args", "3", "config key 'dataset_args' must be dict"),
    ("dataset_args.fbank_args.num_mel_bins", "null",
     "config key 'dataset_args.fbank_args.num_mel_bins' must be int, got null"),
    ("projection_args.scale", "big", "config key 'projection_args.scale' holds float"),
    ("optimizer_args.nesterov", "2", "config key 'optimizer_args.nesterov' must be bool"),
])
def test_bad_overrides_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(RESNET34, [(key, value)])


@pytest.mark.parametrize("key, value, message", [
    ("num_epochs", "0", "'num_epochs' must be >= 1, got 0"),
    ("num_epochs", "-1", "'num_epochs' must be >= 1, got -1"),
    ("dataloader_args.batch_size", "0", "'dataloader_args.batch_size' must be >= 1"),
    ("dataloader_args.num_workers", "-1", "'dataloader_args.num_workers' must be >= 0"),
    ("dataloader_args.prefetch_factor", "0", "'dataloader_args.prefetch_factor' must be >= 1"),
    ("dataloader_args.timeout", "-1", "'dataloader_args.timeout' must be >= 0"),
    ("dataloader_args.multiprocessing_context", "spork",
     r"'dataloader_args.multiprocessing_context' must be one of \['fork', 'spawn', "
     r"'forkserver'\], got 'spork'"),
    ("dataset_args.aug_prob", "1.5", r"'dataset_args.aug_prob' must be <= 1, got 1.5"),
    ("dataset_args.aug_prob", "-0.1", "'dataset_args.aug_prob' must be >= 0"),
    ("dataset_args.num_frms", "0", "'dataset_args.num_frms' must be >= 1"),
    ("dataset_args.resample_rate", "0", "'dataset_args.resample_rate' must be >= 1"),
    ("dataset_args.shuffle_args.shuffle_size", "0",
     "'dataset_args.shuffle_args.shuffle_size' must be >= 1"),
    ("dataset_args.filter_args.max_num_frames", "50",
     r"'dataset_args.filter_args.max_num_frames' must be >= min_num_frames \(100\), got 50"),
    ("dataset_args.fbank_args.frame_shift", "0",
     "'dataset_args.fbank_args.frame_shift' must be > 0"),
    ("dataset_args.spec_aug_args.prob", "2", "'dataset_args.spec_aug_args.prob' must be <= 1"),
    ("scheduler_args.initial_lr", "0", "'scheduler_args.initial_lr' must be > 0, got 0.0"),
    ("scheduler_args.final_lr", "-0.00001", "'scheduler_args.final_lr' must be > 0"),
    ("scheduler_args.warm_up_epoch", "-1", "'scheduler_args.warm_up_epoch' must be >= 0"),
    ("optimizer_args.lr", "0.0", "'optimizer_args.lr' must be > 0"),
    ("optimizer_args.weight_decay", "-0.1", "'optimizer_args.weight_decay' must be >= 0"),
    ("projection_args.scale", "0.0", "'projection_args.scale' must be > 0"),
    ("log_batch_interval", "0", "'log_batch_interval' must be >= 1"),
    ("save_epoch_interval", "0", "'save_epoch_interval' must be >= 1"),
    ("num_avg", "0", "'num_avg' must be >= 1"),
    ("seed", "-3", "'seed' must be >= 0"),
    ("grad_clip", "-1", "'grad_clip' must be >= 0"),
    ("margin_update.fix_start_epoch", "10",
     r"'margin_update.fix_start_epoch' must be >= increase_start_epoch \(20\)"),
])
def test_out_of_range_values_are_one_line_errors_naming_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(RESNET34, [(key, value)])
    assert "\n" not in str(err.value)


def test_unknown_and_mistyped_keys_in_the_file_name_the_key(tmp_path):
    config = read_yaml(RESNET34)
    config["dataset_args"]["shuffle_args"]["shuffle_sise"] = 10
    with pytest.raises(ConfigError, match="'dataset_args.shuffle_args.shuffle_sise'"):
        load_config(write(tmp_path, config))
    config = read_yaml(RESNET34)
    config["scheduler_args"]["final_lr"] = "five"
    with pytest.raises(ConfigError, match="'scheduler_args.final_lr' must be float, got str"):
        load_config(write(tmp_path, config))
    config = read_yaml(RESNET34)
    config["optimizer_args"]["weight_decay"] = "1e-4x"
    with pytest.raises(ConfigError, match="'optimizer_args.weight_decay' must be float, got str"):
        load_config(write(tmp_path, config))
    config = read_yaml(RESNET34)
    config["projection_args"]["project_type"] = 3
    with pytest.raises(ConfigError, match="'projection_args.project_type' must be str"):
        load_config(write(tmp_path, config))


def test_missing_required_key_is_named(tmp_path):
    config = read_yaml(RESNET34)
    del config["model"]
    with pytest.raises(ConfigError, match="config key 'model' is required"):
        load_config(write(tmp_path, config))
    config = read_yaml(RESNET34)
    del config["scheduler_args"]["initial_lr"]
    with pytest.raises(ConfigError, match="config key 'scheduler_args.initial_lr' is required"):
        load_config(write(tmp_path, config))
    config = read_yaml(RESNET34)
    del config["dataloader_args"]["batch_size"]
    with pytest.raises(ConfigError, match="config key 'dataloader_args.batch_size' is required"):
        load_config(write(tmp_path, config))


@pytest.mark.parametrize("key", ["seed", "num_avg", "save_epoch_interval", "margin_update",
                                 "margin_update.final_margin",
                                 "margin_update.increase_start_epoch",
                                 "margin_update.update_margin"])
def test_keys_wespeaker_reads_without_default_are_required(tmp_path, key):
    # WeSpeaker's train.py reads them as configs[key] (a KeyError when absent):
    # no silent default of ours may stand in for them
    config = read_yaml(RESNET34)
    block = config
    *parents, name = key.split(".")
    for parent in parents:
        block = block[parent]
    del block[name]
    with pytest.raises(ConfigError, match=f"config key '{key}' is required"):
        load_config(write(tmp_path, config))


def test_left_out_keys_take_wespeaker_defaults(tmp_path):
    config = read_yaml(RESNET34)
    del config["dataset_args"]["fbank_args"]["dither"]
    del config["margin_update"]["increase_type"]
    loaded = load_config(write(tmp_path, config))
    assert loaded.dataset_args.fbank_args.dither == 1.0  # compute_fbank's default
    assert loaded.margin_update.increase_type == "exp"
    assert loaded.dataset_args.spec_aug_args.batch_mask is False  # ours; see SpecAugArgs
    # data_type comes from the command line in WeSpeaker's recipes: required at training
    assert loaded.data_type is None
    path = tmp_path / "utt2spk"
    path.write_text("utt1 spk1\n")
    loaded = dataclasses.replace(loaded, exp_dir=str(tmp_path / "exp"), train_data="unused",
                                 train_label=str(path))
    with pytest.raises(ConfigError, match="'data_type' must be set .*--data_type"):
        resolve(loaded, CPU_WORLD)


def test_yaml_errors_name_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("seed: 1\nnum_epochs: [1, 2\nmodel: x\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: invalid YAML"):
        read_yaml(str(path))
    path.write_text("seed: 1\nseed: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'seed'"):
        read_yaml(str(path))
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(str(tmp_path / "absent.yaml"))


def test_saved_config_states_the_defaults_and_is_written_atomically(tmp_path):
    source = read_yaml(RESNET34)
    del source["nonfinite_loss"], source["dataset_args"]["spec_aug_args"]
    config = load_config(write(tmp_path, source, "short.yaml"), [("num_epochs", "3")])
    saved = tmp_path / "exp" / "config.yaml"
    save_config(config, str(saved))
    written = read_yaml(str(saved))
    assert written["nonfinite_loss"] == "raise" and written["grad_clip"] is None
    # batch_mask (ours) is left out at its default: WeSpeaker's spec_aug() takes no such key
    assert written["dataset_args"]["spec_aug_args"] == {
        "num_t_mask": 1, "num_f_mask": 1, "max_t": 10, "max_f": 8, "prob": 0.6}
    assert written["num_epochs"] == 3
    assert list(written)[:3] == ["model", "model_args", "dataset_args"]
    assert "s3prl_args" not in written["dataset_args"]
    # DataLoader options of ours are written once set, as WeSpeaker's trainer passes
    # dataloader_args whole to the DataLoader
    assert sorted(written["dataloader_args"]) == sorted(source["dataloader_args"])
    assert load_config(str(saved)) == config
    loader_options = [("dataloader_args.timeout", "600"),
                      ("dataloader_args.multiprocessing_context", "forkserver")]
    save_config(load_config(RESNET34, loader_options), str(saved))
    written = read_yaml(str(saved))["dataloader_args"]
    assert written["timeout"] == 600 and written["multiprocessing_context"] == "forkserver"
    # nothing half-written is left beside it
    assert os.listdir(saved.parent) == ["config.yaml"]
    assert stat.S_ISREG(os.stat(saved).st_mode)


def test_a_mapping_is_checked_typed_and_filled_as_a_file_is():
    source = read_yaml(RESNET34)
    source["gpus"] = "0,1"
    source["dataloader_args"]["batch_size"] = 64
    config = TrainConfig.from_dict(source)
    assert config.gpus == [0, 1] and config.dataloader_args.batch_size == 64
    assert config.dataloader_args.timeout == 0.0            # filled in: not in the mapping
    assert config.dataset_args.fbank_args.frame_shift == 10.0
    assert isinstance(config.dataset_args.fbank_args.frame_shift, float)   # int given
    assert config.dataset_args.speed_perturb_mode == "random"   # filled in
    assert config.margin_update.final_margin == 0.2 and config.margin_update.epoch_iter is None
    source["dataloader_args"]["batch_size"] = 0
    with pytest.raises(ConfigError, match="'dataloader_args.batch_size' must be >= 1"):
        TrainConfig.from_dict(source)


def test_model_config_reads_only_what_inference_needs(tmp_path):
    source = {"model": "ECAPA_TDNN_GLOB_c512", "model_args": {"feat_dim": 80, "embed_dim": 192},
              "dataset_args": {"resample_rate": 8000}, "seed": 1, "optimizer": "not checked"}
    model_config = load_model_config(write(tmp_path, source))
    assert isinstance(model_config, ModelConfig) and model_config.model_args["embed_dim"] == 192
    assert model_config.dataset_args.resample_rate == 8000
    assert model_config.dataset_args.fbank_args.num_mel_bins == 80
    source["dataset_args"]["fbank_args"] = {"num_mel_bin": 40}
    path = write(tmp_path, source)
    with pytest.raises(ConfigError, match=re.escape(
            f"{path}: unknown config key 'dataset_args.fbank_args.num_mel_bin'")):
        load_model_config(path)
    del source["model_args"]
    with pytest.raises(ConfigError, match=re.escape(f"{path}: config key 'model_args' is "
                                                    f"required")):
        load_model_config(write(tmp_path, source))


def test_model_config_refuses_a_misspelt_top_level_key_naming_file_and_closest_key(tmp_path):
    source = {"model": "ECAPA_TDNN_GLOB_c512", "model_args": {"feat_dim": 80, "embed_dim": 192},
              "dataset_arg": {"resample_rate": 8000}}
    path = write(tmp_path, source)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: unknown config key 'dataset_arg'; "
                                                    f"did you mean 'dataset_args'?")):
        load_model_config(path)
    # the same file spelt right gives the model its 8 kHz settings
    source["dataset_args"] = source.pop("dataset_arg")
    assert load_model_config(write(tmp_path, source)).dataset_args.resample_rate == 8000


def test_model_config_loads_every_config_training_saves(tmp_path):
    saved = str(tmp_path / "saved.yaml")
    for path in SHIPPED:
        config = load_config(path)
        save_config(config, saved)
        assert load_model_config(saved).model_args == config.model_args, path


# The keyword arguments of WeSpeaker's front-end constructors, to which its trainer passes
# dataset_args.<frontend>_args whole (and sample_rate itself): a saved config.yaml must
# hold no other key in these blocks, or WeSpeaker's train.py and extract.py stop on it.
WESPEAKER_FRONTEND_KEYWORDS = {
    "s3prl": {"upstream_args", "download_dir", "multilayer_feature", "layer", "frozen",
              "frame_shift", "frame_length"},
    "w2vbert": {"model_name", "download_dir", "frozen", "use_bnb", "bnb_config_args",
                "use_lora", "lora_config_args", "model_config_file"},
    "whisper_encoder": {"frozen", "n_mels", "num_blocks", "output_size", "n_head", "layer_st",
                        "layer_ed", "model_path"},
}


@pytest.mark.parametrize("frontend", sorted(WESPEAKER_FRONTEND_KEYWORDS))
def test_a_saved_frontend_block_holds_only_wespeakers_constructor_keywords(frontend):
    from wespeaker_py.config.loading import config_to_dict
    block = {"s3prl": {"upstream_args": {"name": "wavlm_large"}}}.get(frontend, {})
    args = as_dataset_args({"frontend": frontend, "cmvn": frontend != "w2vbert",
                            f"{frontend}_args": block})
    saved = config_to_dict(args)[f"{frontend}_args"]
    assert set(saved) <= WESPEAKER_FRONTEND_KEYWORDS[frontend]
    assert "sample_rate" not in saved
    # a key of ours set away from its default is written, and read back (Whisper's one
    # key of ours, sample_rate, admits only its default)
    if frontend == "whisper_encoder":
        return
    ours = {"s3prl": ("lr_scale", 0.5), "w2vbert": ("frame_shift", 20.0)}[frontend]
    changed = as_dataset_args({"frontend": frontend, "cmvn": frontend != "w2vbert",
                               f"{frontend}_args": dict(block, **{ours[0]: ours[1]})})
    saved = config_to_dict(changed)[f"{frontend}_args"]
    assert saved[ours[0]] == ours[1]
    assert getattr(as_dataset_args(config_to_dict(changed)).frontend_args, ours[0]) == ours[1]


@pytest.mark.parametrize("key, hint", [
    ("dataset_args.num_frmz", "did you mean 'num_frms'?"),
    ("scheduler_arg.warm_up_epoch", "did you mean 'scheduler_args'?"),
    ("dataset_args.fbank_arg.num_mel_bins", "did you mean 'fbank_args'?"),
])
def test_an_unknown_key_is_named_whole_with_the_closest_key_to_its_unknown_part(key, hint):
    with pytest.raises(ConfigError, match=re.escape(f"unknown config key '{key}'; {hint}")):
        apply_override({}, key, "3")


@pytest.mark.parametrize("key", [True, 1, None])
def test_a_key_that_is_no_text_is_named_as_unknown(key):
    with pytest.raises(ConfigError, match=re.escape(f"unknown config key '{key}' (known keys")):
        TrainConfig.from_dict({key: 1})
