"""Faults of jobs over lists and of their inputs/outputs: loud, and found before the work.

One test per defect of the fault sweep (issue 20, items 6-9 and 12): exit status of
list jobs whose entries fail, an augmentation list whose files are all missing, an
output folder that cannot be written, a key given twice, empty inputs, threads.
"""
import json
import logging
import os
import re

import pytest
import torch

from tool_helpers import run_cli
from wespeaker_py.cli.main import main as cli_main
import wespeaker_py.api
from api_helpers import mini_speech, wespeaker_folder
from inference_helpers import make_experiment
from train_helpers import (make_speaker_corpus, plan_of, run_training, tiny_config,
                           write_config)
from wespeaker_py.bin.extract import main as extract_main
from wespeaker_py.cli.common import run_main
from wespeaker_py.dataset.augment import AugmentListError
from wespeaker_py.errors import RunFailedError
from wespeaker_py.utils import threads
from wespeaker_py.utils.list_jobs import JobTally

BIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "wespeaker_py", "bin")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root, _ = wespeaker_folder(str(tmp_path_factory.mktemp("faults") / "model"))
    return root


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    config_path, checkpoint, _ = make_experiment(str(tmp_path_factory.mktemp("exp")))
    return {"config": config_path, "checkpoint": checkpoint}


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a command loads its model (a check came too late)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the check")
    monkeypatch.setattr(wespeaker_py.api, "load_model", refuse)


def extract_argv(experiment, data_list, ark, *extra):
    return ["--config", experiment["config"], "--model_path", experiment["checkpoint"],
            "--data_type", "raw", "--data_list", str(data_list), "--embed_ark", str(ark),
            "--num_workers", "0", "--gpus", "[]", *extra]


def raw_list(path, entries):
    path.write_text("".join(json.dumps({"key": key, "wav": str(wav)}) + "\n"
                            for key, wav in entries))
    return path


def not_audio(folder, *names):
    """Files that exist but are not audio: skipped only once read, after the model loaded."""
    paths = []
    for name in names:
        path = folder / f"{name}.wav"
        path.write_bytes(b"this is not a wav file")
        paths.append(path)
    return paths


# -- 6: a list job in which every entry, or too many, failed exits non-zero ----------------

def test_the_fail_rule_counts_every_skip_and_says_n_done_m_skipped():
    JobTally.of(3, {}).check("l")
    JobTally.of(1, {"missing_file": 1}).check("l", 0.5)   # half is not more than half
    with pytest.raises(RunFailedError, match=r"2 of 3 entries of l were skipped \(67%, more "
                                             r"than --max_fail_fraction 0.5; 1 done, 2 "
                                             r"skipped \(1 a, 1 b\)\)"):
        JobTally.of(1, {"b": 1, "a": 1}).check("l", 0.5)
    with pytest.raises(RunFailedError, match=r"all entries of l were skipped"):
        JobTally.of(0, {"a": 2}).check("l", 1.0)
    JobTally.of(1, {"a": 9}).check("l", 1.0)


def test_the_fail_line_names_what_the_caller_counts():
    with pytest.raises(RunFailedError, match=r"^2 of 3 recordings of l were skipped"):
        JobTally.of(1, {"a": 2}).check("l", 0.5, unit="recordings")
    with pytest.raises(RunFailedError, match=r"^nothing done: all utterances of l were "
                                             r"skipped \(0 done, 2 skipped \(2 a\)\); x$"):
        JobTally.of(0, {"a": 2}).check("l", 1.0, "x", unit="utterances")


def test_embed_wav_scp_whose_every_entry_fails_exits_1_and_writes_nothing(folder, tmp_path,
                                                                          capsys):
    a, b = not_audio(tmp_path, "a", "b")
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text(f"a {a}\nb {b}\n")
    out = tmp_path / "emb" / "xvector.ark"
    status, _, err = run_cli(capsys, "embed", "--model", folder, "--device", "cpu",
                             "--wav_scp", wav_scp, "--output", out)
    assert status == 1
    assert "0 done, 2 skipped (2 not_audio)" in err
    assert f"all utterances of {wav_scp} were skipped" in err and "was not written" in err
    assert not out.exists()


def test_a_list_of_missing_files_fails_before_the_model_loads(folder, experiment, tmp_path,
                                                              capsys, no_model_load):
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text(f"a {tmp_path}/gone_a.wav\nb {tmp_path}/gone_b.wav\n")
    for command in (["embed", "--output", tmp_path / "x.ark"],
                    ["diarize", "--output", tmp_path / "x.rttm"]):
        status, _, err = run_cli(capsys, *command, "--model", folder, "--wav_scp", wav_scp)
        assert status == 1
        assert f"none of the 2 files of {wav_scp} can be read (missing or unreadable; the " \
               f"first: {tmp_path}/gone_a.wav, {tmp_path}/gone_b.wav); nothing was " \
               f"computed" in err
    data_list = raw_list(tmp_path / "raw.list", [("ok", mini_speech(1)[0])] +
                         [(f"g{i}", tmp_path / f"g{i}.wav") for i in range(2)])
    ark = tmp_path / "emb" / "xvector.ark"
    assert run_main(extract_main, extract_argv(experiment, data_list, ark), prog="x") == 1
    assert f"2 of the 3 files of {data_list} are missing or unreadable (67%, more than " \
           f"--max_fail_fraction 0.5; the first: {tmp_path}/g0.wav, {tmp_path}/g1.wav)" \
        in capsys.readouterr().err
    assert not (tmp_path / "emb").exists()   # no output folder left behind either


def test_a_shard_list_whose_tar_files_are_missing_fails_before_the_model_loads(
        experiment, tmp_path, capsys, monkeypatch):
    """Its local tar files are checked before the model loads (the shards' utterances
    would only be lost after the rest was embedded); a pipe or an http(s) URL is left to
    the reader."""
    from wespeaker_py.inference import extraction

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the check")

    monkeypatch.setattr(extraction, "load_embedder", refuse)
    (tmp_path / "s0.tar").write_bytes(b"")
    gone = [tmp_path / f"s{i}.tar" for i in (1, 2, 3, 4)]
    shard_list = tmp_path / "shard.list"
    shard_list.write_text("\n".join([str(tmp_path / "s0.tar"), f"pipe:cat {gone[0]}",
                                     "https://example.invalid/s.tar", str(gone[0]),
                                     str(gone[1]), f"file://{gone[2]}", str(gone[3])]) + "\n")
    ark = tmp_path / "emb" / "xvector.ark"
    argv = ["--config", experiment["config"], "--model_path", experiment["checkpoint"],
            "--data_type", "shard", "--data_list", str(shard_list), "--embed_ark", str(ark),
            "--num_workers", "0", "--gpus", "[]"]
    assert run_main(extract_main, argv, prog="x") == 1
    assert f"4 of the 7 files of {shard_list} are missing or unreadable (57%, more than " \
           f"--max_fail_fraction 0.5; the first: {gone[0]}, {gone[1]}, {gone[2]}); nothing " \
           f"was computed" in capsys.readouterr().err
    assert not (tmp_path / "emb").exists()


def test_embed_wav_scp_over_the_fail_fraction_exits_1_unless_allowed(folder, tmp_path, capsys):
    a, b = not_audio(tmp_path, "a", "b")
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text(f"ok {mini_speech(1)[0]}\na {a}\nb {b}\n")
    out = tmp_path / "xvector.ark"
    common = ["embed", "--model", folder, "--device", "cpu", "--wav_scp", wav_scp,
              "--output", out]
    status, _, err = run_cli(capsys, *common)
    assert status == 1 and "1 done, 2 skipped" in err and "more than --max_fail_fraction 0.5" in err
    assert not out.exists()
    status, _, err = run_cli(capsys, *common, "--max_fail_fraction", "1")
    assert status == 0 and "1 done, 2 skipped" in err and out.exists()


def test_diarize_wav_scp_whose_every_entry_fails_exits_1(folder, tmp_path, capsys):
    a, b = not_audio(tmp_path, "a", "b")
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text(f"a {a}\nb {b}\n")
    rttm = tmp_path / "sys.rttm"
    status, _, err = run_cli(capsys, "diarize", "--model", folder, "--device", "cpu",
                             "--vad", "energy", "--wav_scp", wav_scp, "--output", rttm)
    assert status == 1 and "0 done, 2 skipped (2 not_audio)" in err
    assert not rttm.exists()


def test_extract_over_the_fail_fraction_exits_1_with_its_summary(experiment, tmp_path, capsys):
    bad = not_audio(tmp_path, "g0", "g1")
    data_list = raw_list(tmp_path / "raw.list", [("ok", mini_speech(1)[0]), ("g0", bad[0]),
                                                 ("g1", bad[1])])
    ark = tmp_path / "emb" / "xvector.ark"
    assert run_main(extract_main, extract_argv(experiment, data_list, ark), prog="x") == 1
    err = capsys.readouterr().err
    assert "2 of 3 utterances of" in err and "1 done, 2 skipped (2 not_audio)" in err
    assert not ark.exists()
    # the one embedding made waits for a rerun that accepts the skips
    argv = extract_argv(experiment, data_list, ark, "--max_fail_fraction", "1")
    assert run_main(extract_main, argv, prog="x") == 0 and ark.exists()


# -- 7: a noise or RIR list whose every file is missing -------------------------------------

@pytest.fixture(scope="module")
def speakers(tmp_path_factory):
    return make_speaker_corpus(str(tmp_path_factory.mktemp("spk")), num_spks=2, utts_per_spk=4)


def test_training_with_an_all_missing_noise_list_fails_before_the_first_step(speakers,
                                                                             tmp_path):
    noise = tmp_path / "noise.scp"
    noise.write_text(f"noise/a {tmp_path}/a.wav\nnoise/b {tmp_path}/b.wav\n")
    config = tiny_config(str(tmp_path / "exp"), speakers, noise_data=str(noise))
    config["dataset_args"]["aug_prob"] = 0.6
    with pytest.raises(AugmentListError, match=r"noise.scp: all 2 files of this noise list "
                                               r"are missing or empty"):
        run_training(config)
    assert not os.path.exists(tmp_path / "exp" / "models") or \
        os.listdir(tmp_path / "exp" / "models") == []


def test_a_partly_missing_rir_list_is_a_warning_with_the_count(speakers, tmp_path, caplog):
    rir = tmp_path / "rir.scp"
    present = os.path.join(os.path.dirname(speakers["raw_list"]), "wav", "spk0-utt0.wav")
    rir.write_text(f"r1 {present}\nr2 {tmp_path}/gone.wav\n")
    config = tiny_config(str(tmp_path / "exp"), speakers, reverb_data=str(rir))
    config["dataset_args"]["aug_prob"] = 0.6
    with caplog.at_level(logging.WARNING):
        plan_of(config)
    assert "rir.scp: 1 of the 2 files of this RIR list are missing or empty" in caplog.text


def wespeaker_lmdb(data_dir, name):
    """``data_dir/name/lmdb`` as WeSpeaker's tools/make_lmdb.py leaves it, beside the
    ``wav.scp`` it was made from."""
    lmdb = data_dir / name / "lmdb"
    lmdb.mkdir(parents=True)
    (lmdb / "data.mdb").write_bytes(b"\0" * 64)
    (lmdb / "lock.mdb").write_bytes(b"\0" * 64)
    (data_dir / name / "wav.scp").write_text(f"noise/a {data_dir}/a.wav\n")
    return lmdb


@pytest.mark.parametrize("key, name, what", [("noise_data", "musan", "noise"),
                                             ("reverb_data", "rirs", "RIR")])
def test_training_refuses_a_wespeaker_lmdb_set_naming_the_key_and_its_wav_scp(
        speakers, tmp_path, key, name, what):
    lmdb = wespeaker_lmdb(tmp_path / "data", name)
    config = tiny_config(str(tmp_path / "exp"), speakers, **{key: str(lmdb)})
    config["dataset_args"]["aug_prob"] = 0.6
    with pytest.raises(AugmentListError) as raised:
        plan_of(config)
    assert str(raised.value) == (
        f"{key} {lmdb} (--{key} or the config key): a WeSpeaker LMDB {what} set (it holds "
        f"data.mdb), a format wespeaker_py does not read; give the wav.scp it was made "
        f"from: {tmp_path}/data/{name}/wav.scp")


def test_a_folder_given_as_a_noise_list_names_its_wav_scp(speakers, tmp_path):
    musan = wespeaker_lmdb(tmp_path / "data", "musan").parent
    config = tiny_config(str(tmp_path / "exp"), speakers, noise_data=str(musan))
    config["dataset_args"]["aug_prob"] = 0.6
    with pytest.raises(AugmentListError, match=re.escape(
            f"noise_data {musan} (--noise_data or the config key): a folder, not a noise "
            f"list; give its wav.scp: {musan}/wav.scp")):
        plan_of(config)


def test_a_saved_wespeaker_config_naming_an_lmdb_fails_bin_train_in_one_line(
        speakers, tmp_path, capsys):
    # WeSpeaker's exp/X/config.yaml keeps the LMDB paths its run.sh trained with
    from wespeaker_py.bin.train import main as train_main
    lmdb = wespeaker_lmdb(tmp_path / "data", "rirs")
    config = tiny_config(str(tmp_path / "exp"), speakers, reverb_data=str(lmdb))
    config["dataset_args"]["aug_prob"] = 0.6
    argv = ["--config", write_config(str(tmp_path / "config.yaml"), config), "--gpus", "[]"]
    assert run_main(train_main, argv, prog="train.py") == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"train.py: error: reverb_data {lmdb} (--reverb_data or the config key): a WeSpeaker "
        f"LMDB RIR set (it holds data.mdb), a format wespeaker_py does not read; give the "
        f"wav.scp it was made from: {tmp_path}/data/rirs/wav.scp (run with --debug for the "
        f"traceback)")


# -- 8: an output folder that cannot be written, found before any compute -------------------

def test_unwritable_output_fails_before_the_model_loads(folder, tmp_path, capsys,
                                                        no_model_load):
    # root may write into a read-only folder; a folder under a regular file fails for anyone
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder\n")
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text(f"a {mini_speech(1)[0]}\n")
    status, _, err = run_cli(capsys, "embed", "--model", folder, "--wav_scp", wav_scp,
                             "--output", blocker / "emb" / "xvector.ark")
    assert status == 2 and f"cannot write {blocker}/emb/xvector.ark" in err


def test_extract_to_an_unwritable_folder_fails_before_the_model_loads(experiment, tmp_path,
                                                                      capsys, monkeypatch):
    import wespeaker_py.inference.extraction as extraction
    monkeypatch.setattr(extraction, "load_embedder", lambda *a, **k: pytest.fail("loaded"))
    blocker = tmp_path / "blocker"
    blocker.write_text("x\n")
    data_list = raw_list(tmp_path / "raw.list", [("a", mini_speech(1)[0])])
    argv = extract_argv(experiment, data_list, blocker / "xvector.ark")
    assert run_main(extract_main, argv, prog="x") == 2
    assert f"cannot write {blocker}/xvector.ark" in capsys.readouterr().err


# -- 9: a key given twice, and empty inputs, found before any compute -----------------------

def test_duplicate_wav_scp_key_names_both_lines_before_the_model_loads(folder, tmp_path,
                                                                       capsys, no_model_load):
    speech = mini_speech(2)
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text(f"a {speech[0]}\nb {speech[1]}\na {speech[1]}\n")
    for command in (["embed", "--output", tmp_path / "x.ark"],
                    ["diarize", "--output", tmp_path / "x.rttm"]):
        status, _, err = run_cli(capsys, *command, "--model", folder, "--wav_scp", wav_scp)
        assert status == 2 and f"{wav_scp}:3: duplicate key 'a', already on line 1" in err


def test_duplicate_key_with_two_jobs_fails_before_any_job(experiment, tmp_path, capsys):
    speech = mini_speech(2)
    data_list = raw_list(tmp_path / "raw.list", [("a", speech[0]), ("b", speech[1]),
                                                 ("a", speech[1])])
    ark = tmp_path / "emb" / "xvector.ark"
    argv = extract_argv(experiment, data_list, ark, "--nj", "2")
    assert run_main(extract_main, argv, prog="x") == 2
    assert f"{data_list}:3: duplicate key 'a', already on line 1" in capsys.readouterr().err
    assert not (tmp_path / "emb" / ".extract_jobs.xvector.ark" / "part_000.ark").exists()


def test_empty_inputs_fail_before_the_model_loads(folder, tmp_path, capsys, no_model_load):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    status, _, err = run_cli(capsys, "embed", "--model", folder, empty)
    assert status == 2 and f"{empty} is empty" in err
    empty_scp = tmp_path / "wav.scp"
    empty_scp.write_bytes(b"")
    status, _, err = run_cli(capsys, "embed", "--model", folder, "--wav_scp", empty_scp,
                             "--output", tmp_path / "x.ark")
    assert status == 2 and f"wav.scp {empty_scp} is empty" in err


# -- 12: threads -------------------------------------------------------------------------------

def test_every_command_takes_num_threads(capsys):
    import importlib
    helps = {}
    for name in sorted(n[:-3] for n in os.listdir(BIN_DIR) if n.endswith(".py")
                       and not n.startswith("_")):
        with pytest.raises(SystemExit):
            importlib.import_module(f"wespeaker_py.bin.{name}").main(["--help"])
        helps[name] = capsys.readouterr().out
    for command in ("embed", "similarity", "verify", "enroll", "identify", "calibrate",
                    "diarize", "export", "info"):
        with pytest.raises(SystemExit):
            cli_main([command, "--help"])
        helps[command] = capsys.readouterr().out
    assert [name for name, text in helps.items() if "--num_threads" not in text] == []


def test_num_threads_and_omp_num_threads_set_the_threads_of_the_command(monkeypatch):
    seen = {}

    def main(argv):
        seen["torch"], seen["env"] = torch.get_num_threads(), os.environ["OMP_NUM_THREADS"]
        seen["job"] = threads.threads_per_job(4)

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert run_main(main, ["--num_threads", "3"]) == 0
    assert seen == {"torch": 3, "env": "3", "job": 3}
    assert torch.get_num_threads() == before and "OMP_NUM_THREADS" not in os.environ
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert run_main(main, []) == 0 and seen == {"torch": 2, "env": "2", "job": 2}
    # unset: half the cores, at most 4, shared among the jobs
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert run_main(main, []) == 0 and seen == {"torch": 4, "env": "4", "job": 4}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert run_main(main, []) == 0 and seen == {"torch": 1, "env": "1", "job": 1}
    assert torch.get_num_threads() == before
