"""A worker or job asked to die with its parent does, at once, when the parent is killed;
without the request it would live on."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from wespeaker_py.errors import WespeakerError
from wespeaker_py.utils.processes import check_temp_folder_for_workers

# a parent that forks a sleeping child (tied to it as a loader worker when told to), prints the
# child's pid and ends at once
PARENT = """
import os, signal, sys, time
from wespeaker_py.utils.processes import tie_worker_to
parent = os.getpid()
child = os.fork()
if child == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)   # the test reads the parent's output to its end: not ours
    os.dup2(null, 2)
    if sys.argv[1] == "ask":
        tie_worker_to(parent)
    time.sleep(20)
    os._exit(0)
time.sleep(0.3)   # let the child make its request
print(child, flush=True)
os._exit(0)
"""


def _alive(pid):
    """Whether ``pid`` runs (a zombie, dead but not reaped by a container's init, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _child_alive_after_its_parent_ended(mode):
    out = subprocess.run([sys.executable, "-c", PARENT, mode], capture_output=True, text=True,
                         check=True).stdout
    child = int(out)
    try:
        deadline = time.monotonic() + 3.0
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        return _alive(child)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's prctl")
def test_a_child_that_asked_dies_with_its_parent_and_one_that_did_not_lives_on():
    assert not _child_alive_after_its_parent_ended("ask")
    assert _child_alive_after_its_parent_ended("no")


def test_the_loader_workers_ask_to_die_with_the_process_that_made_them(monkeypatch):
    from wespeaker_py.inference import extraction
    from wespeaker_py.train import interrupt
    asked = []
    for module in (extraction, interrupt):
        monkeypatch.setattr(module, "tie_worker_to", asked.append)
    reader = extraction.ReaderWorker()
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)   # the reader wraps it
    reader(0)
    trainer = interrupt.WorkerIgnoringStops(lambda worker_id: None)
    handlers = {sig: signal.getsignal(sig) for sig in interrupt.STOP_SIGNALS}
    try:
        trainer(0)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert asked == [os.getpid()] * 2


def test_a_worker_that_is_no_direct_child_is_left_to_torch(monkeypatch):
    # a forkserver's worker: its parent is the server, not the loader's process
    from wespeaker_py.utils import processes
    tied = []
    monkeypatch.setattr(processes, "die_with_parent", lambda pid, sig: tied.append(pid))
    processes.tie_worker_to(os.getppid() + 1)
    assert tied == []
    processes.tie_worker_to(os.getppid())
    assert tied == [os.getppid()]


def folder_of_length(base, length: int) -> str:
    """A new folder below ``base`` whose path is ``length`` bytes long."""
    name = "d" * (length - len(os.fsencode(str(base))) - 1)
    path = os.path.join(str(base), name)
    os.mkdir(path)
    assert len(os.fsencode(path)) == length
    return path


class Tensors(torch.utils.data.IterableDataset):
    """``count`` small tensors, streamed as the training and extraction datasets stream."""

    def __init__(self, count: int):
        self.count = count

    def __iter__(self):
        return (torch.ones(4) for _ in range(self.count))


def tensors_through_a_worker(count: int = 3) -> int:
    """How many tensors one DataLoader worker hands over of ``count`` made (those before the
    loop ended, or before it waited 10 s for the next)."""
    delivered = 0
    try:
        for _ in torch.utils.data.DataLoader(Tensors(count), batch_size=None, num_workers=1,
                                             timeout=10):
            delivered += 1
    except RuntimeError as error:
        assert "timed out" in str(error)
    return delivered


def test_a_temporary_folder_too_long_for_the_workers_socket_is_refused_at_the_limit(
        tmp_path, use_temp_folder, capfd):
    # the longest folder whose socket path fits: workers hand over every tensor
    longest = folder_of_length(tmp_path, 107 - len("/pymp-XXXXXXXX/listener-XXXXXXXX"))
    use_temp_folder(longest)
    check_temp_folder_for_workers(1)
    assert tensors_through_a_worker() == 3
    # one byte longer: refused up front, naming the folder and what to do, where the
    # tensors would be lost (a traceback on stderr; the loop ends or waits)
    too_long = folder_of_length(tmp_path, len(os.fsencode(longest)) + 1)
    use_temp_folder(too_long)
    try:
        check_temp_folder_for_workers(1)
    except WespeakerError as error:
        assert f"temporary folder {too_long} " in str(error) and "set TMPDIR" in str(error)
        assert tensors_through_a_worker() == 0
        assert "AF_UNIX path too long" in capfd.readouterr().err
    else:   # a Python that moves its socket out of too long a TMPDIR (3.14)
        assert sys.version_info >= (3, 13)
        assert tensors_through_a_worker() == 3
    check_temp_folder_for_workers(0)   # no workers, no socket
