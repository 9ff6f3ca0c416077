"""Shared pytest fixtures and markers."""
import gc
import logging
import multiprocessing
import os
import tempfile

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data"))

# one thread per pytest-xdist worker: the workers share the cores. The processes the tests
# start (recipes, torchrun, commands) inherit OMP_NUM_THREADS: with more threads than the
# core left to them, torch's threads stall at each barrier while the other worker runs.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER")
                      else max(1, min(2, os.cpu_count() or 1)))
# Modules whose tests run longest (whole recipes), collected first: pytest-xdist with
# --dist loadfile hands modules out in collection order, and the longest one handed out
# last would leave the other worker idle at the end.
LONGEST_FIRST = ("test_recipes.py",)

# A DataLoader worker forked from this long-lived process inherits the garbage earlier tests
# left in reference cycles. When the worker's own collector then freed an onnxruntime
# session among it, the session's destructor waited on thread-pool threads that do not
# exist in a forked child, and both workers hung (seen twice in CI, in
# test_bad_data.py's two-worker test, with py-spy: gc_collect_main -> pybind11 dealloc ->
# onnxruntime -> futex wait). Collecting in the parent right before each fork leaves the
# children no such garbage. The package registers the same guard once it opens a session
# (wespeaker_py.utils.onnx_session); this one also covers the sessions tests open directly.
os.register_at_fork(before=gc.collect)


def pytest_collection_modifyitems(config, items):
    """Skip GPU tests without CUDA and shared-data tests without ../shared/data; collect
    the modules of :data:`LONGEST_FIRST` first."""
    items.sort(key=lambda item: item.path.name not in LONGEST_FIRST)
    skip_gpu = pytest.mark.skip(reason="no CUDA device")
    skip_shared = pytest.mark.skip(reason=f"{SHARED_DATA} is absent")
    for item in items:
        # the markers, not item.keywords: a parameter id such as "gpu" is a keyword too
        if item.get_closest_marker("gpu") and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if item.get_closest_marker("shared_data") and not os.path.isdir(SHARED_DATA):
            item.add_marker(skip_shared)


@pytest.fixture(autouse=True)
def restore_root_logging():
    """Commands run in-process configure the root logger on the stream pytest captures for
    that test; restore it so that later tests do not log into a closed capture."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def single_process(monkeypatch):
    """Unset RANK and WORLD_SIZE, so that the code under test runs as one process even
    inside a torchrun job (modules that need it everywhere name it in ``pytestmark``)."""
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


@pytest.fixture
def shared_data_dir():
    """Path of ../shared/data (tests using it carry the shared_data marker)."""
    return SHARED_DATA


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Four generated speakers of six utterances (train_helpers.make_speaker_corpus), for the
    trainer tests; a module that needs another corpus defines its own ``corpus``."""
    from train_helpers import make_speaker_corpus   # imports the trainer: only when used
    return make_speaker_corpus(str(tmp_path_factory.mktemp("corpus")), num_spks=4,
                               utts_per_spk=6)


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory):
    """wav.scp + utt2spk of six mini-corpus speakers (two utterances each) and one
    utterance (``broken-utt``) whose file is not audio."""
    corpus = os.path.join(REPO_ROOT, "examples", "mini", "data", "librispeech_tc100")
    root = tmp_path_factory.mktemp("labelled")
    rows, seen = [], {}
    with open(os.path.join(corpus, "wav.scp")) as handle:
        for line in handle:
            key, path = line.split()
            speaker = key.split("-")[0]
            if (len(seen) < 6 or speaker in seen) and seen.get(speaker, 0) < 2:
                seen[speaker] = seen.get(speaker, 0) + 1
                rows.append((key, os.path.join(corpus, path), speaker))
    rows.append(("broken-utt", str(root / "broken.wav"), rows[0][2]))
    (root / "broken.wav").write_bytes(b"RIFF but not audio")
    (root / "wav.scp").write_text("".join(f"{k} {p}\n" for k, p, _ in rows))
    (root / "utt2spk").write_text("".join(f"{k} {s}\n" for k, _, s in rows))
    return str(root)


@pytest.fixture(scope="module")
def source_model(tmp_path_factory):
    """A 16 kHz fbank model folder to fine-tune: TINY_CONFIG with random weights and a
    5-speaker head (train_helpers.write_source_model)."""
    from train_helpers import write_source_model   # imports the trainer: only when used
    return write_source_model(str(tmp_path_factory.mktemp("source")))


@pytest.fixture
def first_phase(monkeypatch):
    """Run :func:`~wespeaker_py.finetune.finetune` up to its first phase; return that
    phase's config mapping."""
    from train_helpers import PhaseReached
    from wespeaker_py.finetune import finetune
    from wespeaker_py.finetune import run as finetune_run

    def run(*args, **kwargs):
        seen = {}

        def stop(config, *_):
            seen.update(config)
            raise PhaseReached

        monkeypatch.setattr(finetune_run, "_train_phase", stop)
        with pytest.raises(PhaseReached):
            finetune(*args, device="cpu", **kwargs)
        return seen
    return run


@pytest.fixture
def use_temp_folder(monkeypatch):
    """A function that makes a folder the temporary folder of this test's process and of the
    workers it starts: multiprocessing keeps using the pymp-* folder it made in an earlier
    one otherwise."""
    def use(folder) -> None:
        monkeypatch.setattr(tempfile, "tempdir", str(folder))
        monkeypatch.setitem(multiprocessing.current_process()._config, "tempdir", None)
    return use
