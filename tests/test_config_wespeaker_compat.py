"""Configs WeSpeaker writes or ships load here, and configs saved here load in WeSpeaker:
repeated keys, the keys its trainer writes into config.yaml, ``gpus`` in each form its
recipes pass, ``loss_args`` checked by name, TFMel's band below the Nyquist frequency, whole
numbers saved as ints (WeSpeaker slices with its chunk length)."""
import glob
import inspect
import logging
import os
import re

import pytest
import torch
import yaml

from train_helpers import CPU_WORLD, TINY_CONFIG
from wespeaker_py.config import (ConfigError, TrainConfig, as_dataset_args, config_to_dict,
                                 load_config, load_model_config, parse_gpus, read_yaml,
                                 save_config)
from wespeaker_py.config.schema import LOSSES
from wespeaker_py.models.projections import get_projection
from wespeaker_py.train.builder import build_lr_scheduler, build_margin_scheduler
from wespeaker_py.train.distributed import choose_device, init_distributed
from wespeaker_py.train.plan import resolve

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESNET34 = os.path.join(REPO_ROOT, "conf", "resnet34.yaml")


def _write(tmp_path, config, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


# ---- 1: spec_aug_args is passed whole to WeSpeaker's spec_aug() -----------------------------

SPEC_AUG_KEYWORDS = {"num_t_mask", "num_f_mask", "max_t", "max_f", "prob"}  # its signature


def test_saved_spec_aug_args_hold_only_wespeakers_keywords_unless_batch_mask_is_set(tmp_path):
    saved = str(tmp_path / "saved.yaml")
    save_config(load_config(RESNET34, [("dataset_args.spec_aug", "true")]), saved)
    assert set(read_yaml(saved)["dataset_args"]["spec_aug_args"]) == SPEC_AUG_KEYWORDS
    assert load_config(saved).dataset_args.spec_aug_args.batch_mask is False
    # set, it is written and read back
    save_config(load_config(RESNET34, [("dataset_args.spec_aug_args.batch_mask", "true")]),
                saved)
    assert read_yaml(saved)["dataset_args"]["spec_aug_args"]["batch_mask"] is True
    assert load_config(saved).dataset_args.spec_aug_args.batch_mask is True


# ---- 6: a key repeated with the same value (WeSpeaker's redimnet.yaml) ----------------------

def test_a_key_repeated_with_the_same_value_loads_with_a_warning_naming_file_and_line(
        tmp_path, caplog):
    text = open(RESNET34).read().replace("  update_margin: True\n",
                                         "  update_margin: True\n  update_margin: true\n")
    assert text.count("update_margin") == 2
    path = tmp_path / "redimnet_like.yaml"
    path.write_text(text)
    line = text.splitlines().index("  update_margin: true") + 1
    with caplog.at_level(logging.WARNING):
        config = load_config(str(path))
    assert config.margin_update.update_margin is True
    assert f"redimnet_like.yaml:{line}: key 'update_margin' repeats line {line - 1}" in caplog.text
    # another value is still refused, naming both lines
    path.write_text(text.replace("  update_margin: true\n", "  update_margin: false\n"))
    with pytest.raises(ConfigError, match=rf"redimnet_like.yaml:{line}: invalid YAML: found "
                                          rf"duplicate key 'update_margin' with another value "
                                          rf"than on line {line - 1}"):
        read_yaml(str(path))


def test_repeated_blocks_compare_by_value(tmp_path):
    path = tmp_path / "blocks.yaml"
    path.write_text("a: {x: 1, y: [1, 2]}\nb: 2\na: {x: 1, y: [1, 2]}\n")
    assert read_yaml(str(path)) == {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    path.write_text("a: {x: 1, y: [1, 2]}\na: {x: 1, y: [1, 3]}\n")
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        read_yaml(str(path))


# ---- 8: the keys WeSpeaker's trainer writes into exp_dir/config.yaml ------------------------

def _wespeaker_saved(tmp_path):
    """TINY_CONFIG as WeSpeaker's train.py saves it (its yaml.dump of the run's configs)."""
    config = {key: (dict(value) if isinstance(value, dict) else value)
              for key, value in TINY_CONFIG.items()}
    config.update(exp_dir=str(tmp_path / "exp"), gpus=[0, 1], train_data="unused")
    config["model_args"]["feat_dim"] = 24
    config["projection_args"].update(embed_dim=16, num_class=12, do_lm=False)
    config["optimizer_args"]["lr"] = config["scheduler_args"]["initial_lr"]
    config["scheduler_args"].update(num_epochs=4, epoch_iter=1000, scale_ratio=2.0)
    config["margin_update"]["epoch_iter"] = 1000
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("".join(f"u{index} s{index % 4}\n" for index in range(64)))
    config["train_label"] = str(utt2spk)
    path = tmp_path / "wespeaker_config.yaml"
    path.write_text(yaml.dump(config))  # WeSpeaker's own writer, not safe_dump
    return str(path)


def test_a_config_saved_by_wespekers_trainer_loads_and_its_epoch_iter_is_ignored(tmp_path):
    config = load_config(_wespeaker_saved(tmp_path), [("gpus", "[]")])
    assert config.scheduler_args.epoch_iter == 1000 and config.margin_update.epoch_iter == 1000
    plan = resolve(config, CPU_WORLD)
    assert plan.epoch_iter == 64 // 8  # from the data, as WeSpeaker's trainer recomputes it
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], **plan.optimizer_args)
    scheduler = build_lr_scheduler(plan, optimizer)
    assert scheduler.max_iter == 4 * 8 and scheduler.scale_ratio == 8 / 64
    head = get_projection(plan.projection_args, embed_dim=16, num_class=plan.num_classes)
    margins = build_margin_scheduler(plan, head)
    assert margins.increase_start_iter == 8  # epoch 2 of 8 batches, not of 1000
    # written back only when set: a config of ours does not grow the key
    saved = str(tmp_path / "saved.yaml")
    save_config(load_config(RESNET34), saved)
    written = read_yaml(saved)
    assert "epoch_iter" not in written["scheduler_args"]
    assert "epoch_iter" not in written["margin_update"]


def test_a_config_saved_by_wespeakers_trainer_loads_for_inference(tmp_path):
    """Every top-level key WeSpeaker's train.py writes (its run.sh flags: exp_dir, gpus as
    a tuple, train_data, ...) is accepted where an unknown one is refused."""
    saved = read_yaml(_wespeaker_saved(tmp_path))
    saved.update(gpus=(0, 1), model_init=None, checkpoint=None, do_lm=False)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.dump(saved))  # WeSpeaker's own writer: the tuple is tagged
    config = load_model_config(str(path))
    assert config.model == TINY_CONFIG["model"] and config.model_args["feat_dim"] == 24


@pytest.mark.parametrize("block", ["scheduler_args", "margin_update"])
def test_epoch_iter_must_be_a_count(tmp_path, block):
    with pytest.raises(ConfigError, match=f"'{block}.epoch_iter' must be >= 0"):
        load_config(RESNET34, [(f"{block}.epoch_iter", "-1")])


# ---- 7: gpus in every form WeSpeaker and our recipes accept ---------------------------------

@pytest.mark.parametrize("text,ids", [("[0,1]", [0, 1]), ("0,1", [0, 1]), ("0", [0]),
                                      ("[ 2 , 3 ]", [2, 3]), ("", []), ("[]", []),
                                      ("-1", []), ("[-1]", []), ("null", None)])
def test_gpus_override_in_each_form_reads_as_a_list(text, ids):
    assert load_config(RESNET34, [("gpus", text)]).gpus == ids


def test_gpus_from_a_file_in_each_form(tmp_path):
    for value, ids in (([0, 1], [0, 1]), (3, [3]), ("0,1", [0, 1]), ("[1]", [1]), (None, None)):
        config = dict(read_yaml(RESNET34), gpus=value)
        assert load_config(_write(tmp_path, config)).gpus == ids, value


def test_gpus_saved_by_wespeaker_for_a_comma_list_loads(tmp_path):
    """fire reads ``--gpus 0,1`` as a tuple, which WeSpeaker's yaml.dump tags."""
    config = read_yaml(RESNET34)
    config["gpus"] = (0, 1)
    path = tmp_path / "tuple.yaml"
    path.write_text(yaml.dump(config))
    assert "!!python/tuple" in path.read_text()
    assert load_config(str(path)).gpus == [0, 1]


@pytest.mark.parametrize("text", ["a,b", "0,,1", "[0,1", "1.5", "[0, 0]", "-2", "true"])
def test_bad_gpus_are_a_config_error_naming_the_key(text):
    with pytest.raises(ConfigError, match="config key 'gpus' must"):
        load_config(RESNET34, [("gpus", text)])


def test_the_trainer_takes_a_comma_list_of_gpus(monkeypatch):
    # CUDA is faked, never touched: two devices "there", set_device only recorded
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):     # no torchrun: no process group
        monkeypatch.delenv(name, raising=False)
    cuda0, cuda1 = torch.device("cuda", 0), torch.device("cuda", 1)
    assert choose_device(0, [0, 1]) == cuda0 and choose_device(1, [0, 1]) == cuda1
    context = init_distributed("0,1")
    assert (context.local_rank, context.world_size, context.device) == (0, 1, cuda0)
    assert init_distributed([0, 1]).device == cuda0
    # local rank 1 takes the list's second id, whatever its own number
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert init_distributed("0,1").device == cuda1
    assert init_distributed("1,0").device == cuda0
    assert chosen == [cuda0, cuda0, cuda1, cuda0]


def test_a_rank_without_a_gpu_entry_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match=r"config key 'gpus' \(\[0\]\) has no entry for "
                                          r"local rank 1"):
        choose_device(1, [0])


def test_bin_train_reports_bad_gpus_in_one_line(capsys):
    from wespeaker_py.bin.train import main
    from wespeaker_py.cli.common import run_main
    assert run_main(main, ["--config", RESNET34, "--exp_dir", "unused", "--gpus",
                           "zero,one"]) == 2
    assert "config key 'gpus' must list device ids" in capsys.readouterr().err


def test_parse_gpus_names_the_flag_it_reads():
    with pytest.raises(ConfigError, match="--gpus must list device ids"):
        parse_gpus("x", what="--gpus")


# ---- 9: loss_args checked when the config loads ---------------------------------------------

def test_loss_args_keys_are_the_loss_classes_own_with_its_defaults():
    for choice in LOSSES.values():
        parameters = inspect.signature(choice.factory()).parameters
        for name, default in config_to_dict(choice.args()).items():
            assert name in parameters and parameters[name].default == default, name


def test_a_misspelt_loss_args_key_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="unknown config key 'loss_args.label_smoothin'"):
        load_config(RESNET34, [("loss_args.label_smoothin", "0.1")])
    with pytest.raises(ConfigError, match="'loss_args.label_smoothing' must be <= 1"):
        load_config(RESNET34, [("loss_args.label_smoothing", "2")])
    with pytest.raises(ConfigError, match="'loss_args.reduction' must be one of"):
        load_config(RESNET34, [("loss_args.reduction", "none")])
    config = load_config(RESNET34, [("loss_args.label_smoothing", "1e-1")])
    assert config.loss_args == {"label_smoothing": 0.1}  # only what was given, typed
    torch.nn.CrossEntropyLoss(**config.loss_args)


# ---- 3: TFMel's mel bands end below the Nyquist frequency -----------------------------------

def test_tfmel_f_max_above_half_the_rate_is_a_config_error():
    args = {"frontend": "tfmel", "cmvn": False, "resample_rate": 8000}
    with pytest.raises(ConfigError, match=r"'dataset_args.tfmel_args.f_max' \(7600 Hz\) must "
                                          r"be <= half of dataset_args.resample_rate \(4000 Hz\)"):
        as_dataset_args(args)
    assert as_dataset_args(dict(args, tfmel_args={"f_max": 4000})).tfmel_args.f_max == 4000
    with pytest.raises(ConfigError, match="'dataset_args.tfmel_args.f_min' .* below f_max"):
        as_dataset_args(dict(args, tfmel_args={"f_min": 3000, "f_max": 2000}))
    # another front-end's unused block is not held to the rate
    assert as_dataset_args({"resample_rate": 8000, "tfmel_args": {}}).frontend == "fbank"


def test_the_fbank_front_end_has_no_upper_frequency_to_pass_nyquist():
    # Kaldi's high_freq (0: the Nyquist frequency) is not a key: every rate is safe
    assert "high_freq" not in config_to_dict(as_dataset_args({}))["fbank_args"]
    with pytest.raises(ConfigError, match="unknown config key 'dataset_args.fbank_args.high_"):
        TrainConfig.from_dict(dict(read_yaml(RESNET34), dataset_args={
            "fbank_args": {"high_freq": 7600}}))


# ---- 10: whole numbers written as ints, as WeSpeaker's configs write them -------------------

SHIPPED_CONFS = sorted(glob.glob(os.path.join(REPO_ROOT, "conf", "*.yaml")))


def _ints_at(data, prefix=""):
    """The dotted keys of ``data`` (nested mappings) that hold an int (not a bool)."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _ints_at(value, dotted + ".")
        elif isinstance(value, int) and not isinstance(value, bool):
            yield dotted


def _at(data, dotted):
    for part in dotted.split("."):
        data = data[part]
    return data


def _wespeaker_chunk_len(dataset_args, frontend_args):
    """WeSpeaker's training chunk in samples (dataset.py), a slice bound: it must be an int."""
    frame_shift = frontend_args.get("frame_shift", 10)
    frame_length = frontend_args.get("frame_length", 25)
    return (((dataset_args.get("num_frms", 200) - 1) * frame_shift + frame_length)
            * dataset_args.get("resample_rate", 16000) // 1000)


@pytest.mark.parametrize("name", ["ecapa_tdnn.yaml", "resnet34.yaml",
                                  "ecapa_tdnn_WavLM_frozen.yaml"])
def test_a_saved_config_gives_wespeaker_an_int_chunk_length(tmp_path, name):
    config = load_config(os.path.join(REPO_ROOT, "conf", name))
    saved = str(tmp_path / "config.yaml")
    save_config(config, saved)
    text = open(saved).read()
    dataset_args = yaml.safe_load(text)["dataset_args"]
    frontend_args = dataset_args[f"{config.dataset_args.frontend}_args"]
    for key in ("frame_shift", "frame_length"):
        assert re.search(rf"\n    {key}: \d+\n", text), key
        assert type(frontend_args[key]) is int, key
    assert type(_wespeaker_chunk_len(dataset_args, frontend_args)) is int
    assert re.search(r"\n  warm_up_epoch: 6\n", text)
    assert load_config(saved) == config  # read back as floats


def test_every_int_of_a_shipped_config_is_saved_as_an_int(tmp_path):
    saved = str(tmp_path / "config.yaml")
    for path in SHIPPED_CONFS:
        save_config(load_config(path), saved)
        written = read_yaml(saved)
        for dotted in _ints_at(read_yaml(path)):
            assert type(_at(written, dotted)) is int, f"{path}: {dotted}"


def test_whole_floats_and_defaults_are_saved_as_ints_and_fractions_kept(tmp_path):
    source = read_yaml(RESNET34)
    del source["dataset_args"]["fbank_args"]               # WeSpeaker's defaults: 10 and 25
    source["scheduler_args"]["warm_up_epoch"] = 1.0        # as our trainer used to save it
    config = load_config(_write(tmp_path, source))
    saved = str(tmp_path / "saved.yaml")
    save_config(config, saved)
    written = read_yaml(saved)
    fbank = written["dataset_args"]["fbank_args"]
    assert (fbank["frame_shift"], fbank["frame_length"]) == (10, 25)
    assert type(fbank["frame_shift"]) is int and type(fbank["frame_length"]) is int
    assert type(written["scheduler_args"]["warm_up_epoch"]) is int
    save_config(load_config(RESNET34, [("dataset_args.fbank_args.frame_shift", "12.5")]), saved)
    assert read_yaml(saved)["dataset_args"]["fbank_args"]["frame_shift"] == 12.5
