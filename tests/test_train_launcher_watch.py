"""Ranks that outlive their torchrun (killed with ``kill -9``) stop as on SIGTERM."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from test_train_ddp import _rank_pid, _torchrun_training
from train_helpers import make_speaker_corpus, tiny_config, write_config
from wespeaker_py.errors import RunFailedError
from wespeaker_py.train.interrupt import (LAUNCHER_RUN_ID, StopRequest, launcher_pid,
                                          watch_launcher)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# how long the orphaned ranks may take to finish their batch, save and exit
EXIT_SECONDS = 60


def test_only_a_process_torchrun_started_has_a_launcher(monkeypatch):
    monkeypatch.delenv(LAUNCHER_RUN_ID, raising=False)
    assert launcher_pid() is None
    monkeypatch.setenv(LAUNCHER_RUN_ID, "run")
    assert launcher_pid() == os.getppid()


def test_a_parent_that_holds_the_run_id_itself_is_no_launcher(tmp_path):
    # a rank's script that starts a training: the variable is inherited, not given by torchrun
    ask = ("import os; from wespeaker_py.train.interrupt import launcher_pid; "
           "print(launcher_pid(), os.getppid())")
    env = dict(os.environ, **{LAUNCHER_RUN_ID: "run"})
    inherited = subprocess.run(["bash", "-c", f'{sys.executable} -c "{ask}"; true'], env=env,
                               capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert inherited.stdout.split()[0] == "None", inherited.stdout
    # given by the parent, whose own environment lacks it: the parent is the launcher
    given = subprocess.run([sys.executable, "-c", ask], env=env, capture_output=True,
                           text=True, check=True, cwd=REPO_ROOT)
    found, parent = given.stdout.split()
    assert found == parent == str(os.getpid())


def test_a_launcher_gone_before_training_ends_the_rank_with_a_message():
    with StopRequest() as stop:
        with pytest.raises(RunFailedError, match=r"torchrun \(pid 999999999\).*has ended"):
            watch_launcher(999999999, stop)
        assert stop.launcher is None


def test_no_watch_without_a_sigterm_handler():
    # outside the context SIGTERM is not caught: a watched launcher's end would kill the rank
    stop = StopRequest()
    watch_launcher(999999999, stop)   # would raise, the pid not being the parent's
    assert stop.launcher is None


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie nobody reaps counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_ranks_of_a_killed_torchrun_save_and_exit_and_the_rerun_finishes(tmp_path):
    corpus = make_speaker_corpus(str(tmp_path / "data"), num_spks=4, utts_per_spk=12)
    config = tiny_config("unused", corpus, num_epochs=3)
    config["dataloader_args"].update(batch_size=4, num_workers=1)   # 6 batches a rank
    for key in ("exp_dir", "train_data", "train_label", "data_type"):
        config.pop(key)
    setup = corpus, write_config(str(tmp_path / "tiny.yaml"), config)
    exp_dir = str(tmp_path / "exp")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    output = str(tmp_path / "torchrun.out")
    with open(output, "w") as out:
        job = subprocess.Popen(_torchrun_training(setup, exp_dir), cwd=REPO_ROOT, env=env,
                               stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    ranks = [_rank_pid(job.pid, rank) for rank in (0, 1)]
    log = os.path.join(exp_dir, "train.log")
    while not (os.path.exists(log) and "epoch 2 batch 2/" in open(log).read()):
        assert job.poll() is None, open(output).read()[-3000:]
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait()
    deadline = time.monotonic() + EXIT_SECONDS
    while not all(_gone(pid) for pid in ranks) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [pid for pid in ranks if not _gone(pid)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans, (f"ranks {orphans} still ran {EXIT_SECONDS} s after their torchrun was "
                         f"killed:\n{open(output).read()[-3000:]}")
    printed = open(output).read()
    # each rank: no torchrun passes SIGTERM on, the kernel sends it
    assert printed.count(f"got SIGTERM (from torchrun, pid {job.pid}, or as it ended)") == 2, \
        printed[-3000:]
    # mid-epoch as a rule; at the epoch's end when a busy machine let the ranks get there first
    where = re.search(r"stopped on a signal at (?:epoch 2 after its batch (\d+)|the end of "
                      r"epoch 2), its state saved in (\S+); run the same command"
                      r"(?: with --checkpoint (\S+))?", printed)
    assert where, printed[-3000:]
    models = os.path.join(exp_dir, "models")
    kept = {"interrupted.pt"} if where.group(1) else {"interrupted.pt", "model_2.pt"}
    assert os.path.dirname(where.group(2)) == models, where.group(0)
    assert os.path.basename(where.group(2)) in kept, where.group(0)
    assert os.path.isfile(where.group(2))

    # the lock went with the orphaned rank 0: the printed command runs and continues
    resume = ["--checkpoint", where.group(3)] if where.group(3) else []
    done = subprocess.run(_torchrun_training(setup, exp_dir, *resume), cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = (f"training epochs 2 to 3 (epoch 2 from its batch {int(where.group(1)) + 1})"
               if where.group(1) else "training epochs 3 to 3")
    assert resumed in open(log).read()
    saved = os.listdir(models)
    assert "model_3.pt" in saved and "interrupted.pt" not in saved, saved
