"""What a fine-tuning rerun does with the run OUT holds: ``--overwrite`` trains a finished run
of the same request again but resumes an unfinished one, a resumed run keeps the phases it
planned, a source replaced in place is another request, a run stopped while publishing
leaves no model that loads without its calibration, and Ctrl-C says how to resume.

Most tests train nothing (a run that gets as far as a phase is stopped there); one
fine-tunes the tiny source model for two epochs.
"""
import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch

from train_helpers import make_speaker_corpus
from wespeaker_py.api import load_model
from wespeaker_py.cli.common import INTERRUPTED_STATUS, hint_on_interrupt, run_main
from wespeaker_py.cli.main import _main
from wespeaker_py.errors import ModelSourceError
from wespeaker_py.finetune import FinetuneOptions, OutputExistsError, finetune
from wespeaker_py.finetune import config as finetune_config
from wespeaker_py.finetune import request as finetune_request
from wespeaker_py.finetune import run as finetune_run
from wespeaker_py.io.layout import CALIBRATION_NAME, REPORT_NAME

TINY_OPTIONS = dict(epochs=2, lr=0.01, batch_size=8, num_workers=0, num_avg=1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """6 speakers x 4 utterances of 1 s at 16 kHz (2 dev speakers, 4 training ones)."""
    root = str(tmp_path_factory.mktemp("data"))
    make_speaker_corpus(root, num_spks=6, utts_per_spk=4, seconds=1.0, wav_scp=True)
    return root


# ---- --overwrite: another run replaced, a finished one trained again, an unfinished resumed --

def test_overwrite_resumes_an_unfinished_run_and_trains_a_finished_one_again(
        source_model, data_dir, tmp_path, first_phase, caplog):
    out = tmp_path / "out"
    options = FinetuneOptions(**TINY_OPTIONS)
    first_phase(source_model, data_dir, str(out), options)
    mark = out / "work" / "frozen" / "models" / "model_1.pt"   # a phase's progress
    mark.parent.mkdir(parents=True)
    mark.write_bytes(b"trained")
    # a requeued job whose command carries --overwrite goes on, as the resume hint says
    with caplog.at_level(logging.INFO):
        first_phase(source_model, data_dir, str(out), options, overwrite=True)
    assert mark.read_bytes() == b"trained"
    assert f"resuming the fine-tuning run in {out} (unfinished: overwrite=True" in caplog.text
    # a finished run: left as it is, unless --overwrite, which trains it again
    for name in finetune_request.PUBLISHED:
        (out / name).write_text(json.dumps({"finished": True}))
    assert finetune(source_model, data_dir, str(out), options, device="cpu",
                    log_summary=False) == {"finished": True}
    first_phase(source_model, data_dir, str(out), options, overwrite=True)
    assert not any((out / name).exists() for name in finetune_request.PUBLISHED)
    assert not mark.exists() and (out / "work" / "request.json").is_file()


def test_overwrite_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        run_main(_main, ["finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "or train this one again once finished" in text
    assert "an unfinished run of the same command resumes even with --overwrite" in text


# ---- audio mended in place after a run finished --------------------------------------------

def test_a_finished_run_whose_unreadable_file_was_mended_is_not_reported_finished(
        source_model, tmp_path, first_phase, capsys):
    root = str(tmp_path / "data")
    make_speaker_corpus(root, num_spks=6, utts_per_spk=4, seconds=1.0, wav_scp=True)
    broken = os.path.join(root, "wav", "spk5-utt3.wav")
    shutil.move(broken, tmp_path / "away.wav")   # missing when the run starts
    out = tmp_path / "out"
    options = FinetuneOptions(**TINY_OPTIONS)
    first_phase(source_model, root, str(out), options)
    # finished, as the run records it: the files it could not read, no dev audio skipped
    record = {finetune_request.UNREADABLE_FILES: [broken], "dev_skipped": {},
              "sample_rate": 16000}
    for name in finetune_request.PUBLISHED:
        (out / name).write_text(json.dumps(record))
    assert finetune(source_model, root, str(out), options, device="cpu",
                    log_summary=False) == record   # nothing changed: finished
    shutil.move(tmp_path / "away.wav", broken)       # mended in place: the lists are the same
    with pytest.raises(OutputExistsError) as refused:
        finetune(source_model, root, str(out), options, device="cpu")
    assert str(refused.value) == (
        f"{out} holds this fine-tuning run, finished, but the audio of its data has changed "
        f"since: 1 file(s) could not be read then and can now ({broken}); pass overwrite=True "
        f"to train it again on the audio as it is now, or choose another out_dir")
    # the command names its flags
    flags = ["--epochs", "2", "--lr", "0.01", "--batch_size", "8", "--num_workers", "0",
             "--num_avg", "1", "--device", "cpu"]
    assert run_main(_main, ["finetune", "--model", source_model, "--data", root, "--out",
                            str(out), *flags]) == 2
    assert ("pass --overwrite to train it again on the audio as it is now, or choose another "
            "--out") in capsys.readouterr().err


def test_a_finished_run_whose_audio_was_removed_since_stays_finished_with_a_warning(
        source_model, tmp_path, first_phase, caplog):
    root = str(tmp_path / "data")
    make_speaker_corpus(root, num_spks=6, utts_per_spk=4, seconds=1.0, wav_scp=True)
    out = tmp_path / "out"
    options = FinetuneOptions(**TINY_OPTIONS)
    first_phase(source_model, root, str(out), options)
    record = {finetune_request.UNREADABLE_FILES: [], "dev_skipped": {}, "sample_rate": 16000}
    for name in finetune_request.PUBLISHED:
        (out / name).write_text(json.dumps(record))
    removed = os.path.join(root, "wav", "spk5-utt3.wav")
    os.remove(removed)                 # to save space, once the model was made
    with caplog.at_level(logging.WARNING, logger="wespeaker_py"):
        assert finetune(source_model, root, str(out), options, device="cpu",
                        log_summary=False) == record
    assert any(f"since then 1 file(s) were read then and cannot be now ({removed}): the model "
               f"stays as it was trained with them" in record.getMessage()
               for record in caplog.records)


def test_a_run_missing_its_calibration_is_finished_only_when_it_recorded_why(tmp_path):
    for name in finetune_request.PUBLISHED:
        (tmp_path / name).write_text(json.dumps({"calibration_skipped": None}))
    assert finetune_request._finished(str(tmp_path))
    (tmp_path / CALIBRATION_NAME).unlink()   # lost, not skipped: fit it again
    assert not finetune_request._finished(str(tmp_path))
    (tmp_path / REPORT_NAME).write_text(json.dumps(
        {"calibration_skipped": "6 target and 0 nontarget dev trials scored"}))
    assert finetune_request._finished(str(tmp_path))


# ---- a resumed run keeps the phases it planned -----------------------------------------------

def test_a_resumed_run_keeps_its_phases_when_more_files_can_be_read(source_model, tmp_path,
                                                                    first_phase, monkeypatch,
                                                                    caplog):
    monkeypatch.setattr(finetune_config, "FEW_SPEAKERS", 4)   # auto: body below 4 speakers
    root = str(tmp_path / "data")
    make_speaker_corpus(root, num_spks=6, utts_per_spk=4, seconds=1.0, wav_scp=True)
    # spk5's files are on a disk not yet mounted: 3 of the 4 training speakers can be read
    hidden = tmp_path / "unmounted"
    shutil.move(os.path.join(root, "wav"), hidden)
    os.makedirs(os.path.join(root, "wav"))
    for name in os.listdir(hidden):
        if not name.startswith("spk5-"):
            shutil.move(str(hidden / name), os.path.join(root, "wav", name))
    out = tmp_path / "out"
    options = FinetuneOptions(**TINY_OPTIONS)
    with caplog.at_level(logging.INFO):
        first = first_phase(source_model, root, str(out), options)
    assert os.path.basename(first["exp_dir"]) == "frozen"
    assert "on 3 speakers (12 utterances that can be read)" in caplog.text
    # mounted: 4 training speakers now, whom auto would train whole from the start; the
    # resumed run keeps the plan its checkpoints were trained under
    for name in os.listdir(hidden):
        shutil.move(str(hidden / name), os.path.join(root, "wav", name))
    again = first_phase(source_model, root, str(out), options)
    assert os.path.basename(again["exp_dir"]) == "frozen"
    recorded = json.load(open(out / "work" / finetune_run.PLAN_NAME))
    assert [phase["name"] for phase in recorded] == ["frozen", "train"]
    # a plan that cannot be read is refused, naming the file, rather than planned again
    (out / "work" / finetune_run.PLAN_NAME).write_text("{")
    with pytest.raises(OutputExistsError, match=f"{out}/work/phases.json: not the phases"):
        first_phase(source_model, root, str(out), options)


# ---- a source replaced in place is another request ------------------------------------------

def test_a_source_replaced_in_place_is_another_request_naming_the_file(
        source_model, data_dir, tmp_path, first_phase):
    source = shutil.copytree(source_model, tmp_path / "source")
    out = str(tmp_path / "out")
    options = FinetuneOptions(**TINY_OPTIONS)
    first_phase(str(source), data_dir, out, options)
    recorded = json.load(open(os.path.join(out, "work", "request.json")))
    assert set(recorded["source_files"]) == {"checkpoint", "config"}
    first_phase(str(source), data_dir, out, options)   # nothing changed: it resumes
    # newer weights downloaded into the same folder
    state = torch.load(source / "avg_model.pt")
    torch.save({key: value + 1 for key, value in state.items()}, source / "avg_model.pt")
    with pytest.raises(OutputExistsError, match=r"differs in source_files\.checkpoint\)"):
        finetune(str(source), data_dir, out, options, device="cpu")
    # a mean vector beside it changes the dev figures "before": named too
    np.save(source / "mean_vec.npy", np.zeros(16, np.float32))
    with pytest.raises(OutputExistsError, match=r"source_files\.checkpoint, "
                                                r"source_files\.mean_vec\.npy\)"):
        finetune(str(source), data_dir, out, options, device="cpu")


def test_a_request_written_before_source_digests_still_resumes(source_model, data_dir,
                                                               tmp_path, first_phase):
    out = str(tmp_path / "out")
    first_phase(source_model, data_dir, out, FinetuneOptions(**TINY_OPTIONS))
    path = os.path.join(out, "work", "request.json")
    recorded = json.load(open(path))
    del recorded["source_files"]
    json.dump(recorded, open(path, "w"))
    first_phase(source_model, data_dir, out, FinetuneOptions(**TINY_OPTIONS))
    assert "source_files" in json.load(open(path))


# ---- publishing: the model files last --------------------------------------------------------

def test_a_run_stopped_while_publishing_leaves_no_model_without_calibration(
        source_model, data_dir, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    real_publish = finetune_run._publish

    def killed(staged_dir, out_dir):
        raise KeyboardInterrupt   # as a run killed once the model files are next

    monkeypatch.setattr(finetune_run, "_publish", killed)
    with pytest.raises(KeyboardInterrupt):
        finetune(source_model, data_dir, out, FinetuneOptions(**TINY_OPTIONS), device="cpu")
    assert {"calibration.json", "finetune.json"} <= set(os.listdir(out))
    assert not {"avg_model.pt", "config.yaml"} & set(os.listdir(out))
    with pytest.raises(ModelSourceError, match="has not finished"):
        load_model(out)
    # the rerun is not taken as finished: it publishes, without training again
    checkpoint = os.path.join(out, "work", "train", "models", "model_1.pt")
    stamp = os.path.getmtime(checkpoint)
    monkeypatch.setattr(finetune_run, "_publish", real_publish)
    finetune(source_model, data_dir, out, FinetuneOptions(**TINY_OPTIONS), device="cpu")
    assert os.path.getmtime(checkpoint) == stamp
    assert load_model(out, device="cpu").calibration is not None


# ---- Ctrl-C says how to go on ----------------------------------------------------------------

def test_ctrl_c_in_finetune_says_to_run_the_command_again(tmp_path, monkeypatch, capsys):
    def interrupted(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune_run, "_finetune", interrupted)
    status = run_main(_main, ["finetune", "--model", "m", "--data", "d",
                              "--out", str(tmp_path / "out")], prog="wespeaker-py")
    assert status == INTERRUPTED_STATUS
    assert capsys.readouterr().err == (
        "wespeaker-py: interrupted; run the same wespeaker-py finetune command again to "
        "resume\n")


def test_ctrl_c_elsewhere_still_says_interrupted_alone(capsys):
    def main(argv):
        raise KeyboardInterrupt

    def nested(argv):   # the innermost hint is the one given
        with hint_on_interrupt("outer"), hint_on_interrupt("inner"):
            raise KeyboardInterrupt

    assert run_main(main, [], prog="tool") == INTERRUPTED_STATUS
    assert capsys.readouterr().err == "tool: interrupted\n"
    assert run_main(nested, [], prog="tool") == INTERRUPTED_STATUS
    assert capsys.readouterr().err == "tool: interrupted; inner\n"


# ---- the recorded phases are checked, not compared with a fixed set of keys -----------------

PLAN = [{"name": "frozen", "epochs": 1, "freeze": "body"},
        {"name": "train", "epochs": 2, "freeze": "none"}]


@pytest.mark.parametrize("index, key, value, problem", [
    (0, "freeze", "bogus", "phase 1: freeze='bogus' is not one of none, front, body"),
    (0, "freeze", "auto", "phase 1: freeze='auto' is not one of none, front, body"),
    (1, "epochs", "x", "phase 2: epochs='x' is not a whole number >= 1"),
    (1, "epochs", 0, "phase 2: epochs=0 is not a whole number >= 1"),
    (1, "name", "frozen", "phase 2: name='frozen' is not a folder name of its own"),
    (1, "name", "../elsewhere", "phase 2: name='../elsewhere' is not a folder name of its own"),
    (1, "freeze", None, "phase 2 has no freeze")])
def test_a_recorded_plan_with_a_bad_value_is_refused_naming_file_phase_and_key(
        tmp_path, index, key, value, problem):
    plan = [dict(phase) for phase in PLAN]
    if value is None:
        del plan[index][key]
    else:
        plan[index][key] = value
    (tmp_path / finetune_run.PLAN_NAME).write_text(json.dumps(plan))
    with pytest.raises(OutputExistsError) as refused:
        finetune_run._kept_phases(str(tmp_path), FinetuneOptions(), 4)
    assert str(refused.value).startswith(f"{tmp_path / finetune_run.PLAN_NAME}: not the "
                                         f"phases of a fine-tuning run ({problem}); ")


def test_a_recorded_plan_with_more_keys_than_these_is_kept(tmp_path):
    # a later version's plan may carry more per phase (a learning-rate factor, say)
    plan = [dict(phase, lr_factor=0.5) for phase in PLAN]
    (tmp_path / finetune_run.PLAN_NAME).write_text(json.dumps(plan))
    assert finetune_run._kept_phases(str(tmp_path), FinetuneOptions(), 4) == plan


def test_the_planned_phases_pass_their_own_check():
    for freeze in finetune_config.FREEZE_CHOICES:
        for epochs, freeze_epochs in ((1, 1), (3, 1), (3, 0)):
            options = FinetuneOptions(freeze=freeze, epochs=epochs, freeze_epochs=freeze_epochs)
            plan = finetune_config.phases(options, 4)
            assert finetune_config.check_phases(plan) == plan
