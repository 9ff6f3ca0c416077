"""Bad audio and bad lists: counted skips (once per key and epoch) or errors naming lines."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from torch.utils.data import DataLoader

from dataset_helpers import (RATE, make_lists, random_int16, training_args, write_audio,
                             write_raw_list_file)
from wespeaker_py.audio.errors import AudioMissingError, AudioNonFiniteError, AudioSilentError
from wespeaker_py.dataset import Dataset, collate_train
from wespeaker_py.dataset import stats as reasons
from wespeaker_py.dataset.lists import read_raw_list, read_shard_list
from wespeaker_py.dataset.stats import SkipSummary
from wespeaker_py.utils.tables import DataFormatError


def _float_wav(path, samples):
    sf.write(path, samples.astype(np.float32), RATE, subtype="FLOAT")
    return path


def _bad_audio_list(tmp_path):
    good = random_int16(40000, seed=1) / 32768.0
    with_nan = good.copy()
    with_nan[::1000] = np.nan
    with_inf = good.copy()
    with_inf[::5000] = -np.inf  # a training chunk only sees part of the file
    rows = [("good", _float_wav(str(tmp_path / "good.wav"), good)),
            ("nan", _float_wav(str(tmp_path / "nan.wav"), with_nan)),
            ("inf", _float_wav(str(tmp_path / "inf.wav"), with_inf)),
            ("zeros", write_audio(str(tmp_path / "zeros.wav"), np.zeros(40000, np.int16)))]
    return write_raw_list_file(str(tmp_path / "raw.list"),
                               [{"key": key, "wav": wav, "spk": "s"} for key, wav in rows])


@pytest.mark.parametrize("whole_utt", [False, True], ids=["training", "extraction"])
def test_non_finite_and_silent_audio_are_counted_skips(tmp_path, caplog, whole_utt):
    raw = _bad_audio_list(tmp_path)
    dataset = Dataset("raw", raw, training_args(), {"s": 0}, whole_utt=whole_utt)
    samples = list(dataset)
    assert [s["key"] for s in samples] == ["good"]
    assert all(np.isfinite(s["wav"].numpy()).all() for s in samples)
    summary = dataset.epoch_summary()
    assert summary.skipped == {AudioNonFiniteError.reason: 2, AudioSilentError.reason: 1}
    assert "skipping nan (non_finite_samples)" in caplog.text
    assert "skipping zeros (all_zero_samples)" in caplog.text


def test_missing_file_counted_once_per_epoch_over_repeats_and_workers(tmp_path):
    rows = [{"key": f"ok{i}", "wav": write_audio(str(tmp_path / f"ok{i}.wav"),
                                                 random_int16(40000, seed=i)), "spk": "s"}
            for i in range(4)]
    rows += [{"key": f"gone{i}", "wav": str(tmp_path / f"gone{i}.wav"), "spk": "s"}
             for i in range(2)]
    raw = write_raw_list_file(str(tmp_path / "raw.list"), rows)
    # 48 samples from 4 usable files: each worker's list comes round ~12 times
    dataset = Dataset("raw", raw, training_args(sample_num_per_epoch=48), {"s": 0})
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_train)
    for epoch in (1, 2):
        dataset.set_epoch(epoch)
        assert sum(len(batch["keys"]) for batch in loader) == 48
        summary = dataset.epoch_summary()
        assert summary.workers == 2 and summary.utterances == 4
        assert summary.skipped == {AudioMissingError.reason: 2}
        assert sorted(summary.examples[AudioMissingError.reason]) == ["gone0", "gone1"]


# Each start method in a fresh interpreter: a spawn or forkserver DataLoader leaves
# threads behind in its process for a moment, and a later fork of that process can hang.
_LOAD_ONE_EPOCH = """
import json, sys
from torch.utils.data import DataLoader
from wespeaker_py.dataset import Dataset, collate_train

if __name__ == "__main__":
    setup = json.load(open(sys.argv[1]))
    dataset = Dataset("raw", setup["raw"], setup["args"], {"s": 0})
    loader = DataLoader(dataset, batch_size=3, num_workers=1, collate_fn=collate_train,
                        multiprocessing_context=setup["start_method"])
    dataset.set_epoch(1)
    print(sum(len(batch["keys"]) for batch in loader))
    print(json.dumps(dataset.epoch_summary().to_dict()))
"""


@pytest.mark.parametrize("start_method", ["spawn", "forkserver", "fork"])
def test_skip_counts_come_back_from_workers_of_any_start_method(tmp_path, start_method):
    rows = [{"key": f"ok{i}", "wav": write_audio(str(tmp_path / f"ok{i}.wav"),
                                                 random_int16(40000, seed=i)), "spk": "s"}
            for i in range(3)]
    rows.append({"key": "gone", "wav": str(tmp_path / "gone.wav"), "spk": "s"})
    setup = {"raw": write_raw_list_file(str(tmp_path / "raw.list"), rows),
             "args": training_args(sample_num_per_epoch=6), "start_method": start_method}
    (tmp_path / "setup.json").write_text(json.dumps(setup))
    (tmp_path / "load.py").write_text(_LOAD_ONE_EPOCH)
    # a user's own loader may start its workers otherwise than this Python's default
    done = subprocess.run([sys.executable, str(tmp_path / "load.py"),
                           str(tmp_path / "setup.json")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    samples, summary = done.stdout.strip().splitlines()
    assert samples == "6"
    summary = json.loads(summary)
    assert summary["workers"] == 1 and summary["skipped"] == {AudioMissingError.reason: 1}


def test_skip_summaries_travel_and_merge_across_ranks():
    rank0 = SkipSummary(utterances=10, workers=2)
    rank0.skipped.update({AudioMissingError.reason: 2})
    rank0.examples[AudioMissingError.reason] = ["a", "b"]
    rank1 = SkipSummary(utterances=7, workers=2)
    rank1.skipped.update({AudioMissingError.reason: 1, AudioNonFiniteError.reason: 1})
    rank1.repaired.update({reasons.RESAMPLED: 3})
    rank1.examples.update({AudioMissingError.reason: ["c"], AudioNonFiniteError.reason: ["d"]})
    merged = SkipSummary.merged(SkipSummary.from_dict(s.to_dict()) for s in (rank0, rank1))
    assert merged.to_dict() == {
        "utterances": 17, "shards": 0, "bad_sources": [], "workers": 4,
        "repaired": {reasons.RESAMPLED: 3},
        "skipped": {AudioMissingError.reason: 3, AudioNonFiniteError.reason: 1},
        "examples": {AudioMissingError.reason: ["a", "b", "c"], AudioNonFiniteError.reason: ["d"]}}
    assert merged.describe() == ("17 utterances used; skipped: missing_file=3 (e.g. a, b, c), "
                                 "non_finite_samples=1 (e.g. d); repaired: resampled=3")


def test_a_bad_noise_file_counts_once_however_many_workers_draw_it(tmp_path):
    rows = [{"key": f"ok{i}", "wav": write_audio(str(tmp_path / f"ok{i}.wav"),
                                                 random_int16(40000, seed=i)), "spk": "s"}
            for i in range(4)]
    raw = write_raw_list_file(str(tmp_path / "raw.list"), rows)
    (tmp_path / "bad.wav").write_text("not audio")
    noise = tmp_path / "noise.scp"
    noise.write_text(f"noise/bad {tmp_path / 'bad.wav'}\n")
    # each of the two workers draws the list's one file for every chunk
    dataset = Dataset("raw", raw, training_args(aug_prob=1.0), {"s": 0}, noise_data=str(noise))
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_train)
    dataset.set_epoch(1)
    assert sum(len(batch["keys"]) for batch in loader) == 4
    summary = dataset.epoch_summary()
    assert summary.workers == 2 and summary.bad_sources == {"noise/bad"}
    assert summary.describe() == ("4 utterances used; skipped: bad_augmentation_source=1 "
                                  "(e.g. noise/bad); repaired: none")
    # the chunks were kept (unaugmented): no utterance counts as skipped
    assert summary.skipped == {} and summary.skipped_beyond(0.0) == []


def test_the_skipped_fraction_counts_utterances_read_and_shards_opened(tmp_path):
    lists = make_lists(str(tmp_path), num_utts_per_shard=4, num_spks=3, utts_per_spk=4)
    shards = read_shard_list(lists["shard"])
    for lost in shards[1:]:
        os.remove(lost)
    dataset = Dataset("shard", lists["shard"], training_args(),
                      {f"spk{index}": index for index in range(3)})
    assert len(list(dataset)) == 4
    summary = dataset.epoch_summary()
    assert (summary.utterances, summary.shards) == (4, 3)
    assert summary.skipped == {reasons.BAD_SHARD: 2}
    assert summary.describe().startswith("4 utterances used, from 3 shards; skipped: bad_shard=2")
    assert summary.skipped_beyond(0.5) == ["2 of the 3 shards opened (67%)"]
    assert summary.skipped_beyond(0.7) == []
    summary.skipped[AudioMissingError.reason] += 6
    assert summary.skipped_beyond(0.5) == ["6 of the 10 utterances read (60%)",
                                           "2 of the 3 shards opened (67%)"]
    # utterances the length filter (filter_args) left out are the config's choice, not faults
    summary.skipped[AudioMissingError.reason] = 0
    summary.skipped[reasons.TOO_SHORT] += 40
    assert summary.skipped_beyond(0.5) == ["2 of the 3 shards opened (67%)"]


def test_duplicate_key_in_a_raw_list_names_both_lines(tmp_path):
    raw = write_raw_list_file(str(tmp_path / "raw.list"), [
        {"key": "a", "wav": "/x/a.wav", "spk": "s"}, {"key": "b", "wav": "/x/b.wav", "spk": "s"},
        {"key": "a", "wav": "/x/c.wav", "spk": "t"}])
    with pytest.raises(DataFormatError, match=r"raw.list:3: duplicate key 'a', already on line 1"):
        read_raw_list(raw)
    with pytest.raises(DataFormatError, match=r"raw.list:3: duplicate key 'a'"):
        Dataset("raw", raw, training_args(), whole_utt=True)


def test_duplicate_shard_names_both_lines(tmp_path):
    shard_list = tmp_path / "shard.list"
    shard_list.write_text("/s/0.tar\n/s/1.tar\n\n/s/0.tar\n")
    with pytest.raises(DataFormatError, match=r"shard.list:4: duplicate shard '/s/0.tar', "
                                              r"already on line 1"):
        read_shard_list(str(shard_list))
