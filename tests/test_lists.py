"""Data lists: raw.list / shard.list builders and readers, and their error messages."""
import gzip
import io
import json
import os
import random
import re
import socket
import tarfile
import threading

import numpy as np
import pytest
import soundfile as sf

from dataset_helpers import make_corpus, random_int16, write_audio
from tool_helpers import run_tool
from wespeaker_py.dataset import spk2id_from_utt2spk
from wespeaker_py.dataset.lists import (TableEntry, read_audio_list, read_raw_list, read_shard_list,
                                        read_utterance_table)
from wespeaker_py.dataset import shards
from wespeaker_py.dataset.shards import iter_shard, make_shards
from wespeaker_py.dataset.stats import BAD_MEMBER, BAD_SHARD, PipelineStats
from wespeaker_py.errors import RunFailedError
from wespeaker_py.scoring.embeddings import read_utt2spk
from wespeaker_py.utils.tables import DataFormatError


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
    # and each reads back whole (end-of-archive marker and all)
    stats = PipelineStats()
    assert sum(len(list(iter_shard(path, stats))) for path in paths) == len(table)
    assert stats.skipped == {}


def test_too_many_missing_audio_files_fail_before_any_shard_is_written(tmp_path, caplog):
    wav_scp, utt2spk = make_corpus(str(tmp_path), num_spks=1, utts_per_spk=5)
    table = read_utterance_table(wav_scp, utt2spk)
    for index in (1, 3, 4):   # 3 of 5 (the last in the last shard): more than 0.5
        os.remove(table[index].wav)
    shards_dir, shard_list = tmp_path / "shards", tmp_path / "shard.list"
    with pytest.raises(RunFailedError, match=r"3 of 5 utterances of wav.scp were skipped "
                                             r"\(60%, more than --max_fail_fraction 0.5; "
                                             r"2 done, 3 skipped \(3 missing_file\)\); no "
                                             r"shard was written"):
        make_shards(table, str(shards_dir), str(shard_list), num_utts_per_shard=2)
    assert "3 of the 5 audio files of wav.scp are missing or not files: " \
        f"{table[1].wav}, {table[3].wav}, {table[4].wav}" in caplog.text
    assert not shard_list.exists()
    assert not shards_dir.exists()
    # fewer are left out of their shards and counted, as any unreadable utterance
    paths = make_shards(table, str(shards_dir), str(shard_list), num_utts_per_shard=2,
                        max_fail_fraction=0.6)
    assert read_shard_list(str(shard_list)) == paths
    stats = PipelineStats()
    assert [utt.key for path in paths for utt in iter_shard(path, stats)] == \
        [table[0].key, table[2].key]


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


def test_table_errors_name_file_and_line(tmp_path, capsys):
    wav_scp, utt2spk = tmp_path / "wav.scp", tmp_path / "utt2spk"
    wav_scp.write_text("u1 /x/u1.wav\n")
    utt2spk.write_text("u1 s1\nu2 s2\n")
    with pytest.raises(DataFormatError, match=r"utt2spk:2: utterance 'u2' is not in"):
        read_utterance_table(str(wav_scp), str(utt2spk))
    utt2spk.write_text("u1\n")
    with pytest.raises(DataFormatError, match=r"utt2spk:1"):
        read_utterance_table(str(wav_scp), str(utt2spk))
    with pytest.raises(SystemExit) as stop:
        run_tool("make_raw_list.py", str(wav_scp), str(utt2spk), str(tmp_path / "r"))
    assert stop.value.code == 2 and f"{utt2spk}:1" in capsys.readouterr().err


CONTRADICTION = r"utt2spk:3: utterance 'u1' has speaker 's2' here and 's1' on line 1"


def test_an_utterance_given_two_speakers_names_both_lines(tmp_path, capsys):
    wav_scp, utt2spk = tmp_path / "wav.scp", tmp_path / "utt2spk"
    wav_scp.write_text("u1 /x/u1.wav\nu2 /x/u2.wav\n")
    utt2spk.write_text("u1 s1\nu2 s2\nu1 s2\n")
    with pytest.raises(DataFormatError, match=CONTRADICTION):
        read_utterance_table(str(wav_scp), str(utt2spk))
    with pytest.raises(SystemExit) as stop:
        run_tool("make_raw_list.py", str(wav_scp), str(utt2spk), str(tmp_path / "raw.list"))
    assert stop.value.code == 2
    assert re.search(CONTRADICTION, capsys.readouterr().err)
    assert not (tmp_path / "raw.list").exists()


def test_training_and_scoring_refuse_two_speakers_of_one_utterance_alike(tmp_path):
    # training's speaker map used to count both speakers (three classes here)
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("u1 s1\nu2 s3\nu1 s2\n")
    messages = []
    for read in (spk2id_from_utt2spk, read_utt2spk):
        with pytest.raises(DataFormatError, match=CONTRADICTION) as refused:
            read(str(utt2spk))
        messages.append(str(refused.value))
    assert messages[0] == messages[1] and messages[0].startswith(f"{utt2spk}:3: ")


def test_an_exactly_repeated_utt2spk_line_is_skipped_with_one_warning(tmp_path, caplog):
    wav_scp, utt2spk = tmp_path / "wav.scp", tmp_path / "utt2spk"
    wav_scp.write_text("u1 /x/u1.wav\nu2 /x/u2.wav\n")
    utt2spk.write_text("u1 s1\nu2 s2\nu1 s1\nu2  s2\nu1 s1\n")
    with caplog.at_level("WARNING"):
        entries = read_utterance_table(str(wav_scp), str(utt2spk))
    assert [(e.key, e.spk) for e in entries] == [("u1", "s1"), ("u2", "s2")]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"{utt2spk}: 3 line(s) repeat an earlier line exactly and are "
                        "skipped (the first: line 3, 'u1 s1', as on line 1)"]
    assert spk2id_from_utt2spk(str(utt2spk)) == {"s1": 0, "s2": 1}
    assert read_utt2spk(str(utt2spk)) == [(1, "s1", ["u1"]), (2, "s2", ["u2"])]


def test_an_utt2spk_line_of_three_fields_is_refused(tmp_path):
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("u1 s1\nu2 s2 extra\n")
    for read in (spk2id_from_utt2spk, read_utt2spk):
        with pytest.raises(DataFormatError, match=r"utt2spk:2: expected at most 2 fields"):
            read(str(utt2spk))


def test_wav_scp_entries_without_a_speaker_are_left_out_with_a_warning(tmp_path, caplog):
    wav_scp, utt2spk = tmp_path / "wav.scp", tmp_path / "utt2spk"
    wav_scp.write_text("u1 /x/u1.wav\nu2 /x/u2.wav\nu3 /x/u3.wav\n")
    utt2spk.write_text("u1 s1\n")
    with caplog.at_level("WARNING"):
        assert [e.key for e in read_utterance_table(str(wav_scp), str(utt2spk))] == ["u1"]
    assert f"2 of the 3 utterances of {wav_scp} are not in {utt2spk}" in caplog.text
    assert "(the first: 'u2')" in caplog.text


def test_a_byte_order_mark_is_not_part_of_the_first_key(tmp_path):
    bom = "\ufeff"
    wav_scp, utt2spk = tmp_path / "wav.scp", tmp_path / "utt2spk"
    wav_scp.write_text(bom + "A0 /x/a0.wav\nA1 /x/a1.wav\n", encoding="utf-8")
    utt2spk.write_text(bom + "A0 s\nA1 s\n", encoding="utf-8")
    assert [e.key for e in read_utterance_table(str(wav_scp), str(utt2spk))] == ["A0", "A1"]
    vad = tmp_path / "vad"
    vad.write_text(bom + "A0 0 1\n", encoding="utf-8")
    table = read_utterance_table(str(wav_scp), str(utt2spk), str(vad), drop_without_vad=True)
    assert [e.key for e in table] == ["A0"]
    assert spk2id_from_utt2spk(str(utt2spk)) == {"s": 0}
    raw = tmp_path / "raw.list"
    raw.write_text(bom + json.dumps({"key": "A0", "wav": "/x/a0.wav", "spk": "s"}) + "\n",
                   encoding="utf-8")
    assert [u.key for u in read_raw_list(str(raw))] == ["A0"]
    shard_list = tmp_path / "shard.list"
    shard_list.write_text(bom + "/x/shards_000000000.tar\n", encoding="utf-8")
    assert read_shard_list(str(shard_list)) == ["/x/shards_000000000.tar"]


@pytest.mark.parametrize("tool", ["make_raw_list.py", "make_shard_list.py"])
def test_a_vad_file_given_that_does_not_exist_is_an_error(tmp_path, capsys, tool):
    wav_scp, utt2spk = make_corpus(str(tmp_path), num_spks=1, utts_per_spk=2)
    outputs = ([str(tmp_path / "shards")] if tool == "make_shard_list.py" else []) + \
        [str(tmp_path / "out.list")]
    missing = str(tmp_path / "vda.txt")
    with pytest.raises(SystemExit) as exit_info:
        run_tool(tool, "--vad_file", missing, wav_scp, utt2spk, *outputs)
    assert exit_info.value.code == 2
    assert f"{missing} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out.list").exists()
    # WeSpeaker's default, given or not, still means "no VAD file"
    run_tool(tool, "--vad_file", "non_exist", wav_scp, utt2spk, *outputs)
    assert (tmp_path / "out.list").exists()


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


def test_shards_cut_or_damaged_at_a_header_are_counted_after_their_utterances(tmp_path,
                                                                              caplog):
    wav_scp, utt2spk = make_corpus(str(tmp_path), num_spks=2, utts_per_spk=3)
    table = read_utterance_table(wav_scp, utt2spk)
    (path,) = make_shards(table, str(tmp_path / "shards"), str(tmp_path / "shard.list"),
                          num_utts_per_shard=6)
    whole = open(path, "rb").read()
    with tarfile.open(path) as tar:
        # the header of the 4th utterance's .spk member
        header = tar.getmembers()[6].offset
    keys = [e.key for e in table]

    def read(name, data):
        (tmp_path / name).write_bytes(data)
        stats = PipelineStats()
        got = [u.key for u in iter_shard(str(tmp_path / name), stats)]
        return got, dict(stats.skipped)

    # our own shards, plain or gzipped, are whole
    assert read("whole.tar", whole) == (keys, {})
    assert read("whole.tar.gz", gzip.compress(whole)) == (keys, {})
    garbage = bytearray(whole)
    garbage[header:header + 512] = b"\xff" * 512
    zeroed = bytearray(whole)
    zeroed[header:header + 512] = bytes(512)
    for name, data in [("cut_at_header.tar", whole[:header]),
                       ("cut_in_header.tar", whole[:header + 100]),
                       ("garbage_header.tar", bytes(garbage)),
                       ("zeroed_header.tar", bytes(zeroed)),
                       ("cut.tar.gz", gzip.compress(whole[:header]))]:
        assert read(name, data) == (keys[:3], {BAD_SHARD: 1}), name
    assert caplog.text.count("no end-of-archive marker: truncated or corrupt") == 4
    assert "zeroed_header.tar (bad_shard): data after an all-zero header block" in caplog.text

    # a writer that died between two utterances leaves no end-of-archive blocks
    died = tmp_path / "died.tar"
    with pytest.raises(OSError):
        with tarfile.open(died, "w") as tar:
            tar.add(table[0].wav, arcname="u0.flac")
            raise OSError("the next wav is missing")
    stats = PipelineStats()
    assert [u.key for u in iter_shard(str(died), stats)] == ["u0"]
    assert stats.skipped == {BAD_SHARD: 1}


def stalling_server(body: bytes, sent: int, release: threading.Event):
    """A one-request HTTP server that sends ``body[:sent]`` of a ``len(body)`` reply, then
    nothing until ``release`` is set; returns its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve():
        connection, _ = server.accept()
        with connection, server:
            connection.recv(4096)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
                               + body[:sent])
            release.wait(30)

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


def test_a_stalling_shard_server_is_a_bad_shard_after_the_timeout(monkeypatch, caplog):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for key in ("a", "b"):
            for suffix, data in (("spk", b"s"), ("wav", bytes(20000))):
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    body = buffer.getvalue()
    monkeypatch.setattr(shards, "URL_TIMEOUT_S", 0.5, raising=False)
    release = threading.Event()
    # all but the last byte: tarfile reads 10 KiB records, so b's data never completes
    port = stalling_server(body, len(body) - 1, release)
    stats = PipelineStats()
    got = []
    reader = threading.Thread(target=lambda: got.extend(
        u.key for u in iter_shard(f"http://127.0.0.1:{port}/s.tar", stats)), daemon=True)
    reader.start()
    reader.join(10)
    release.set()
    assert not reader.is_alive(), "iter_shard still waits on a stalled server after 10 s"
    assert got == ["a"]
    assert stats.skipped == {BAD_SHARD: 1}
    assert "the server sent nothing for 0.5 s" in caplog.text


@pytest.mark.parametrize("tool", ["make_raw_list.py", "make_shard_list.py"])
def test_list_makers_refuse_audio_soundfile_cannot_decode(tmp_path, monkeypatch, capsys, tool):
    wav_scp, utt2spk = make_corpus(str(tmp_path), num_spks=1, utts_per_spk=2)
    (tmp_path / "audio" / "spk0-utt9.m4a").write_bytes(b"an AAC stream in an MP4 box")
    with open(wav_scp, "a") as handle:
        handle.write(f"spk0-utt9 {tmp_path}/audio/spk0-utt9.m4a\n")
    with open(utt2spk, "a") as handle:
        handle.write("spk0-utt9 spk0\n")
    outputs = [str(tmp_path / "out.list")] if tool == "make_raw_list.py" else \
        [str(tmp_path / "shards"), str(tmp_path / "out.list")]

    def refusal():
        """The one line (exit status 2, no traceback) the tool stops with."""
        with pytest.raises(SystemExit) as stop:
            run_tool(tool, wav_scp, utt2spk, *outputs)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and "Traceback" not in err
        return err

    assert re.search(r"error: utterance spk0-utt9: soundfile .* cannot decode \.m4a files "
                     r"such as '.*spk0-utt9\.m4a'; convert them first \(e\.g\. to wav or "
                     r"flac\)", refusal())
    assert not os.path.exists(tmp_path / "out.list")
    assert not os.path.exists(tmp_path / "shards")
    # what soundfile can decode is asked at run time, not listed here
    formats = {name: text for name, text in sf.available_formats().items() if name != "FLAC"}
    monkeypatch.setattr(sf, "available_formats", lambda: formats)
    assert "cannot decode .flac files" in refusal()


def test_third_party_shards_keep_their_m4a_members(tmp_path):
    tar_path = tmp_path / "theirs.tar"
    with tarfile.open(tar_path, "w") as tar:
        for name, data in (("k.spk", b"s1"), ("k.m4a", b"not decoded yet")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    stats = PipelineStats()
    got = list(iter_shard(str(tar_path), stats))
    assert [(u.key, u.spk, u.data) for u in got] == [("k", "s1", b"not decoded yet")]
    assert stats.skipped == {}


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


def test_a_list_of_the_other_data_type_says_which_data_type_reads_it(tmp_path):
    raw = tmp_path / "raw.list"
    raw.write_text(json.dumps({"key": "u1", "wav": "a.wav", "spk": "s1"}) + "\n")
    with pytest.raises(DataFormatError, match=r"raw.list:1: a raw-list JSON line, not a shard "
                                              r"location: .*--data_type raw"):
        read_shard_list(str(raw))
    shard = tmp_path / "shard.list"
    shard.write_text("/data/shards/shards_000000000.tar\n")
    with pytest.raises(DataFormatError, match=r"shard.list:1: not a JSON object .* looks like "
                                              r"a shard location: .*--data_type shard"):
        read_raw_list(str(shard))
    other = tmp_path / "other.list"
    other.write_text("not json at all\n")
    with pytest.raises(DataFormatError) as refused:
        read_raw_list(str(other))
    assert "shard" not in str(refused.value)
