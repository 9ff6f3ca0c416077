"""Resuming with another config: other trained parameters, another epoch length, and the
settings a continuing run is compared on (another front-end or other speakers: a warning).

WeSpeaker's two-stage recipes (Whisper-PMFA: a frozen front-end for 4 epochs, then
everything, with a smaller batch, from ``--checkpoint model_4.pt`` in the same exp_dir)
continue a checkpoint with other parameters training and epochs of another length.
The optimizer then follows each parameter by name, and the schedules take up epoch
E at (E - 1) / num_epochs of the new run's schedule, as WeSpeaker's do. The SSL
front-end version of that recipe is in tests/test_train_ssl.py.
"""
import json
import logging
import math
import os
import signal

import pytest
import torch

from train_helpers import (TINY_CONFIG, capture_first_step, exponential_lr, load_checkpoint,
                           named_optimizer_state, plan_of, run_training, tiny_config)
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from wespeaker_py.config import config_to_dict, load_config
from wespeaker_py.train.checkpoint import RUN_SETTINGS, SPK2ID_DIGEST, speaker_map_digest
from wespeaker_py.train.interrupt import TrainingStopped, continued_settings, training_settings
from wespeaker_py.train.step import TrainingStep
from wespeaker_py.train.trainer import Trainer


def _loader(batch_size):
    return {"batch_size": batch_size, "num_workers": 0, "pin_memory": False, "drop_last": True}


@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_other_trained_parameters_continue_from_the_checkpoint(corpus, tmp_path, monkeypatch,
                                                               caplog, optimizer):
    """frame_1 frozen for 2 epochs of batch 8, then frame_1 trains and the head stops, for 2
    epochs of batch 4 (twice as many steps): the state of what trained carries over."""
    exp_dir = str(tmp_path / "exp")
    optimizer_args = ({"momentum": 0.9, "nesterov": True, "weight_decay": 0.0001}
                      if optimizer == "SGD" else {"weight_decay": 0.0001})
    common = dict(optimizer=optimizer, optimizer_args=optimizer_args)
    stage0 = run_training(tiny_config(exp_dir, corpus, num_epochs=2, frozen_params=["frame_1."],
                                      dataloader_args=_loader(8), **common))
    models = os.path.join(exp_dir, "models")
    checkpoint_path = os.path.join(models, "model_2.pt")
    checkpoint = load_checkpoint(checkpoint_path)
    saved = named_optimizer_state(checkpoint)
    assert not any(name.startswith("frame_1.") for name in saved)
    assert "projection.weight" in saved

    schedule = {"initial_lr": 0.8, "final_lr": 0.1, "warm_up_epoch": 1, "warm_from_zero": True}
    margin = {"initial_margin": 0.0, "final_margin": 0.2, "increase_start_epoch": 2,
              "fix_start_epoch": 4, "update_margin": True, "increase_type": "exp"}
    config = tiny_config(exp_dir, corpus, num_epochs=4, frozen_params=["projection."],
                         dataloader_args=_loader(4), checkpoint=checkpoint_path,
                         scheduler_args=schedule, margin_update=margin, **common)
    seen = capture_first_step(monkeypatch)
    with caplog.at_level(logging.WARNING):
        history = run_training(config)
    assert [result.epoch for result in history] == [3, 4]
    assert all(result.batches == 2 * stage0[0].batches for result in history)

    # the first step of epoch 3 is half-way through the new schedules (2 of 4 epochs)
    assert seen["lrs"] == [pytest.approx(exponential_lr(4 / 64, 0.8, 0.1, 2 / 4), rel=1e-12)]
    rise = 1.0 - math.exp(0.5 * math.log(1e-3 / (1.0 + 1e-6)))  # (3-1-1) / (4-1-1) of it
    assert seen["margin"] == pytest.approx(0.2 * rise, rel=1e-12)

    # what trained before keeps its state (as saved, read again from the file), frame_1
    # starts without, and the head's is dropped
    weights = load_checkpoint(checkpoint_path)["model"]
    carried = {name: state for name, state in saved.items() if name != "projection.weight"}
    assert seen["state"].keys() == carried.keys()
    for name, state in carried.items():
        assert state.keys() == seen["state"][name].keys(), name
        for key, value in state.items():
            assert torch.equal(seen["state"][name][key], value), (name, key)
    frame_1 = ["frame_1.conv_1d.weight", "frame_1.conv_1d.bias"]
    told = [record.getMessage() for record in caplog.records
            if "trains other parameters" in record.getMessage()]
    assert told == [f"{checkpoint_path}: this run trains other parameters than the "
                    f"checkpoint's (config keys 'frozen_params'): 2 parameters of "
                    f"frame_1.conv_1d.* train from epoch 3 on, with empty optimizer state; "
                    f"1 parameter of projection.weight no longer trains, its optimizer state "
                    f"dropped; the other {len(carried)} keep their optimizer state"]

    # frame_1 trained from epoch 3, the head did not; the new run's checkpoints name the
    # parameters it trains
    final = load_checkpoint(os.path.join(models, "model_4.pt"))
    for name in frame_1:
        assert not torch.equal(final["model"][name], weights[name]), name
    assert torch.equal(final["model"]["projection.weight"], weights["projection.weight"])
    final_state = named_optimizer_state(final)
    assert set(final_state) == set(carried) | set(frame_1)
    assert all(final_state[name] for name in frame_1)


def test_a_resume_of_the_same_parameters_loads_the_state_as_saved(corpus, tmp_path):
    """Same parameters, same groups: the state is taken as saved, nothing is re-mapped;
    a checkpoint of older code, which names no parameters, loads the same way."""
    exp_dir = str(tmp_path / "exp")
    run_training(tiny_config(exp_dir, corpus, num_epochs=1))
    checkpoint_path = os.path.join(exp_dir, "models", "model_1.pt")
    saved = load_checkpoint(checkpoint_path)
    names = saved["optimizer"]["param_groups"][0]["param_names"]
    older = dict(saved, optimizer=dict(saved["optimizer"], param_groups=[
        {key: value for key, value in group.items() if key != "param_names"}
        for group in saved["optimizer"]["param_groups"]]))
    older_path = os.path.join(exp_dir, "models", "older.pt")
    torch.save(older, older_path)
    for path in (checkpoint_path, older_path):
        trainer = Trainer(plan_of(tiny_config(exp_dir, corpus, num_epochs=2, checkpoint=path)))
        assert names == [name for name, _ in trainer.model.named_parameters()]
        trainer.restore()
        state = trainer.optimizer.state_dict()
        assert state["param_groups"][0]["param_names"] == names
        assert state["state"].keys() == saved["optimizer"]["state"].keys()
        for index, entries in saved["optimizer"]["state"].items():
            assert torch.equal(entries["momentum_buffer"], state["state"][index]["momentum_buffer"])


def test_older_checkpoints_with_other_trained_parameters_start_the_optimizer_empty(
        corpus, tmp_path, caplog):
    """Without parameter names the state cannot follow the parameters: it is left behind, as
    WeSpeaker's trainer always does, and a warning names the keys."""
    exp_dir = str(tmp_path / "exp")
    run_training(tiny_config(exp_dir, corpus, num_epochs=1))
    saved = load_checkpoint(os.path.join(exp_dir, "models", "model_1.pt"))
    for group in saved["optimizer"]["param_groups"]:
        del group["param_names"]
    older_path = os.path.join(exp_dir, "models", "older.pt")
    torch.save(saved, older_path)
    config = tiny_config(exp_dir, corpus, num_epochs=2, checkpoint=older_path,
                         frozen_params=["projection."])
    trainer = Trainer(plan_of(config))
    with caplog.at_level(logging.WARNING):
        trainer.restore()
    assert trainer.optimizer.state_dict()["state"] == {}
    told = [record.getMessage() for record in caplog.records]
    assert any(f"{older_path} names no parameters in its optimizer state (older code) and "
               f"trained parameter groups of [15] tensors, this run's [14]: the trained "
               f"parameters changed (config keys 'frozen_params')" in message
               for message in told), told


def test_a_run_stopped_mid_epoch_with_epochs_of_another_length_retrains_that_epoch(
        corpus, tmp_path, monkeypatch, caplog):
    """interrupted.pt counts batches of its own epoch length: a run continuing with another
    batch size trains the stopped epoch again from its start (with a warning)."""
    exp_dir = str(tmp_path / "exp")
    models = os.path.join(exp_dir, "models")
    original, calls = TrainingStep.__call__, []

    def step_then_signal(self, batch):
        calls.append(batch)
        if len(calls) == 6 + 2:   # batch 2 of epoch 2, at 6 batches of 4 per epoch
            os.kill(os.getpid(), signal.SIGUSR1)
        return original(self, batch)

    monkeypatch.setattr(TrainingStep, "__call__", step_then_signal)
    settings = dict(num_epochs=2, log_batch_interval=2)
    with pytest.raises(TrainingStopped):
        run_training(tiny_config(exp_dir, corpus, dataloader_args=_loader(4), **settings))
    monkeypatch.undo()
    interrupted = os.path.join(models, "interrupted.pt")
    at = load_checkpoint(interrupted)["interrupted_at"]
    assert (at["epoch"], at["batch"], at["epoch_iter"]) == (2, 2, 6)

    with caplog.at_level(logging.WARNING):
        history = run_training(tiny_config(exp_dir, corpus, dataloader_args=_loader(8),
                                           checkpoint=os.path.join(models, "model_1.pt"),
                                           **settings))
    assert [(result.epoch, result.batches) for result in history] == [(2, 3)]
    assert any(f"{interrupted} (stopped in epoch 2 after its batch 2) had 6 batches per "
               f"epoch, this run has 3" in record.getMessage()
               and "this run starts at epoch 2" in record.getMessage()
               for record in caplog.records)
    assert not os.path.exists(interrupted)  # model_2.pt replaced it


WHISPER_PMFA = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "voxceleb", "v1",
                            "Whisper-PMFA", "conf")
# what a continuing run is told about; other warnings (e.g. the optimizer's) are not counted
COMPARED = "wespeaker_py.train.interrupt"


def _train_first_epoch(corpus, exp_dir):
    """Train TINY_CONFIG's first epoch in ``exp_dir``; return its model_1.pt."""
    run_training(tiny_config(exp_dir, corpus, num_epochs=1))
    return os.path.join(exp_dir, "models", "model_1.pt")


def _told(caplog, level):
    return [record.getMessage() for record in caplog.records
            if record.name == COMPARED and record.levelno == level]


def test_a_checkpoint_records_its_run_settings_and_speakers(corpus, tmp_path):
    """Next to WeSpeaker's entries, which stay as they were."""
    exp_dir = str(tmp_path / "exp")
    checkpoint = load_checkpoint(_train_first_epoch(corpus, exp_dir))
    plan = plan_of(tiny_config(exp_dir, corpus, num_epochs=1))
    assert set(checkpoint) == {"model", "optimizer", "scheduler", "margin_scheduler",
                               "grad_scaler", "epoch", "rng", "param_digests", "world_size",
                               RUN_SETTINGS, SPK2ID_DIGEST}
    assert checkpoint[RUN_SETTINGS] == plan.run_settings
    assert checkpoint[SPK2ID_DIGEST] == speaker_map_digest(plan.spk2id)


def test_a_resume_with_another_front_end_warns_naming_the_keys_and_the_epoch(corpus, tmp_path,
                                                                             caplog):
    """The reviewer's case: cmvn off and 8 kHz from epoch 2 on. Training goes on (no key
    overrides the check), and train.log keeps what config.yaml, rewritten, no longer says."""
    exp_dir = str(tmp_path / "exp")
    checkpoint_path = _train_first_epoch(corpus, exp_dir)
    dataset_args = dict(TINY_CONFIG["dataset_args"], cmvn=False, resample_rate=8000)
    with caplog.at_level(logging.INFO):
        history = run_training(tiny_config(exp_dir, corpus, num_epochs=2,
                                           checkpoint=checkpoint_path, dataset_args=dataset_args))
    assert [result.epoch for result in history] == [2]
    warned = _told(caplog, logging.WARNING)
    assert len(warned) == 1, warned
    assert warned[0].startswith(f"{checkpoint_path} was trained with another front-end or other "
                                f"speakers than this run continues it with from epoch 2 "
                                f"(dataset_args.cmvn: True -> False; dataset_args.resample_rate: "
                                f"16000 -> 8000)")
    with open(os.path.join(exp_dir, "train.log")) as log:
        assert "dataset_args.resample_rate: 16000 -> 8000" in log.read()
    assert load_checkpoint(os.path.join(exp_dir, "models", "model_2.pt"))[RUN_SETTINGS][
        "dataset_args.resample_rate"] == 8000


def _renamed_speakers(corpus, folder):
    """``corpus``'s lists with speaker spkN renamed s(N+1 mod 4): as many speakers, but each
    voice gets the next class id (sorted names decide them)."""
    def rename(spk):
        return f"s{(int(spk[3:]) + 1) % 4}"

    os.makedirs(folder)
    paths = {"utt2spk": os.path.join(folder, "utt2spk"),
             "raw_list": os.path.join(folder, "raw.list")}
    with open(corpus["utt2spk"]) as source, open(paths["utt2spk"], "w") as target:
        for line in source:
            utt, spk = line.split()
            target.write(f"{utt} {rename(spk)}\n")
    with open(corpus["raw_list"]) as source, open(paths["raw_list"], "w") as target:
        for line in source:
            entry = json.loads(line)
            target.write(json.dumps(dict(entry, spk=rename(entry["spk"]))) + "\n")
    return paths


def test_a_resume_with_other_speaker_class_ids_warns(corpus, tmp_path, caplog):
    """Same speaker count, so the head loads; but each class id is now another voice's."""
    exp_dir = str(tmp_path / "exp")
    checkpoint_path = _train_first_epoch(corpus, exp_dir)
    renamed = _renamed_speakers(corpus, str(tmp_path / "renamed"))
    with caplog.at_level(logging.INFO):
        history = run_training(tiny_config(exp_dir, renamed, num_epochs=2,
                                           checkpoint=checkpoint_path))
    assert [result.epoch for result in history] == [2]
    warned = _told(caplog, logging.WARNING)
    assert len(warned) == 1, warned
    assert "from epoch 2 (spk2id: train_label gives the speakers other class ids" in warned[0]
    # the list paths changed too: an INFO line, not a warning
    assert any("train_label: " in message for message in _told(caplog, logging.INFO))


def test_a_later_step_s_batch_size_and_epochs_continue_with_an_info_line(
        corpus, tmp_path, caplog):
    """No warning; train.log names what changed from which epoch (config.yaml shows the new
    values only)."""
    exp_dir = str(tmp_path / "exp")
    checkpoint_path = _train_first_epoch(corpus, exp_dir)
    with caplog.at_level(logging.INFO):
        history = run_training(tiny_config(exp_dir, corpus, num_epochs=2,
                                           checkpoint=checkpoint_path,
                                           dataloader_args=_loader(4)))
    assert [result.epoch for result in history] == [2]
    assert _told(caplog, logging.WARNING) == []
    assert (f"{checkpoint_path}: settings changed from epoch 2 on (config.yaml records this "
            f"run's): dataloader_args.batch_size: 8 -> 4; num_epochs: 1 -> 2"
            in _told(caplog, logging.INFO))


def test_checkpoints_without_run_settings_load_as_before(corpus, tmp_path, caplog):
    """A training checkpoint of older code: one INFO line, nothing compared; a bare state_dict
    (avg_model.pt, WeSpeaker's model_N.pt) is no run to compare with: nothing said."""
    exp_dir = str(tmp_path / "exp")
    checkpoint = load_checkpoint(_train_first_epoch(corpus, exp_dir))
    older = {key: value for key, value in checkpoint.items()
             if key not in (RUN_SETTINGS, SPK2ID_DIGEST)}
    older_path = os.path.join(exp_dir, "models", "older.pt")
    torch.save(older, older_path)
    bare_path = os.path.join(exp_dir, "models", "avg_model.pt")
    torch.save(checkpoint["model"], bare_path)
    dataset_args = dict(TINY_CONFIG["dataset_args"], cmvn=False)
    with caplog.at_level(logging.INFO):
        history = run_training(tiny_config(exp_dir, corpus, num_epochs=2, checkpoint=older_path,
                                           dataset_args=dataset_args))
    assert [result.epoch for result in history] == [2]
    assert _told(caplog, logging.WARNING) == []
    assert _told(caplog, logging.INFO) == [
        f"{older_path} records no run settings (older code): this run's settings are not "
        f"compared with those it was trained with"]
    bare = plan_of(tiny_config(exp_dir, corpus, num_epochs=2, checkpoint=bare_path,
                               dataset_args=dataset_args))
    assert bare.start.training_state is None and bare.start.continued is None


def test_whisper_pmfa_s_second_step_changes_no_compared_setting():
    """Step 2 continues step 1's model_4.pt in its folder: the encoder trains, its weights come
    from the checkpoint (no model_path), smaller batches, a longer schedule. None of it is the
    front-end's features or the speakers."""
    settings = [training_settings(config_to_dict(load_config(os.path.join(WHISPER_PMFA, name))))
                for name in ("whisper_PMFA_stage0.yaml", "whisper_PMFA_stage1.yaml")]
    changes = continued_settings({RUN_SETTINGS: settings[0], SPK2ID_DIGEST: "same"},
                                 "model_4.pt", 5, settings[1], "same")
    assert changes.inputs == ()
    assert [change.split(":")[0] for change in changes.others] == [
        "dataloader_args.batch_size", "dataset_args.whisper_encoder_args.frozen",
        "dataset_args.whisper_encoder_args.model_path", "margin_update.fix_start_epoch",
        "num_epochs", "scheduler_args.final_lr"]
