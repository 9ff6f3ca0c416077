"""``loss``, ``optimizer`` and ``scheduler``: one table each (config/schema.py) that both the
config check and training build from; an argument the class does not take names its key."""
import dataclasses
import inspect

import pytest
import torch
import torch.nn as nn

from train_helpers import plan_of, tiny_config, write_config
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from wespeaker_py.config import ConfigError, TrainConfig, load_config
from wespeaker_py.config.choices import Choice
from wespeaker_py.config.fields import setting
from wespeaker_py.config.schema import (LOSSES, OPTIMIZERS, SCHEDULERS, TRAINER_WRITTEN_KEYS,
                                        CrossEntropyLossArgs)
from wespeaker_py.train.builder import build_lr_scheduler, build_model, build_optimizer
from wespeaker_py.train.step import TrainingStep


class ToyLoss(nn.Module):
    """Cross-entropy times ``weight``: a loss that only this test registers."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.weight * nn.functional.cross_entropy(logits, labels)


@dataclasses.dataclass(kw_only=True)
class ToyLossArgs:
    weight: float = setting(1.0, above=0)


@dataclasses.dataclass(kw_only=True)
class MismatchedLossArgs:
    """A block with a key its loss takes no argument of (a mistake in registering it)."""

    weight: float = 1.0
    temperature: float = 1.0


class ToySchedule:
    """A constant rate, built as the trainer builds every schedule."""

    def __init__(self, optimizer, num_epochs, epoch_iter, rate, scale_ratio=1.0):
        self.optimizer, self.rate = optimizer, rate


@dataclasses.dataclass(kw_only=True)
class ToyScheduleArgs:
    rate: float = setting(above=0)

    @property
    def optimizer_lr(self):
        return self.rate


def _training_step(config: dict) -> TrainingStep:
    plan = plan_of(config)
    model = build_model(plan)
    return TrainingStep(plan, model, plan.frontend, build_optimizer(plan, model))


def test_a_loss_registered_in_the_table_is_accepted_checked_and_trained_with(
        corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(LOSSES, "ToyLoss", Choice(f"{__name__}:ToyLoss", ToyLossArgs))
    config = tiny_config(str(tmp_path), corpus, loss="ToyLoss", loss_args={"weight": 2.0})
    criterion = _training_step(config).forward_loss.criterion
    assert isinstance(criterion, ToyLoss) and criterion.weight == 2.0
    with pytest.raises(ConfigError, match="'loss_args.weight' must be > 0"):
        TrainConfig.from_dict(dict(config, loss_args={"weight": 0}))


def test_a_loss_name_not_in_the_table_is_an_error_listing_the_table(
        corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(LOSSES, "ToyLoss", Choice(f"{__name__}:ToyLoss", ToyLossArgs))
    config = tiny_config(str(tmp_path), corpus, loss="AAMLoss")
    with pytest.raises(ConfigError, match=r"config key 'loss' must be one of "
                                          r"\['CrossEntropyLoss', 'ToyLoss'\], got 'AAMLoss'"):
        TrainConfig.from_dict(config)


def test_a_loss_args_key_the_loss_does_not_take_is_a_config_error_naming_it(
        corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(LOSSES, "ToyLoss", Choice(f"{__name__}:ToyLoss", MismatchedLossArgs))
    config = tiny_config(str(tmp_path), corpus, loss="ToyLoss",
                         loss_args={"weight": 2.0, "temperature": 0.5})
    with pytest.raises(ConfigError, match=r"config key 'loss_args.temperature': "
                                          r".*ToyLoss takes no argument 'temperature' "
                                          r"\(it takes weight\)"):
        _training_step(config)


def test_an_optimizer_registered_in_the_table_is_accepted_and_built(
        corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(OPTIMIZERS, "RMSprop", Choice("torch.optim:RMSprop"))
    config = tiny_config(str(tmp_path), corpus, optimizer="RMSprop",
                         optimizer_args={"momentum": 0.5})
    plan = plan_of(config)
    optimizer = build_optimizer(plan, build_model(plan))
    assert isinstance(optimizer, torch.optim.RMSprop)
    assert optimizer.param_groups[0]["momentum"] == 0.5


def test_an_optimizer_args_key_the_optimizer_does_not_take_names_the_key(corpus, tmp_path):
    config = tiny_config(str(tmp_path), corpus, optimizer_args={"betas": [0.9, 0.99]})
    plan = plan_of(config)
    with pytest.raises(ConfigError, match=r"config key 'optimizer_args.betas': torch.optim:SGD "
                                          r"takes no argument 'betas' \(it takes lr, momentum"):
        build_optimizer(plan, build_model(plan))


def test_a_scheduler_registered_in_the_table_is_accepted_typed_and_built(
        corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(SCHEDULERS, "Toy", Choice(f"{__name__}:ToySchedule", ToyScheduleArgs))
    config = tiny_config(str(tmp_path), corpus, scheduler="Toy",
                         scheduler_args={"rate": 0.5})
    assert TrainConfig.from_dict(config).scheduler_args == ToyScheduleArgs(rate=0.5)
    # overrides are typed by its block too
    path = write_config(str(tmp_path / "toy.yaml"), config)
    assert load_config(path, [("scheduler_args.rate", "1e-2")]).scheduler_args.rate == 0.01
    plan = plan_of(config)
    schedule = build_lr_scheduler(plan, build_optimizer(plan, build_model(plan)))
    assert isinstance(schedule, ToySchedule) and schedule.rate == 0.5


def test_every_entry_names_a_class_that_takes_its_blocks_keys():
    for name, choice in {**LOSSES, **SCHEDULERS}.items():
        keys = {field.name for field in dataclasses.fields(choice.args)} - TRAINER_WRITTEN_KEYS
        parameters = set(inspect.signature(choice.factory()).parameters)
        assert keys <= parameters, (name, keys - parameters)
    for name, choice in OPTIMIZERS.items():
        assert choice.args is None and issubclass(choice.factory(), torch.optim.Optimizer), name
    assert LOSSES["CrossEntropyLoss"] == Choice("torch.nn:CrossEntropyLoss", CrossEntropyLossArgs)
