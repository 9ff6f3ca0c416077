"""Checkpoint loading rules (LM head, mismatches), RNG capture and model averaging."""
import logging
import os
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from wespeaker_py.bin import average_model
from wespeaker_py.cli.common import run_main
from wespeaker_py.models.projections import get_projection
from wespeaker_py.train.average import average_checkpoints, select_checkpoints
from wespeaker_py.runtime.checkpoint import CheckpointMismatchError, load_weights
from wespeaker_py.train.builder import load_start_weights
from wespeaker_py.train.checkpoint import (capture_rng_state, epoch_from_name, parameter_digest,
                                           restore_rng_state, speaker_map_digest)
from wespeaker_py.train.plan import read_start_weights


class TinyEncoder(nn.Module):
    def __init__(self, embed_dim=6):
        super().__init__()
        self.linear = nn.Linear(4, embed_dim)
        self.bn = nn.BatchNorm1d(embed_dim)

    def forward(self, x):
        return self.bn(self.linear(x.mean(dim=1)))


def _model(num_class, embed_dim=6, project_type="arc_margin"):
    model = TinyEncoder(embed_dim)
    model.add_module("projection", get_projection({"project_type": project_type},
                                                  embed_dim=embed_dim, num_class=num_class))
    return model


def start_from(model, checkpoint=None, model_init=None, model_init_head=False):
    """Load ``--checkpoint`` and ``--model_init`` into ``model`` as a training run does: read
    by the plan, loaded by the builder (no other field of the plan plays a part)."""
    plan = SimpleNamespace(start=read_start_weights(model_init, checkpoint),
                           model_init_head=model_init_head)
    load_start_weights(plan, model)


def test_lm_rule_loads_the_first_rows_of_a_larger_head_from_a_bare_checkpoint(tmp_path):
    source = _model(num_class=15)  # 5 speakers x 3 speeds
    path = str(tmp_path / "avg_model.pt")
    torch.save(source.state_dict(), path)
    target = _model(num_class=5)
    start_from(target, checkpoint=path)
    assert torch.equal(target.projection.weight, source.projection.weight[:5])
    assert torch.equal(target.linear.weight, source.linear.weight)
    assert torch.equal(target.bn.running_mean, source.bn.running_mean)


def test_a_head_not_three_times_the_model_s_warns_that_its_rows_are_other_speakers(
        tmp_path, caplog):
    """3x the model's rows: the speed-perturbed head of its speakers (INFO). Any other
    larger head is another speaker list's: its first rows load, with a warning."""
    path = str(tmp_path / "avg_model.pt")
    for rows, warned in ((15, False), (8, True), (20, True)):
        torch.save(_model(num_class=rows).state_dict(), path)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="wespeaker_py.runtime.checkpoint"):
            start_from(_model(num_class=5), checkpoint=path)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert bool(warnings) == warned, rows
        if warned:
            assert f"'projection.weight' has {rows} rows in the checkpoint and 5" in warnings[0]
            assert "the classes of the checkpoint's speakers" in warnings[0]
        else:
            assert "first 5 of 15 rows of projection.weight" in caplog.text


def test_a_training_checkpoint_loads_exactly(tmp_path):
    source = _model(num_class=15)
    path = str(tmp_path / "model_3.pt")
    torch.save({"model": source.state_dict(), "optimizer": {}, "epoch": 3}, path)
    target = _model(num_class=15)
    start_from(target, checkpoint=path)
    assert torch.equal(target.projection.weight, source.projection.weight)
    with pytest.raises(CheckpointMismatchError, match="'projection.weight' has shape"):
        start_from(_model(num_class=5), checkpoint=path)   # no LM rule for a resumed run


def test_model_init_leaves_the_head_random_unless_model_init_head_then_loads_it_exactly(
        tmp_path):
    source = _model(num_class=15)
    path = str(tmp_path / "init.pt")
    torch.save({"model": source.state_dict(), "optimizer": {}}, path)
    target = _model(num_class=15)
    head_before = target.projection.weight.clone()
    start_from(target, model_init=path)
    assert torch.equal(target.linear.weight, source.linear.weight)
    assert torch.equal(target.projection.weight, head_before)
    start_from(target, model_init=path, model_init_head=True)
    assert torch.equal(target.projection.weight, source.projection.weight)
    with pytest.raises(CheckpointMismatchError, match="'projection.weight' has shape"):
        start_from(_model(num_class=5), model_init=path, model_init_head=True)


def test_model_init_without_head_initialises_the_encoder_only(tmp_path):
    source = _model(num_class=15)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("projection.")}
    path = str(tmp_path / "encoder.pt")
    torch.save(state, path)
    target = _model(num_class=5)
    head_before = target.projection.weight.clone()
    start_from(target, model_init=path)
    assert torch.equal(target.linear.bias, source.linear.bias)
    assert torch.equal(target.projection.weight, head_before)


@pytest.mark.parametrize("make_state, message", [
    (lambda: _model(num_class=3).state_dict(),
     r"tensor 'projection.weight' has shape \(3, 6\) in the checkpoint but \(5, 6\)"),
    (lambda: _model(num_class=15, embed_dim=7).state_dict(),
     r"tensor 'linear.weight' has shape \(7, 4\)"),
    (lambda: {**_model(num_class=5).state_dict(), "extra.weight": torch.zeros(1)},
     "tensor 'extra.weight' is not in the model"),
    (lambda: {k: v for k, v in _model(num_class=5).state_dict().items()
              if k != "bn.running_var"},
     "tensor 'bn.running_var' is missing"),
])
def test_other_mismatches_are_errors_naming_the_tensor(tmp_path, make_state, message):
    path = str(tmp_path / "bad.pt")
    torch.save(make_state(), path)
    with pytest.raises(CheckpointMismatchError, match=message):
        start_from(_model(num_class=5), checkpoint=path)


def test_a_partial_head_is_an_error(tmp_path):
    state = _model(num_class=15, project_type="softmax").state_dict()
    del state["projection.trans.2.bias"]
    path = str(tmp_path / "partial.pt")
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match="'projection.trans.2.bias' is missing"):
        start_from(_model(num_class=5, project_type="softmax"), checkpoint=path)
    # complete, a 3x softmax head loads its first rows (weight and bias)
    full = _model(num_class=15, project_type="softmax")
    torch.save(full.state_dict(), path)
    target = _model(num_class=5, project_type="softmax")
    start_from(target, checkpoint=path)
    assert torch.equal(target.projection.trans[2].bias, full.projection.trans[2].bias[:5])


def test_exact_load_refuses_even_a_larger_head():
    with pytest.raises(CheckpointMismatchError, match="projection.weight"):
        load_weights(_model(num_class=5), _model(num_class=15).state_dict(), "ckpt",
                     allow_head_truncation=False)


def test_rng_state_round_trip():
    cpu = torch.device("cpu")
    state = capture_rng_state(cpu)
    assert state["cuda"] is None
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(state, cpu)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


class FakeCudaGenerators:
    """Stands in for torch.cuda's generator calls: one state per device index."""

    def __init__(self, monkeypatch, visible):
        self.states = {index: torch.full((4,), index, dtype=torch.uint8)
                       for index in range(visible)}
        self.set_calls = []
        monkeypatch.setattr(torch.cuda, "get_rng_state", self.get_rng_state)
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set_rng_state)
        for name in ("get_rng_state_all", "set_rng_state_all"):
            monkeypatch.setattr(torch.cuda, name, self.refuse)

    def get_rng_state(self, device):
        return self.states[torch.device(device).index].clone()

    def set_rng_state(self, state, device):
        index = torch.device(device).index
        if index not in self.states:
            raise IndexError(index)
        self.set_calls.append(index)
        self.states[index] = state.clone()

    def refuse(self, *args):
        raise AssertionError("no rank reads or writes other devices' generators")


def test_a_rank_keeps_only_its_own_cuda_generator_state(monkeypatch):
    """Captured from this rank's device, restored to its device, whichever index it has now
    (fewer GPUs visible, or another mapping)."""
    generators = FakeCudaGenerators(monkeypatch, visible=4)
    state = capture_rng_state(torch.device("cuda", 3))
    assert torch.equal(state["cuda"], torch.full((4,), 3, dtype=torch.uint8))
    generators = FakeCudaGenerators(monkeypatch, visible=1)  # the resumed job sees one GPU
    restore_rng_state(state, torch.device("cuda", 0))
    assert generators.set_calls == [0]
    assert torch.equal(generators.states[0], state["cuda"])


def test_an_older_checkpoints_list_of_cuda_states_still_loads(monkeypatch, caplog):
    generators = FakeCudaGenerators(monkeypatch, visible=2)
    state = dict(capture_rng_state(torch.device("cpu")),
                 cuda=[torch.full((4,), 10 + index, dtype=torch.uint8) for index in range(2)])
    restore_rng_state(state, torch.device("cuda", 1))  # the entry of this device's index
    assert generators.set_calls == [1]
    assert torch.equal(generators.states[1], state["cuda"][1])
    generators = FakeCudaGenerators(monkeypatch, visible=4)
    with caplog.at_level(logging.WARNING):
        restore_rng_state(state, torch.device("cuda", 3))  # no entry for it: warned, skipped
        restore_rng_state(dict(state, cuda=[]), torch.device("cuda", 0))  # a CPU run's
    assert generators.set_calls == []
    told = [record.getMessage() for record in caplog.records]
    assert len(told) == 2 and "no CUDA generator state for cuda:3" in told[0]
    restore_rng_state(state, torch.device("cpu"))  # a CPU run leaves CUDA alone
    assert generators.set_calls == []


def test_parameter_digest_sees_every_parameter_but_not_buffers():
    model = _model(num_class=5)
    digest = parameter_digest(model)
    model.bn.running_mean += 1.0
    assert parameter_digest(model) == digest
    with torch.no_grad():
        model.projection.weight[4, 5] += 1e-7
    assert parameter_digest(model) != digest


def test_the_speaker_map_digest_sees_the_mapping_not_the_order_it_was_built_in():
    mapping = {"spk0": 0, "spk1": 1, "spk2": 2}
    assert speaker_map_digest(mapping) == speaker_map_digest(dict(reversed(mapping.items())))
    rotated = {"spk0": 1, "spk1": 2, "spk2": 0}
    assert speaker_map_digest(rotated) != speaker_map_digest(mapping)
    assert speaker_map_digest({"spk0": 0, "spk1": 1}) != speaker_map_digest(mapping)


def test_epoch_from_name():
    assert epoch_from_name("exp/models/model_12.pt") == 12
    assert epoch_from_name("exp/models/avg_model.pt") is None


def _write_checkpoints(directory, epochs, training_format=True):
    os.makedirs(directory, exist_ok=True)
    states = {}
    for epoch in epochs:
        torch.manual_seed(epoch)
        model = _model(num_class=5)
        model.bn.num_batches_tracked.fill_(epoch * 10)
        states[epoch] = model.state_dict()
        payload = {"model": states[epoch], "optimizer": {}, "epoch": epoch} \
            if training_format else states[epoch]
        torch.save(payload, os.path.join(directory, f"model_{epoch}.pt"))
    return states


def test_average_of_hand_made_checkpoints_is_the_mean(tmp_path):
    src = str(tmp_path / "models")
    states = _write_checkpoints(src, range(1, 6))
    torch.save(states[1], os.path.join(src, "avg_model.pt"))  # must be ignored
    os.symlink("model_5.pt", os.path.join(src, "final_model.pt"))  # must be ignored
    dst = str(tmp_path / "models" / "avg_model.pt")
    used = average_checkpoints(src, num=3, dst_model=dst)
    assert [epoch_from_name(p) for p in used] == [3, 4, 5]
    averaged = torch.load(dst)
    for key, value in averaged.items():
        if value.is_floating_point():
            mean = (states[3][key].double() + states[4][key].double()
                    + states[5][key].double()) / 3
            assert torch.allclose(value.double(), mean, atol=1e-7), key
            assert value.dtype == states[5][key].dtype
        else:
            assert torch.equal(value, states[5][key])  # integer buffers: the newest
    assert set(averaged) == set(states[5])


def test_average_honours_epoch_bounds_and_refuses_too_few(tmp_path):
    src = str(tmp_path)
    _write_checkpoints(src, [5, 10, 15, 20, 25], training_format=False)
    assert [epoch_from_name(p) for p in select_checkpoints(src, 2, max_epoch=20)] == [15, 20]
    assert [epoch_from_name(p) for p in select_checkpoints(src, 2, min_epoch=5, max_epoch=12)] \
        == [5, 10]
    with pytest.raises(ValueError, match="holds 2 checkpoints"):
        select_checkpoints(src, 3, min_epoch=20)


def test_average_rejects_checkpoints_of_different_models(tmp_path):
    src = str(tmp_path)
    _write_checkpoints(src, [1])
    torch.save(_model(num_class=7).state_dict(), os.path.join(src, "model_2.pt"))
    with pytest.raises(ValueError, match="'projection.weight' has shape"):
        average_checkpoints(src, 2, str(tmp_path / "avg.pt"))


def test_average_model_command_line(tmp_path, capsys):
    src = str(tmp_path / "models")
    states = _write_checkpoints(src, [1, 2])
    dst = str(tmp_path / "avg.pt")
    average_model.main(["--src_path", src, "--num", "2", "--dst_model", dst])
    averaged = torch.load(dst)
    expected = (states[1]["linear.weight"] + states[2]["linear.weight"]) / 2
    assert torch.allclose(averaged["linear.weight"], expected)
    assert run_main(average_model.main, ["--src_path", src, "--num", "3", "--dst_model",
                                         dst]) == 2
    assert "holds 2 checkpoints" in capsys.readouterr().err


@pytest.mark.parametrize("contents", [b"garbage", b""])
def test_a_damaged_checkpoint_is_named_not_a_traceback(tmp_path, capsys, contents):
    src = str(tmp_path / "models")
    _write_checkpoints(src, [1, 2])
    with open(os.path.join(src, "model_2.pt"), "wb") as handle:
        handle.write(contents)
    assert run_main(average_model.main, ["--src_path", src, "--num", "2", "--dst_model",
                                         str(tmp_path / "avg.pt")]) == 2
    assert "model_2.pt: not a PyTorch checkpoint" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "avg.pt")


@pytest.mark.parametrize("epoch", [0, 7, 150])
def test_checkpoint_names_read_back_as_their_epoch(epoch):
    from wespeaker_py.train.checkpoint import checkpoint_name
    name = checkpoint_name(epoch)
    assert name == f"model_{epoch}.pt"   # WeSpeaker's name, which its recipes average
    assert epoch_from_name(name) == epoch


def test_final_model_links_the_checkpoint_by_its_name_rule(tmp_path, monkeypatch):
    from wespeaker_py.train import experiment
    monkeypatch.setattr(experiment, "checkpoint_name", lambda epoch: f"epoch-{epoch}.ckpt")
    (tmp_path / "epoch-3.ckpt").write_text("3")
    (tmp_path / "epoch-4.ckpt").write_text("4")
    experiment.link_final_model(str(tmp_path), 3)
    experiment.link_final_model(str(tmp_path), 4)
    link = tmp_path / experiment.FINAL_MODEL
    assert os.readlink(link) == "epoch-4.ckpt" and link.read_text() == "4"
    assert sorted(os.listdir(tmp_path)) == sorted([experiment.FINAL_MODEL, "epoch-3.ckpt",
                                                   "epoch-4.ckpt"])
