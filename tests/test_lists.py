"""Data lists: raw.list / shard.list builders and readers, and their error messages."""
import io
import json
import os
import random
import runpy
import sys
import tarfile

import numpy as np
import pytest
import soundfile as sf

from dataset_helpers import make_corpus, random_int16, write_audio
from wespeaker_py.dataset import spk2id_from_utt2spk
from wespeaker_py.dataset.lists import (TableEntry, read_audio_list, read_raw_list, read_shard_list,
                                        read_utterance_table)
from wespeaker_py.dataset.shards import iter_shard, make_shards
from wespeaker_py.dataset.stats import BAD_MEMBER, BAD_SHARD, PipelineStats
from wespeaker_py.utils.file_utils import DataFormatError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_tool(name, *args):
    """Run a tools/ script in this process, as its command line would."""
    saved = sys.argv
    sys.argv = [name, *args]
    try:
        runpy.run_path(os.path.join(REPO, "tools", name), run_name="__main__")
    finally:
        sys.argv = saved


def test_spk2id_is_sorted_and_dense(tmp_path):
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("u1 zed\nu2 amy\nu3 zed\nu4 bob\n")
    assert spk2id_from_utt2spk(str(utt2spk)) == {"amy": 0, "bob": 1, "zed": 2}


def test_make_raw_list_round_trip_with_vad(tmp_path):
    wav_scp, utt2spk = make_corpus(str(tmp_path), num_spks=2, utts_per_spk=2)
    raw = str(tmp_path / "raw.list")
    run_tool("make_raw_list.py", wav_scp, utt2spk, raw)
    utts = read_raw_list(raw)
    table = read_utterance_table(wav_scp, utt2spk)
    assert [(u.key, u.wav, u.spk) for u in utts] == [(e.key, e.wav, e.spk) for e in table]
    assert all(u.vad is None for u in utts)

    vad = tmp_path / "vad"
    vad.write_text("seg1 spk0-utt0 0.10 0.50\nseg2 spk0-utt0 1.00 1.50\nseg3 spk1-utt1 0 1\n")
    run_tool("make_raw_list.py", "--vad_file", str(vad), wav_scp, utt2spk, raw)
    by_key = {u.key: u for u in read_raw_list(raw)}
    # WeSpeaker's raw list keeps only utterances that have segments
    assert set(by_key) == {"spk0-utt0", "spk1-utt1"}
    assert by_key["spk0-utt0"].vad == ((0.1, 0.5), (1.0, 1.5))


def test_make_shard_list_packs_every_file_in_wespeaker_order(tmp_path):
    wav_scp, utt2spk = make_corpus(str(tmp_path), num_spks=3, utts_per_spk=3)
    shard_list = str(tmp_path / "shard.list")
    run_tool("make_shard_list.py", "--num_utts_per_shard", "4", "--num_threads", "2",
             "--prefix", "part", "--shuffle", "--seed", "7",
             wav_scp, utt2spk, str(tmp_path / "shards"), shard_list)
    paths = read_shard_list(shard_list)
    assert [os.path.basename(p) for p in paths] == [f"part_{i:09d}.tar" for i in range(3)]
    table = read_utterance_table(wav_scp, utt2spk)
    expected = list(table)
    random.seed(7)
    random.shuffle(expected)  # WeSpeaker shuffles with the global generator seeded so
    members = []
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar:
                members.append((member.name, tar.extractfile(member).read()))
    names = [name for name, _ in members]
    assert names == [n for e in expected
                     for n in (f"{e.key}.spk", f"{e.key}.{e.wav.rsplit('.', 1)[1]}")]
    payloads = dict(members)
    for entry in table:
        with open(entry.wav, "rb") as handle:
            assert payloads[f"{entry.key}.{entry.wav.rsplit('.', 1)[1]}"] == handle.read()
        assert payloads[f"{entry.key}.spk"].decode() == entry.spk
    assert not [f for f in os.listdir(tmp_path / "shards") if f.startswith(".tmp")]


def test_shard_writing_is_atomic_when_a_file_is_missing(tmp_path):
    wav_scp, utt2spk = make_corpus(str(tmp_path), num_spks=1, utts_per_spk=3)
    table = read_utterance_table(wav_scp, utt2spk)
    os.remove(table[1].wav)
    shards_dir, shard_list = tmp_path / "shards", tmp_path / "shard.list"
    with pytest.raises(OSError, match="spk0-utt1"):
        make_shards(table, str(shards_dir), str(shard_list), num_utts_per_shard=2)
    assert not shard_list.exists()
    assert not (shards_dir / "shards_000000000.tar").exists()
    assert not [f for f in os.listdir(shards_dir) if f.startswith(".tmp")]


def test_raw_list_errors_name_file_and_line(tmp_path):
    raw = tmp_path / "raw.list"
    good = json.dumps({"key": "a", "wav": "a.wav", "spk": "s"})
    raw.write_text(good + "\n\n" + "{not json\n")
    with pytest.raises(DataFormatError, match=r"raw\.list:3: not a JSON object"):
        read_raw_list(str(raw))
    raw.write_text(good + "\n" + json.dumps({"key": "b", "wav": "b.wav"}) + "\n")
    with pytest.raises(DataFormatError, match=r"raw\.list:2: missing field 'spk'"):
        read_raw_list(str(raw))
    assert [u.key for u in read_raw_list(str(raw), require_spk=False)] == ["a", "b"]
    raw.write_text(json.dumps({"key": "c", "wav": "c.wav", "spk": "s", "vad": [[2, 1]]}))
    with pytest.raises(DataFormatError, match=r"raw\.list:1: bad vad segment"):
        read_raw_list(str(raw))


def test_table_errors_name_file_and_line(tmp_path):
    wav_scp, utt2spk = tmp_path / "wav.scp", tmp_path / "utt2spk"
    wav_scp.write_text("u1 /x/u1.wav\n")
    utt2spk.write_text("u1 s1\nu2 s2\n")
    with pytest.raises(DataFormatError, match=r"utt2spk:2: utterance 'u2' is not in"):
        read_utterance_table(str(wav_scp), str(utt2spk))
    utt2spk.write_text("u1\n")
    with pytest.raises(DataFormatError, match=r"utt2spk:1"):
        read_utterance_table(str(wav_scp), str(utt2spk))
    with pytest.raises(DataFormatError, match=r"utt2spk:1"):
        run_tool("make_raw_list.py", str(wav_scp), str(utt2spk), str(tmp_path / "r"))


def test_audio_list_accepts_wav_scp_and_raw_list(tmp_path):
    scp = tmp_path / "noise.scp"
    scp.write_text("noise/a /n/a.wav\nmusic/b sox x.wav -t wav - |\n")
    assert read_audio_list(str(scp)) == [("noise/a", "/n/a.wav"),
                                         ("music/b", "sox x.wav -t wav - |")]
    raw = tmp_path / "noise.list"
    raw.write_text(json.dumps({"key": "speech/c", "wav": "/n/c.wav"}) + "\n")
    assert read_audio_list(str(raw)) == [("speech/c", "/n/c.wav")]
    scp.write_text("noise/a /n/a.wav\nlonely\n")
    with pytest.raises(DataFormatError, match=r"noise\.scp:2"):
        read_audio_list(str(scp))


def test_shards_stream_from_pipe_and_bad_shards_are_counted(tmp_path):
    wav_scp, utt2spk = make_corpus(str(tmp_path), num_spks=2, utts_per_spk=2)
    table = read_utterance_table(wav_scp, utt2spk)
    paths = make_shards(table, str(tmp_path / "shards"), str(tmp_path / "shard.list"),
                        num_utts_per_shard=4)
    stats = PipelineStats()
    piped = list(iter_shard(f"pipe:cat {paths[0]}", stats))
    local = list(iter_shard(paths[0], stats))
    assert [u.key for u in piped] == [u.key for u in local] == [e.key for e in table]
    assert [u.data for u in piped] == [u.data for u in local]
    assert stats.skipped == {}

    not_tar = tmp_path / "not.tar"
    not_tar.write_bytes(b"this is not a tar archive" * 100)
    assert list(iter_shard(str(not_tar), stats)) == []
    assert list(iter_shard(str(tmp_path / "absent.tar"), stats)) == []
    assert list(iter_shard("pipe:exit 3", stats)) == []
    assert stats.skipped[BAD_SHARD] == 3

    # a shard cut in the middle still yields the utterances before the cut
    data = open(paths[0], "rb").read()
    padded_audio = -(-os.path.getsize(table[0].wav) // 512) * 512
    # headers and data of u0.spk, u0.audio, u1.spk, then the header and 100 bytes of u1.audio
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[:512 * 3 + padded_audio + 512 * 3 + 100])
    got = list(iter_shard(str(cut), stats))
    assert [u.key for u in got] == [table[0].key]
    assert stats.skipped[BAD_SHARD] == 4


def test_shard_member_without_audio_is_skipped(tmp_path):
    audio = write_audio(str(tmp_path / "a.wav"), random_int16(1000, seed=1))
    tar_path = tmp_path / "odd.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(audio, arcname="a.wav")
        (tmp_path / "b.spk").write_text("s1")
        tar.add(str(tmp_path / "b.spk"), arcname="b.spk")
    stats = PipelineStats()
    got = list(iter_shard(str(tar_path), stats))
    assert [(u.key, u.spk) for u in got] == [("a", None)]
    assert stats.skipped[BAD_MEMBER] == 1


def test_vad_shards_hold_only_the_voiced_samples(tmp_path):
    samples = random_int16(16000, seed=3)
    path = write_audio(str(tmp_path / "u.flac"), samples)
    entry = TableEntry(key="u", spk="s", wav=path, vad=((0.1, 0.2), (0.5, 0.55)))
    paths = make_shards([entry], str(tmp_path / "shards"), str(tmp_path / "shard.list"))
    with tarfile.open(paths[0]) as tar:
        assert tar.getnames() == ["u.spk", "u.wav"]
        stored, rate = sf.read(io.BytesIO(tar.extractfile("u.wav").read()), dtype="int16")
    assert rate == 16000
    np.testing.assert_array_equal(stored, np.concatenate([samples[1600:3200],
                                                          samples[8000:8800]]))
