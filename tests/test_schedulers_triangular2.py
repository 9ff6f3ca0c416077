"""WeSpeaker's TriAngular2 learning-rate schedule: its formula, its config keys, its build."""
import copy

import pytest
import torch

from train_helpers import TINY_CONFIG, plan_of
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from wespeaker_py.config import ConfigError, TrainConfig, TriAngular2Args
from wespeaker_py.train.builder import build_lr_scheduler, build_model, build_optimizer
from wespeaker_py.train.schedulers import TriAngular2

# 10 batches per epoch, cycles of 2 epochs: up over 10 batches, down over the next 10
EPOCH_ITER, INITIAL_LR, FINAL_LR = 10, 0.1, 0.01


def _reference_lr(t: int, initial_lr: float, final_lr: float, epoch_iter: int,
                  warm_up_epoch: float, scale_ratio: float, cycle_step: float,
                  ratio: float) -> float:
    """The rate at iteration ``t``, written out from the paper's triangular2 policy and
    WeSpeaker's warm-up coefficient, step by step (independent of the code under test)."""
    cycle = cycle_step * epoch_iter
    half = cycle // 2
    index = t // cycle
    into = t - index * cycle
    top = final_lr + (initial_lr - final_lr) * ratio ** index
    if into <= half:
        base = final_lr + (top - final_lr) * (into / half)
    else:
        base = top - (top - final_lr) * ((into - half) / half)
    warm_up = warm_up_epoch * epoch_iter
    coefficient = scale_ratio
    if t < warm_up and scale_ratio > 1:
        coefficient = 1.0 + (scale_ratio - 1.0) * t / warm_up
    return coefficient * base


def _optimizer(**group) -> torch.optim.Optimizer:
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], **group}],
                           lr=1.0)


# iteration: rate, worked out by hand for scale_ratio 1 (no warm-up factor), ratio 0.5:
# a peak of 0.1 in the first cycle, 0.055 in the second, 0.0325 in the third
HAND_RATES = {0: 0.01, 5: 0.055, 10: 0.1, 15: 0.055, 19: 0.019, 20: 0.01, 25: 0.0325,
              30: 0.055, 35: 0.0325, 40: 0.01, 50: 0.0325}


def test_the_rate_climbs_and_falls_with_a_peak_halving_each_cycle():
    optimizer = _optimizer()
    scheduler = TriAngular2(optimizer, num_epochs=10, epoch_iter=EPOCH_ITER,
                            initial_lr=INITIAL_LR, final_lr=FINAL_LR, warm_up_epoch=6,
                            scale_ratio=1.0)
    for t, rate in HAND_RATES.items():
        assert scheduler.step(t) == pytest.approx(rate, rel=1e-12), t
        assert optimizer.param_groups[0]["lr"] == pytest.approx(rate, rel=1e-12)


@pytest.mark.parametrize("settings", [
    {"warm_up_epoch": 1, "scale_ratio": 4.0, "cycle_step": 2, "ratio": 0.5},
    {"warm_up_epoch": 6, "scale_ratio": 2.0, "cycle_step": 3, "ratio": 0.8},
    {"warm_up_epoch": 2, "scale_ratio": 0.5, "cycle_step": 1, "ratio": 0.25},  # no warm-up
    {"warm_up_epoch": 0, "scale_ratio": 3.0, "cycle_step": 2.5, "ratio": 0.5},  # 25-batch cycle
])
def test_the_rate_follows_the_formula_with_warm_up_and_batch_scale(settings):
    optimizer = _optimizer()
    scheduler = TriAngular2(optimizer, num_epochs=10, epoch_iter=EPOCH_ITER,
                            initial_lr=INITIAL_LR, final_lr=FINAL_LR,
                            warm_up_epoch=settings["warm_up_epoch"],
                            scale_ratio=settings["scale_ratio"],
                            cycle_step=settings["cycle_step"],
                            reduce_lr_diff_ratio=settings["ratio"])
    for t in (0, 1, 4, 5, 9, 10, 11, 12, 14, 15, 19, 20, 21, 29, 30, 37, 45, 59, 60, 61, 99):
        expected = _reference_lr(t, INITIAL_LR, FINAL_LR, EPOCH_ITER, **settings)
        assert scheduler.step(t) == pytest.approx(expected, rel=1e-12), t


def test_a_fractional_cycle_falls_no_lower_than_final_lr():
    # 7 batches per epoch and cycle_step 2.5: a cycle of 17.5 batches, up over S = 8 and
    # down over 9.5, where WeSpeaker's formula reaches 0.1 - 0.09995 * 9 / 8 = -0.0124 at 17
    final_lr = 5e-5
    scheduler = TriAngular2(_optimizer(), num_epochs=10, epoch_iter=7, initial_lr=0.1,
                            final_lr=final_lr, scale_ratio=1.0, cycle_step=2.5)
    assert scheduler.step(8) == pytest.approx(0.1, rel=1e-12)
    assert scheduler.step(16) == pytest.approx(final_lr, rel=1e-9)
    assert scheduler.step(17) == final_lr
    # elsewhere the rate is WeSpeaker's
    for t in range(70):
        wespeaker = _reference_lr(t, 0.1, final_lr, 7, warm_up_epoch=6, scale_ratio=1.0,
                                  cycle_step=2.5, ratio=0.5)
        assert scheduler.step(t) == pytest.approx(max(wespeaker, final_lr), rel=1e-12), t


def test_warm_up_scales_the_rate_from_one_to_the_batch_scale():
    scheduler = TriAngular2(_optimizer(), num_epochs=10, epoch_iter=EPOCH_ITER,
                            initial_lr=INITIAL_LR, final_lr=FINAL_LR, warm_up_epoch=1,
                            scale_ratio=4.0)
    # iteration 5: halfway up the first cycle (0.055), halfway through warm-up (x 2.5)
    assert scheduler.step(5) == pytest.approx(0.055 * 2.5)
    assert scheduler.step(15) == pytest.approx(0.055 * 4.0)


def test_each_group_gets_the_rate_times_its_lr_scale_and_a_resume_goes_on():
    optimizer = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))]},
                                 {"params": [torch.nn.Parameter(torch.zeros(1))],
                                  "lr_scale": 0.1}], lr=1.0)
    scheduler = TriAngular2(optimizer, 10, EPOCH_ITER, INITIAL_LR, FINAL_LR, scale_ratio=1.0)
    assert scheduler.step(25) == pytest.approx(0.0325)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.0325, 0.00325])
    resumed = TriAngular2(_optimizer(), 10, EPOCH_ITER, INITIAL_LR, FINAL_LR, scale_ratio=1.0)
    resumed.load_state_dict(scheduler.state_dict())
    assert resumed.get_lr() == scheduler.get_lr()
    assert resumed.step(26) == scheduler.step(26)


def test_a_cycle_shorter_than_two_batches_is_refused():
    with pytest.raises(ValueError, match=r"cycle_step 0\.1 of 10 batches per epoch is a cycle "
                                         r"of 1 batches; it needs at least 2"):
        TriAngular2(_optimizer(), 10, EPOCH_ITER, INITIAL_LR, FINAL_LR, cycle_step=0.1)


def _config(**scheduler_args) -> dict:
    config = copy.deepcopy(TINY_CONFIG)
    config["scheduler"] = "TriAngular2"
    config["scheduler_args"] = {"initial_lr": INITIAL_LR, "final_lr": FINAL_LR,
                                **scheduler_args}
    return config


def test_the_config_takes_wespeakers_keys_and_defaults():
    args = TrainConfig.from_dict(_config()).scheduler_args
    assert args == TriAngular2Args(initial_lr=INITIAL_LR, final_lr=FINAL_LR, warm_up_epoch=6.0,
                                   cycle_step=2.0, reduce_lr_diff_ratio=0.5)
    given = TrainConfig.from_dict(_config(warm_up_epoch=1, cycle_step=4,
                                          reduce_lr_diff_ratio=0.25)).scheduler_args
    assert (given.warm_up_epoch, given.cycle_step, given.reduce_lr_diff_ratio) == (1, 4, 0.25)
    # WeSpeaker's TriAngular2 takes no warm_from_zero
    with pytest.raises(ConfigError, match=r"unknown config key 'scheduler_args\.warm_from_zero'"):
        TrainConfig.from_dict(_config(warm_from_zero=True))
    with pytest.raises(ConfigError, match=r"'scheduler_args\.cycle_step' must be > 0"):
        TrainConfig.from_dict(_config(cycle_step=0))


def test_training_builds_it_with_the_global_batch_scale(tmp_path):
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("".join(f"u{index} s{index % 4}\n" for index in range(64)))
    config = dict(_config(warm_up_epoch=1, cycle_step=2), train_data="unused",
                  train_label=str(utt2spk))
    plan = plan_of(config)
    optimizer = build_optimizer(plan, build_model(plan))
    assert optimizer.param_groups[0]["lr"] == INITIAL_LR   # optimizer_args has no lr
    scheduler = build_lr_scheduler(plan, optimizer)
    assert isinstance(scheduler, TriAngular2)
    # 64 utterances in batches of 8 on one rank: 8 per epoch; 8 / 64 scales the rate
    assert plan.epoch_iter == 8 and plan.lr_scale_ratio == 8 / 64
    for t in (0, 3, 8, 12, 16, 20):
        expected = _reference_lr(t, INITIAL_LR, FINAL_LR, 8, warm_up_epoch=1,
                                 scale_ratio=8 / 64, cycle_step=2, ratio=0.5)
        assert scheduler.step(t) == pytest.approx(expected, rel=1e-12)


def test_a_cycle_the_epochs_cannot_hold_is_refused_naming_the_block(tmp_path):
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("".join(f"u{index} s{index % 4}\n" for index in range(64)))
    config = dict(_config(cycle_step=0.1), train_data="unused", train_label=str(utt2spk))
    plan = plan_of(config)
    with pytest.raises(ConfigError, match=r"config key 'scheduler_args' does not fit "
                                          r"TriAngular2: cycle_step 0\.1 of 8 batches"):
        build_lr_scheduler(plan, build_optimizer(plan, build_model(plan)))
