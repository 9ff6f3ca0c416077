"""Training survives kill -9 at random points: resume from the newest checkpoint, end exact.

The training processes are forked from the test process (already holding torch)
so that each start costs milliseconds, not an interpreter start-up.
"""
import glob
import multiprocessing
import os
import random
import signal
import threading
import time

import torch
from tqdm import tqdm

from train_helpers import make_speaker_corpus, tiny_config, write_config
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from wespeaker_py.train.checkpoint import epoch_from_name
from train_helpers import run_training
from wespeaker_py.utils.atomic_files import temp_name_for

NUM_EPOCHS = 10


def _train_in_child(argv):
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    # tqdm's default lock is a semaphore shared by every process forked from this
    # one; a sibling killed while holding it would leave it locked for good
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(1)
    from wespeaker_py.bin import train as train_cli
    from wespeaker_py.utils.logging_utils import setup_logging
    setup_logging()
    train_cli.main(argv)


def _checkpoints(model_dir):
    paths = glob.glob(os.path.join(model_dir, "model_*.pt"))
    return sorted(paths, key=epoch_from_name)


def _start(config_path, exp_dir, corpus, model_dir):
    argv = ["--config", config_path, "--exp_dir", exp_dir, "--data_type", "raw",
            "--train_data", corpus["raw_list"], "--train_label", corpus["utt2spk"]]
    existing = _checkpoints(model_dir)
    if existing:
        argv += ["--checkpoint", existing[-1]]
    process = multiprocessing.get_context("fork").Process(target=_train_in_child, args=(argv,))
    process.start()
    return process


def _kill_after(process, model_dir, target_epoch, delay):
    """SIGKILL once model_<target_epoch>.pt exists (or the process ended) plus ``delay`` s."""
    target = os.path.join(model_dir, f"model_{target_epoch}.pt")
    deadline = time.monotonic() + 60
    while process.is_alive() and not os.path.exists(target) and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(delay)
    if process.is_alive():
        os.kill(process.pid, signal.SIGKILL)
    process.join()
    return process.exitcode


def test_random_kills_then_resume_equal_an_uninterrupted_run(tmp_path):
    corpus = make_speaker_corpus(str(tmp_path / "data"), num_spks=4, utts_per_spk=4,
                                 seconds=1.0)
    settings = dict(num_epochs=NUM_EPOCHS, num_avg=2, save_epoch_interval=1)
    reference_dir = str(tmp_path / "reference")
    run_training(tiny_config(reference_dir, corpus, **settings))

    config = tiny_config("unused", corpus, **settings)
    for key in ("exp_dir", "train_data", "train_label", "data_type"):
        config.pop(key)
    config_path = write_config(str(tmp_path / "tiny.yaml"), config)
    exp_dir = str(tmp_path / "killed")
    model_dir = os.path.join(exp_dir, "models")
    rng = random.Random(7)
    # each kill waits for a checkpoint of a later epoch, then a random delay:
    # some land inside a checkpoint write, some mid-epoch, one after the last save
    targets = sorted(rng.sample(range(1, NUM_EPOCHS), 5)) + [NUM_EPOCHS]
    kills = 0
    for target in targets:
        process = _start(config_path, exp_dir, corpus, model_dir)
        code = _kill_after(process, model_dir, target, rng.uniform(0.0, 0.05))
        kills += code == -signal.SIGKILL
        assert code in (0, -signal.SIGKILL), f"training exited with {code}"
        for path in _checkpoints(model_dir):
            torch.load(path, map_location="cpu", weights_only=False)  # every one is whole
    assert kills >= 5
    # what a kill inside a checkpoint write leaves (the random kills may not hit one)
    debris = temp_name_for(os.path.join(model_dir, "model_3.pt")).replace(
        f"-{os.getpid()}.", f"-{process.pid}.")
    open(debris + ".pt", "wb").close()
    process = _start(config_path, exp_dir, corpus, model_dir)
    process.join(120)
    assert process.exitcode == 0

    debris = [path for path in glob.glob(os.path.join(exp_dir, "**", ".*"), recursive=True)]
    assert debris == []
    final = os.path.join(model_dir, "final_model.pt")
    assert os.readlink(final) == f"model_{NUM_EPOCHS}.pt"
    expected = torch.load(os.path.join(reference_dir, "models", f"model_{NUM_EPOCHS}.pt"),
                          weights_only=False)
    got = torch.load(final, weights_only=False)
    assert expected["model"].keys() == got["model"].keys()
    for key, value in expected["model"].items():
        assert torch.equal(value, got["model"][key]), key
    for index, state in expected["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, got["optimizer"]["state"][index][name])
