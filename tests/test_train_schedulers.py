"""Learning-rate and margin schedules against their formulas."""
import dataclasses
import logging
import math

import pytest
import torch

from train_helpers import CPU_WORLD, TINY_CONFIG, plan_of
from wespeaker_py.models.projections import (ArcMarginProduct, LinearSoftmax, ProjectionHead,
                                             SphereProduct)
from wespeaker_py.train.builder import build_lr_scheduler, check_model_builds
from wespeaker_py.train.schedulers import ExponentialDecrease, MarginScheduler


def _optimizer():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_exponential_decrease_with_warm_up_from_zero():
    # 150 epochs of 1000 batches on 2 ranks x 128 samples: scale 4, 6 warm-up epochs
    optimizer = _optimizer()
    scheduler = ExponentialDecrease(optimizer, num_epochs=150, epoch_iter=1000, initial_lr=0.1,
                                    final_lr=5e-5, warm_up_epoch=6, scale_ratio=4.0,
                                    warm_from_zero=True)
    total = 150 * 1000

    def decay(t):
        return 0.1 * (5e-5 / 0.1) ** (t / total)

    for t in (0, 1, 2999, 5999, 6000, 75000, 149999):
        lr = scheduler.step(t)
        coefficient = 4.0 * t / 6000 if t < 6000 else 4.0
        assert lr == pytest.approx(coefficient * decay(t), rel=1e-12)
        assert optimizer.param_groups[0]["lr"] == lr
    assert scheduler.step(0) == 0.0
    # after warm-up the rate is exactly the scaled exponential; at the end it is final_lr * 4
    assert scheduler.lr_at(total) == pytest.approx(4 * 5e-5)


def test_exponential_decrease_warm_up_from_one_only_when_scaled_up():
    optimizer = _optimizer()
    scaled = ExponentialDecrease(optimizer, 10, 100, 1e-3, 1e-5, warm_up_epoch=2,
                                 scale_ratio=3.0, warm_from_zero=False)
    t = 50
    assert scaled.lr_at(t) == pytest.approx(((3.0 - 1.0) * t / 200 + 1.0) * 1e-3
                                            * math.exp(t / 1000 * math.log(1e-2)))
    unscaled = ExponentialDecrease(optimizer, 10, 100, 1e-3, 1e-5, warm_up_epoch=2,
                                   scale_ratio=1.0, warm_from_zero=False)
    assert unscaled.lr_at(t) == pytest.approx(1e-3 * math.exp(t / 1000 * math.log(1e-2)))


def test_lr_scale_follows_world_size_and_batch_size(tmp_path):
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("".join(f"u{index} s{index % 4}\n" for index in range(320)))
    config = dict(TINY_CONFIG, num_epochs=10, dataloader_args={"batch_size": 32},
                  train_data="unused", train_label=str(utt2spk),
                  scheduler_args={"initial_lr": 0.1, "final_lr": 0.01, "warm_up_epoch": 1,
                                  "warm_from_zero": True})
    single = build_lr_scheduler(plan_of(config), _optimizer())
    eight_ranks = dataclasses.replace(CPU_WORLD, world_size=8)
    eight = build_lr_scheduler(plan_of(config, eight_ranks), _optimizer())
    assert single.scale_ratio == 0.5 and eight.scale_ratio == 4.0
    assert (single.max_iter, eight.max_iter) == (100, 10)  # 320 utterances / ranks / 32
    # the same point of the schedule (half-way) at eight times the rate
    assert eight.lr_at(5) == pytest.approx(8 * single.lr_at(50))


def _exp_margin(t, start, stop, initial, final):
    progress = (t - start) / (stop - start)
    return initial + (final - initial) * (1 - math.exp(progress * math.log(1e-3 / (1 + 1e-6))))


@pytest.mark.parametrize("increase_type", ["exp", "linear"])
def test_margin_rises_between_the_epochs(increase_type):
    head = ArcMarginProduct(8, 4, margin=0.7)
    epoch_iter = 100
    scheduler = MarginScheduler(head, epoch_iter=epoch_iter, increase_start_epoch=20,
                                fix_start_epoch=40, initial_margin=0.0, final_margin=0.2,
                                update_margin=True, increase_type=increase_type)
    assert head.margin == 0.0  # set to the initial margin at construction
    start, stop = 19 * epoch_iter, 39 * epoch_iter
    for t in (0, start - 1, start, start + 1, 2500, stop - 1, stop, 10000):
        scheduler.step(t)
        if t < start:
            expected = 0.0
        elif t >= stop:
            expected = 0.2
        elif increase_type == "exp":
            expected = _exp_margin(t, start, stop, 0.0, 0.2)
        else:
            expected = 0.2 * (t - start) / (stop - start)
        assert scheduler.get_margin() == pytest.approx(expected, abs=1e-12)
        # the head's derived constants follow the margin
        assert head.cos_m == pytest.approx(math.cos(expected))


def test_exp_margin_rises_fast_then_levels_off():
    head = ArcMarginProduct(8, 4)
    scheduler = MarginScheduler(head, 10, 2, 12, 0.0, 0.2)
    quarter = scheduler.margin_at(10 + 25)
    assert quarter > 0.2 * 0.75  # exp: 1 - 1e-3 ** 0.25 = 0.82 of the way at a quarter


def test_fixed_margin_for_large_margin_fine_tuning_and_no_update():
    head = ArcMarginProduct(8, 4)
    lm = MarginScheduler(head, 50, increase_start_epoch=1, fix_start_epoch=1,
                         initial_margin=0.5, final_margin=0.5)
    for t in (0, 1, 249):
        lm.step(t)
        assert head.margin == 0.5
    frozen = MarginScheduler(head, 50, 20, 40, initial_margin=0.2, final_margin=0.3,
                             update_margin=False)
    frozen.step(10_000)
    assert head.margin == 0.2
    # a head without a margin is left alone and reports 0
    plain = MarginScheduler(LinearSoftmax(8, 4), 50, 20, 40, 0.0, 0.2)
    plain.step(3000)
    assert plain.get_margin() == 0.0


class _RecordingHead(ProjectionHead):
    """A head that records what the scheduler tells it."""

    def __init__(self, margin_schedulable: bool):
        super().__init__()
        self.margin_schedulable = margin_schedulable
        self.updates, self.iterations = [], []

    def update(self, margin: float) -> None:
        self.updates.append(margin)

    def set_iteration(self, iteration: int) -> None:
        self.iterations.append(iteration)


def test_only_a_head_with_a_schedulable_margin_is_given_one():
    fixed = _RecordingHead(margin_schedulable=False)
    scheduler = MarginScheduler(fixed, 10, 2, 4, 0.0, 0.2)
    scheduler.step(35)
    scheduler.load_state_dict({"current_iter": 35, "margin": 0.15})
    assert fixed.updates == [] and fixed.iterations == [35]
    # a margin head: the initial margin, each step's, and the resumed one (WeSpeaker's calls)
    scheduled = _RecordingHead(margin_schedulable=True)
    scheduler = MarginScheduler(scheduled, 10, 2, 4, 0.0, 0.2)
    scheduler.step(35)
    scheduler.load_state_dict({"current_iter": 35, "margin": 0.15})
    assert scheduled.updates == [0.0, 0.2, 0.15] and scheduled.iterations == [35]


_RISING = {"initial_margin": 0.0, "final_margin": 0.2, "increase_start_epoch": 2,
           "fix_start_epoch": 3, "update_margin": True}


@pytest.mark.parametrize("project_type, margins, warned", [
    ("softmax", {}, True),
    ("sphere", {}, True),
    ("arc_margin", {}, False),
    ("softmax", {"final_margin": 0.0}, False),  # margin 0 throughout: nothing asked
    ("softmax", {"initial_margin": 0.2, "final_margin": 0.2, "update_margin": False}, True),
    ("softmax", {"update_margin": False}, False),  # held at its initial 0
])
def test_a_margin_update_for_a_head_without_a_margin_is_a_warning(
        tmp_path, caplog, project_type, margins, warned):
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("".join(f"u{index} s{index % 4}\n" for index in range(64)))
    margin_update = dict(_RISING, **margins)
    config = dict(TINY_CONFIG, train_data="unused", train_label=str(utt2spk),
                  projection_args={"project_type": project_type},
                  margin_update=margin_update)
    with caplog.at_level(logging.WARNING):
        check_model_builds(plan_of(config))
    told = [record.getMessage() for record in caplog.records
            if "margin_update" in record.getMessage()]
    expected = (f"config key 'margin_update' has no effect: project_type {project_type} has "
                f"no margin to schedule (initial_margin {margin_update['initial_margin']:g}, "
                f"final_margin {margin_update['final_margin']:g} are ignored)")
    assert told == ([expected] if warned else [])


def test_scheduler_state_round_trips():
    head = ArcMarginProduct(8, 4)
    scheduler = MarginScheduler(head, 10, 2, 4, 0.0, 0.2)
    scheduler.step(25)
    state = scheduler.state_dict()
    other_head = ArcMarginProduct(8, 4)
    other = MarginScheduler(other_head, 10, 2, 4, 0.0, 0.2)
    other.load_state_dict(state)
    assert other.current_iter == 25 and other_head.margin == head.margin


def test_the_sphere_head_anneals_by_the_global_iteration():
    """Set every step from the iteration, as a fresh head counting uninterrupted steps."""
    torch.manual_seed(0)
    uninterrupted = SphereProduct(8, 5, margin=4)
    resumed = SphereProduct(8, 5, margin=4)  # a fresh head, as a resumed run builds
    resumed.load_state_dict(uninterrupted.state_dict())
    embeddings, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    for _ in range(60):  # iterations 0..59
        logits = uninterrupted(embeddings, labels)
    scheduler = MarginScheduler(resumed, epoch_iter=20, increase_start_epoch=1,
                                fix_start_epoch=1, initial_margin=4, final_margin=4,
                                update_margin=False)
    scheduler.step(59)
    assert torch.equal(resumed(embeddings, labels), logits)
    # a step of the same iteration again (one whose update was dropped) anneals the same
    scheduler.step(59)
    assert torch.equal(resumed(embeddings, labels), logits)
    assert not torch.equal(uninterrupted(embeddings, labels), logits)  # the annealing moves
