"""Bad training inputs are refused early, naming their config key; a GPU asked for on a
machine without CUDA is a warning, not a silent switch to the CPU."""
import logging
import os

import pytest
import torch
import yaml

from train_helpers import TINY_CONFIG
from wespeaker_py.bin import train
from wespeaker_py.config import ConfigError, ModelConfig, TrainConfig
from wespeaker_py.config.fields import parse_block
from wespeaker_py.runtime import build_speaker_model
from wespeaker_py.train.distributed import choose_device


def _with_batch_size(batch_size):
    return dict(TINY_CONFIG, train_data="unused", train_label="unused",
                dataloader_args=dict(TINY_CONFIG["dataloader_args"], batch_size=batch_size))


def test_a_batch_of_one_is_refused_when_the_config_loads():
    with pytest.raises(ConfigError, match=r"'dataloader_args.batch_size' must be >= 2, got 1"
                                          r".*BatchNorm"):
        TrainConfig.from_dict(_with_batch_size(1))
    assert TrainConfig.from_dict(_with_batch_size(2)).dataloader_args.batch_size == 2


@pytest.mark.parametrize("model, model_args", [
    ("ResNet34", {"feat_dim": 80, "embed_dim": -5}),
    ("ECAPA_TDNN_GLOB_c512", {"feat_dim": 80, "embed_dim": -5}),
])
def test_a_size_torch_cannot_build_is_a_config_error_naming_model_args(model, model_args):
    config = parse_block(ModelConfig, {"model": model, "model_args": model_args}, "")
    with pytest.raises(ConfigError, match=rf"'model_args' does not fit {model}: .*-5"):
        build_speaker_model(config)


def _corpus(root):
    """A raw.list and an utt2spk that exist (training never reads them here)."""
    os.makedirs(root)
    paths = {"raw_list": os.path.join(root, "raw.list"), "utt2spk": os.path.join(root, "utt2spk")}
    with open(paths["utt2spk"], "w") as f:
        f.write("".join(f"u{index} s{index % 2}\n" for index in range(16)))
    with open(paths["raw_list"], "w") as f:
        f.write("")
    return paths


@pytest.mark.parametrize("key, corpus_key", [("train_data", "raw_list"),
                                             ("train_label", "utt2spk")])
@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_unusable_training_data_is_refused_before_exp_dir_is_written(tmp_path, caplog, key,
                                                                     corpus_key, kind):
    corpus = _corpus(str(tmp_path / "data"))
    bad = str(tmp_path / "bad")
    if kind == "folder":
        os.makedirs(bad)
    corpus[corpus_key] = bad
    exp_dir = str(tmp_path / "exp")
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump(dict(TINY_CONFIG, gpus=[])))
    with caplog.at_level(logging.INFO):
        with pytest.raises(ConfigError, match=f"config key '{key}': {bad} "):
            train.main(["--config", str(conf), "--exp_dir", exp_dir,
                        "--train_data", corpus["raw_list"], "--train_label", corpus["utt2spk"]])
    assert not os.path.exists(exp_dir)
    assert "utterances of" not in caplog.text


@pytest.mark.parametrize("override, expected", [
    (["--model_args.hid_dim", "-5"], r"'model_args' does not fit XVEC: .*-5"),
    (["--model_args.embed_dim", "-5"], r"'model_args.embed_dim' must be an integer >= 1 .*-5"),
    (["--projection_args.project_type", "no_such_head"], "no_such_head"),
    (["--frozen_params", "['nowhere.']"], "'frozen_params': 'nowhere.' names no parameter"),
])
def test_a_model_that_cannot_be_built_is_refused_before_exp_dir_is_written(tmp_path, override,
                                                                           expected):
    corpus = _corpus(str(tmp_path / "data"))
    exp_dir = str(tmp_path / "exp")
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump(dict(TINY_CONFIG, gpus=[])))
    with pytest.raises(ConfigError, match=expected):
        train.main(["--config", str(conf), "--exp_dir", exp_dir,
                    "--train_data", corpus["raw_list"], "--train_label", corpus["utt2spk"]]
                   + override)
    assert not os.path.exists(exp_dir)


def test_gpus_asked_for_without_cuda_warn_and_train_on_the_cpu(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO):
        assert choose_device(0, [5]) == torch.device("cpu")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "[5]" in warnings[0] and "no CUDA device" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert choose_device(0, []) == torch.device("cpu")   # the CPU asked for
        assert choose_device(0, None) == torch.device("cpu")  # any device: the CPU here
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_parameter_count_is_in_full_below_ten_thousand_so_a_small_head_is_not_zero():
    from wespeaker_py.train.trainer import parameter_count
    assert [parameter_count(n) for n in (0, 768, 9_999, 10_000, 1_234_567)] == \
        ["0", "768", "9,999", "0.01M", "1.23M"]


def _relabelled(corpus, tmp_path, rename):
    """A copy of the corpus's utt2spk with its speakers renamed by ``rename``."""
    path = tmp_path / "utt2spk"
    with open(corpus["utt2spk"]) as source:
        path.write_text("".join(f"{utt} {rename(spk)}\n"
                                for utt, spk in (line.split() for line in source)))
    return str(path)


def test_a_label_file_of_other_speakers_is_refused_before_exp_dir_is_written(corpus, tmp_path):
    from train_helpers import run_training, tiny_config
    exp_dir = str(tmp_path / "exp")
    config = tiny_config(exp_dir, corpus, gpus=[], num_epochs=1,
                         train_label=_relabelled(corpus, tmp_path, lambda spk: "other-" + spk))
    with pytest.raises(ConfigError, match=r"'train_data' and 'train_label' do not match: no "
                                          r"speaker of .*raw.list is in .*utt2spk"):
        run_training(config)
    assert not os.path.exists(exp_dir)


def test_speakers_that_list_and_label_file_do_not_share_are_warned_about(corpus, tmp_path,
                                                                         caplog):
    from train_helpers import run_training, tiny_config
    with open(corpus["utt2spk"]) as source:
        speakers = sorted({line.split()[1] for line in source})
    renamed = speakers[0]   # its 6 utterances have no label; "zz-extra" has no utterance
    label = _relabelled(corpus, tmp_path, lambda spk: "zz-extra" if spk == renamed else spk)
    config = tiny_config(str(tmp_path / "exp"), corpus, gpus=[], num_epochs=1,
                         train_label=label)
    with caplog.at_level(logging.WARNING):
        run_training(config)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"6 of the 24 utterances of {corpus['raw_list']} have a speaker that {label} "
               f"does not list" in text and "skipped every epoch" in text for text in warnings)
    assert any(f"1 of the 4 speakers of {label} have no utterance in {corpus['raw_list']} "
               f"(the first: 'zz-extra')" in text for text in warnings)
    caplog.clear()
    with caplog.at_level(logging.WARNING):   # matching files: no such warning
        run_training(tiny_config(str(tmp_path / "exp2"), corpus, gpus=[], num_epochs=1))
    assert "does not list" not in caplog.text and "no utterance in" not in caplog.text
