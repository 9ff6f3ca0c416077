"""Fine-tuning takes its rules from their owners: the experiment folder's layout and
checkpoint names (train/plan, train/checkpoint), the averaging (train/average), the config
schema's defaults and the builder's rule for a ``feat_dim`` left to the front-end."""
import inspect
import os
import re

import pytest
import yaml

from train_helpers import make_speaker_corpus, write_source_model
from wespeaker_py.config import ConfigError, TrainConfig, load_model_config, read_yaml
from wespeaker_py.config.schema import DataloaderArgs, DatasetArgs, TfmelArgs
from wespeaker_py.finetune import FinetuneOptions, finetune
from wespeaker_py.finetune import run as finetune_run
from wespeaker_py.finetune.config import (SOURCE_BATCH_SIZE, phase_config, rate_dataset_args,
                                          read_source_config)
from wespeaker_py.io.layout import REQUEST_NAME, WORK_DIR
from wespeaker_py.models.projections import ArcMarginProduct, get_projection
from wespeaker_py.train.plan import Layout

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Stop(Exception):
    """Raised in place of the step a test looks at."""


def _phase(exp_dir, num_epochs=3):
    return {"exp_dir": exp_dir, "num_epochs": num_epochs}


def _no_training(monkeypatch):
    """Record the config ``run_training`` gets instead of training; ``TrainConfig.from_dict``
    hands the mapping through."""
    seen = []
    monkeypatch.setattr("wespeaker_py.train.trainer.run_training",
                        lambda config, resume_hint=None, **_: seen.append(config))
    monkeypatch.setattr(finetune_run.TrainConfig, "from_dict", staticmethod(dict))
    return seen


def test_a_trained_phase_is_found_where_the_layout_puts_its_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setattr(Layout, "model_dir",
                        property(lambda self: os.path.join(self.exp_dir, "elsewhere")))
    layout = Layout(str(tmp_path / "phase"))
    os.makedirs(layout.model_dir)
    open(layout.checkpoint_path(3), "wb").close()
    seen = _no_training(monkeypatch)
    assert finetune_run._train_phase(_phase(layout.exp_dir), "full", True) == \
        layout.checkpoint_path(3)
    assert not seen   # nothing left to train


def test_a_phase_resumes_from_its_newest_checkpoint_by_epoch(tmp_path, monkeypatch):
    layout = Layout(str(tmp_path / "phase"))
    os.makedirs(layout.model_dir)
    for epoch in (2, 10, 9):   # by name model_9.pt would come last
        open(layout.checkpoint_path(epoch), "wb").close()
    open(os.path.join(layout.model_dir, "avg_model.pt"), "wb").close()
    seen = _no_training(monkeypatch)
    last = finetune_run._train_phase(_phase(layout.exp_dir, num_epochs=12), "full", True)
    assert last == layout.checkpoint_path(12)
    assert seen[0]["checkpoint"] == layout.checkpoint_path(10)


def test_the_last_phase_is_averaged_by_train_average(tmp_path, monkeypatch):
    os.makedirs(tmp_path / "source")
    source = write_source_model(str(tmp_path / "source"))
    corpus = make_speaker_corpus(str(tmp_path / "data"), num_spks=6, utts_per_spk=4,
                                 seconds=1.0)
    with open(os.path.join(tmp_path, "data", "wav.scp"), "w") as scp:
        for line in open(corpus["utt2spk"]):
            key = line.split()[0]
            scp.write(f"{key} {os.path.join(tmp_path, 'data', 'wav', key + '.wav')}\n")
    monkeypatch.setattr(finetune_run, "_write_body_init", lambda *args: None)
    monkeypatch.setattr(finetune_run, "_train_phase", lambda config, *_: Layout(
        config["exp_dir"]).checkpoint_path(config["num_epochs"]))
    calls = []

    def average(src_dir, num, dst_model):
        calls.append((src_dir, num, dst_model))
        raise Stop

    monkeypatch.setattr(finetune_run, "average_checkpoints", average)
    out = str(tmp_path / "out")
    with pytest.raises(Stop):
        finetune(source, str(tmp_path / "data"), out,
                 FinetuneOptions(epochs=3, freeze="none", num_avg=5), device="cpu")
    model_dir = Layout(os.path.join(out, WORK_DIR, "train")).model_dir
    assert calls == [(model_dir, 3, os.path.join(model_dir, "avg_model.pt"))]


def _source(tmp_path, **blocks):
    """resnet34.yaml without its dataloader_args and projection_args, with ``blocks``, as
    fine-tuning reads it."""
    config = read_yaml(os.path.join(REPO_ROOT, "conf", "resnet34.yaml"))
    for key in ("dataloader_args", "projection_args"):
        config.pop(key)
    config.update(blocks)
    path = str(tmp_path / "source.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    return read_source_config(path)


def _config_of(source):
    return phase_config(source, FinetuneOptions(), exp_dir="exp", train_data="data.list",
                        train_label="utt2spk", num_utterances=100, sample_rate=16000,
                        model_init="init.pt", epochs=2, frozen_params=[], device="cpu")


def test_a_left_out_sample_rate_is_the_schemas_default(tmp_path):
    dataset_args = {"frontend": "tfmel", "cmvn": False}
    source = _source(tmp_path, dataset_args=dataset_args)
    assert source.model.dataset_args.resample_rate == DatasetArgs().resample_rate == 16000
    # TFMel's sizes in samples scale from the schema's rate to the new one
    tfmel = rate_dataset_args(source, 8000)["tfmel_args"]
    assert tfmel["n_fft"] == TfmelArgs().n_fft // 2
    assert "tfmel_args" not in source.written["dataset_args"]  # the source is left as read


def test_left_out_loader_settings_are_the_schemas_defaults(tmp_path):
    config = _config_of(_source(tmp_path))
    assert config["dataloader_args"]["num_workers"] == DataloaderArgs(batch_size=2).num_workers
    assert config["dataloader_args"]["batch_size"] == SOURCE_BATCH_SIZE
    given = _source(tmp_path, dataloader_args={"batch_size": 8, "num_workers": 1})
    assert _config_of(given)["dataloader_args"] == {"batch_size": 8, "num_workers": 1,
                                                    "pin_memory": False, "drop_last": True}


def test_a_source_loader_block_the_schema_refuses_is_named_with_its_file(tmp_path):
    with pytest.raises(ConfigError, match=r"source.yaml: config key "
                                          r"'dataloader_args.num_workers' must be >= 0"):
        _source(tmp_path, dataloader_args={"batch_size": 8, "num_workers": -1})


def test_the_source_config_is_read_once_and_its_model_errors_start_with_the_file(
        tmp_path, monkeypatch):
    from wespeaker_py.config import loading
    from wespeaker_py.finetune import config as finetune_config
    reads = []

    def counted_read(path):
        reads.append(path)
        return read_yaml(path)

    # every name the file could be read through
    monkeypatch.setattr(loading, "read_yaml", counted_read)
    monkeypatch.setattr(finetune_config, "read_yaml", counted_read)
    path = str(tmp_path / "source.yaml")
    source = _source(tmp_path)
    assert reads == [path]
    assert source.model.model == source.written["model"]
    assert source.model.model_args == source.written["model_args"]
    with pytest.raises(ConfigError, match=re.escape(
            f"{path}: unknown config key 'dataset_arg'; did you mean 'dataset_args'?")):
        _source(tmp_path, dataset_arg={"resample_rate": 8000})
    with pytest.raises(ConfigError, match=re.escape(
            f"{path}: unknown config key 'dataset_args.fbank_args.num_mel_bin'")):
        _source(tmp_path, dataset_args={"fbank_args": {"num_mel_bin": 40}})


def test_a_source_without_a_head_gets_an_arc_margin_head_with_the_heads_defaults(tmp_path):
    config = _config_of(_source(tmp_path))
    TrainConfig.from_dict(config)
    # named in full (WeSpeaker's get_projection has no defaults), as the head's own defaults
    assert set(config["projection_args"]) == {"project_type", "scale", "easy_margin"}
    head = get_projection(config["projection_args"], embed_dim=8, num_class=3)
    defaults = inspect.signature(ArcMarginProduct).parameters
    assert isinstance(head, ArcMarginProduct)
    assert head.scale == defaults["scale"].default == config["projection_args"]["scale"]
    assert head.easy_margin == defaults["easy_margin"].default \
        == config["projection_args"]["easy_margin"]
    kept = {"project_type": "add_margin", "scale": 30.0}
    assert _config_of(_source(tmp_path, projection_args=kept))["projection_args"] == kept


def test_simam_acoustic_dim_is_not_left_to_the_front_end(tmp_path, monkeypatch):
    """SimAM-ResNet's ``acoustic_dim`` sets its input size: the front-end (an SSL model
    whose weights would be read) is not built for it, as the builder's rule says."""
    config = read_yaml(os.path.join(REPO_ROOT, "conf", "simam_resnet34.yaml"))
    wavlm = read_yaml(os.path.join(REPO_ROOT, "conf", "ecapa_tdnn_WavLM_frozen.yaml"))
    config["dataset_args"] = wavlm["dataset_args"]
    config["model_args"]["acoustic_dim"] = 1024
    path = str(tmp_path / "config.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)

    def no_frontend(*args, **kwargs):
        raise AssertionError("the front-end was built")

    monkeypatch.setattr("wespeaker_py.runtime.builder.build_frontend", no_frontend)
    modules = finetune_run._top_level_parameters(load_model_config(path))
    assert modules and "frontend" not in modules


def test_an_unfinished_run_is_named_as_such_when_loaded(tmp_path):
    from wespeaker_py import load_model
    from wespeaker_py.errors import ModelSourceError
    out = tmp_path / "out"
    (out / WORK_DIR).mkdir(parents=True)
    (out / WORK_DIR / REQUEST_NAME).write_text("{}")
    with pytest.raises(ModelSourceError, match="holds a wespeaker-py finetune run that has not "
                                               "finished .*run the same finetune command"):
        load_model(str(out))
