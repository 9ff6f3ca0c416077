"""Fine-tuning's option checks (before any work), the freezing plan, the message of a run
stopped by a signal, wav.scp entries whose file is missing, --max_fail_fraction, and the
rerun of a phase stopped at its last epoch for skipping too much of its data.

Most tests train nothing (a run that gets as far as a phase is stopped there); the few that
train fine-tune the tiny source model for an epoch or two.
"""
import json
import os
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from finetune_helpers import read_finetune_data
from train_helpers import PhaseReached, make_speaker_corpus
from wespeaker_py.api import load_model
from wespeaker_py.cli.common import run_main
from wespeaker_py.cli.main import _main
from wespeaker_py.config import TrainConfig
from wespeaker_py.errors import WespeakerError
from wespeaker_py.finetune import FinetuneDataError, FinetuneOptions, finetune
from wespeaker_py.finetune import dev as finetune_dev
from wespeaker_py.finetune import run as finetune_run
from wespeaker_py.finetune.config import (LR_DECAY, options_named_as_flags, phase_config, phases,
                                          read_source_config)
from wespeaker_py.train import trainer
from wespeaker_py.train.interrupt import TrainingStopped
from wespeaker_py.train.loop import TrainingDataError
from wespeaker_py.train.plan import Layout

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """6 speakers x 4 utterances of 1 s (2 dev speakers, 4 training ones)."""
    root = str(tmp_path_factory.mktemp("data"))
    make_speaker_corpus(root, num_spks=6, utts_per_spk=4, seconds=1.0, wav_scp=True)
    return root


def _copy_data(data_dir, root):
    """A data folder of its own listing ``data_dir``'s files (so its wav.scp can be edited)."""
    os.makedirs(root)
    for name in ("wav.scp", "utt2spk"):
        with open(os.path.join(data_dir, name)) as src, \
                open(os.path.join(root, name), "w") as dst:
            dst.write(src.read())
    return root


# ---- 1, 2, 5: options out of range are refused before anything is written ------------------

@pytest.mark.parametrize("options, named", [
    (dict(batch_size=-3), "batch_size=-3: "), (dict(batch_size=0), "batch_size=0: "),
    (dict(batch_size=1), "batch_size=1: "), (dict(num_workers=-1), "num_workers=-1: "),
    (dict(epochs=2, freeze_epochs=5), "freeze_epochs=5: must be below epochs (2)"),
    (dict(epochs=2, freeze_epochs=2), "freeze_epochs=2: must be below epochs (2)"),
    (dict(epochs=1, freeze_epochs=3), "freeze_epochs=3: must be below epochs (1)"),
    (dict(epochs=3, freeze="body", freeze_epochs=3), "freeze_epochs=3: must be below"),
    # from Python, a value of the wrong type is named, not a bare TypeError
    (dict(sample_rate="8000"), "sample_rate='8000': must be a whole number or None, not str"),
    (dict(epochs=2.5), "epochs=2.5: must be a whole number, not float"),
    (dict(lr="1e-3"), "lr='1e-3': must be a number, not str"),
    (dict(freeze=None), "freeze=None: must be one of ['auto', 'none', 'front', 'body'], "
                        "not None"),
    (dict(freeze="all"), "freeze='all': must be one of ['auto', 'none', 'front', 'body']"),
    (dict(dev_speakers=1), "dev_speakers=1: must be at least 2"),
    # as FinetuneOptions declares them: a range in words, a NaN no number
    (dict(lr=0), "lr=0.0: must be above 0"), (dict(lr=float("nan")), "lr=nan: must be a number, "
                                                                     "not NaN"),
    (dict(sample_rate=np.int64(2000)), "sample_rate=2000: must be at least 4000"),
    (dict(batch_size=1), "batch_size=1: must be at least 2 (BatchNorm after pooling needs two "
                         "utterances per batch; leave it out for the source config's)"),
])
def test_an_option_out_of_range_is_refused_before_any_work(options, named, source_model,
                                                           data_dir, tmp_path, monkeypatch):
    def train(config, *_):
        raise PhaseReached

    monkeypatch.setattr(finetune_run, "_train_phase", train)
    out = str(tmp_path / "out")
    with pytest.raises(WespeakerError, match=re.escape(named)):
        finetune(source_model, data_dir, out, FinetuneOptions(**options), device="cpu")
    assert not os.path.exists(out)   # no request.json: the corrected command is not refused


def test_the_command_names_options_by_their_flags_and_python_by_its_arguments(
        source_model, data_dir, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert run_main(_main, ["finetune", "--model", source_model, "--data", data_dir,
                            "--out", out, "--epochs", "2", "--freeze_epochs", "2"]) == 2
    assert ("error: --freeze_epochs 2: must be below --epochs (2): the epochs after the "
            "first --freeze_epochs train everything") in capsys.readouterr().err
    with pytest.raises(WespeakerError, match=r"^epochs=0: must be at least 1$"):
        load_model(source_model, device="cpu").finetune(data_dir, out, epochs=0)
    # dev_speakers too, in range or beyond what the data can spare
    assert run_main(_main, ["finetune", "--model", source_model, "--data", data_dir,
                            "--out", out, "--dev_speakers", "1"]) == 2
    assert "error: --dev_speakers 1: must be at least 2" in capsys.readouterr().err
    assert run_main(_main, ["finetune", "--model", source_model, "--data", data_dir,
                            "--out", out, "--dev_speakers", "5"]) == 2
    assert re.search(r"error: --dev_speakers 5: holds out more speakers than .* can spare: "
                     r".*; lower --dev_speakers to 4 or less", capsys.readouterr().err)
    with pytest.raises(WespeakerError, match=r"^dev_speakers=5: .*; lower dev_speakers to 4 "):
        load_model(source_model, device="cpu").finetune(data_dir, out, dev_speakers=5)
    assert not os.path.exists(out)


def test_numpy_numbers_are_taken_as_python_ones(source_model, data_dir, tmp_path,
                                                first_phase):
    first_phase(source_model, data_dir, str(tmp_path / "out"),
                FinetuneOptions(epochs=np.int64(2), lr=np.float64(0.01)))
    recorded = json.load(open(tmp_path / "out" / "work" / "request.json"))
    assert recorded["options"]["epochs"] == 2 and recorded["options"]["lr"] == 0.01


def test_the_options_in_range_reach_training_with_the_given_loader(source_model, data_dir,
                                                                   tmp_path, first_phase):
    seen = first_phase(source_model, data_dir, str(tmp_path / "out"),
                       FinetuneOptions(epochs=2, batch_size=2, num_workers=0))
    assert seen["dataloader_args"]["batch_size"] == 2
    assert seen["dataloader_args"]["num_workers"] == 0


# ---- 5: the frozen phase never is the whole run unseen --------------------------------------

def test_auto_freezing_leaves_an_epoch_that_trains_everything_from_two_epochs_on():
    for epochs in (2, 3, 6):
        plan = phases(FinetuneOptions(epochs=epochs), 4)
        assert plan[-1]["freeze"] == "none" and plan[-1]["epochs"] >= 1
        assert sum(phase["epochs"] for phase in plan) == epochs


def test_one_epoch_frozen_throughout_is_said(caplog):
    plan = phases(FinetuneOptions(epochs=1), 4)   # auto: body for 4 training speakers
    assert plan == [{"name": "train", "epochs": 1, "freeze": "body"}]
    assert "epochs=1 with freeze='auto' (body for 4 training speakers)" in caplog.text
    assert "give epochs 2 or more, or freeze_epochs 0, to train everything" in caplog.text
    assert "only the new head trains" in caplog.text
    caplog.clear()
    phases(FinetuneOptions(epochs=1, freeze="front"), 4)
    assert "the first layer never trains" in caplog.text
    caplog.clear()
    assert phases(FinetuneOptions(epochs=1), 40) == [{"name": "train", "epochs": 1,
                                                      "freeze": "none"}]
    assert "frozen" not in caplog.text


# ---- 3: a phase stopped by a signal says how finetune resumes -------------------------------

def _stop_on_a_signal(config, resume_hint=None, **_):
    """In place of the trainer: the stop of epoch 1 after its batch 2, as the trainer ends it
    (a folder started from a checkpoint, as bin.train's --checkpoint)."""
    folder = SimpleNamespace(standing_path="/exp/models/model_5.pt",
                             layout=SimpleNamespace(interrupted_path="/exp/interrupted.pt"))
    trainer._stopped(folder, SimpleNamespace(is_distributed=False), "epoch 1 after its batch 2",
                     resume_hint=resume_hint)


def test_a_stopped_phase_says_to_rerun_the_finetune_command(source_model, data_dir, tmp_path,
                                                            monkeypatch):
    monkeypatch.setattr(trainer, "run_training", _stop_on_a_signal)
    with pytest.raises(TrainingStopped) as stopped:
        finetune(source_model, data_dir, str(tmp_path / "out"), FinetuneOptions(epochs=2),
                 device="cpu")
    assert "call finetune() again with the same arguments to resume" in str(stopped.value)
    assert "--checkpoint" not in str(stopped.value)
    with pytest.raises(TrainingStopped) as stopped, options_named_as_flags():   # the command
        finetune(source_model, data_dir, str(tmp_path / "out"), FinetuneOptions(epochs=2),
                 device="cpu")
    assert "run the same wespeaker-py finetune command again to resume" in str(stopped.value)


def test_bin_train_keeps_its_checkpoint_hint():
    with pytest.raises(TrainingStopped, match=r"run the same command with --checkpoint "
                                              r"/exp/models/model_5.pt"):
        _stop_on_a_signal({})


# ---- 4: a missing file is skipped and counted, as a silent or cut one is --------------------

def test_a_missing_file_is_skipped_and_named_by_its_key(data_dir, tmp_path, caplog):
    data = _copy_data(data_dir, str(tmp_path / "data"))
    lines = open(os.path.join(data, "wav.scp")).read().splitlines()
    # 3 dev speakers: with 2, the one with a file missing would leave 9 target trials of
    # files that can be read, below the 10 needed
    dev_key = read_finetune_data(data, dev_speakers=3).dev[0].key
    missing = {dev_key, lines[0].split()[0]}
    with open(os.path.join(data, "wav.scp"), "w") as scp:
        scp.write("".join(f"{key} {tmp_path}/gone/{key}.wav\n" if key in missing
                          else f"{key} {path}\n"
                          for key, path in (line.split() for line in lines)))
    split = read_finetune_data(data, dev_speakers=3)
    assert split.sample_rate == 16000
    assert len(split.train) + len(split.dev) == len(lines)   # listed: training skips it
    assert (f"2 of its {len(lines)} files cannot be read, and their utterances are skipped "
            f"in training and in the dev evaluation") in caplog.text
    assert all(f"{key} ({tmp_path}/gone/{key}.wav does not exist)" in caplog.text
               for key in missing)
    audio, skipped = finetune_dev.dev_audio(split, 16000)
    assert set(skipped) == {dev_key}   # the dev evaluation skips and names it


def test_a_wav_scp_of_only_missing_files_is_refused(data_dir, tmp_path):
    data = _copy_data(data_dir, str(tmp_path / "data"))
    wav_scp = os.path.join(data, "wav.scp")
    keys = [line.split()[0] for line in open(wav_scp)]
    open(wav_scp, "w").write("".join(f"{key} /nowhere/{key}.wav\n" for key in keys))
    with pytest.raises(FinetuneDataError, match=f"{wav_scp}: none of its files can be read"):
        read_finetune_data(data)


def test_pipes_beside_unreadable_files_are_still_data(data_dir, tmp_path, caplog):
    # every plain file unreadable, the pipes fine: the data is the pipes (given a rate)
    data = _copy_data(data_dir, str(tmp_path / "data"))
    wav_scp = os.path.join(data, "wav.scp")
    lines = [line.split() for line in open(wav_scp)]
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with open(wav_scp, "w") as scp:
        scp.write(f"{lines[0][0]} {empty}\n")
        scp.write("".join(f"{key} cat {path} |\n" for key, path in lines[1:]))
    split = read_finetune_data(data, sample_rate=16000)   # was "none of its files can be read"
    assert len(split.train) + len(split.dev) == len(lines) and split.rates == {}
    assert "1 of its 1 files cannot be read" in caplog.text


def test_a_file_that_is_not_audio_names_its_utterance_in_wav_scp(data_dir, tmp_path):
    data = _copy_data(data_dir, str(tmp_path / "data"))
    wav_scp = os.path.join(data, "wav.scp")
    key = open(wav_scp).readline().split()[0]
    text = tmp_path / "text.wav"
    text.write_text("not a wav file\n")
    lines = open(wav_scp).read().splitlines()
    open(wav_scp, "w").write("".join(f"{k} {text if k == key else path}\n"
                                     for k, path in (line.split() for line in lines)))
    with pytest.raises(FinetuneDataError, match=f"{wav_scp}: utterance '{key}': {text}"):
        read_finetune_data(data)


# ---- 6: each phase's learning rate starts at the peak, as the docs say ----------------------

def test_each_phase_decays_tenfold_from_the_peak_and_the_docs_say_so(source_model):
    source = read_source_config(os.path.join(source_model, "config.yaml"))
    options = FinetuneOptions(epochs=4, freeze="body", freeze_epochs=1, batch_size=8)
    schedules = [phase_config(source, options, exp_dir="exp", train_data="l", train_label="u",
                              num_utterances=16, sample_rate=16000, model_init="i",
                              epochs=phase["epochs"], frozen_params=[], device="cpu"
                              )["scheduler_args"] for phase in phases(options, 4)]
    assert len(schedules) == 2 and schedules[0] == schedules[1]   # the second restarts
    assert schedules[0]["initial_lr"] == pytest.approx(LR_DECAY * schedules[0]["final_lr"])
    docs = open(os.path.join(REPO_ROOT, "docs", "finetune.md")).read()
    assert "tenfold over the run" not in docs and "decaying tenfold over each phase" in docs


def test_a_run_with_missing_files_trains_and_skips_them(source_model, data_dir, tmp_path):
    data = _copy_data(data_dir, str(tmp_path / "data"))
    split = read_finetune_data(data, dev_speakers=3)   # enough trials left to calibrate
    missing = {split.dev[0].key, split.train[0].key}
    lines = open(os.path.join(data, "wav.scp")).read().splitlines()
    with open(os.path.join(data, "wav.scp"), "w") as scp:
        scp.write("".join(f"{key} {tmp_path}/gone.wav\n" if key in missing else f"{key} {path}\n"
                          for key, path in (line.split() for line in lines)))
    report = finetune(source_model, data, str(tmp_path / "out"),
                      FinetuneOptions(epochs=2, freeze_epochs=1, lr=0.01, batch_size=4,
                                      num_workers=0, num_avg=1, dev_speakers=3),
                      device="cpu", num_threads=1)
    assert list(report["dev_skipped"]) == [split.dev[0].key]
    assert report["dev"]["after"]["trials"] < len(split.trials)


# ---- 7: --max_fail_fraction reaches each phase, and a stopped phase's advice names it -------

def _phase_configs(monkeypatch, argv):
    """The configs of the two phases of ``wespeaker-py finetune argv``, recorded in place of
    training (the second raises PhaseReached)."""
    configs = []

    def record(config, *_):
        configs.append(config)
        if len(configs) == 2:
            raise PhaseReached
        return "frozen_last.pt"

    monkeypatch.setattr(finetune_run, "_train_phase", record)
    with pytest.raises(PhaseReached):
        run_main(_main, ["finetune", *argv])
    return configs


def test_the_flag_goes_into_each_phase_config_and_a_run_without_it_writes_none(
        source_model, data_dir, tmp_path, monkeypatch):
    argv = ["--model", source_model, "--data", data_dir, "--out", str(tmp_path / "out"),
            "--epochs", "2", "--device", "cpu"]   # auto: a frozen phase and a full one
    given = _phase_configs(monkeypatch, argv + ["--max_fail_fraction", "0.8"])
    assert [config["max_fail_fraction"] for config in given] == [0.8, 0.8]
    assert TrainConfig.from_dict(given[0]).max_fail_fraction == 0.8   # as the trainer reads it
    # without it the same run resumes (the flag is no part of request.json), its configs
    # as they were before the flag existed
    left_out = _phase_configs(monkeypatch, argv)
    assert all("max_fail_fraction" not in config for config in left_out)
    assert [dict(config, max_fail_fraction=0.8) for config in left_out] == given


def test_a_max_fail_fraction_above_1_is_refused_naming_the_flag(tmp_path, capsys):
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit) as refused:
        run_main(_main, ["finetune", "--model", "m", "--data", "d", "--out", out,
                         "--max_fail_fraction", "1.5"])
    assert refused.value.code == 2
    assert ("argument --max_fail_fraction/--max-fail-fraction: expected a number in [0, 1], "
            "got '1.5'") in capsys.readouterr().err
    with pytest.raises(WespeakerError, match=r"max_fail_fraction=1.5: must be a number in "
                                             r"\[0, 1\]"):
        finetune("m", "d", out, max_fail_fraction=1.5)
    assert not os.path.exists(out)


def _skip_too_much(config, resume_hint=None, **_):
    """In place of the trainer: the end of epoch 1 of 2, saved, after it skipped 12 of the 16
    utterances it read, as the trainer's check stops it."""
    plan = SimpleNamespace(max_fail_fraction=0.5, num_epochs=2,
                           world=SimpleNamespace(is_distributed=False),
                           layout=SimpleNamespace(checkpoint_path="/exp/models/model_{}.pt".format))
    run = SimpleNamespace(plan=plan, folder=SimpleNamespace(standing_path=None),
                          epoch_name="epoch {}".format)
    data = SimpleNamespace(skipped_beyond=lambda fraction: ["12 of the 16 utterances read"],
                           describe_skipped=lambda: "missing_file=12")
    trainer._check_skipped_data(run, 1, data, True, resume_hint)


def test_a_phase_that_skipped_too_much_says_to_raise_the_finetune_flag(
        source_model, data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "run_training", _skip_too_much)
    with pytest.raises(TrainingDataError) as stopped:
        finetune(source_model, data_dir, str(tmp_path / "out"), FinetuneOptions(epochs=2),
                 device="cpu")
    assert str(stopped.value).endswith(
        "/exp/models/model_1.pt is saved; once the data is fixed, call finetune() again with "
        "the same arguments to resume; to train on what is left instead, raise "
        "max_fail_fraction (1: never stop) and call finetune() again: it goes on from the "
        "saved epoch")
    with pytest.raises(TrainingDataError) as stopped, options_named_as_flags():
        finetune(source_model, data_dir, str(tmp_path / "out"), FinetuneOptions(epochs=2),
                 device="cpu")
    assert str(stopped.value).endswith(
        "/exp/models/model_1.pt is saved; once the data is fixed, run the same wespeaker-py "
        "finetune command again to resume; to train on what is left instead, raise "
        "wespeaker-py finetune --max_fail_fraction (1: never stop) and run the command again: "
        "it goes on from the saved epoch")
    assert "config key" not in str(stopped.value)
    # bin.train's run, whose config the user writes, keeps the advice of the key
    with pytest.raises(TrainingDataError, match=r"; to train on what is left instead, raise "
                                                r"max_fail_fraction \(a config key; 1: never "
                                                r"stop\)$"):
        _skip_too_much({})


# ---- 8: a phase stopped on skipped data at its last epoch is trained again by a rerun --------

def _data_on_a_missing_disk(data_dir, root):
    """A data folder of its own 8 of whose 12 training utterances (with 3 dev speakers) lie
    on ``root/disk``, not there yet (an unmounted disk): an epoch skips 67% of its data.
    Returns the folder and a function that puts the files there."""
    data = _copy_data(data_dir, os.path.join(root, "data"))
    disk = os.path.join(root, "disk")
    split = read_finetune_data(data, dev_speakers=3)
    # each training speaker keeps a file (one with none would count as no speaker, and
    # too few would be left to train on), the first two: the dev speakers drawn stay
    gone = [entry.key for entry in split.train if not entry.key.endswith("utt3")][-8:]
    wav_scp = os.path.join(data, "wav.scp")
    paths = dict(line.split() for line in open(wav_scp))
    with open(wav_scp, "w") as scp:
        scp.write("".join(f"{key} {os.path.join(disk, key + '.wav') if key in gone else path}\n"
                          for key, path in paths.items()))
    assert read_finetune_data(data, dev_speakers=3).dev_speakers == split.dev_speakers

    def mount():
        os.makedirs(disk)
        for key in gone:
            shutil.copyfile(paths[key], os.path.join(disk, key + ".wav"))
    return data, mount


def test_a_phase_stopped_at_its_last_epoch_trains_it_again_once_the_data_is_fixed(
        source_model, data_dir, tmp_path):
    data, mount = _data_on_a_missing_disk(data_dir, str(tmp_path))
    out = str(tmp_path / "out")
    options = FinetuneOptions(epochs=1, freeze="none", lr=0.01, batch_size=4, num_workers=0,
                              num_avg=1, dev_speakers=3)   # one phase of one epoch
    with pytest.raises(TrainingDataError) as stopped:
        finetune(source_model, data, out, options, device="cpu", num_threads=1)
    phase_dir = os.path.join(out, "work", "train")
    assert "full epoch 1 skipped 8 of the 12 utterances read (67%)" in str(stopped.value)
    assert str(stopped.value).endswith(
        f"{phase_dir}/models/model_1.pt is saved; this was the run's last epoch: train it again "
        f"once the data is fixed; to train on what is left instead, raise max_fail_fraction "
        f"(1: never stop); either way, call finetune() again with the same arguments: it "
        f"trains that epoch again in place of the saved one")
    assert os.path.isfile(os.path.join(phase_dir, finetune_run.SKIPPED_DATA_MARK))

    mount()   # the data fixed: the same command trains the epoch again, on all of it
    report = finetune(source_model, data, out, options, device="cpu", num_threads=1)
    assert report["phases"][0]["name"] == "train"
    log = open(os.path.join(phase_dir, "train.log")).read()
    ends = [line for line in log.splitlines() if "full epoch 1 training data over" in line]
    assert len(ends) == 2   # the stopped epoch, then the one trained again
    assert "skipped: missing_file=8" in ends[0] and "skipped: none" in ends[1]
    assert not os.path.exists(os.path.join(phase_dir, finetune_run.SKIPPED_DATA_MARK))


def _skip_too_much_in_the_last_epoch(config, resume_hint=None, **_):
    """In place of the trainer: a 2-epoch phase that saves its two checkpoints and stops at
    the end of epoch 2, its last, after it skipped 12 of the 16 utterances it read."""
    layout = Layout(config.exp_dir)
    os.makedirs(layout.model_dir, exist_ok=True)
    for epoch in (1, 2):
        open(layout.checkpoint_path(epoch), "wb").close()
    plan = SimpleNamespace(max_fail_fraction=0.5, num_epochs=2, layout=layout,
                           world=SimpleNamespace(is_distributed=False))
    run = SimpleNamespace(plan=plan, folder=SimpleNamespace(standing_path=None),
                          epoch_name="epoch {}".format)
    data = SimpleNamespace(skipped_beyond=lambda fraction: ["12 of the 16 utterances read"],
                           describe_skipped=lambda: "missing_file=12")
    trainer._check_skipped_data(run, 2, data, True, resume_hint)


def test_a_rerun_trains_the_stopped_last_epoch_from_the_checkpoint_before_it(
        source_model, data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "run_training", _skip_too_much_in_the_last_epoch)
    out = str(tmp_path / "out")
    options = FinetuneOptions(epochs=2, freeze_epochs=0)   # one phase of two epochs
    with pytest.raises(TrainingDataError, match="it trains that epoch again"):
        finetune(source_model, data_dir, out, options, device="cpu")
    starts = []

    def resume(config, **_):
        starts.append(config.checkpoint)
        raise PhaseReached

    monkeypatch.setattr(trainer, "run_training", resume)
    # a higher --max_fail_fraction, the other advice, trains the epoch again too
    with pytest.raises(PhaseReached):
        finetune(source_model, data_dir, out, options, device="cpu", max_fail_fraction=0.9)
    models = Layout(os.path.join(out, "work", "train")).model_dir
    assert starts == [os.path.join(models, "model_1.pt")]
    assert sorted(os.listdir(models)) == ["model_1.pt"]
