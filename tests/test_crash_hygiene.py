"""Outputs after a crash or a full disk: stale temporary files go, errors name the path."""
import os
import subprocess
import sys

import pytest
import torch

from wespeaker_py.utils import atomic_files
from wespeaker_py.utils.atomic_files import (DiskFullError, atomic_open, atomic_path,
                                             remove_stale_temp_files, save_torch)


def _killed_writer(target: str) -> None:
    """Start an atomic write of ``target`` in a child process and kill -9 it midway."""
    code = ("import os, signal, torch\n"
            "from wespeaker_py.utils.atomic_files import atomic_path\n"
            f"with atomic_path({target!r}) as tmp:\n"
            "    torch.save({'w': torch.zeros(10)}, tmp)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    result = subprocess.run([sys.executable, "-c", code], check=False)
    assert result.returncode == -9


def test_a_later_write_removes_the_debris_of_a_killed_writer(tmp_path):
    target = str(tmp_path / "model_3.pt")
    _killed_writer(target)
    debris = [name for name in os.listdir(tmp_path) if name.startswith(".tmp_model_3.pt.")]
    assert len(debris) == 1 and not os.path.exists(target)
    save_torch({"epoch": 4}, str(tmp_path / "model_4.pt"))
    assert sorted(os.listdir(tmp_path)) == ["model_4.pt"]


def test_before_publish_sees_the_complete_file_before_it_appears(tmp_path):
    target = str(tmp_path / "model_1.pt")
    seen = []

    def check():
        (temporary,) = [name for name in os.listdir(tmp_path) if name.startswith(".tmp_")]
        seen.append((torch.load(os.path.join(tmp_path, temporary))["epoch"],
                     os.path.exists(target)))

    save_torch({"epoch": 1}, target, before_publish=check)
    assert seen == [(1, False)] and torch.load(target)["epoch"] == 1

    def refuse():
        raise RuntimeError("the ranks disagree")

    # a hook that fails leaves the earlier file as it was, and no temporary one
    with pytest.raises(RuntimeError, match="the ranks disagree"):
        save_torch({"epoch": 2}, target, before_publish=refuse)
    assert os.listdir(tmp_path) == ["model_1.pt"] and torch.load(target)["epoch"] == 1


def test_temporary_files_of_live_writers_are_kept(tmp_path):
    target = str(tmp_path / "scores.txt")
    with atomic_open(target) as handle:
        handle.write("x")
        ours = [name for name in os.listdir(tmp_path) if name.startswith(".tmp_")]
        assert ours and remove_stale_temp_files(str(tmp_path)) == []
    assert os.listdir(tmp_path) == ["scores.txt"]


def test_rename_happens_after_fsync(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic_files.os, "fsync",
                        lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(atomic_files.os, "replace",
                        lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    with atomic_path(str(tmp_path / "x.npy")) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(b"data")
    assert events[:2] == ["fsync", "replace"]


def test_full_disk_names_the_checkpoint(tmp_path, monkeypatch):
    """/dev/full answers every write with ENOSPC, as a full file system does."""
    real_open = open

    def open_on_full_disk(path, mode="r", *args, **kwargs):
        if "w" in mode:
            return real_open("/dev/full", mode, *args, **kwargs)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(atomic_files, "open", open_on_full_disk, raising=False)
    target = str(tmp_path / "model_1.pt")
    with pytest.raises(DiskFullError) as info:
        save_torch({"w": torch.randn(50000)}, target)
    message = str(info.value)
    assert "no space left on device" in message and target in message
    assert "unexpected pos" not in message
    assert os.listdir(tmp_path) == []


def test_full_disk_through_atomic_open(tmp_path, monkeypatch):
    target = str(tmp_path / "trials.score")
    real_open = open
    monkeypatch.setattr(atomic_files, "open",
                        lambda path, mode="r", **kw: real_open("/dev/full", mode, **kw),
                        raising=False)
    with pytest.raises(DiskFullError, match="no space left on device while writing .*"
                                            "trials.score"):
        with atomic_open(target, "w") as handle:
            handle.write("e t 0.5\n" * 10)
    assert os.listdir(tmp_path) == []
