"""Shard writing: a second run keeps the shards already complete, and the first failure
stops the shards not started yet."""
import os
import time

import pytest

from dataset_helpers import make_corpus, random_int16, write_audio
from wespeaker_py.dataset import shards
from wespeaker_py.dataset.lists import TableEntry, read_shard_list, read_utterance_table
from wespeaker_py.dataset.shards import make_shards


def _shard_corpus(tmp_path, utts=6):
    wav_scp, utt2spk = make_corpus(str(tmp_path), num_spks=1, utts_per_spk=utts)
    return read_utterance_table(wav_scp, utt2spk)


def _make(table, tmp_path, **args):
    return make_shards(table, str(tmp_path / "shards"), str(tmp_path / "shard.list"),
                       num_utts_per_shard=2, **args)


def _written_by(monkeypatch):
    """Record the shards that :func:`write_shard` writes from now on."""
    written = []
    real = shards.write_shard

    def recording(entries, tar_path):
        written.append(os.path.basename(tar_path))
        return real(entries, tar_path)

    monkeypatch.setattr(shards, "write_shard", recording)
    return written


def test_a_second_run_keeps_complete_shards_and_writes_only_the_changed_ones(
        tmp_path, monkeypatch):
    table = _shard_corpus(tmp_path)
    paths = _make(table, tmp_path)
    before = {path: os.stat(path).st_mtime_ns for path in paths}
    written = _written_by(monkeypatch)
    assert _make(table, tmp_path) == paths
    assert written == []
    assert {path: os.stat(path).st_mtime_ns for path in paths} == before
    assert read_shard_list(str(tmp_path / "shard.list")) == paths

    # the audio of shard 1 rewritten since, and the speaker of an utterance of shard 2
    write_audio(table[2].wav, random_int16(30000, seed=99))
    table[5] = TableEntry(key=table[5].key, spk="other", wav=table[5].wav)
    _make(table, tmp_path)
    assert sorted(written) == ["shards_000000001.tar", "shards_000000002.tar"]

    # another shuffle puts other utterances into every shard
    written.clear()
    _make(table, tmp_path, shuffle=True, seed=3)
    assert len(written) == 3


def test_a_shard_cut_short_or_without_its_note_is_written_again(tmp_path, monkeypatch):
    table = _shard_corpus(tmp_path)
    paths = _make(table, tmp_path)
    with open(paths[0], "r+b") as handle:   # cut short (e.g. copied in part)
        handle.truncate(1024)
    os.remove(paths[1] + ".digest")         # a run stopped between the shard and its note
    os.remove(paths[2])                     # removed
    written = _written_by(monkeypatch)
    assert _make(table, tmp_path) == paths
    assert sorted(written) == [os.path.basename(path) for path in paths]


def test_the_first_failed_shard_stops_the_shards_not_started(tmp_path, monkeypatch):
    table = _shard_corpus(tmp_path, utts=12)
    # shard 0 holds a command that fails; the others take a while each
    table[0] = TableEntry(key=table[0].key, spk=table[0].spk, wav="exit 3 |")
    real = shards.write_shard
    started = []

    def slow(entries, tar_path):
        started.append(tar_path)
        if entries[0].wav != "exit 3 |":
            time.sleep(0.3)
        return real(entries, tar_path)

    monkeypatch.setattr(shards, "write_shard", slow)
    shard_list = tmp_path / "shard.list"
    shard_list.write_text("an old list\n")
    with pytest.raises(OSError, match=table[0].key):
        _make(table, tmp_path, num_threads=1)
    # shard 0 failed at once; at most the one shard begun meanwhile was written
    assert len(started) <= 2
    assert not shard_list.exists()   # the old list would name shards of two runs
    assert not os.path.exists(tmp_path / "shards" / "shards_000000000.tar")


def test_a_run_of_fewer_shards_removes_the_earlier_runs_extra_ones(tmp_path):
    table = _shard_corpus(tmp_path)
    paths = _make(table, tmp_path)
    assert len(paths) == 3
    # a file of the same pattern that we did not write (no digest note) is left alone
    foreign = tmp_path / "shards" / "shards_000000007.tar"
    foreign.write_bytes(b"not ours")
    fewer = _make(table[:4], tmp_path)
    assert fewer == paths[:2]
    assert not os.path.exists(paths[2]) and not os.path.exists(paths[2] + ".digest")
    assert sorted(os.listdir(tmp_path / "shards")) == sorted(
        [os.path.basename(path) for path in fewer]
        + [os.path.basename(path) + ".digest" for path in fewer] + [foreign.name])
    assert read_shard_list(str(tmp_path / "shard.list")) == fewer
