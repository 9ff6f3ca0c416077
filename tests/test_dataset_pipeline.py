"""Input pipeline: raw vs shard parity, rank x worker split, seeding, quotas, config, collation."""
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dataset_helpers import RATE, make_lists, training_args, write_audio, write_raw_list_file
from wespeaker_py.config import ConfigError
from wespeaker_py.dataset import Dataset, collate_train, spk2id_from_utt2spk
from wespeaker_py.dataset.partition import WorkerPlace, epoch_order, my_items, my_quota
from wespeaker_py.frontend.framing import samples_for_frames

CHUNK = samples_for_frames(200, RATE)


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    # 3 speakers x 4 utterances in 4 shards of 3
    return make_lists(str(tmp_path_factory.mktemp("corpus")), num_utts_per_shard=3)


@pytest.fixture(scope="module")
def spk2id(lists):
    return spk2id_from_utt2spk(lists["utt2spk"])


def keys_of(samples):
    return [s["key"] for s in samples]


def test_raw_and_shard_lists_give_the_same_items(lists, spk2id, single_process):
    whole = {}
    for data_type in ("raw", "shard"):
        dataset = Dataset(data_type, lists[data_type], training_args(), spk2id, whole_utt=True)
        whole[data_type] = {s["key"]: (s["wav"], s["label"]) for s in dataset}
    assert len(whole["raw"]) == 12
    assert whole["raw"].keys() == whole["shard"].keys()
    for key, (wav, label) in whole["raw"].items():
        assert torch.equal(wav, whole["shard"][key][0])
        assert label == whole["shard"][key][1] == spk2id[key.split("-")[0]]
    train = {}
    for data_type in ("raw", "shard"):
        samples = list(Dataset(data_type, lists[data_type], training_args(), spk2id))
        assert all(s["wav"].shape == (CHUNK,) and s["wav"].dtype == torch.float32
                   for s in samples)
        train[data_type] = sorted((s["key"], s["label"]) for s in samples)
    assert train["raw"] == train["shard"]
    assert len(train["raw"]) == 12


@pytest.mark.parametrize("data_type", ["raw", "shard"])
def test_every_item_once_across_two_ranks_and_two_workers(lists, spk2id, monkeypatch,
                                                          data_type):
    seen = Counter()
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        dataset = Dataset(data_type, lists[data_type],
                          training_args(shuffle=True), spk2id, seed=3)
        dataset.set_epoch(5)
        loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_train)
        rank_keys = [key for batch in loader for key in batch["keys"]]
        assert rank_keys, f"rank {rank} got nothing"
        seen.update(rank_keys)
    assert set(seen) == {f"spk{s}-utt{u}" for s in range(3) for u in range(4)}
    assert set(seen.values()) == {1}


def test_list_order_depends_on_seed_and_epoch_only():
    assert epoch_order(50, seed=1, epoch=3, shuffle=True) == \
        epoch_order(50, seed=1, epoch=3, shuffle=True)
    assert epoch_order(50, seed=1, epoch=3, shuffle=True) != \
        epoch_order(50, seed=1, epoch=4, shuffle=True)
    assert epoch_order(50, seed=1, epoch=3, shuffle=True) != \
        epoch_order(50, seed=2, epoch=3, shuffle=True)
    assert epoch_order(50, seed=1, epoch=3, shuffle=False) == list(range(50))


def test_partition_is_exact_for_any_list_length():
    for num_items in (1, 7, 13, 64):
        for shuffle in (False, True):
            picked = []
            for rank in range(2):
                for worker in range(2):
                    place = WorkerPlace(rank, 2, worker, 2)
                    picked += my_items(num_items, place, seed=1, epoch=2, shuffle=shuffle)
            assert sorted(picked) == list(range(num_items))


def test_order_is_reproducible_per_epoch_and_changes_across_epochs(lists, spk2id,
                                                                   single_process):
    args = training_args(shuffle=True, speed_perturb=True)

    def epoch_samples(epoch, seed=11):
        dataset = Dataset("raw", lists["raw"], args, spk2id, seed=seed)
        dataset.set_epoch(epoch)
        return list(dataset)

    first, again, other = epoch_samples(1), epoch_samples(1), epoch_samples(2)
    assert keys_of(first) == keys_of(again)
    assert all(torch.equal(a["wav"], b["wav"]) and a["label"] == b["label"]
               for a, b in zip(first, again))
    assert keys_of(first) != keys_of(other)
    assert sorted(keys_of(first)) == sorted(keys_of(other))
    assert keys_of(epoch_samples(1, seed=12)) != keys_of(first)


def test_whole_utterance_mode_keeps_list_order_per_worker(lists, spk2id, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    args = training_args(shuffle=True, speed_perturb=True, aug_prob=1.0)
    dataset = Dataset("raw", lists["raw"], args, spk2id, whole_utt=True)
    all_keys = [f"spk{s}-utt{u}" for s in range(3) for u in range(4)]
    assert keys_of(dataset) == all_keys[1::2]
    lengths = {s["key"]: s["wav"].numel() for s in dataset}
    written = [40000, 52000, 36000, 61000]  # dataset_helpers' default lengths, in turn
    assert lengths == {key: written[i % 4] for i, key in enumerate(all_keys) if i % 2 == 1}


def test_sample_num_per_epoch_repeats_the_list_and_splits_the_quota(lists, spk2id,
                                                                    monkeypatch):
    assert [my_quota(50, WorkerPlace(r, 2, w, 2)) for r in range(2) for w in range(2)] == \
        [13, 12, 13, 12]
    monkeypatch.setenv("WORLD_SIZE", "2")
    counts = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        dataset = Dataset("shard", lists["shard"],
                          training_args(sample_num_per_epoch=50, shuffle=True), spk2id)
        loader = DataLoader(dataset, batch_size=None, num_workers=2)
        keys = [sample["key"] for sample in loader]
        counts.append(len(keys))
        # rank r owns shards r and r+2 of the epoch order: 6 utterances, repeated
        assert len(set(keys)) == 6
    assert counts == [25, 25]


def test_speed_perturb_shifts_labels_by_num_spks(lists, spk2id, single_process):
    num_spks = len(spk2id)
    args = training_args(speed_perturb=True, sample_num_per_epoch=300, shuffle=True)
    samples = list(Dataset("raw", lists["raw"], args, spk2id, seed=5))
    assert len(samples) == 300
    offsets = Counter()
    for sample in samples:
        base = spk2id[sample["key"].split("-")[0]]
        offset, remainder = divmod(sample["label"] - base, num_spks)
        assert remainder == 0 and sample["wav"].numel() == CHUNK
        offsets[offset] += 1
    assert set(offsets) == {0, 1, 2}
    assert min(offsets.values()) > 70  # uniform choice: about 100 each

    expanded = training_args(speed_perturb=True, speed_perturb_mode="expanded")
    samples = list(Dataset("raw", lists["raw"], expanded, spk2id))
    per_key = {}
    for sample in samples:
        per_key.setdefault(sample["key"], []).append(sample["label"])
    assert len(per_key) == 12
    for key, labels in per_key.items():
        base = spk2id[key.split("-")[0]]
        assert sorted(labels) == [base, base + num_spks, base + 2 * num_spks]


def test_the_speeds_of_an_expanded_utterance_share_one_truncation_window(tmp_path):
    """WeSpeaker's filter cuts a long utterance to max_num_frames before speed perturbation:
    the three speeds of an expanded utterance come from one window of it."""
    segments = 10   # one second each, valued by its position
    audio = np.repeat(1000.0 * np.arange(1, segments + 1), RATE).astype(np.int16)
    write_audio(str(tmp_path / "long.wav"), audio)
    raw = write_raw_list_file(str(tmp_path / "raw.list"), [
        {"key": f"long{i}", "wav": str(tmp_path / "long.wav"), "spk": "s"} for i in range(30)])
    args = training_args(speed_perturb=True, speed_perturb_mode="expanded", num_frms=100,
                         filter_args={"min_num_frames": 100, "max_num_frames": 200})
    per_key = {}
    for sample in Dataset("raw", raw, args, {"s": 0}):
        per_key.setdefault(sample["key"], []).append(float(np.median(sample["wav"].numpy())))
    assert len(per_key) == 30 and all(len(medians) == 3 for medians in per_key.values())
    # 1 s chunks of one 2 s window lie within three adjacent seconds
    assert max(max(medians) - min(medians) for medians in per_key.values()) <= 2000 + 1


def test_config_errors_name_the_key(lists, spk2id):
    with pytest.raises(ConfigError, match=r"unknown config key 'dataset_args\.num_frm'"):
        Dataset("raw", lists["raw"], training_args(num_frm=200), spk2id)
    with pytest.raises(ConfigError, match=r"dataset_args\.filter_args\.min_frames"):
        Dataset("raw", lists["raw"], training_args(filter_args={"min_frames": 1}), spk2id)
    with pytest.raises(ConfigError, match=r"config key 'dataset_args\.num_frms' must be int"):
        Dataset("raw", lists["raw"], training_args(num_frms="200"), spk2id)
    with pytest.raises(ConfigError, match=r"dataset_args\.speed_perturb_mode"):
        Dataset("raw", lists["raw"], training_args(speed_perturb_mode="slow"), spk2id)
    with pytest.raises(ValueError, match="spk2id"):
        Dataset("raw", lists["raw"], training_args(), None)
    with pytest.raises(ValueError, match="data_type"):
        Dataset("feat", lists["raw"], training_args(), spk2id)


def test_frame_settings_come_from_the_frontend_block(lists, spk2id, single_process):
    args = training_args(num_frms=150, frontend="s3prl",
                         s3prl_args={"frame_shift": 20, "frame_length": 20,
                                     "upstream_args": {"name": "wavlm_large"}})
    del args["fbank_args"]
    dataset = Dataset("raw", lists["raw"], args, spk2id)
    assert dataset.chunk_len == 149 * 320 + 320
    sample = next(iter(dataset))
    assert sample["wav"].numel() == dataset.chunk_len


def test_collate_train_stacks_a_batch(lists, spk2id, single_process):
    loader = DataLoader(Dataset("raw", lists["raw"], training_args(), spk2id),
                        batch_size=5, collate_fn=collate_train)
    batch = next(iter(loader))
    assert batch["wavs"].shape == (5, CHUNK) and batch["wavs"].dtype == torch.float32
    assert batch["labels"].dtype == torch.long and batch["labels"].shape == (5,)
    assert batch["keys"] == [f"spk0-utt{u}" for u in range(4)] + ["spk1-utt0"]
    assert np.all(np.abs(batch["wavs"].numpy()) <= 8000)  # int16 scale, as written
    with pytest.raises(ValueError, match="one length"):
        collate_train([{"key": "a", "wav": torch.zeros(3), "label": 0},
                       {"key": "b", "wav": torch.zeros(4), "label": 0}])


def test_length_filter_counts_samples_as_wespeaker(tmp_path, single_process):
    # WeSpeaker keeps a file of at least int(shift / 1000 * min_num_frames * rate)
    # samples: 100 frames at 10 ms are 16000 samples, although 16000 samples give
    # only 99 fbank frames of 25 ms
    lengths = [15999, 16000, 40000]
    lists = make_lists(str(tmp_path), num_spks=1, utts_per_spk=3, lengths=lengths)
    spk2id = spk2id_from_utt2spk(lists["utt2spk"])
    dataset = Dataset("raw", lists["raw"], training_args(num_frms=50), spk2id)
    kept = sorted(keys_of(dataset))
    assert kept == ["spk0-utt1", "spk0-utt2"]
    # longer than max_num_frames shifts: cut to a window of exactly that many samples
    assert dataset.settings.max_source_frames(RATE) == 128000
    assert dataset.settings.max_source_frames(8000) == 64000
    assert dataset.settings.min_source_frames(8000) == 8000


def test_workers_take_the_rank_the_dataset_was_made_in(lists, spk2id, monkeypatch):
    """A worker started by spawn or forkserver (Python 3.14's default) has no
    torch.distributed state: it must use the rank read where the dataset was made (and by
    set_epoch), not what its own process finds (here: an environment saying rank 0)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    keys = {}
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        dataset = Dataset("raw", lists["raw"], training_args(shuffle=True), spk2id, seed=3)
        dataset.set_epoch(5)
        keys[rank] = {s["key"] for s in dataset}
    monkeypatch.setenv("RANK", "1")
    dataset = Dataset("raw", lists["raw"], training_args(shuffle=True), spk2id, seed=3)
    dataset.set_epoch(5)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_train)
    assert {key for batch in loader for key in batch["keys"]} == keys[1] != keys[0]
