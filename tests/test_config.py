"""Config loading, dotted overrides, validation errors and saving."""
import os
import stat

import pytest
import yaml

from wespeaker_py.utils.config import (ConfigError, apply_override, load_config,
                                       parse_override_args, read_yaml, require_keys,
                                       save_config, validate_config)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESNET34 = os.path.join(REPO_ROOT, "conf", "resnet34.yaml")


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
                                    ("gpus", "[0,1,2]"),
                                    ("model_init", "null"),
                                    ("dataset_args.spec_aug_args.max_t", "20")])
    assert config["model_args"]["embed_dim"] == 192
    assert config["dataset_args"]["aug_prob"] == 0.3
    assert config["dataset_args"]["speed_perturb"] is False
    assert config["exp_dir"] == "2024"  # the schema wants a string: kept as typed
    assert config["gpus"] == [0, 1, 2]
    assert config["model_init"] is None
    assert config["dataset_args"]["spec_aug_args"]["max_t"] == 20
    # untouched values survive
    assert config["dataset_args"]["num_frms"] == 200
    assert config["optimizer_args"]["nesterov"] is True


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
    ("enable_amp", "1", "config key 'enable_amp' must be bool"),
    ("optimizer", "RMSprop", r"config key 'optimizer' must be one of \['SGD', 'Adam', 'AdamW'\]"),
    ("model_args.embed_dim", "big",
     "config key 'model_args.embed_dim' holds int 256; the override gives str 'big'"),
    ("dataset_args", "3", "config key 'dataset_args' must be dict"),
])
def test_bad_overrides_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(RESNET34, [(key, value)])


def test_unknown_and_mistyped_keys_in_the_file_name_the_key(tmp_path):
    config = read_yaml(RESNET34)
    config["dataset_args"]["shuffle_args"]["shuffle_sise"] = 10
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="'dataset_args.shuffle_args.shuffle_sise'"):
        load_config(str(path))
    config = read_yaml(RESNET34)
    config["scheduler_args"]["final_lr"] = "5e-05"  # YAML 1.1 reads this as a string
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="'scheduler_args.final_lr' must be float, got str"):
        load_config(str(path))


def test_missing_required_key_is_named(tmp_path):
    config = read_yaml(RESNET34)
    del config["model"]
    path = tmp_path / "no_model.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="config key 'model' is required"):
        load_config(str(path))


def test_require_keys_names_the_command_line_flag():
    config = load_config(RESNET34)
    with pytest.raises(ConfigError, match="'train_data' must be set .*--train_data"):
        require_keys(config, ["exp_dir", "train_data"])
    require_keys(config, ["exp_dir", "dataset_args.num_frms"])


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


def test_defaults_are_filled_and_saved_config_reloads_identically(tmp_path):
    config = load_config(RESNET34, [("num_epochs", "3")])
    assert config["nonfinite_loss"] == "raise" and config["grad_clip"] is None
    saved = tmp_path / "exp" / "config.yaml"
    save_config(config, str(saved))
    assert load_config(str(saved)) == config
    # the keys keep the file's order (exp_dir first, as in the source YAML)
    assert next(iter(read_yaml(str(saved)))) == "exp_dir"
    # nothing half-written is left beside it
    assert os.listdir(saved.parent) == ["config.yaml"]
    assert stat.S_ISREG(os.stat(saved).st_mode)


def test_validate_config_accepts_every_shipped_config():
    for name in sorted(os.listdir(os.path.join(REPO_ROOT, "conf"))):
        validate_config(load_config(os.path.join(REPO_ROOT, "conf", name)))
