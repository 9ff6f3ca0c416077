"""The training loop end to end on a small generated corpus (CPU, one process)."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from train_helpers import (TINY_CONFIG, load_checkpoint, make_speaker_corpus, plan_of,
                           run_training, tiny_config, write_config)
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from wespeaker_py.bin import train as train_cli
from wespeaker_py.cli.common import run_main
from wespeaker_py.config import ConfigError
from wespeaker_py.errors import RunFailedError
from wespeaker_py.runtime.checkpoint import CheckpointMismatchError
from wespeaker_py.train import curves as curves_module
from wespeaker_py.train.average import average_checkpoints
from wespeaker_py.train.checkpoint import checkpoints_by_epoch
from wespeaker_py.train.curves import read_training_curves
from wespeaker_py.train.loop import train_epoch
from wespeaker_py.train.step import stacked_total_norm
from wespeaker_py.train.trainer import NonFiniteLossError, Trainer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_speaker_corpus(str(tmp_path_factory.mktemp("corpus")), num_spks=4,
                               utts_per_spk=12)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    return make_speaker_corpus(str(tmp_path_factory.mktemp("small")), num_spks=4,
                               utts_per_spk=6)


def test_loss_falls_and_accuracy_rises(corpus, tmp_path):
    exp_dir = str(tmp_path / "exp")
    history = run_training(tiny_config(exp_dir, corpus, num_epochs=6))
    assert [result.epoch for result in history] == list(range(1, 7))
    first, last = history[0], history[-1]
    assert all(result.batches == 6 and result.skipped_batches == 0 for result in history)
    assert (history[-1].loss + history[-2].loss) / 2 < 0.5 * first.loss
    assert last.accuracy >= 60.0 and last.accuracy > first.accuracy + 25.0
    # checkpoints every epoch, the final-model link, the merged config and the log
    models = os.path.join(exp_dir, "models")
    assert sorted(os.listdir(models)) == ["final_model.pt"] + [f"model_{e}.pt"
                                                               for e in range(1, 7)]
    assert os.readlink(os.path.join(models, "final_model.pt")) == "model_6.pt"
    saved = yaml.safe_load(open(os.path.join(exp_dir, "config.yaml")))
    assert saved["num_epochs"] == 6 and saved["train_data"] == corpus["raw_list"]
    log = open(os.path.join(exp_dir, "train.log")).read()
    assert "epoch 6 done" in log and "lr" in log and "margin" in log
    # the curves drawn from that log: every epoch's mean as trained, the figure beside it
    curves = read_training_curves(os.path.join(exp_dir, "train.log"))
    assert sorted(curves.epochs) == list(range(1, 7))
    assert [curves.epochs[r.epoch][0] for r in history] == pytest.approx(
        [r.loss for r in history], abs=1e-4)
    with open(os.path.join(exp_dir, "train_curves.png"), "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    checkpoint = load_checkpoint(os.path.join(models, "model_6.pt"))
    assert checkpoint["epoch"] == 6 and checkpoint["world_size"] == 1
    assert set(checkpoint) >= {"model", "optimizer", "scheduler", "margin_scheduler", "rng"}
    assert checkpoint["model"]["projection.weight"].shape == (4, 16)
    # the margin schedule reached its final value (rise between epochs 2 and 3)
    assert history[0].margin == 0.0 and last.margin == pytest.approx(0.1)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_stop_and_resume_equals_an_uninterrupted_run(small_corpus, tmp_path, num_workers):
    loader = {"batch_size": 8, "num_workers": num_workers, "pin_memory": False,
              "drop_last": True}
    settings = dict(num_epochs=4, dataloader_args=loader)
    full_dir, resumed_dir = str(tmp_path / "full"), str(tmp_path / "resumed")
    run_training(tiny_config(full_dir, small_corpus, **settings))
    # a run stopped after epoch 2: only model_2.pt survives, in a fresh process state
    os.makedirs(os.path.join(resumed_dir, "models"))
    stopped = os.path.join(resumed_dir, "models", "model_2.pt")
    shutil.copy(os.path.join(full_dir, "models", "model_2.pt"), stopped)
    torch.manual_seed(12345)  # disturb the global generators: the checkpoint must restore them
    history = run_training(tiny_config(resumed_dir, small_corpus, checkpoint=stopped,
                                       **settings))
    assert [result.epoch for result in history] == [3, 4]
    full = load_checkpoint(os.path.join(full_dir, "models", "model_4.pt"))
    resumed = load_checkpoint(os.path.join(resumed_dir, "models", "model_4.pt"))
    assert full["model"].keys() == resumed["model"].keys()
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    for key, state in full["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, resumed["optimizer"]["state"][key][name])
    assert full["margin_scheduler"] == resumed["margin_scheduler"]


def test_sphere_head_resumes_as_an_uninterrupted_run(small_corpus, tmp_path):
    """SphereFace anneals by the step count, which the checkpoint does not hold."""
    settings = dict(num_epochs=3, projection_args={"project_type": "sphere"},
                    margin_update={"initial_margin": 2, "final_margin": 2,
                                   "increase_start_epoch": 1, "fix_start_epoch": 1,
                                   "update_margin": False})
    full_dir, resumed_dir = str(tmp_path / "full"), str(tmp_path / "resumed")
    run_training(tiny_config(full_dir, small_corpus, **settings))
    os.makedirs(os.path.join(resumed_dir, "models"))
    stopped = os.path.join(resumed_dir, "models", "model_1.pt")
    shutil.copy(os.path.join(full_dir, "models", "model_1.pt"), stopped)
    run_training(tiny_config(resumed_dir, small_corpus, checkpoint=stopped, **settings))
    full = load_checkpoint(os.path.join(full_dir, "models", "model_3.pt"))["model"]
    resumed = load_checkpoint(os.path.join(resumed_dir, "models", "model_3.pt"))["model"]
    assert full.keys() == resumed.keys()  # no counter among WeSpeaker's keys
    for key, value in full.items():
        assert torch.equal(value, resumed[key]), key


def test_a_resume_trains_with_the_configs_optimizer_settings(small_corpus, tmp_path, caplog):
    """The checkpoint gives the optimizer's state (momentum), the config its settings."""
    import logging

    exp_dir = str(tmp_path / "exp")
    run_training(tiny_config(exp_dir, small_corpus, num_epochs=1))
    checkpoint_path = os.path.join(exp_dir, "models", "model_1.pt")
    checkpoint = load_checkpoint(checkpoint_path)
    changed = {"momentum": 0.5, "nesterov": False, "weight_decay": 0.05}
    for optimizer_args, told in ((TINY_CONFIG["optimizer_args"], []), (changed, [
            "optimizer_args.momentum: checkpoint 0.9, config 0.5",
            "optimizer_args.weight_decay: checkpoint 0.0001, config 0.05",
            "optimizer_args.nesterov: checkpoint True, config False"])):
        config = tiny_config(exp_dir, small_corpus, num_epochs=2, checkpoint=checkpoint_path,
                             optimizer_args=optimizer_args)
        trainer = Trainer(plan_of(config))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            trainer.restore()
        warnings = [record.getMessage() for record in caplog.records
                    if "optimizer continues" in record.getMessage()]
        assert len(warnings) == (1 if told else 0), warnings
        assert all(setting in warnings[0] for setting in told)
        assert not any("optimizer_args.lr" in warning for warning in warnings)
        group = trainer.optimizer.param_groups[0]
        assert {key: group[key] for key in optimizer_args} == optimizer_args
        assert group["lr"] == checkpoint["optimizer"]["param_groups"][0]["lr"]
        saved_state = checkpoint["optimizer"]["state"]
        state = trainer.optimizer.state_dict()["state"]
        assert saved_state.keys() == state.keys()
        for index, entries in saved_state.items():
            assert torch.equal(entries["momentum_buffer"], state[index]["momentum_buffer"])


def test_existing_checkpoints_need_an_explicit_resume(small_corpus, tmp_path):
    exp_dir = str(tmp_path / "exp")
    run_training(tiny_config(exp_dir, small_corpus, num_epochs=1))
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        run_training(tiny_config(exp_dir, small_corpus, num_epochs=1))


_HOLD_FOLDER = """
import sys
import torch
from wespeaker_py.train.distributed import DistContext
from wespeaker_py.train.experiment import ExperimentFolder
from wespeaker_py.train.plan import Layout
folder = ExperimentFolder(Layout(sys.argv[1]), DistContext(0, 0, 1, torch.device("cpu")))
folder.open(resuming=False)
print("holding", flush=True)
sys.stdin.read()
folder.close()
"""


def test_a_second_run_into_a_folder_being_trained_stops_naming_the_first(small_corpus,
                                                                         tmp_path):
    exp_dir = str(tmp_path / "exp")
    first = subprocess.Popen([sys.executable, "-c", _HOLD_FOLDER, exp_dir], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert first.stdout.readline() == "holding\n"
        lock = os.path.join(exp_dir, "models", ".train.lock")
        assert os.path.isfile(lock) and checkpoints_by_epoch(os.path.dirname(lock)) == []
        log_before = open(os.path.join(exp_dir, "train.log")).read()
        with pytest.raises(RunFailedError, match=rf"{exp_dir} is being trained by process "
                                                 rf"{first.pid} on .*\(since .*\), which holds "
                                                 rf".*models/\.train\.lock; wait for"):
            run_training(tiny_config(exp_dir, small_corpus, num_epochs=1))
        # nothing of the refused run in the folder
        assert not os.path.exists(os.path.join(exp_dir, "config.yaml"))
        assert open(os.path.join(exp_dir, "train.log")).read() == log_before
    finally:
        first.communicate("", timeout=60)
    assert first.returncode == 0
    run_training(tiny_config(exp_dir, small_corpus, num_epochs=1))   # free again
    models = os.path.join(exp_dir, "models")
    assert sorted(os.listdir(models)) == ["final_model.pt", "model_1.pt"]   # lock let go


def test_large_margin_fine_tuning_from_the_averaged_model(small_corpus, tmp_path):
    first_dir, lm_dir = str(tmp_path / "first"), str(tmp_path / "first-LM")
    speed = dict(tiny_config(first_dir, small_corpus)["dataset_args"], speed_perturb=True)
    run_training(tiny_config(first_dir, small_corpus, num_epochs=2, dataset_args=speed))
    avg_path = os.path.join(first_dir, "models", "avg_model.pt")
    average_checkpoints(os.path.join(first_dir, "models"), 2, avg_path)
    averaged = load_checkpoint(avg_path)
    assert averaged["projection.weight"].shape == (12, 16)  # 4 speakers x 3 speeds

    # the recipe's stage 9: avg_model.pt becomes model_0.pt of the LM run
    os.makedirs(os.path.join(lm_dir, "models"))
    model_0 = os.path.join(lm_dir, "models", "model_0.pt")
    shutil.copy(avg_path, model_0)
    lm_dataset = dict(speed, num_frms=120)
    lm_config = tiny_config(
        lm_dir, small_corpus, num_epochs=1, do_lm=True, checkpoint=model_0,
        dataset_args=lm_dataset,
        margin_update={"initial_margin": 0.5, "final_margin": 0.5, "increase_start_epoch": 1,
                       "fix_start_epoch": 1, "update_margin": True},
        # a vanishing learning rate: the LM weights must be the averaged weights
        scheduler_args={"initial_lr": 1e-12, "final_lr": 1e-12, "warm_up_epoch": 0,
                        "warm_from_zero": False})
    history = run_training(lm_config)
    assert [result.epoch for result in history] == [1]
    assert history[0].margin == 0.5
    tuned = load_checkpoint(os.path.join(lm_dir, "models", "model_1.pt"))["model"]
    assert tuned["projection.weight"].shape == (12, 16)  # the head kept its 3x rows
    for key, value in averaged.items():
        if value.is_floating_point() and "running" not in key:
            assert torch.allclose(tuned[key], value, atol=1e-6), key
    saved = yaml.safe_load(open(os.path.join(lm_dir, "config.yaml")))
    assert saved["do_lm"] is True and saved["dataset_args"]["speed_perturb"] is True
    plan = plan_of(saved)
    assert plan.dataset_args.speed_perturb is True and plan.num_classes == 12

    # model_init into a model without speed classes: the body loads, the head starts
    # from random weights (as in WeSpeaker)
    plain_dir = str(tmp_path / "plain")
    run_training(tiny_config(plain_dir, small_corpus, num_epochs=1, model_init=avg_path,
                             scheduler_args=lm_config["scheduler_args"]))
    plain = load_checkpoint(os.path.join(plain_dir, "models", "model_1.pt"))["model"]
    assert plain["projection.weight"].shape == (4, 16)
    assert not torch.allclose(plain["projection.weight"], averaged["projection.weight"][:4],
                              atol=1e-3)
    assert torch.allclose(plain["seg_1.weight"], averaged["seg_1.weight"], atol=1e-6)

    # another mismatch is an error naming the tensor
    wide = dict(tiny_config(plain_dir, small_corpus)["model_args"], embed_dim=24)
    with pytest.raises(CheckpointMismatchError,
                       match=r"tensor 'seg_1.weight' has shape \(16, 128\) in the checkpoint "
                             r"but \(24, 128\)"):
        run_training(tiny_config(str(tmp_path / "wide"), small_corpus, num_epochs=1,
                                 model_init=avg_path, model_args=wide))


def test_large_margin_fine_tuning_after_a_base_run_without_speed_perturbation(small_corpus,
                                                                              tmp_path):
    base_dir, lm_dir = str(tmp_path / "base"), str(tmp_path / "base-LM")
    run_training(tiny_config(base_dir, small_corpus, num_epochs=1))  # no speed perturbation
    avg_path = os.path.join(base_dir, "models", "avg_model.pt")
    average_checkpoints(os.path.join(base_dir, "models"), 1, avg_path)
    averaged = load_checkpoint(avg_path)
    assert averaged["projection.weight"].shape == (4, 16)
    os.makedirs(os.path.join(lm_dir, "models"))
    model_0 = os.path.join(lm_dir, "models", "model_0.pt")
    shutil.copy(avg_path, model_0)
    lm_config = tiny_config(lm_dir, small_corpus, num_epochs=1, do_lm=True, checkpoint=model_0)
    assert plan_of(lm_config).num_classes == 4
    history = run_training(lm_config)
    assert [result.epoch for result in history] == [1]
    tuned = load_checkpoint(os.path.join(lm_dir, "models", "model_1.pt"))["model"]
    assert tuned["projection.weight"].shape == (4, 16)
    assert not torch.equal(tuned["projection.weight"], averaged["projection.weight"])

    # a head that the LM rule cannot load is an error naming the tensor and both shapes
    averaged["projection.weight"] = torch.zeros(3, 16)
    odd = str(tmp_path / "odd.pt")
    torch.save(averaged, odd)
    with pytest.raises(CheckpointMismatchError,
                       match=r"odd\.pt: tensor 'projection\.weight' has shape \(3, 16\) in the "
                             r"checkpoint but \(4, 16\) in the model"):
        run_training(tiny_config(str(tmp_path / "odd"), small_corpus, num_epochs=1, do_lm=True,
                                 checkpoint=odd))


def test_the_norm_stand_in_for_older_torch_is_torchs_total_norm():
    """stacked_total_norm replaces nn.utils.get_total_norm (torch >= 2.6) on older torch."""
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(shape, generator=generator) * scale
               for shape, scale in (((16, 8, 3), 1e-3), ((16,), 1.0), ((300, 40), 30.0))]
    expected = torch.cat([tensor.reshape(-1) for tensor in tensors]).double().norm()
    norm = stacked_total_norm(tensors)
    assert norm.item() == pytest.approx(expected.item(), rel=1e-6)
    if hasattr(torch.nn.utils, "get_total_norm"):
        assert torch.equal(norm, torch.nn.utils.get_total_norm(tensors))
    tensors[1][3] = float("nan")
    assert torch.isnan(stacked_total_norm(tensors))
    tensors[1][3] = float("inf")
    assert torch.isinf(stacked_total_norm(tensors))


def _trainer(config, epoch_iter=3):
    torch.manual_seed(0)
    return Trainer(plan_of(config, epoch_iter=epoch_iter))


def _batches(nan_at):
    generator = torch.Generator().manual_seed(0)
    batches = []
    for index in range(3):
        wavs = torch.randn(4, 16000, generator=generator) * 1000
        if index == nan_at:
            wavs[2, 500] = float("nan")
        batches.append({"wavs": wavs, "labels": torch.tensor([0, 1, 2, 3]),
                        "keys": [f"utt{index}-{row}" for row in range(4)]})
    return batches


def _full_state(trainer):
    """Every tensor of the model's and the optimizer's state_dicts, copied."""
    state = {"model." + k: v.clone() for k, v in trainer.model.state_dict().items()}
    for param_id, entries in trainer.optimizer.state_dict()["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                state[f"optimizer.{param_id}.{name}"] = value.clone()
    return state


def _assert_bit_identical(before, after):
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert value.dtype == after[key].dtype and torch.equal(value, after[key]), key


def test_non_finite_loss_raises_naming_the_batch_keys(small_corpus, tmp_path):
    trainer = _trainer(tiny_config(str(tmp_path), small_corpus, log_batch_interval=1),
                       epoch_iter=1)
    batches = _batches(nan_at=1)
    train_epoch(trainer, 1, batches[:1])  # the optimizer now holds momentum state
    before = _full_state(trainer)
    with pytest.raises(NonFiniteLossError,
                       match=r"non-finite loss at epoch 2, batch 1; this rank's batch holds "
                             r"utt1-0, utt1-1, utt1-2, utt1-3"):
        train_epoch(trainer, 2, batches[1:2])
    _assert_bit_identical(before, _full_state(trainer))


def test_a_skipped_non_finite_step_changes_no_state(small_corpus, tmp_path):
    """Weights, momentum and BatchNorm statistics are all as before a NaN batch."""
    trainer = _trainer(tiny_config(str(tmp_path), small_corpus, nonfinite_loss="skip"))
    batches = _batches(nan_at=2)
    train_epoch(trainer, 1, batches[:2] + batches[:1])
    before = _full_state(trainer)
    assert any("running_mean" in key for key in before)
    assert any(".momentum_buffer" in key for key in before)
    result = train_epoch(trainer, 2, [batches[2]] * 3)
    assert (result.batches, result.skipped_batches) == (3, 3)
    _assert_bit_identical(before, _full_state(trainer))


def test_non_finite_first_step_leaves_no_optimizer_state(small_corpus, tmp_path):
    trainer = _trainer(tiny_config(str(tmp_path), small_corpus, nonfinite_loss="skip"))
    before = _full_state(trainer)
    result = train_epoch(trainer, 1, [_batches(nan_at=0)[0]] * 3)
    assert result.skipped_batches == 3
    assert trainer.optimizer.state_dict()["state"] == {}
    _assert_bit_identical(before, _full_state(trainer))


def test_non_finite_loss_can_skip_the_batch(small_corpus, tmp_path):
    trainer = _trainer(tiny_config(str(tmp_path), small_corpus, nonfinite_loss="skip"))
    initial = trainer.model.projection.weight.detach().clone()
    result = train_epoch(trainer, 1, _batches(nan_at=1))
    assert (result.batches, result.skipped_batches) == (3, 1)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert all(torch.isfinite(b).all() for b in trainer.model.buffers()
               if b.is_floating_point())
    assert not torch.equal(trainer.model.projection.weight, initial)


def test_gradient_clipping_bounds_the_update(small_corpus, tmp_path):
    config = tiny_config(str(tmp_path), small_corpus, grad_clip=1e-3,
                         optimizer_args={"momentum": 0.0, "weight_decay": 0.0})
    trainer = _trainer(config, epoch_iter=1)
    start = [p.detach().clone() for p in trainer.model.parameters()]
    train_epoch(trainer, 2, _batches(nan_at=None)[:1])  # epoch 2: past the lr warm-up
    lr = trainer.lr_scheduler.get_lr()
    step = torch.sqrt(sum(((p.detach() - s) ** 2).sum()
                          for p, s in zip(trainer.model.parameters(), start)))
    assert 0 < step.item() <= lr * 1e-3 * 1.0001


def test_command_line_errors_name_the_key(small_corpus, tmp_path, capsys):
    config = tiny_config(str(tmp_path / "exp"), small_corpus)
    for key in ("exp_dir", "train_data", "train_label", "data_type"):
        config.pop(key)
    path = write_config(str(tmp_path / "tiny.yaml"), config)
    assert run_main(train_cli.main, ["--config", path, "--exp_dir", str(tmp_path / "exp"),
                                     "--data_type", "raw", "--train_label",
                                     small_corpus["utt2spk"]]) == 2
    assert "'train_data' must be set" in capsys.readouterr().err
    data_args = ["--exp_dir", str(tmp_path / "exp"), "--data_type", "raw",
                 "--train_data", small_corpus["raw_list"],
                 "--train_label", small_corpus["utt2spk"]]
    assert run_main(train_cli.main,
                    ["--config", path, "--dataset_args.num_frmz", "8"] + data_args) == 2
    assert "unknown config key 'dataset_args.num_frmz'" in capsys.readouterr().err
    assert run_main(train_cli.main, ["--config", path, "--num_epochs", "two"] + data_args) == 2
    assert "config key 'num_epochs' must be int, got str 'two'" in capsys.readouterr().err
    # model_args go to the model's constructor, which names what it cannot take
    assert run_main(train_cli.main,
                    ["--config", path, "--model_args.embed_dims", "8"] + data_args) == 2
    err = capsys.readouterr().err
    assert "config key 'model_args' does not fit XVEC" in err and "embed_dims" in err


def test_command_line_trains_with_overrides(small_corpus, tmp_path):
    config = tiny_config(str(tmp_path / "unused"), small_corpus)
    for key in ("exp_dir", "train_data", "train_label", "data_type"):
        config.pop(key)
    path = write_config(str(tmp_path / "tiny.yaml"), config)
    exp_dir = str(tmp_path / "exp")
    train_cli.main(["--config", path, "--exp_dir", exp_dir, "--data_type", "raw",
                    "--train_data", small_corpus["raw_list"],
                    "--train_label", small_corpus["utt2spk"], "--num_epochs", "1",
                    "--model_args.embed_dim", "12", "--model", "XVEC"])
    saved = yaml.safe_load(open(os.path.join(exp_dir, "config.yaml")))
    assert saved["model_args"]["embed_dim"] == 12 and saved["num_epochs"] == 1
    # "--model" is the model key, not an abbreviation of --model_init
    assert saved["model"] == "XVEC" and saved["model_init"] is None
    weights = load_checkpoint(os.path.join(exp_dir, "models", "model_1.pt"))["model"]
    assert weights["projection.weight"].shape == (4, 12)


def _count_host_reads(monkeypatch):
    """Count tensor-to-host reads (item, tolist, bool, float, int, numpy) from now on."""
    counts = {"reads": 0}
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            counts["reads"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    return counts


def test_steps_between_log_points_read_nothing_back(small_corpus, tmp_path, monkeypatch):
    """Host reads per epoch do not grow with the number of batches between log points."""
    reads = {}
    for epoch_iter in (2, 6):
        config = tiny_config(str(tmp_path), small_corpus, log_batch_interval=100,
                             nonfinite_loss="skip")
        trainer = _trainer(config, epoch_iter=epoch_iter)
        batches = _batches(nan_at=None) * 2
        train_epoch(trainer, 1, batches[:epoch_iter])  # the optimizer creates its state
        with monkeypatch.context() as patch:
            counts = _count_host_reads(patch)
            train_epoch(trainer, 2, batches[:epoch_iter])
        reads[epoch_iter] = counts["reads"]
    assert reads[2] == reads[6] <= 3


def test_narrow_band_training_data_is_warned_once_per_job(tmp_path, caplog):
    """Utterances at 8 kHz for a 16 kHz model: counted every epoch, warned about once by the
    job (not once per dataloader worker and epoch), naming how many and an example."""
    import json
    import logging

    import soundfile as sf
    from scipy.signal import resample_poly
    corpus = make_speaker_corpus(str(tmp_path / "corpus"), num_spks=4, utts_per_spk=6,
                                 seconds=3.0)
    narrow = []
    for line in open(corpus["raw_list"]):
        item = json.loads(line)
        if item["key"].endswith("-utt0"):
            audio, rate = sf.read(item["wav"], dtype="int16")
            sf.write(item["wav"], resample_poly(audio, 1, 2).astype("int16"), rate // 2)
            narrow.append(item["key"])
    loader = {"batch_size": 8, "num_workers": 2, "pin_memory": False, "drop_last": True}
    config = tiny_config(str(tmp_path / "exp"), corpus, num_epochs=2, dataloader_args=loader)
    with caplog.at_level(logging.WARNING):
        run_training(config)
    told = [record.getMessage() for record in caplog.records if "Hz" in record.getMessage()]
    assert len(told) == 1, told
    assert told[0].startswith("epoch 1: 4 training utterance(s) came at 8000 Hz (e.g. ")
    assert "model built for 16000 Hz" in told[0] and "narrow_band_8000hz" in told[0]
    assert any(key in told[0] for key in narrow)
    log = open(os.path.join(str(tmp_path / "exp"), "train.log")).read()
    assert log.count("narrow_band_8000hz=4") == 2      # each epoch's summary counts them
    assert "8000 Hz audio (first:" not in log            # no worker warns on its own


def test_a_labelled_run_names_its_epochs_and_plain_training_stays_as_it_was(
        small_corpus, tmp_path, monkeypatch):
    """A run that is part of a larger job (a fine-tuning phase) puts its label before each
    epoch in its bars and log lines, which the curves read alike; plain training does not."""
    from wespeaker_py.config import TrainConfig
    from wespeaker_py.train import loop, trainer
    bars = []
    original_bar = loop.progress_bar

    def progress_bar(*args, desc, **kwargs):
        bars.append(desc)
        return original_bar(*args, desc=desc, **kwargs)

    monkeypatch.setattr(loop, "progress_bar", progress_bar)
    logs = {}
    for label in (None, "full"):
        exp_dir = str(tmp_path / str(label))
        trainer.run_training(TrainConfig.from_dict(tiny_config(exp_dir, small_corpus,
                                                               num_epochs=2)), label=label)
        logs[label] = os.path.join(exp_dir, "train.log")
    assert bars == ["epoch 1", "epoch 2", "full epoch 1/2", "full epoch 2/2"]
    plain, labelled = (open(logs[label]).read() for label in (None, "full"))
    assert " training epochs 1 to 2\n" in plain and "full " not in plain
    for line in ("full training epochs 1 to 2\n", "full epoch 1 batch 2/3 lr ",
                 "full epoch 2 done: loss ", "full epoch 1 training data over 1 rank(s)"):
        assert line in labelled, line
    assert read_training_curves(logs["full"]) == read_training_curves(logs[None])


def test_a_figure_that_cannot_be_drawn_costs_a_warning_not_the_run(
        small_corpus, tmp_path, monkeypatch, caplog):
    calls = []

    def broken_plot(*args, **kwargs):
        calls.append(args)
        raise OSError("disk quota exceeded")

    monkeypatch.setattr(curves_module, "plot_training_curves", broken_plot)
    exp_dir = str(tmp_path / "exp")
    history = run_training(tiny_config(exp_dir, small_corpus, num_epochs=2))
    assert [result.epoch for result in history] == [1, 2]
    assert os.path.isfile(os.path.join(exp_dir, "models", "model_2.pt"))
    assert not os.path.exists(os.path.join(exp_dir, "train_curves.png"))
    assert len(calls) == 1   # tried once, then left alone
    log = open(os.path.join(exp_dir, "train.log")).read()
    assert "could not draw" in log and "disk quota exceeded" in log


def test_a_shard_list_with_fewer_shards_than_ranks_is_refused_on_every_rank(corpus, tmp_path):
    import tarfile
    from wespeaker_py.train import builder
    from wespeaker_py.train.distributed import DistContext
    shard = tmp_path / "shard_000.tar"
    with tarfile.open(shard, "w"):
        pass
    (tmp_path / "shard.list").write_text(f"{shard}\n")
    config = tiny_config(str(tmp_path / "exp"), corpus, data_type="shard",
                         train_data=str(tmp_path / "shard.list"))
    for rank in (0, 1):   # the same error on each rank, before any batch
        world = DistContext(rank, rank, 2, torch.device("cpu"))
        with pytest.raises(ConfigError, match=r"shard\.list lists 1 shards for 2 ranks: every "
                                              r"rank needs at least one \(make smaller shards"):
            builder.build_dataset(plan_of(config, world))
    assert len(builder.build_dataset(plan_of(config)).items) == 1
