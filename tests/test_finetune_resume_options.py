"""Fine-tuning's data check of segments against their recordings (before anything is
written), and a run that resumes when only a loader option changed.

Nothing trains: a run that gets as far as a phase is stopped there.
"""
import json
import os

import pytest

from finetune_helpers import read_finetune_data, write_segments_folder
from train_helpers import make_speaker_corpus
from wespeaker_py.finetune import FinetuneDataError, FinetuneOptions, OutputExistsError, finetune
from wespeaker_py.finetune.config import with_loader_options_of


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """6 speakers x 4 recordings of 1 s or more (2 dev speakers, 4 training ones)."""
    root = str(tmp_path_factory.mktemp("corpus"))
    make_speaker_corpus(root, num_spks=6, utts_per_spk=4, seconds=1.0)
    return root


def _segments_folder(corpus, root, past_end=()):
    """A data folder cutting one segment from each of ``corpus``'s recordings: ``[0, 0.9]``
    s, or ``[0.2, 3]`` s (past the end) for the utterances in ``past_end``."""
    utterances = [(key, spk, os.path.join(corpus, "wav", key + ".wav")) for key, spk in
                  (line.split() for line in open(os.path.join(corpus, "utt2spk")))]
    return write_segments_folder(root, utterances,
                                 lambda key: (0.2, 3.0) if key in past_end else (0.0, 0.9))


def _keys(corpus):
    return [line.split()[0] for line in open(os.path.join(corpus, "utt2spk"))]


def test_segments_past_the_end_are_left_out_of_the_written_lists(source_model, corpus,
                                                                 tmp_path, first_phase, caplog):
    train_keys = [entry.key for entry in
                  read_finetune_data(_segments_folder(corpus, str(tmp_path / "all"))).train]
    past = sorted(train_keys[:2])
    data = _segments_folder(corpus, str(tmp_path / "data"), past)
    out = str(tmp_path / "out")
    first_phase(source_model, data, out, FinetuneOptions(epochs=1))
    assert (f"{data}/segments: 2 of its 24 segments start at or end more than 0.5 s past the "
            f"end of their recording, and are skipped (segment_past_end): the first is "
            f"{past[0]} [0.2, 3] s of") in caplog.text
    lists = os.path.join(out, "work", "data")
    written = open(os.path.join(lists, "train", "raw.list")).read() + \
        open(os.path.join(lists, "train", "utt2spk")).read() + \
        open(os.path.join(lists, "dev", "trials")).read()
    assert all(key not in written for key in past)
    assert all(key in written for key in set(_keys(corpus)) - set(past))


def test_too_few_segments_within_their_recordings_are_refused_before_anything_is_written(
        source_model, corpus, tmp_path):
    # half of each speaker's segments past the end: the dev speakers' trials fall short
    half = [key for key in _keys(corpus) if int(key.rsplit("utt", 1)[1]) % 2]
    data = _segments_folder(corpus, str(tmp_path / "half"), half)
    out = str(tmp_path / "out")
    with pytest.raises(FinetuneDataError, match="2 target and 4 nontarget trials"):
        finetune(source_model, data, out, FinetuneOptions(epochs=1), device="cpu")
    assert not os.path.exists(out)


def test_a_segments_file_wholly_past_the_end_is_refused_before_anything_is_written(
        source_model, corpus, tmp_path):
    data = _segments_folder(corpus, str(tmp_path / "data"), _keys(corpus))
    out = str(tmp_path / "out")
    with pytest.raises(FinetuneDataError, match=f"{data}/segments: none of its 24 segments "
                                                f"lies within its recording"):
        finetune(source_model, data, out, FinetuneOptions(epochs=1), device="cpu")
    assert not os.path.exists(out)


def test_a_request_with_other_loader_workers_is_the_same_run_but_not_another_batch_size(
        source_model, corpus, tmp_path, first_phase):
    data = _segments_folder(corpus, str(tmp_path / "data"))
    out = str(tmp_path / "out")
    first_phase(source_model, data, out, FinetuneOptions(epochs=1, num_workers=0))
    for workers in (1, None):   # fewer after a crash, or left out: the same run resumes
        seen = first_phase(source_model, data, out,
                           FinetuneOptions(epochs=1, num_workers=workers))
        assert seen["dataloader_args"]["num_workers"] == (1 if workers else 0)
    with pytest.raises(OutputExistsError, match=r"request.json differs in options.batch_size"):
        finetune(source_model, data, out, FinetuneOptions(epochs=1, batch_size=4),
                 device="cpu")


def test_a_request_recorded_with_or_without_workers_compares_on_the_rest():
    request = {"data": "d", "options": {"epochs": 6, "num_workers": None}}
    for recorded_workers in ({"num_workers": 4}, {}):
        recorded = json.loads(json.dumps({"data": "d",
                                          "options": dict({"epochs": 6}, **recorded_workers)}))
        assert with_loader_options_of(recorded, request) == request
    other = {"data": "d", "options": {"epochs": 3, "num_workers": 4}}
    assert with_loader_options_of(other, request) != request
    assert with_loader_options_of(None, request) is None


def test_segments_ending_in_minus_1_reach_the_end_and_one_starting_past_it_is_left_out(
        corpus, tmp_path, caplog):
    # an open end was a TypeError in the check of segments against their recordings
    keys = _keys(corpus)
    utterances = [(key, spk, os.path.join(corpus, "wav", key + ".wav")) for key, spk in
                  (line.split() for line in open(os.path.join(corpus, "utt2spk")))]
    data = write_segments_folder(str(tmp_path / "data"), utterances,
                                 lambda key: (5.0, -1) if key == keys[0] else (0.2, -1))
    split = read_finetune_data(data)
    kept = {entry.key: entry.vad for entry in split.train + split.dev}
    assert keys[0] not in kept and len(kept) == len(keys) - 1
    assert set(kept.values()) == {((0.2, None),)}
    assert (f"{data}/segments: 1 of its 24 segments start at or end more than 0.5 s past the "
            f"end of their recording, and are skipped (segment_past_end): the first is "
            f"{keys[0]} [5, end] s of") in caplog.text
