"""Dataloader workers log as the process that made them, however they were started.

A worker started by spawn or forkserver (Python 3.14's default on Linux) begins in a
fresh interpreter with no logging handlers; ``WorkerLogging`` (the loaders'
``worker_init_fn``) gives it the maker's level, format and log file. A fresh
interpreter stands in for such a worker here.
"""
import logging
import pickle
import subprocess
import sys

import pytest

from wespeaker_py.utils.logging_utils import WorkerLogging

FRESH_WORKER = """
import pickle, sys
from wespeaker_py.utils.logging_utils import get_logger
pickle.loads(bytes.fromhex(sys.argv[1]))(0)
get_logger("wespeaker_py.dataset.stats").warning("skipping u1 (not_audio)")
get_logger("wespeaker_py.dataset.dataset").info("an info line")
get_logger("wespeaker_py.dataset.dataset").debug("a debug line")
import logging
for name in ("", "wespeaker_py"):
    print(name or "root", *(type(h).__name__ for h in logging.getLogger(name).handlers))
"""


def run_fresh_worker(init: WorkerLogging, cwd=None) -> subprocess.CompletedProcess:
    """Run it in ``cwd``; its stdout names the classes of the handlers of the root logger
    (line ``root ...``) and of the package's (line ``wespeaker_py ...``)."""
    return subprocess.run([sys.executable, "-c", FRESH_WORKER, pickle.dumps(init).hex()],
                          capture_output=True, text=True, check=True, cwd=cwd)


def test_a_fresh_worker_writes_the_log_file_in_the_log_format(tmp_path, caplog):
    log_path = tmp_path / "exp" / "train.log"
    log_path.parent.mkdir()
    log_path.write_text("the main process's lines\n")
    with caplog.at_level(logging.INFO):
        init = WorkerLogging(str(log_path))
    stderr = run_fresh_worker(init).stderr
    lines = log_path.read_text().splitlines()
    assert lines[0] == "the main process's lines"          # appended, not rewritten
    assert lines[1].endswith("WARNING [wespeaker_py.dataset.stats] skipping u1 (not_audio)")
    assert lines[2].endswith("INFO [wespeaker_py.dataset.dataset] an info line")
    assert len(lines) == 3                                  # INFO and above
    assert "WARNING [wespeaker_py.dataset.stats] skipping u1" in stderr


def test_a_fresh_worker_of_another_rank_logs_warnings_to_stderr_only(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        init = WorkerLogging()
    done = run_fresh_worker(init, cwd=tmp_path)
    assert "WARNING [wespeaker_py.dataset.stats] skipping u1 (not_audio)" in done.stderr
    assert "an info line" not in done.stderr
    assert done.stdout.splitlines() == ["root StreamHandler", "wespeaker_py"]  # no file
    assert list(tmp_path.iterdir()) == []                 # nothing written where it ran


def test_a_forked_worker_keeps_what_it_inherited(tmp_path):
    """Handlers already there (a forked worker's, inherited): nothing is added."""
    root, package = logging.getLogger(), logging.getLogger("wespeaker_py")
    handler = logging.NullHandler()
    root.addHandler(handler)
    try:
        before = (list(root.handlers), list(package.handlers), root.level)
        WorkerLogging(str(tmp_path / "train.log"))(0)
        assert (list(root.handlers), list(package.handlers), root.level) == before
        assert not (tmp_path / "train.log").exists()
    finally:
        root.removeHandler(handler)


def test_the_training_loader_gives_workers_train_log_on_the_main_rank_only(tmp_path):
    import dataclasses

    from train_helpers import CPU_WORLD, make_speaker_corpus, plan_of, tiny_config
    from wespeaker_py.train import builder
    from wespeaker_py.train.interrupt import WorkerIgnoringStops
    corpus = make_speaker_corpus(str(tmp_path / "corpus"), num_spks=2, utts_per_spk=2)
    loader_args = {"batch_size": 2, "num_workers": 2, "pin_memory": False, "drop_last": True}
    config = tiny_config(str(tmp_path / "exp"), corpus, dataloader_args=loader_args)
    plan = plan_of(config)
    # the workers ignore stop signals (the training process decides), then set up logging
    init = builder.build_loader(plan, builder.build_dataset(plan)).worker_init_fn
    assert isinstance(init, WorkerIgnoringStops)
    assert isinstance(init.then, WorkerLogging) and init.then.log_path == plan.layout.log_path
    other_rank = dataclasses.replace(CPU_WORLD, rank=1, world_size=2)
    plan = plan_of(config, other_rank)
    init = builder.build_loader(plan, builder.build_dataset(plan)).worker_init_fn
    assert isinstance(init.then, WorkerLogging) and init.then.log_path is None


def test_the_training_loader_takes_the_start_method_and_timeout_of_the_config(tmp_path):
    from train_helpers import make_speaker_corpus, plan_of, tiny_config
    from wespeaker_py.train import builder
    corpus = make_speaker_corpus(str(tmp_path / "corpus"), num_spks=2, utts_per_spk=2)
    loader_args = {"batch_size": 2, "num_workers": 1, "pin_memory": False, "drop_last": True,
                   "multiprocessing_context": "spawn", "timeout": 120}
    plan = plan_of(tiny_config(str(tmp_path / "exp"), corpus, dataloader_args=loader_args))
    dataset = builder.build_dataset(plan)
    dataset.set_epoch(1)
    loader = builder.build_loader(plan, dataset)
    assert loader.multiprocessing_context.get_start_method() == "spawn"
    assert loader.timeout == 120
    batch = next(iter(loader))   # a spawned worker (no state of this process) reads it
    assert batch["wavs"].shape[0] == 2 and len(batch["keys"]) == 2


def test_the_training_loader_refuses_a_temporary_folder_too_long_for_its_workers(
        tmp_path, use_temp_folder):
    from train_helpers import make_speaker_corpus, plan_of, tiny_config
    from wespeaker_py.errors import WespeakerError
    from wespeaker_py.train import builder
    corpus = make_speaker_corpus(str(tmp_path / "corpus"), num_spks=2, utts_per_spk=2)
    loader_args = {"batch_size": 2, "num_workers": 1, "pin_memory": False, "drop_last": True}
    plan = plan_of(tiny_config(str(tmp_path / "exp"), corpus, dataloader_args=loader_args))
    dataset = builder.build_dataset(plan)
    deep = tmp_path / ("t" * 90)
    deep.mkdir()
    use_temp_folder(deep)
    with pytest.raises(WespeakerError, match=f"temporary folder {deep} .* set TMPDIR"):
        builder.build_loader(plan, dataset)


def _shm_warnings(caplog):
    return [record.getMessage() for record in caplog.records
            if record.levelname == "WARNING" and "/dev/shm has" in record.getMessage()]


def test_the_training_loader_warns_on_the_main_rank_when_dev_shm_is_small_for_its_batches(
        tmp_path, monkeypatch, caplog):
    """Training workers hand their batches over through /dev/shm too: 2 workers keeping 3
    batches each of 16 waveform chunks of 80 frames at 16 kHz (13040 float32 samples) take
    6 * 16 * 13040 * 4 bytes (5 MB); a smaller /dev/shm is said before the first batch."""
    import collections
    import dataclasses
    import shutil

    from train_helpers import CPU_WORLD, make_speaker_corpus, plan_of, tiny_config
    from wespeaker_py.train import builder
    corpus = make_speaker_corpus(str(tmp_path / "corpus"))   # 32 utterances
    loader_args = {"batch_size": 16, "num_workers": 2, "prefetch_factor": 3, "timeout": 120,
                   "pin_memory": False, "drop_last": True}
    config = tiny_config(str(tmp_path / "exp"), corpus, dataloader_args=loader_args)
    plan = plan_of(config)
    dataset = builder.build_dataset(plan)
    needed = 6 * 16 * 13040 * 4
    usage = collections.namedtuple("usage", "total used free")

    def free_space(free):
        monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(free, 0, free))

    free_space(2 << 20)
    builder.build_loader(plan, dataset)
    assert _shm_warnings(caplog) == [
        "/dev/shm has 2 MB free, less than the 5 MB that the 6 batches the loader workers "
        "keep ready may take (3 per worker, each 16 waveform chunks of 80 frames): a worker "
        "that cannot put one there drops it, and training stops after 120 s without a batch "
        "(dataloader_args.timeout). Run with dataloader_args.num_workers 0, or give /dev/shm "
        "more room (docker run --shm-size 8g)"]
    caplog.clear()
    free_space(needed)   # room enough
    builder.build_loader(plan, dataset)
    free_space(0)
    in_process = dict(loader_args, num_workers=0, prefetch_factor=None, timeout=0)
    no_workers = plan_of(tiny_config(str(tmp_path / "exp"), corpus,
                                     dataloader_args=in_process))
    builder.build_loader(no_workers, builder.build_dataset(no_workers))
    other_rank = plan_of(config, dataclasses.replace(CPU_WORLD, rank=1, world_size=2))
    builder.build_loader(other_rank, builder.build_dataset(other_rank))
    assert not _shm_warnings(caplog)
    free_space(needed - 1)   # without a timeout, training waits for the lost batch
    waiting = plan_of(tiny_config(str(tmp_path / "exp"), corpus,
                                  dataloader_args=dict(loader_args, timeout=0)))
    builder.build_loader(waiting, builder.build_dataset(waiting))
    assert len(_shm_warnings(caplog)) == 1
    assert "drops it, and training waits for it for ever (dataloader_args.timeout 0)" \
        in _shm_warnings(caplog)[0]
