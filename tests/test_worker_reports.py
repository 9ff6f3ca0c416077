"""Dataloader workers' epoch counts left as files: taken once, cleared, never blocking."""
import gc
import os
import shutil
import signal
import tempfile

import pytest
from torch.utils.data import DataLoader

from dataset_helpers import random_int16, training_args, write_audio, write_raw_list_file
from wespeaker_py.dataset import Dataset, collate_train
from wespeaker_py.dataset.worker_reports import WorkerReports


@pytest.fixture
def private_tmp(monkeypatch, use_temp_folder):
    """This test's own temporary directory (forked children inherit it; TMPDIR for any
    other), so that a concurrent run, which sweeps the folders of killed processes from
    the machine's temporary directory, cannot touch this test's folders. Made directly in
    the machine's one, not below pytest's deeper tmp_path: DataLoader workers put sockets
    there, whose paths may not exceed 107 bytes."""
    folder = tempfile.mkdtemp(prefix="wsp-reports-")
    use_temp_folder(folder)
    monkeypatch.setenv("TMPDIR", folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_reports_are_taken_once_per_epoch_and_cleared(private_tmp):
    reports = WorkerReports()
    reports.put(3, 0, 2, {"samples": 5})
    reports.put(3, 1, 2, {"samples": 7})
    reports.put(4, 0, 2, {"samples": 1})
    assert reports.take(3) == ({0: {"samples": 5}, 1: {"samples": 7}}, 2)
    assert reports.take(3) == ({}, 0)
    reports.clear()
    assert reports.take(4) == ({}, 0)


def test_a_temporary_directory_with_wildcard_characters_is_taken_as_named(
        tmp_path, monkeypatch):
    odd = tmp_path / "job[12]*"
    odd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(odd))
    reports = WorkerReports()
    assert reports.folder.startswith(str(odd))
    reports.put(1, 0, 1, {"samples": 2})
    assert reports.take(1) == ({0: {"samples": 2}}, 1)


def test_no_folder_to_be_had_is_said_and_costs_only_the_counts(tmp_path, monkeypatch, caplog):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_folder))
    reports = WorkerReports()
    assert reports.folder is None
    assert "dataloader workers cannot report their skip counts" in caplog.text
    reports.put(1, 0, 1, {"samples": 2})
    assert reports.take(1) == ({}, 0)


def test_the_folder_goes_with_its_owner_not_with_a_forked_copy(private_tmp):
    reports = WorkerReports()
    folder = reports.folder
    assert os.path.dirname(folder) == private_tmp
    # no garbage of earlier tests may be collected in the child: a finalizer there can wait
    # for a lock a thread of this process held at the fork (the child's copy of the
    # object goes by its reference count alone)
    gc.collect()
    pid = os.fork()
    if pid == 0:   # a worker's copy going away must leave the folder
        try:
            del reports
            os._exit(0 if os.path.isdir(folder) else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and os.path.isdir(folder)
    del reports
    gc.collect()
    assert not os.path.exists(folder)


def test_the_folder_of_a_killed_process_goes_with_the_next_one_made(private_tmp):
    pid = os.fork()
    if pid == 0:
        try:
            reports = WorkerReports()   # noqa: F841 -- alive until the kill
            os.kill(os.getpid(), signal.SIGKILL)   # no finalizer runs
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL
    left = [name for name in os.listdir(private_tmp)
            if name.startswith(".tmp_wespeaker_py_worker_counts.") and f"-{pid}." in name]
    assert len(left) == 1
    WorkerReports()
    assert not os.path.exists(os.path.join(private_tmp, left[0]))


def test_epochs_nobody_asks_about_do_not_pile_up(tmp_path, private_tmp):
    rows = [{"key": f"ok{i}", "wav": write_audio(str(tmp_path / f"ok{i}.wav"),
                                                 random_int16(40000, seed=i)), "spk": "s"}
            for i in range(4)]
    raw = write_raw_list_file(str(tmp_path / "raw.list"), rows)
    dataset = Dataset("raw", raw, training_args(sample_num_per_epoch=8), {"s": 0})
    assert os.path.dirname(dataset._reports.folder) == private_tmp
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_train)
    for epoch in (1, 2, 3):   # a loop that never calls epoch_summary
        dataset.set_epoch(epoch)
        assert sum(len(batch["keys"]) for batch in loader) == 8
        # only this epoch's reports wait: set_epoch removed the earlier ones
        waiting = sorted(os.listdir(dataset._reports.folder))
        assert waiting == [f"{epoch}_0.json", f"{epoch}_1.json"]
    assert dataset.epoch_summary().utterances == 4
    assert os.listdir(dataset._reports.folder) == []
