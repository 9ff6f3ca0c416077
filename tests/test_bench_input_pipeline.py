"""The input-pipeline benchmarks, bench/bench_pipeline.py and bench/bench_device_aug.py: the
profile finds every cost centre it names in today's code, for the library pipeline and for
the full-read baseline swapped into it; the read timer sees whole-file reads as well as
chunk reads; the stage costs of both augment_on modes run the worker's chain."""
import math
import os
import sys

import pytest

from dataset_helpers import RATE, make_lists, random_int16, write_audio
from wespeaker_py.audio import files as audio_files
from wespeaker_py.audio import open_audio
from wespeaker_py.dataset import spk2id_from_utt2spk
from wespeaker_py.dataset.synthetic_aug import make_synthetic_aug_data

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import bench_device_aug  # noqa: E402
import bench_pipeline  # noqa: E402

SAMPLES = 48


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    """A raw list of 12 utterances of 3 speakers, and small noise and RIR sets."""
    root = str(tmp_path_factory.mktemp("bench_pipeline"))
    made = make_lists(root, num_spks=3, utts_per_spk=4)
    with open(made["wav_scp"]) as handle:
        speech = [line.split()[1] for line in handle]
    aug = make_synthetic_aug_data(os.path.join(root, "aug"), speech[:3], num_noise=2,
                                  num_music=1, num_babble=1, num_rirs=2, duration=3.0)
    return {"raw": made["raw"], "rir": aug["rirs"], "noise": aug["musan"],
            "spk2id": spk2id_from_utt2spk(made["utt2spk"])}


def test_the_profile_finds_every_cost_centre_of_the_library_and_the_baseline(lists,
                                                                             monkeypatch):
    baseline_calls = []
    full_read = bench_pipeline.full_read_training_chunks

    def counted_full_read(*args):
        baseline_calls.append(1)
        return full_read(*args)

    monkeypatch.setattr(bench_pipeline, "full_read_training_chunks", counted_full_read)
    labels = [label for label, _, _ in bench_pipeline.PROFILE_GROUPS]
    _, count, found = bench_pipeline.profile("raw", lists, lists["spk2id"], SAMPLES)
    assert count == SAMPLES and not baseline_calls
    assert all(found.get(label, 0.0) > 0.0 for label in labels), found
    with bench_pipeline.use_baseline():
        _, count, found = bench_pipeline.profile("raw", lists, lists["spk2id"], SAMPLES)
    assert count == SAMPLES and baseline_calls
    assert all(found.get(label, 0.0) > 0.0 for label in labels), found


def test_the_read_timer_sees_whole_file_and_chunk_reads(tmp_path):
    path = write_audio(str(tmp_path / "long.wav"), random_int16(30 * RATE, seed=0))
    handle_methods = (audio_files.AudioHandle.__init__, audio_files.AudioHandle.read_frames)
    with bench_device_aug.ReadTimer() as whole:
        with open_audio(path) as handle:
            handle.read_all()
    with bench_device_aug.ReadTimer() as chunk:
        with open_audio(path) as handle:
            handle.read(0, RATE)
    assert whole.open > 0 and whole.decode > 0
    assert chunk.open > 0 and chunk.decode > 0
    assert (audio_files.AudioHandle.__init__, audio_files.AudioHandle.read_frames) == \
        handle_methods


@pytest.mark.parametrize("mode", ["cpu", "device"])
def test_stage_costs_run_the_workers_chain(lists, mode):
    costs = bench_device_aug.stage_costs(lists, lists["spk2id"], bench_device_aug.voxceleb_args(),
                                         mode, 16)
    assert len(costs) == len(bench_device_aug.STAGES)
    for total, opened, decoded in costs:
        assert all(math.isfinite(value) and value >= 0 for value in (total, opened, decoded))
    assert costs[1][1] > 0 and costs[1][2] > 0   # the chunk reads open and decode files
