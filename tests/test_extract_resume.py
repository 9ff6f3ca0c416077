"""Extraction after a kill: resume, no debris, jobs that die with their parent, no empty output."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import kaldiio
import numpy as np
import pytest

from inference_helpers import make_experiment, make_raw_list_corpus
from wespeaker_py.bin.extract import main as extract_main
from wespeaker_py.config import load_model_config
from wespeaker_py.dataset.lists import TableEntry
from wespeaker_py.dataset.shards import make_shards
from wespeaker_py.inference import extract_embeddings
from wespeaker_py.inference.extraction import ExtractionOptions, extract_part
from wespeaker_py.inference.workdir import ExtractionWork, work_dir_for
from wespeaker_py.io.ark import EmbeddingWriter
from wespeaker_py.cli.common import run_main
from wespeaker_py.errors import RunFailedError
from wespeaker_py.utils.tables import DataFormatError

LENGTHS = [16000, 12000, 9600, 20000, 12800, 8000]
# reading in this process: no reader workers to start
IN_PROCESS = ExtractionOptions(num_workers=0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("resume"))
    config_path, checkpoint, _ = make_experiment(os.path.join(root, "exp"))
    data_list, wavs = make_raw_list_corpus(os.path.join(root, "corpus"), LENGTHS)
    return {"config_path": config_path, "config": load_model_config(config_path),
            "checkpoint": checkpoint, "list": data_list, "wavs": wavs, "root": root}


def _extract(setup, ark, data_list=None, data_type="raw"):
    return extract_embeddings(setup["config"], setup["checkpoint"], data_type,
                              data_list or setup["list"], ark, options=IN_PROCESS, device="cpu")


def _read(ark):
    return {key: np.asarray(vector) for key, vector in kaldiio.load_scp(ark[:-4] + ".scp").items()}


def test_an_interrupted_extraction_resumes_to_the_same_embeddings(setup, tmp_path, monkeypatch):
    reference_ark = str(tmp_path / "ref" / "xvector.ark")
    _extract(setup, reference_ark)
    reference = _read(reference_ark)

    ark = str(tmp_path / "out" / "xvector.ark")
    real_write = EmbeddingWriter.write
    written = []

    def killed_after_three(self, key, vector):
        if len(written) == 3:
            raise KeyboardInterrupt  # what Ctrl-C does in the middle of the run
        real_write(self, key, vector)
        written.append(key)

    monkeypatch.setattr(EmbeddingWriter, "write", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        _extract(setup, ark)
    monkeypatch.undo()
    work = work_dir_for(ark)
    assert os.listdir(tmp_path / "out") == [os.path.basename(work)]
    # a kill -9 can also leave half an entry and half an index line behind
    with open(os.path.join(work, "part_000.ark"), "ab") as part:
        part.write(b"spk0-utt99 \0BFV \x04\x08\0\0")
    with open(os.path.join(work, "part_000.scp"), "a") as scp:
        scp.write("spk0-utt99 /nowhere")

    summary = _extract(setup, ark)
    assert summary.resumed == 3 and summary.extracted == len(LENGTHS)
    resumed = _read(ark)
    assert set(resumed) == set(reference)
    for key in reference:
        np.testing.assert_array_equal(resumed[key], reference[key])
    assert sorted(os.listdir(tmp_path / "out")) == ["xvector.ark", "xvector.scp"]


def _half_done_with_two_jobs(setup, ark, data_list=None, data_type="raw"):
    """The work folder of a two-job run whose first job finished and whose second never ran;
    returns the first job's keys."""
    with ExtractionWork(ark, data_list or setup["list"], data_type, setup["checkpoint"],
                        setup["config"], num_jobs=2, options=IN_PROCESS) as work:
        first = work.job_lists()[0]
        extract_part(setup["config"], setup["checkpoint"], data_type, first, work.part_ark(0),
                     options=IN_PROCESS, device="cpu")
        return work.done_keys(0)


def test_another_number_of_jobs_keeps_the_finished_embeddings(setup, tmp_path):
    reference_ark = str(tmp_path / "ref" / "xvector.ark")
    _extract(setup, reference_ark)
    reference = _read(reference_ark)
    ark = str(tmp_path / "out" / "xvector.ark")
    finished = _half_done_with_two_jobs(setup, ark)
    assert 0 < len(finished) < len(LENGTHS)
    work = work_dir_for(ark)
    # a run cut short after carrying the parts into carried_000, before removing them:
    # its parts are not merged a second time
    aside = str(tmp_path / "aside")
    shutil.copytree(work, aside)
    with ExtractionWork(ark, setup["list"], "raw", setup["checkpoint"], setup["config"],
                        num_jobs=3, options=IN_PROCESS) as carrying:
        assert sorted(carrying.carried_keys()) == sorted(finished)
    assert sorted(os.listdir(work)) == ["carried_000.ark", "carried_000.scp", "manifest.json"]
    for name in os.listdir(aside):
        if name.startswith("part_") or name == "manifest.json":
            shutil.copy(os.path.join(aside, name), os.path.join(work, name))

    summary = _extract(setup, ark)   # one job now
    assert summary.resumed == len(finished) and summary.extracted == len(LENGTHS)
    resumed = _read(ark)
    assert set(resumed) == set(reference)
    for key in reference:
        np.testing.assert_array_equal(resumed[key], reference[key])
    assert sorted(os.listdir(tmp_path / "out")) == ["xvector.ark", "xvector.scp"]


def test_a_run_resumed_with_another_number_of_jobs_writes_the_list_order(setup, tmp_path):
    ark = str(tmp_path / "xvector.ark")
    _half_done_with_two_jobs(setup, ark)
    _extract(setup, ark)   # one job: its part holds the second half, the carried ark the first
    in_list_order = [json.loads(line)["key"] for line in open(setup["list"])]
    assert [line.split()[0] for line in open(ark[:-4] + ".scp")] == in_list_order
    assert [key for key, _ in kaldiio.load_ark(ark)] == in_list_order


def test_a_shard_list_resumed_with_another_number_of_jobs_writes_the_keys_sorted(
        setup, tmp_path):
    # two shards of three: the first job's shard is carried into the one-job run, whose
    # merge took the parts as they came (the first shard's keys last), not sorted
    entries = [TableEntry(key, key.split("-")[0], wav) for key, wav in setup["wavs"].items()]
    shard_list = str(tmp_path / "shard.list")
    make_shards(entries, str(tmp_path / "shards"), shard_list, num_utts_per_shard=3)
    fresh_ark = str(tmp_path / "fresh" / "xvector.ark")
    _extract(setup, fresh_ark, shard_list, "shard")
    ark = str(tmp_path / "resumed" / "xvector.ark")
    assert 0 < len(_half_done_with_two_jobs(setup, ark, shard_list, "shard")) < len(entries)
    _extract(setup, ark, shard_list, "shard")
    in_key_order = sorted(setup["wavs"])
    for written in (fresh_ark, ark):
        assert [line.split()[0] for line in open(written[:-4] + ".scp")] == in_key_order
        assert [key for key, _ in kaldiio.load_ark(written)] == in_key_order
    fresh, resumed = _read(fresh_ark), _read(ark)
    for key in in_key_order:
        np.testing.assert_array_equal(resumed[key], fresh[key])


def test_a_run_cut_short_while_splitting_the_list_resumes_with_every_split(setup, tmp_path,
                                                                           monkeypatch):
    from wespeaker_py.inference import workdir
    from wespeaker_py.inference.workdir import ExtractionWork
    from wespeaker_py.utils.atomic_files import atomic_open

    def work():
        return ExtractionWork(str(tmp_path / "xvector.ark"), setup["list"], "raw",
                              setup["checkpoint"], setup["config"], num_jobs=3)

    def disk_full_after_the_first_split(path, *args, **kwargs):
        if os.path.basename(path).startswith("split_") and not path.endswith("000.list"):
            raise OSError(28, "No space left on device")
        return atomic_open(path, *args, **kwargs)

    monkeypatch.setattr(workdir, "atomic_open", disk_full_after_the_first_split)
    with pytest.raises(OSError):
        work().job_lists()
    monkeypatch.undo()
    resumed = work()
    assert resumed.resumed
    lists = resumed.job_lists()
    assert len(lists) == 3
    keys = [json.loads(line)["key"] for path in lists for line in open(path) if line.strip()]
    assert sorted(keys) == sorted(json.loads(line)["key"] for line in open(setup["list"]))


def test_work_of_another_list_is_not_resumed(setup, tmp_path):
    ark = str(tmp_path / "xvector.ark")
    stale = work_dir_for(ark)
    os.makedirs(stale)
    with open(os.path.join(stale, "manifest.json"), "w") as handle:
        json.dump({"data_list": "/other.list"}, handle)
    with open(os.path.join(stale, "part_000.scp"), "w") as handle:
        handle.write("ghost /x.ark:5\n")
    _extract(setup, ark)
    assert set(_read(ark)) == set(setup["wavs"])
    assert sorted(os.listdir(tmp_path)) == ["xvector.ark", "xvector.scp"]


# a run that holds the work of argv[1]; "fork": it forks a sleeping child, prints its pid and
# ends like a killed run (nothing released); "hold": it prints "locked" and sleeps
_HOLDER = """
import os, sys, time
from wespeaker_py.config import load_model_config
from wespeaker_py.inference.workdir import ExtractionWork
ark, data_list, checkpoint, config, mode = sys.argv[1:]
work = ExtractionWork(ark, data_list, "raw", checkpoint, load_model_config(config), 1)
if mode == "fork":
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    os._exit(0)
print("locked", flush=True)
time.sleep(60)
"""


def _holder(setup, ark, mode):
    return subprocess.Popen([sys.executable, "-c", _HOLDER, ark, setup["list"],
                             setup["checkpoint"], setup["config_path"], mode],
                            stdout=subprocess.PIPE, text=True)


def _work(setup, ark):
    return ExtractionWork(ark, setup["list"], "raw", setup["checkpoint"], setup["config"], 1)


def test_a_second_run_into_the_same_output_stops_at_once(setup, tmp_path):
    ark = str(tmp_path / "xvector.ark")
    holder = _holder(setup, ark, "hold")   # the first run, as another process
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFailedError, match=r"another extraction into .*xvector\.ark "
                                                 r"is running"):
            _extract(setup, ark)
        assert not os.path.exists(ark)
        assert os.listdir(work_dir_for(ark)) == ["manifest.json"]   # the holder's, untouched
    finally:
        holder.kill()
        holder.wait()
    _extract(setup, ark)   # the lock went with its holder
    assert set(_read(ark)) == set(setup["wavs"])
    assert sorted(os.listdir(tmp_path)) == ["xvector.ark", "xvector.scp"]


def test_a_child_forked_by_a_killed_run_does_not_keep_its_lock(setup, tmp_path):
    ark = str(tmp_path / "xvector.ark")
    holder = _holder(setup, ark, "fork")   # a DataLoader worker outliving its killed run
    child = int(holder.stdout.readline())
    try:
        assert holder.wait(timeout=60) == 0 and _alive(child)
        with _work(setup, ark):
            # the lock is still this process's alone: a second taker in it is refused
            with pytest.raises(RunFailedError, match="another extraction into"):
                _work(setup, ark)
        assert _alive(child)
    finally:
        os.kill(child, signal.SIGKILL)
    _extract(setup, ark)
    assert sorted(os.listdir(tmp_path)) == ["xvector.ark", "xvector.scp"]


def test_work_that_fails_while_it_is_set_up_lets_go_of_its_lock(setup, tmp_path, monkeypatch):
    ark = str(tmp_path / "xvector.ark")

    def full_disk(*_):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ExtractionWork, "_prepare", full_disk)
    with pytest.raises(OSError, match="No space left"):
        ExtractionWork(ark, setup["list"], "raw", setup["checkpoint"], setup["config"], 1)
    monkeypatch.undo()
    assert not os.path.exists(work_dir_for(ark) + ".lock")
    _extract(setup, ark)   # not "another extraction is running"
    assert set(_read(ark)) == set(setup["wavs"])


def test_reader_workers_are_quiet_about_a_run_stopped_while_taking_their_data(monkeypatch):
    from wespeaker_py.inference import extraction
    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda exc_type, *_: seen.append(exc_type))
    # called in this process, not in a worker: it must not tie this one to its parent
    monkeypatch.setattr(extraction, "tie_worker_to", lambda pid: None)
    extraction.ReaderWorker()(0)
    # what multiprocessing's resource sharer passes on when the taking process is killed
    for error in (ConnectionResetError, BrokenPipeError, EOFError, ValueError):
        sys.excepthook(error, error(), None)
    assert seen == [ValueError]


def _job_interrupted_alone(results) -> None:
    """A spawned job whose extraction gets a SIGINT meant for it alone."""
    from wespeaker_py.inference import jobs

    def interrupted(**_):
        raise KeyboardInterrupt
    jobs.extract_part = interrupted
    jobs._run_job(0, "cpu", 1, 20, os.getppid(), {}, results)


def test_a_job_interrupted_alone_fails_the_run_instead_of_hanging_it():
    import multiprocessing
    from wespeaker_py.inference.jobs import _collect
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_job_interrupted_alone, args=(results,))
    process.start()
    process.join(60)
    assert process.exitcode == 130
    with pytest.raises(RunFailedError, match=r"job 0 \(job.list\) failed: the process ended "
                                             r"with exit code 130"):
        _collect([process], results, ["job.list"])


def test_empty_list_and_all_skipped_write_nothing(setup, tmp_path):
    empty = tmp_path / "empty.list"
    empty.write_text("\n")
    ark = str(tmp_path / "out" / "xvector.ark")
    with pytest.raises(DataFormatError, match="empty.list: the data list is empty"):
        _extract(setup, ark, str(empty))
    gone = tmp_path / "gone.list"
    gone.write_text("".join(json.dumps({"key": f"g{i}", "wav": f"/nowhere/{i}.wav"}) + "\n"
                            for i in range(2)))
    with pytest.raises(RunFailedError, match=r"none of the 2 files of .*gone.list can be read "
                                             r"\(missing or unreadable; the first: "
                                             r"/nowhere/0.wav, /nowhere/1.wav\)"):
        _extract(setup, ark, str(gone))
    assert not (tmp_path / "out").exists()


def _cli(setup, data_list, ark, *extra):
    return [sys.executable, "-m", "wespeaker_py.bin.extract", "--config", setup["config_path"],
            "--model_path", setup["checkpoint"], "--data_type", "raw", "--data_list",
            data_list, "--embed_ark", ark, "--num_workers", "0", "--gpus", "[]", *extra]


def test_cli_reports_an_empty_list_in_one_line_with_exit_code_2(setup, tmp_path, capsys):
    empty = tmp_path / "empty.list"
    empty.write_text("")
    argv = _cli(setup, str(empty), str(tmp_path / "x.ark"))[3:]
    assert run_main(extract_main, argv, prog="extract.py") == 2
    assert capsys.readouterr().err == (f"extract.py: error: {empty}: the data list is empty "
                                       "(run with --debug for the traceback)\n")


def _children(pid):
    """Live (non-zombie) processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_to_the_parent_of_two_jobs_ends_the_jobs(setup, tmp_path):
    ark = str(tmp_path / "out" / "xvector.ark")
    parent = subprocess.Popen(_cli(setup, setup["list"], ark, "--nj", "2"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        jobs = []
        while len(jobs) < 2 and time.monotonic() < deadline and parent.poll() is None:
            # the spawn start method also starts a resource tracker: count job processes
            jobs = [pid for pid in _children(parent.pid)
                    if b"spawn_main" in open(f"/proc/{pid}/cmdline", "rb").read()]
            time.sleep(0.05)
        assert len(jobs) == 2, parent.stderr.read().decode()
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in jobs) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in jobs)
        assert not os.path.exists(ark)
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.wait()


def test_a_file_system_without_locks_is_named_not_taken_for_another_run(tmp_path, monkeypatch):
    import errno
    import fcntl
    from wespeaker_py.utils.locks import hold_lock
    from wespeaker_py.utils.paths import OutputNotWritableError

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "lockf", no_locks)
    lock_path = str(tmp_path / "work.lock")
    with pytest.raises(OutputNotWritableError, match="cannot lock .*work.lock \\(No locks "
                                                     "available\\): its file system may not"):
        hold_lock(lock_path)


def test_a_job_killed_by_sigkill_is_reported_as_a_likely_out_of_memory_kill():
    import multiprocessing
    from wespeaker_py.inference.jobs import _collect
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=time.sleep, args=(600,))
    process.start()
    os.kill(process.pid, signal.SIGKILL)
    process.join(60)
    with pytest.raises(RunFailedError, match=r"job 0 \(job.list\) failed: the process was "
                                             r"killed by SIGKILL \(out of memory\?"):
        _collect([process], results, ["job.list"])


def test_a_full_disk_at_the_merge_says_the_parts_stay_and_how_much_room_it_needs(
        setup, tmp_path, monkeypatch):
    from wespeaker_py.inference import workdir
    from wespeaker_py.utils.atomic_files import DiskFullError

    def full_disk(parts, out, order):
        raise DiskFullError(out, OSError(28, "No space left on device"))

    monkeypatch.setattr(workdir, "merge_embedding_arks", full_disk)
    ark = str(tmp_path / "out" / "xvector.ark")
    with pytest.raises(RunFailedError, match=r"no space left on device while writing .*: the "
                                             r"6 finished embeddings stay in .*extract_jobs.* "
                                             r"the merge needs as much free space again"):
        _extract(setup, ark)
    assert os.path.isdir(work_dir_for(ark))


def test_a_work_folder_removed_under_the_run_is_named_as_the_cause(setup, tmp_path,
                                                                   monkeypatch):
    ark = str(tmp_path / "emb" / "xvector.ark")
    finish = ExtractionWork.finish

    def removed_first(self, *args, **kwargs):   # a clean-up script, while the run embedded
        shutil.rmtree(self.path)
        return finish(self, *args, **kwargs)

    monkeypatch.setattr(ExtractionWork, "finish", removed_first)
    with pytest.raises(RunFailedError) as failed:
        _extract(setup, ark)
    assert str(failed.value) == (
        f"the work folder {work_dir_for(ark)} was removed while this run wrote into it: the "
        f"{len(LENGTHS)} embeddings made are lost; run the same command again")
    monkeypatch.undo()
    _extract(setup, ark)   # the rerun makes them again
    assert len(_read(ark)) == len(LENGTHS)
