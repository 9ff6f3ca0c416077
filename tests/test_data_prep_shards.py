"""Shard writing: a second run keeps the shards already complete (made again when their
audio changed), unreadable utterances are left out and counted, the first failure stops
the shards not started yet, and any format soundfile reads is stored."""
import io
import os
import re
import tarfile
import time

import numpy as np
import pytest
import soundfile as sf

from dataset_helpers import make_corpus, random_int16, write_audio
from tool_helpers import run_tool
from wespeaker_py.audio import open_audio
from wespeaker_py.dataset import shards
from wespeaker_py.dataset.lists import TableEntry, read_shard_list, read_utterance_table
from wespeaker_py.dataset.shards import iter_shard, make_shards
from wespeaker_py.dataset.stats import PipelineStats


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
    # writing shard 0 fails (not a bad utterance: those are left out); the others take a while
    real = shards.write_shard
    started = []

    def slow(entries, tar_path):
        started.append(tar_path)
        if entries[0] == table[0]:
            raise OSError(f"no space left on device while writing {tar_path}")
        time.sleep(0.3)
        return real(entries, tar_path)

    monkeypatch.setattr(shards, "write_shard", slow)
    shard_list = tmp_path / "shard.list"
    shard_list.write_text("an old list\n")
    with pytest.raises(OSError, match="shards_000000000.tar"):
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


def test_a_pipe_entrys_shard_is_made_again_when_a_file_its_command_reads_changes(
        tmp_path, monkeypatch):
    table = _shard_corpus(tmp_path, utts=4)
    source = write_audio(str(tmp_path / "source.flac"), random_int16(20000, seed=5))
    table[3] = TableEntry(key=table[3].key, spk=table[3].spk, wav=f"cat {source} |")
    paths = _make(table, tmp_path)
    written = _written_by(monkeypatch)
    _make(table, tmp_path)
    assert written == []
    write_audio(source, random_int16(30000, seed=6))   # the same path, other audio
    _make(table, tmp_path)
    assert written == ["shards_000000001.tar"]
    stats = PipelineStats()
    (piped,) = [utt for utt in iter_shard(paths[1], stats) if utt.key == table[3].key]
    assert sf.info(io.BytesIO(piped.data)).frames == 30000


def _bad_entries(tmp_path):
    """wav.scp and utt2spk of 4 good utterances and 6 that cannot be read, by their reason."""
    good = [write_audio(str(tmp_path / f"good{i}.wav"), random_int16(8000, seed=i))
            for i in range(4)]
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF" + bytes(range(200)))
    sf.write(str(tmp_path / "no_frames.wav"), np.zeros(0, dtype=np.int16), 16000)
    bad = {"empty": (str(tmp_path / "empty.wav"), "empty_file"),
           "corrupt": (str(tmp_path / "corrupt.wav"), "not_audio"),
           "no_frames": (str(tmp_path / "no_frames.wav"), "empty_file"),
           "missing": (str(tmp_path / "missing.wav"), "missing_file"),
           "pipe_fails": ("exit 3 |", "pipe_failed"),
           "pipe_silent": ("true |", "empty_file")}
    rows = [(f"good{i}", path) for i, path in enumerate(good)]
    rows += [(key, wav) for key, (wav, _) in bad.items()]
    (tmp_path / "wav.scp").write_text("".join(f"{key} {wav}\n" for key, wav in rows))
    (tmp_path / "utt2spk").write_text("".join(f"{key} s\n" for key, _ in rows))
    return [key for key, _ in rows[:4]], {key: why for key, (_, why) in bad.items()}


def test_unreadable_utterances_are_left_out_counted_and_reported_at_the_end(tmp_path, capsys):
    good, bad = _bad_entries(tmp_path)
    shard_list = tmp_path / "shard.list"
    args = [str(tmp_path / "wav.scp"), str(tmp_path / "utt2spk"), str(tmp_path / "shards"),
            str(shard_list)]
    run_tool("make_shard_list.py", "--num_utts_per_shard", "3", "--max_fail_fraction", "0.6",
             *args)
    err = capsys.readouterr().err
    for key, reason in bad.items():
        assert re.search(rf"utterance {key} is left out of shards_00000000\d\.tar \({reason}\)",
                         err), key
    last = "4 done, 6 skipped (3 empty_file, 1 missing_file, 1 not_audio, 1 pipe_failed)"
    assert err.rstrip().endswith(last)
    stats = PipelineStats()
    stored = [utt.key for path in read_shard_list(str(shard_list))
              for utt in iter_shard(path, stats)]
    assert stored == good and stats.skipped == {}

    # a rerun keeps the shards and says again what they lack
    run_tool("make_shard_list.py", "--num_utts_per_shard", "3", "--max_fail_fraction", "0.6",
             *args)
    err = capsys.readouterr().err
    assert "stays left out of" in err and "utterance pipe_fails stays" in err
    assert f"{shard_list} is up to date" in err and err.rstrip().endswith(last)

    # more than --max_fail_fraction (default 0.5) left out: the job fails, and no list
    with pytest.raises(SystemExit) as stop:
        run_tool("make_shard_list.py", "--num_utts_per_shard", "3", *args)
    err = capsys.readouterr().err
    assert stop.value.code == 1
    assert f"error: 6 of 10 utterances of {args[0]} were skipped (60%, more than " \
        f"--max_fail_fraction 0.5; {last}); {shard_list} was not written" in err
    assert not shard_list.exists()


@pytest.mark.parametrize("name, soundfile_format, subtype, member", [
    ("a.sph", "NIST", "PCM_16", "sph"), ("b.aiff", "AIFF", "PCM_16", "aiff"),
    ("c.au", "AU", "ULAW", "au"), ("no_extension", "WAV", "PCM_16", "wav")])
def test_shards_store_any_format_soundfile_reads_under_its_name(
        tmp_path, name, soundfile_format, subtype, member):
    path = str(tmp_path / name)
    sf.write(path, random_int16(8000, seed=2), 16000, format=soundfile_format, subtype=subtype)
    (shard,) = make_shards([TableEntry("u", "s", path)], str(tmp_path / "shards"),
                           str(tmp_path / "shard.list"))
    with tarfile.open(shard) as tar:
        assert tar.getnames() == ["u.spk", f"u.{member}"]
    stats = PipelineStats()
    (utt,) = iter_shard(shard, stats)
    with open_audio(data=utt.data) as stored, open_audio(path) as source:
        np.testing.assert_array_equal(stored.read_all(), source.read_all())


@pytest.mark.parametrize("flag", ["--num_utts_per_shard", "--num_threads"])
def test_shard_sizes_and_writers_below_one_are_usage_errors(tmp_path, capsys, flag):
    # a ValueError traceback from deep in the writer before; nothing is read or written
    with pytest.raises(SystemExit) as stop:
        run_tool("make_shard_list.py", flag, "0", str(tmp_path / "wav.scp"),
                 str(tmp_path / "utt2spk"), str(tmp_path / "shards"), str(tmp_path / "list"))
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert f"argument {flag}/" in err and "must be at least 1, got 0" in err
    assert list(tmp_path.iterdir()) == []
