"""bench/sbs_replay.py, the swap tool of the side-by-side comparison: its dump holds the
training batch stream in WeSpeaker's batch format, and its replay trains our trainer on a
dump, from our start weights or from ``--init`` (``--nudge``: one ulp up)."""
import copy
import os
import shutil
import sys
from typing import Dict

import pytest
import torch

from train_helpers import (TINY_CONFIG, load_checkpoint, named_optimizer_state, tiny_config,
                           write_config)
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from wespeaker_py.bin import train as train_cli
from wespeaker_py.dataset import spk2id_from_utt2spk
from wespeaker_py.train import builder, trainer
from wespeaker_py.train.step import TrainingStep

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import sbs_replay  # noqa: E402

EPOCHS, EPOCH_ITER = 2, 3   # 24 utterances in batches of 8


@pytest.fixture
def config_path(tmp_path, corpus):
    """TINY_CONFIG for two epochs without dither, whose draws would differ between the
    dump's features and the training run's."""
    dataset_args = copy.deepcopy(TINY_CONFIG["dataset_args"])
    dataset_args["fbank_args"]["dither"] = 0.0
    config = tiny_config(str(tmp_path / "unused"), corpus, num_epochs=EPOCHS,
                         dataset_args=dataset_args)
    return write_config(str(tmp_path / "config.yaml"), config)


@pytest.fixture
def dump_dir(tmp_path, config_path):
    out = str(tmp_path / "dump")
    sbs_replay.main(["dump", out, "--", "--config", config_path])
    return out


@pytest.fixture
def first_step_weights(monkeypatch) -> Dict[TrainingStep, Dict[str, torch.Tensor]]:
    """The model's state_dict (copies) as each training run's first step begins, by step."""
    original, seen = TrainingStep.__call__, {}

    def step(self, batch):
        if self not in seen:
            seen[self] = {name: value.clone() for name, value in self.model.state_dict().items()}
        return original(self, batch)

    monkeypatch.setattr(TrainingStep, "__call__", step)
    return seen


def train(config_path: str, exp_dir: str) -> None:
    train_cli.main(["--config", config_path, "--exp_dir", exp_dir])


def replay(dump: str, config_path: str, exp_dir: str, *options: str) -> None:
    sbs_replay.main(["replay", dump, *options, "--", "--config", config_path,
                     "--exp_dir", exp_dir])


def final_checkpoint(exp_dir: str):
    return load_checkpoint(os.path.join(exp_dir, "models", f"model_{EPOCHS}.pt"))


def assert_same_tensors(first: Dict[str, torch.Tensor], second: Dict[str, torch.Tensor]):
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_the_dump_holds_each_epochs_batches_in_wespeakers_format(dump_dir, corpus):
    spk2id = spk2id_from_utt2spk(corpus["utt2spk"])
    for epoch in range(1, EPOCHS + 1):
        batches = torch.load(os.path.join(dump_dir, f"epoch_{epoch}.pt"))
        assert len(batches) == EPOCH_ITER
        for batch in batches:
            assert set(batch) == {"key", "label", "feat"}
            assert len(batch["key"]) == 8
            assert batch["label"].tolist() == [spk2id[key.split("-")[0]]
                                               for key in batch["key"]]
            assert batch["feat"].shape == (8, TINY_CONFIG["dataset_args"]["num_frms"], 24)
    assert not os.path.exists(os.path.join(dump_dir, f"epoch_{EPOCHS + 1}.pt"))


def test_a_replay_of_our_own_dump_trains_as_our_own_run(tmp_path, config_path, dump_dir):
    own, replayed = str(tmp_path / "own"), str(tmp_path / "replayed")
    train(config_path, own)
    seams = (trainer.resolve, builder.build_loader, builder.load_start_weights)
    replay(dump_dir, config_path, replayed)
    # in-process, later training runs get the library's own seams back
    assert (trainer.resolve, builder.build_loader, builder.load_start_weights) == seams
    for epoch in range(1, EPOCHS + 1):
        ours = load_checkpoint(os.path.join(own, "models", f"model_{epoch}.pt"))
        theirs = load_checkpoint(os.path.join(replayed, "models", f"model_{epoch}.pt"))
        assert_same_tensors(ours["model"], theirs["model"])
        our_state, their_state = named_optimizer_state(ours), named_optimizer_state(theirs)
        assert our_state.keys() == their_state.keys()
        for name in our_state:
            assert_same_tensors(our_state[name], their_state[name])


def test_a_replay_trains_on_the_batches_of_the_dump(tmp_path, config_path, dump_dir):
    """A dump whose second epoch repeats its first: the replay's first epoch is our run's,
    its second is not."""
    doctored, own, replayed = (str(tmp_path / name) for name in ("doctored", "own", "replayed"))
    shutil.copytree(dump_dir, doctored)
    shutil.copy(os.path.join(dump_dir, "epoch_1.pt"), os.path.join(doctored, "epoch_2.pt"))
    train(config_path, own)
    replay(doctored, config_path, replayed)
    for epoch, same in ((1, True), (2, False)):
        ours = load_checkpoint(os.path.join(own, "models", f"model_{epoch}.pt"))["model"]
        theirs = load_checkpoint(os.path.join(replayed, "models", f"model_{epoch}.pt"))["model"]
        assert torch.equal(ours["projection.weight"], theirs["projection.weight"]) == same


def test_init_gives_the_start_weights_and_nudge_moves_each_one_ulp_up(
        tmp_path, config_path, dump_dir, first_step_weights):
    plain, with_init, nudged = (str(tmp_path / name) for name in ("plain", "init", "nudged"))
    replay(dump_dir, config_path, plain)
    init = final_checkpoint(plain)["model"]   # any weights other than the run's own start
    init_path = str(tmp_path / "init.pt")
    torch.save(init, init_path)
    replay(dump_dir, config_path, with_init, "--init", init_path)
    replay(dump_dir, config_path, nudged, "--init", init_path, "--nudge")

    (_, own_start), (_, init_start), (nudged_step, nudged_start) = first_step_weights.items()
    assert not torch.equal(own_start["projection.weight"], init["projection.weight"])
    assert_same_tensors(init_start, init)
    parameters = {name for name, _ in nudged_step.model.named_parameters()}
    assert parameters and parameters < set(init)   # the buffers stay as they are
    for name, value in init.items():
        if name in parameters:
            value = torch.nextafter(value, torch.full_like(value, float("inf")))
        assert torch.equal(nudged_start[name], value), name
    trained = final_checkpoint(with_init)["model"]
    assert not torch.equal(trained["projection.weight"], init["projection.weight"])
    assert not torch.equal(trained["projection.weight"],
                           final_checkpoint(plain)["model"]["projection.weight"])
