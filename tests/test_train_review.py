"""The head size and start weights of fine-tuning runs, stops at an epoch's end, and the
checkpoint files the trainer reads (CPU, one process, the tiny model)."""
import dataclasses
import gc
import itertools
import logging
import os
import re
import signal
import weakref

import pytest
import torch

from train_helpers import (TINY_CONFIG, load_checkpoint, make_speaker_corpus, plan_of,
                           run_training, tiny_config)
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from wespeaker_py.config import ConfigError, TrainConfig
from wespeaker_py.errors import ModelSourceError
from wespeaker_py.models.projections import get_projection
from wespeaker_py.runtime.builder import build_speaker_model
from wespeaker_py.runtime.checkpoint import CheckpointMismatchError, read_checkpoint
from wespeaker_py.train.average import select_checkpoints
from wespeaker_py.train.builder import build_dataset, build_model, check_model_builds
from wespeaker_py.train.checkpoint import checkpoints_by_epoch, epoch_from_name
from wespeaker_py.train.distributed import DistContext
from wespeaker_py.train.interrupt import TrainingStopped
from wespeaker_py.train.step import TrainingStep
from wespeaker_py.train.trainer import Trainer, set_seed

NUM_SPEAKERS = 4
SPEED = dict(TINY_CONFIG["dataset_args"], speed_perturb=True)
NO_SPEED = dict(TINY_CONFIG["dataset_args"], speed_perturb=False)


@pytest.fixture(scope="module")
def six_speakers(tmp_path_factory):
    return make_speaker_corpus(str(tmp_path_factory.mktemp("six")), num_spks=6,
                               utts_per_spk=4)


def _signal_at_step(monkeypatch, step_number):
    """Send SIGUSR1 to this process while training step ``step_number`` (from 1) runs."""
    original, calls = TrainingStep.__call__, []

    def step_then_signal(self, batch):
        calls.append(batch)
        if len(calls) == step_number:
            os.kill(os.getpid(), signal.SIGUSR1)
        return original(self, batch)

    monkeypatch.setattr(TrainingStep, "__call__", step_then_signal)


def _averaged_model_0(corpus, tmp_path, name, dataset_args):
    """A one-epoch base run's model as a bare state_dict, copied to ``name-LM/models/model_0.pt``
    as the recipes do; returns (its state, its path)."""
    base = str(tmp_path / name)
    run_training(tiny_config(base, corpus, num_epochs=1, num_avg=1, dataset_args=dataset_args))
    state = load_checkpoint(os.path.join(base, "models", "model_1.pt"))["model"]
    models = tmp_path / f"{name}-LM" / "models"
    os.makedirs(models)
    torch.save(state, str(models / "model_0.pt"))
    return state, str(models / "model_0.pt")


def test_the_lm_head_size_follows_the_config_as_in_wespeaker(corpus, tmp_path):
    # w2vbert_s3_lmft.yaml: speed_perturb False after a speed-perturbed step 2
    base, model_0 = _averaged_model_0(corpus, tmp_path, "sp", SPEED)
    assert base["projection.weight"].shape == (3 * NUM_SPEAKERS, 16)
    lm_dir = os.path.dirname(os.path.dirname(model_0))
    config = tiny_config(lm_dir, corpus, num_epochs=1, do_lm=True, checkpoint=model_0,
                         dataset_args=NO_SPEED)
    plan = plan_of(config)
    assert plan.num_classes == NUM_SPEAKERS
    head = Trainer(plan).model.projection.weight
    assert torch.equal(head, base["projection.weight"][:NUM_SPEAKERS])
    assert [result.epoch for result in run_training(config)] == [1]
    # the _lm.yaml configs: speed_perturb True, kept on under do_lm (WeSpeaker turns the
    # flag off only after its data pipeline is built), the 3x head kept
    speed_plan = plan_of(dict(config, dataset_args=SPEED))
    assert speed_plan.num_classes == 3 * NUM_SPEAKERS
    assert speed_plan.dataset_args.speed_perturb is True


def test_an_lm_config_with_speed_classes_from_a_1x_head_is_refused(corpus, tmp_path):
    _, model_0 = _averaged_model_0(corpus, tmp_path, "plain", NO_SPEED)
    lm_dir = os.path.dirname(os.path.dirname(model_0))
    config = tiny_config(lm_dir, corpus, num_epochs=1, do_lm=True, checkpoint=model_0,
                         dataset_args=SPEED)
    with pytest.raises(ConfigError, match=r"'dataset_args.speed_perturb' is on.*"
                                          r"model_0.pt holds a head of 4"):
        plan_of(config)


def test_an_lm_run_trains_on_the_speed_classes(corpus, tmp_path):
    """As WeSpeaker's LM stage does: labels of the 0.9 and 1.1 speeds reach the head."""
    _, model_0 = _averaged_model_0(corpus, tmp_path, "sp", SPEED)
    lm_dir = os.path.dirname(os.path.dirname(model_0))
    plan = plan_of(tiny_config(lm_dir, corpus, num_epochs=1, do_lm=True, checkpoint=model_0,
                               dataset_args=SPEED))
    dataset = build_dataset(plan)   # the data a run of this plan trains on
    labels = {int(sample["label"]) for sample in itertools.islice(iter(dataset), 200)}
    assert max(labels) >= NUM_SPEAKERS


def _saved_model(path, num_class, seed=0):
    """TINY_CONFIG's model with a ``num_class`` head, random weights, saved as a state_dict."""
    torch.manual_seed(seed)
    model = build_speaker_model(TrainConfig.from_dict(dict(TINY_CONFIG, exp_dir="unused")))
    model.add_module("projection", get_projection(TINY_CONFIG["projection_args"],
                                                  embed_dim=16, num_class=num_class))
    torch.save(model.state_dict(), path)
    return model.state_dict()


def _start_model(config):
    """The model a run of ``config`` trains from (seeded as run_training seeds it)."""
    set_seed(config["seed"])
    return Trainer(plan_of(config)).model.state_dict()


@pytest.mark.parametrize("init_classes", [4, 12])
def test_model_init_leaves_a_head_of_another_size_random(six_speakers, tmp_path, init_classes):
    init_path = str(tmp_path / "init.pt")
    init = _saved_model(init_path, init_classes)
    config = tiny_config(str(tmp_path / "exp"), six_speakers, num_epochs=1, num_avg=1,
                         model_init=init_path)
    started = _start_model(config)
    fresh = _start_model(dict(config, model_init=None))
    assert started["projection.weight"].shape == (6, 16)
    assert torch.equal(started["projection.weight"], fresh["projection.weight"])
    for key, value in init.items():
        if not key.startswith("projection."):
            assert torch.equal(started[key], value), key
    assert [result.epoch for result in run_training(config)] == [1]


def test_model_init_leaves_even_a_head_of_the_same_shape_random_as_wespeaker_does(
        corpus, tmp_path):
    init_path = str(tmp_path / "init.pt")
    init = _saved_model(init_path, NUM_SPEAKERS)
    config = tiny_config(str(tmp_path / "exp"), corpus, model_init=init_path)
    started = _start_model(config)
    assert started["projection.weight"].shape == init["projection.weight"].shape
    assert torch.equal(started["projection.weight"],
                       _start_model(dict(config, model_init=None))["projection.weight"])


def test_model_init_head_loads_the_head_and_refuses_one_that_does_not_fit(
        corpus, six_speakers, tmp_path):
    """What wespeaker-py finetune's second phase relies on."""
    init_path = str(tmp_path / "init.pt")
    init = _saved_model(init_path, NUM_SPEAKERS)
    started = _start_model(tiny_config(str(tmp_path / "exp"), corpus, model_init=init_path,
                                       model_init_head=True))
    assert torch.equal(started["projection.weight"], init["projection.weight"])
    with pytest.raises(CheckpointMismatchError, match="projection.weight"):
        _start_model(tiny_config(str(tmp_path / "exp6"), six_speakers, model_init=init_path,
                                 model_init_head=True))


def test_the_model_freezes_what_the_plan_names(corpus, tmp_path):
    """Training reads frozen_params from the plan, as it reads every other setting."""
    plan = plan_of(tiny_config(str(tmp_path / "exp"), corpus, frozen_params=["projection."]))
    assert plan.frozen_params == ["projection."]
    frozen = [name for name, param in build_model(plan).named_parameters()
              if not param.requires_grad]
    assert frozen and all(name.startswith("projection.") for name in frozen)
    with pytest.raises(ConfigError, match="'frozen_params': 'nowhere.' names no parameter"):
        check_model_builds(dataclasses.replace(plan, frozen_params=["nowhere."]))


EPOCH_END = dict(num_epochs=4, save_epoch_interval=2, num_avg=1, log_batch_interval=100)


def _stop_at_the_end_of_epoch_3(corpus, exp_dir, monkeypatch):
    per_epoch = plan_of(tiny_config(exp_dir, corpus, **EPOCH_END)).epoch_iter
    _signal_at_step(monkeypatch, 3 * per_epoch)
    with pytest.raises(TrainingStopped, match="end of epoch 3"):
        run_training(tiny_config(exp_dir, corpus, **EPOCH_END))
    monkeypatch.undo()
    models = os.path.join(exp_dir, "models")
    assert sorted(os.listdir(models)) == ["interrupted.pt", "model_2.pt"]
    at = load_checkpoint(os.path.join(models, "interrupted.pt"))["interrupted_at"]
    assert (at["epoch"], at["batch"], at["after_epoch"]) == (4, 0, 2)
    return os.path.join(models, "model_2.pt")


def test_a_stop_at_an_epoch_end_continues_on_another_number_of_ranks(corpus, tmp_path,
                                                                     monkeypatch, caplog):
    exp_dir = str(tmp_path / "exp")
    model_2 = _stop_at_the_end_of_epoch_3(corpus, exp_dir, monkeypatch)
    config = tiny_config(exp_dir, corpus, checkpoint=model_2, **EPOCH_END)
    # a plan for rank 0 of two takes it up (no process group needed to resolve)
    two_ranks = DistContext(rank=0, local_rank=0, world_size=2, device=torch.device("cpu"))
    plan = plan_of(config, two_ranks)
    assert (plan.start.first_epoch, plan.start.resume_at) == (4, None)
    # the stopped run recorded as two ranks, continued by one
    interrupted = os.path.join(exp_dir, "models", "interrupted.pt")
    state = load_checkpoint(interrupted)
    state["interrupted_at"]["totals"] *= 2
    for key in ("rng", "param_digests"):
        state[key] = state[key] * 2
    state["world_size"] = 2
    torch.save(state, interrupted)
    with caplog.at_level(logging.INFO):
        history = run_training(config)
    assert [result.epoch for result in history] == [4]
    assert any("written by 2 ranks, this run has 1: random generators are not restored"
               in record.getMessage() for record in caplog.records)


def test_a_refused_epoch_end_stop_names_the_epoch_the_run_starts_at(corpus, tmp_path,
                                                                    monkeypatch, caplog):
    exp_dir = str(tmp_path / "exp")
    model_2 = _stop_at_the_end_of_epoch_3(corpus, exp_dir, monkeypatch)
    lower_lr = dict(TINY_CONFIG["scheduler_args"], initial_lr=0.08)
    with caplog.at_level(logging.INFO):
        plan = plan_of(tiny_config(exp_dir, corpus, checkpoint=model_2, scheduler_args=lower_lr,
                                   **EPOCH_END))
    assert plan.start.first_epoch == 3
    warnings = [record.getMessage() for record in caplog.records
                if "other settings" in record.getMessage()]
    assert len(warnings) == 1 and "stopped at the end of epoch 3" in warnings[0]
    assert "this run starts at epoch 3" in warnings[0]


@pytest.mark.parametrize("changed", [{"timeout": 30.0}, {"pin_memory": True},
                                     {"prefetch_factor": 4},
                                     {"multiprocessing_context": "spawn"}])
def test_loader_only_settings_may_change_mid_epoch(corpus, tmp_path, monkeypatch, changed):
    exp_dir = str(tmp_path / "exp")
    loader = {"batch_size": 4, "num_workers": 0, "pin_memory": False, "drop_last": True}
    settings = dict(num_epochs=2, log_batch_interval=2)
    _signal_at_step(monkeypatch, 3)
    with pytest.raises(TrainingStopped, match="epoch 1 after its batch 3"):
        run_training(tiny_config(exp_dir, corpus, dataloader_args=loader, **settings))
    monkeypatch.undo()
    config = tiny_config(exp_dir, corpus, dataloader_args=dict(loader, **changed), **settings)
    plan = plan_of(config)
    assert (plan.start.first_epoch, plan.start.resume_at.batch) == (1, 3)
    if "multiprocessing_context" not in changed:   # spawn workers: slow to start, not run
        run_training(config)
        log = open(os.path.join(exp_dir, "train.log")).read()
        assert "training epochs 1 to 2 (epoch 1 from its batch 4)" in log


def test_a_stop_recorded_by_older_code_continues_mid_epoch(corpus, tmp_path, monkeypatch):
    """Older code recorded the loader-only settings, and none of model_init_head."""
    exp_dir = str(tmp_path / "exp")
    settings = dict(num_epochs=2, log_batch_interval=2, dataloader_args={
        "batch_size": 4, "num_workers": 0, "pin_memory": False, "drop_last": True})
    _signal_at_step(monkeypatch, 3)
    with pytest.raises(TrainingStopped, match="epoch 1 after its batch 3"):
        run_training(tiny_config(exp_dir, corpus, **settings))
    monkeypatch.undo()
    interrupted = os.path.join(exp_dir, "models", "interrupted.pt")
    state = load_checkpoint(interrupted)
    recorded = state["interrupted_at"]["settings"]
    assert "model_init_head" not in recorded    # left out of a config while at its default
    recorded.update({"dataloader_args.pin_memory": True, "dataloader_args.timeout": 7})
    torch.save(state, interrupted)
    plan = plan_of(tiny_config(exp_dir, corpus, **settings))
    assert (plan.start.first_epoch, plan.start.resume_at.batch) == (1, 3)


def test_the_stop_message_names_the_checkpoint_the_run_started_from(corpus, tmp_path,
                                                                    monkeypatch):
    source = str(tmp_path / "source")
    run_training(tiny_config(source, corpus, num_epochs=2, num_avg=1))
    start = os.path.join(source, "models", "model_2.pt")
    exp_dir = str(tmp_path / "exp")
    _signal_at_step(monkeypatch, 2)
    with pytest.raises(TrainingStopped) as stopped:
        run_training(tiny_config(exp_dir, corpus, checkpoint=start, log_batch_interval=1))
    assert f"with --checkpoint {start} " in str(stopped.value)
    monkeypatch.undo()
    # after a save, the checkpoint saved
    _signal_at_step(monkeypatch, 2 * plan_of(tiny_config(exp_dir, corpus)).epoch_iter)
    with pytest.raises(TrainingStopped, match="end of epoch 4") as stopped:
        run_training(tiny_config(exp_dir, corpus, checkpoint=start, num_epochs=5,
                                 log_batch_interval=1))
    saved = os.path.join(exp_dir, "models", "model_4.pt")
    assert f"its state saved in {saved}; run the same command with --checkpoint {saved} " \
        in str(stopped.value)


def test_what_is_no_checkpoint_is_named(corpus, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    with pytest.raises(ModelSourceError, match=re.escape(f"{folder}: not a PyTorch checkpoint "
                                                         "(it is a directory)")):
        read_checkpoint(str(folder))
    listed = str(tmp_path / "model_3.pt")
    torch.save([1, 2, 3], listed)
    with pytest.raises(ModelSourceError, match=re.escape(f"{listed}: not a PyTorch checkpoint "
                                                         "(it holds a list, not a dict of "
                                                         "tensors)")):
        plan_of(tiny_config(str(tmp_path / "exp"), corpus, checkpoint=listed))
    # a truncated file: torch's first sentence, not its advice cut at a fixed length
    truncated = str(tmp_path / "model_4.pt")
    torch.save({"weight": torch.zeros(50000)}, truncated)
    with open(truncated, "r+b") as handle:
        handle.truncate(os.path.getsize(truncated) // 2)
    with pytest.raises(ModelSourceError) as raised:
        read_checkpoint(truncated)
    assert str(raised.value) == (f"{truncated}: not a PyTorch checkpoint (RuntimeError: "
                                 f"PytorchStreamReader failed reading zip archive: failed "
                                 f"finding central directory.)")


def test_one_rule_names_the_epoch_checkpoints(tmp_path):
    for name in ("model_10.pt", "model_3.pt", "model_4.pt", "best_model_9.pt", "avg_model.pt",
                 "model_5.pt.tmp"):
        torch.save({}, str(tmp_path / name))
    assert epoch_from_name(str(tmp_path / "model_4.pt")) == 4
    assert epoch_from_name("best_model_9.pt") is None
    # by epoch, not by name (which puts model_10.pt first)
    assert checkpoints_by_epoch(str(tmp_path)) == ["model_3.pt", "model_4.pt", "model_10.pt"]
    assert checkpoints_by_epoch(str(tmp_path / "missing")) == []
    assert select_checkpoints(str(tmp_path), 2) == [str(tmp_path / "model_4.pt"),
                                                    str(tmp_path / "model_10.pt")]


def test_the_start_weights_are_released_once_restored(corpus, tmp_path):
    exp_dir = str(tmp_path / "exp")
    run_training(tiny_config(exp_dir, corpus, num_epochs=1, num_avg=1))
    plan = plan_of(tiny_config(exp_dir, corpus, num_epochs=2,
                               checkpoint=os.path.join(exp_dir, "models", "model_1.pt")))
    weight = weakref.ref(plan.start.state["projection.weight"])
    trainer = Trainer(plan)
    trainer.restore()
    gc.collect()
    assert plan.start.state is None and plan.start.training_state is None
    assert weight() is None
    assert trainer.optimizer.state_dict()["state"]   # restored before the release
