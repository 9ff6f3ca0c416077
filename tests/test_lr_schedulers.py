"""WeSpeaker's W2V-BERT learning-rate schedules: formulas, lr_scale, state, config, a run."""
import copy
import dataclasses
import os

import pytest
import torch
import yaml

from train_helpers import (CPU_WORLD, TINY_CONFIG, make_speaker_corpus, plan_of, run_training,
                           tiny_config, write_config)
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from wespeaker_py.config import (ConfigError, ExponentialDecreaseArgs, TrainConfig,
                                 TriAngular2Args, WarmupCosineArgs, WarmupStepDecayArgs,
                                 load_config)
from wespeaker_py.config.schema import SCHEDULERS
from wespeaker_py.train.builder import build_lr_scheduler
from wespeaker_py.train.schedulers import (ExponentialDecrease, TriAngular2,
                                           WarmupCosineScheduler, WarmupLRWithStepDecay)

# WeSpeaker's examples/voxceleb/v2/conf/w2vbert_s1_lora.yaml and w2vbert_s2_ft.yaml
STEP_DECAY = {"scheduler": "WarmupLR_withStepDecay",
              "scheduler_args": {"warmup_step": 5, "decay_step": 5, "gamma": 0.1}}
COSINE = {"scheduler": "WarmupCosineScheduler",
          "scheduler_args": {"min_lr": 0.000005, "max_lr": 0.00001, "warmup_epoch": 0,
                             "fix_epoch": 2}}


def _two_groups(second: dict) -> torch.optim.Optimizer:
    """An optimizer at lr 1e-4 with a plain group and a second one with ``second``'s entries."""
    return torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(1))]},
                              {"params": [torch.nn.Parameter(torch.zeros(1))], **second}],
                             lr=1e-4)


# iteration: factor, for warmup_step 5, decay_step 5, gamma 0.1 and 10 batches per epoch:
# warm-up over W = 50 iterations, then a tenth every 50
STEP_DECAY_FACTORS = {0: 1 / 51, 25: 26 / 51, 49: 50 / 51, 50: 1.0, 99: 1.0, 100: 0.1,
                      149: 0.1, 150: 0.01, 175: 0.01, 1049: 1e-19}


def test_warmup_step_decay_follows_its_formula_per_group():
    # the second group has its own base rate and an lr_scale on top of it
    optimizer = _two_groups({"lr": 3e-4, "lr_scale": 0.5})
    scheduler = WarmupLRWithStepDecay(optimizer, num_epochs=30, epoch_iter=10, warmup_step=5,
                                      decay_step=5, gamma=0.1, scale_ratio=4.0)
    for t, factor in STEP_DECAY_FACTORS.items():
        lr = scheduler.step(t)
        assert lr == pytest.approx(1e-4 * factor, rel=1e-12)
        assert scheduler.get_lr() == lr == scheduler.lr_at(t)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4 * factor, rel=1e-12)
        assert optimizer.param_groups[1]["lr"] == pytest.approx(3e-4 * factor * 0.5, rel=1e-12)


@pytest.mark.parametrize("decay_step", [0, -1])
def test_warmup_step_decay_without_decay_holds_the_base_rate(decay_step):
    optimizer = _two_groups({})
    scheduler = WarmupLRWithStepDecay(optimizer, 30, 10, warmup_step=2, decay_step=decay_step)
    assert scheduler.step(10) == pytest.approx(1e-4 * 11 / 21)
    for t in (20, 21, 1000, 10 ** 6):
        assert scheduler.step(t) == 1e-4
        assert [group["lr"] for group in optimizer.param_groups] == [1e-4, 1e-4]
    # no warm-up either: the base rate from the first step
    flat = WarmupLRWithStepDecay(_two_groups({}), 30, 10, warmup_step=0, decay_step=0)
    assert flat.step(0) == 1e-4


def test_warmup_step_decay_bases_are_the_rates_at_construction():
    optimizer = _two_groups({})
    scheduler = WarmupLRWithStepDecay(optimizer, 30, 10, warmup_step=1, decay_step=1, gamma=0.5)
    scheduler.step(35)  # (35 - 10) // 10 = 2 decays
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4 / 4)
    assert scheduler.step(5) == pytest.approx(1e-4 * 6 / 11)  # not from the decayed rate


# max_lr 1e-3, min_lr 1e-5, 10 batches per epoch, warmup_epoch 1.5 (W = 15) and
# fix_epoch 4.25 (F = int(42.5) = 42): a third of the way down the cosine (t = 24)
# cos(pi / 3) = 1/2 leaves three quarters of the span, two thirds (t = 33) a quarter
COSINE_RATES = {0: 0.0, 5: 1e-3 / 3, 12: 0.8e-3, 15: 1e-3,
                24: 1e-5 + 0.75 * (1e-3 - 1e-5), 33: 1e-5 + 0.25 * (1e-3 - 1e-5),
                42: 1e-5, 43: 1e-5, 10 ** 6: 1e-5}


def test_warmup_cosine_follows_its_formula_with_lr_scale():
    optimizer = _two_groups({"lr_scale": 0.25})
    scheduler = WarmupCosineScheduler(optimizer, num_epochs=6, epoch_iter=10, min_lr=1e-5,
                                      max_lr=1e-3, warmup_epoch=1.5, fix_epoch=4.25,
                                      scale_ratio=4.0)
    for t, rate in COSINE_RATES.items():
        lr = scheduler.step(t)
        assert lr == pytest.approx(rate, rel=1e-12, abs=1e-18)
        assert scheduler.get_lr() == lr
        # every group gets the same rate (WeSpeaker's), times its lr_scale
        assert optimizer.param_groups[0]["lr"] == pytest.approx(rate, rel=1e-12, abs=1e-18)
        assert optimizer.param_groups[1]["lr"] == pytest.approx(0.25 * rate, rel=1e-12,
                                                                abs=1e-18)
    # just inside the cosine: a little above min_lr
    assert 1e-5 < scheduler.lr_at(41) < 1e-5 + 0.01 * (1e-3 - 1e-5)


def test_warmup_cosine_without_warm_up_and_with_a_short_cosine():
    # WeSpeaker's w2vbert_s2_ft.yaml with 10 batches per epoch: the cosine spans 20
    scheduler = WarmupCosineScheduler(_two_groups({}), 6, 10, **COSINE["scheduler_args"])
    assert scheduler.step(0) == 1e-5
    assert scheduler.lr_at(10) == pytest.approx(7.5e-6)  # half-way: the middle of the span
    assert scheduler.lr_at(20) == 5e-6
    # fix_epoch before the end of the warm-up: straight from the warm-up to min_lr
    short = WarmupCosineScheduler(_two_groups({}), 6, 10, min_lr=0.0, max_lr=1.0,
                                  warmup_epoch=2, fix_epoch=1)
    assert (short.lr_at(19), short.lr_at(20)) == (pytest.approx(0.95), 0.0)
    with pytest.raises(ValueError, match="min_lr"):
        WarmupCosineScheduler(_two_groups({}), 6, 10, min_lr=2.0, max_lr=1.0, warmup_epoch=0,
                              fix_epoch=1)


def _step_decay(optimizer):
    return WarmupLRWithStepDecay(optimizer, 30, 10, warmup_step=5, decay_step=5)


def _cosine(optimizer):
    return WarmupCosineScheduler(optimizer, 6, 10, min_lr=1e-5, max_lr=1e-3, warmup_epoch=1.5,
                                 fix_epoch=4.25)


@pytest.mark.parametrize("build", [_step_decay, _cosine], ids=["step_decay", "cosine"])
def test_state_round_trips_for_resume(build):
    optimizer = _two_groups({"lr_scale": 0.5})
    scheduler = build(optimizer)
    scheduler.step(137)
    state = scheduler.state_dict()
    # as ExponentialDecrease's: the iteration only, so a resume may change the scheduler
    assert state == {"current_iter": 137}
    assert state.keys() == ExponentialDecrease(optimizer, 4, 10, 0.1, 0.01).state_dict().keys()
    fresh_optimizer = _two_groups({"lr_scale": 0.5})  # built from the config, as on resume
    resumed = build(fresh_optimizer)
    resumed.load_state_dict(state)
    assert resumed.current_iter == 137 and resumed.get_lr() == scheduler.get_lr()
    assert resumed.step(138) == scheduler.step(138)
    assert ([group["lr"] for group in fresh_optimizer.param_groups]
            == [group["lr"] for group in optimizer.param_groups])


def test_the_config_names_are_the_schedulers_and_their_blocks():
    assert {name: (choice.factory(), choice.args) for name, choice in SCHEDULERS.items()} == {
        "ExponentialDecrease": (ExponentialDecrease, ExponentialDecreaseArgs),
        "TriAngular2": (TriAngular2, TriAngular2Args),
        "WarmupLR_withStepDecay": (WarmupLRWithStepDecay, WarmupStepDecayArgs),
        "WarmupCosineScheduler": (WarmupCosineScheduler, WarmupCosineArgs)}


def _config(scheduler: dict, **optimizer_args) -> dict:
    config = copy.deepcopy(TINY_CONFIG)
    config.update(copy.deepcopy(scheduler))
    config["optimizer_args"].update(optimizer_args)
    return config


def test_wespeaker_w2vbert_scheduler_blocks_parse():
    step_decay = TrainConfig.from_dict(_config(STEP_DECAY, lr=0.0001))
    assert step_decay.scheduler_args == WarmupStepDecayArgs(warmup_step=5, decay_step=5,
                                                            gamma=0.1)
    cosine = TrainConfig.from_dict(_config(COSINE))
    assert cosine.scheduler_args == WarmupCosineArgs(min_lr=5e-6, max_lr=1e-5,
                                                     warmup_epoch=0.0, fix_epoch=2.0)
    assert isinstance(TrainConfig.from_dict(_config({})).scheduler_args,
                      ExponentialDecreaseArgs)
    # the keys WeSpeaker's trainer writes into scheduler_args are accepted (and ignored)
    injected = _config(COSINE)
    injected["scheduler_args"].update(scale_ratio=4.0, num_epochs=2)
    assert TrainConfig.from_dict(injected).scheduler_args.scale_ratio == 4.0
    # gamma defaults to WeSpeaker's 0.1
    default_gamma = _config(STEP_DECAY, lr=0.1)
    del default_gamma["scheduler_args"]["gamma"]
    assert TrainConfig.from_dict(default_gamma).scheduler_args.gamma == 0.1


def _without(block: dict, key: str) -> dict:
    return {name: value for name, value in block.items() if name != key}


@pytest.mark.parametrize("scheduler, optimizer_args, message", [
    ({"scheduler_args": {"warmup_step": 1, "decay_step": 1}, "scheduler": "ExponentialDecrease"},
     {}, "unknown config key 'scheduler_args.warmup_step'"),
    ({"scheduler": "WarmupLR_withStepDecay", "scheduler_args": {"warmup_step": 1}}, {"lr": 0.1},
     "config key 'scheduler_args.decay_step' is required"),
    (STEP_DECAY, {}, "config key 'optimizer_args.lr' is required with scheduler "
                     "WarmupLR_withStepDecay"),
    ({"scheduler": "WarmupLR_withStepDecay",
      "scheduler_args": dict(STEP_DECAY["scheduler_args"], warmup_step=-1)}, {"lr": 0.1},
     "'scheduler_args.warmup_step' must be >= 0"),
    ({"scheduler": "WarmupLR_withStepDecay",
      "scheduler_args": dict(STEP_DECAY["scheduler_args"], warmup_step=0.5)}, {"lr": 0.1},
     "'scheduler_args.warmup_step' must be int"),
    ({"scheduler": "WarmupCosineScheduler",
      "scheduler_args": _without(COSINE["scheduler_args"], "max_lr")}, {},
     "config key 'scheduler_args.max_lr' is required"),
    ({"scheduler": "WarmupCosineScheduler",
      "scheduler_args": dict(COSINE["scheduler_args"], min_lr=1e-4)}, {},
     "config key 'scheduler_args.min_lr' must be <= max_lr"),
    ({"scheduler": "WarmupCosineScheduler",
      "scheduler_args": dict(COSINE["scheduler_args"], initial_lr=0.1)}, {},
     "unknown config key 'scheduler_args.initial_lr'; did you mean 'min_lr'\\? "
     "\\(known keys under 'scheduler_args': epoch_iter, fix_epoch, max_lr, min_lr"),
    ({"scheduler": "WarmupCosineScheduler",
      "scheduler_args": dict(COSINE["scheduler_args"], warmup_epoch=-1)}, {},
     "'scheduler_args.warmup_epoch' must be >= 0"),
    ({"scheduler": "CosineAnnealing", "scheduler_args": {}}, {},
     "config key 'scheduler' must be one of"),
])
def test_scheduler_config_errors_name_the_key(scheduler, optimizer_args, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(_config(scheduler, **optimizer_args))


def test_overrides_are_typed_by_the_chosen_block(tmp_path):
    path = write_config(str(tmp_path / "cosine.yaml"), _config(COSINE))
    config = load_config(path, [("scheduler_args.max_lr", "1e-4"),
                                ("scheduler_args.fix_epoch", "3")])
    assert config.scheduler_args.max_lr == 1e-4 and config.scheduler_args.fix_epoch == 3.0
    with pytest.raises(ConfigError, match="unknown config key 'scheduler_args.max_l'"):
        load_config(path, [("scheduler_args.max_l", "1e-4")])
    # switching the scheduler alone leaves the other scheduler's keys: an error naming one
    with pytest.raises(ConfigError, match="unknown config key 'scheduler_args.min_lr'"):
        load_config(path, [("scheduler", "ExponentialDecrease")])


def _plan_config(tmp_path, scheduler: dict, **optimizer_args) -> dict:
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("".join(f"u{index} s{index % 4}\n" for index in range(320)))
    return dict(_config(scheduler, **optimizer_args), num_epochs=10,
                dataloader_args={"batch_size": 32}, train_data="unused",
                train_label=str(utt2spk))


def test_a_plan_builds_each_scheduler_with_its_optimizer_lr(tmp_path):
    step_plan = plan_of(_plan_config(tmp_path, STEP_DECAY, lr=2e-4))
    cosine_plan = plan_of(_plan_config(tmp_path, COSINE))
    assert step_plan.epoch_iter == cosine_plan.epoch_iter == 10  # 320 utterances / 32
    assert step_plan.optimizer_args["lr"] == 2e-4
    assert cosine_plan.optimizer_args["lr"] == 1e-5  # max_lr when optimizer_args has no lr
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))],
                                **step_plan.optimizer_args)
    step_decay = build_lr_scheduler(step_plan, optimizer)
    assert isinstance(step_decay, WarmupLRWithStepDecay)
    assert step_decay.step(49) == pytest.approx(2e-4 * 50 / 51)  # 5 epochs of 10 warm up
    assert step_decay.step(100) == pytest.approx(2e-5)
    # the global batch (8 ranks: scale_ratio 4) leaves the rate alone, as in WeSpeaker
    eight = plan_of(_plan_config(tmp_path, STEP_DECAY, lr=2e-4),
                    dataclasses.replace(CPU_WORLD, world_size=8), epoch_iter=10)
    assert eight.lr_scale_ratio == 4.0
    fresh = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], **eight.optimizer_args)
    assert build_lr_scheduler(eight, fresh).lr_at(100) == pytest.approx(2e-5)
    cosine = build_lr_scheduler(cosine_plan, optimizer)
    assert isinstance(cosine, WarmupCosineScheduler)
    assert (cosine.lr_at(0), cosine.lr_at(20)) == (1e-5, 5e-6)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_speaker_corpus(str(tmp_path_factory.mktemp("corpus")), num_spks=4,
                               utts_per_spk=4, seconds=1.0)


# 16 utterances in batches of 8: 2 iterations per epoch, 3 epochs (t = 0..5).
# step decay, lr 0.1, warm-up 1 epoch, halved every epoch after it: t = 1 -> 0.1 * 2/3,
# t = 5 -> 0.1 * 0.5 ** 1; cosine 0.01..0.1, warm-up 1 epoch, flat from epoch 2 on:
# t = 1 -> 0.05, t = 5 -> 0.01
@pytest.mark.parametrize("scheduler, optimizer_args, epoch_1_lr, last_lr", [
    ({"scheduler": "WarmupLR_withStepDecay",
      "scheduler_args": {"warmup_step": 1, "decay_step": 1, "gamma": 0.5}}, {"lr": 0.1},
     0.1 * 2 / 3, 0.05),
    ({"scheduler": "WarmupCosineScheduler",
      "scheduler_args": {"min_lr": 0.01, "max_lr": 0.1, "warmup_epoch": 1, "fix_epoch": 2}},
     {}, 0.05, 0.01),
], ids=["step_decay", "cosine"])
def test_a_run_trains_with_the_schedule(corpus, tmp_path, scheduler, optimizer_args,
                                        epoch_1_lr, last_lr):
    exp_dir = str(tmp_path / "exp")
    config = tiny_config(exp_dir, corpus, num_epochs=3, num_avg=1, **copy.deepcopy(scheduler))
    config["optimizer_args"].update(optimizer_args)
    history = run_training(config)
    assert [result.batches for result in history] == [2, 2, 2]
    assert history[-1].lr == pytest.approx(last_lr)
    for epoch, lr, iteration in ((1, epoch_1_lr, 1), (3, last_lr, 5)):
        checkpoint = torch.load(os.path.join(exp_dir, "models", f"model_{epoch}.pt"),
                                map_location="cpu", weights_only=False)
        assert checkpoint["scheduler"] == {"current_iter": iteration}
        assert checkpoint["optimizer"]["param_groups"][0]["lr"] == pytest.approx(lr)
    # the saved config names the scheduler and reads back with its block
    saved_path = os.path.join(exp_dir, "config.yaml")
    assert yaml.safe_load(open(saved_path))["scheduler"] == scheduler["scheduler"]
    assert load_config(saved_path).scheduler_args == TrainConfig.from_dict(
        config).scheduler_args
    # resumed after epoch 1, the schedule goes on from the config's rates (not from the
    # checkpoint's warm-up rate) to the same end
    resumed_dir = str(tmp_path / "resumed")
    resumed = run_training(dict(config, exp_dir=resumed_dir, checkpoint=os.path.join(
        exp_dir, "models", "model_1.pt")))
    assert [result.epoch for result in resumed] == [2, 3]
    assert resumed[-1].lr == pytest.approx(last_lr)
    checkpoint = torch.load(os.path.join(resumed_dir, "models", "model_3.pt"),
                            map_location="cpu", weights_only=False)
    assert checkpoint["optimizer"]["param_groups"][0]["lr"] == pytest.approx(last_lr)
