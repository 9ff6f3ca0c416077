"""Combining short utterances (wespeaker_py.dataset.combine, tools/combine_short_utts.py):
Kaldi's grouping rule, grouping by speaker and genre, the written audio and lists."""
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from recipe_helpers import REPO, read_table, write_tone
from wespeaker_py.dataset.combine import (combine_short_utterances, combined_key, genre_group,
                                          group_consecutive, plan_pieces)
from wespeaker_py.errors import RunFailedError
from wespeaker_py.utils.tables import DataFormatError

RATE = 16000


@pytest.mark.parametrize("min_duration,durations,groups", [
    # the examples Kaldi's choose_utts_to_combine.py documents and tests itself with
    (0.1, [5.0, 6.0, 7.0], [(0, 1), (1, 2), (2, 3)]),
    (0.5, [0.1, 6.0, 7.0], [(0, 2), (2, 3)]),
    (0.5, [6.0, 7.0, 0.1], [(0, 1), (1, 3)]),
    (0.5, [6.0, 0.1, 7.0], [(0, 2), (2, 3)]),
    (0.5, [7.0, 0.1, 6.0], [(0, 2), (2, 3)]),
    (1.0, [1.0, 0.5, 0.1, 6.0], [(0, 3), (3, 4)]),
    (1.0, [0.5, 0.6, 0.7], [(0, 3)]),
    (1.0, [0.5, 0.6, 1.7], [(0, 2), (2, 3)]),
    # everything together short: one group shorter than the minimum
    (5.0, [1.0, 1.0], [(0, 2)]),
    (5.0, [1.0], [(0, 1)]),
    # no minimum: every utterance alone
    (0.0, [0.01, 0.02], [(0, 1), (1, 2)]),
    # the short ones join their left neighbour while the right one is long enough
    (3.0, [6.0, 1.0, 1.0, 6.0], [(0, 3), (3, 4)]),
])
def test_group_consecutive_follows_kaldis_rule(min_duration, durations, groups):
    assert group_consecutive(durations, min_duration) == groups


def test_group_consecutive_properties_on_random_durations():
    rng = random.Random(0)
    for _ in range(500):
        durations = [0.01 * rng.randint(1, 10) for _ in range(rng.randint(1, 15))]
        groups = group_consecutive(durations, 0.05)
        # consecutive, in order, every index once
        assert [i for start, end in groups for i in range(start, end)] == \
            list(range(len(durations)))
        assert all(start < end for start, end in groups)
        if len(groups) > 1:
            assert all(sum(durations[start:end]) >= 0.05 - 1e-5 for start, end in groups)
        # differences far below the tolerance never change a grouping
        nudged = [d + 1e-7 * rng.randint(-5, 5) for d in durations]
        assert group_consecutive(nudged, 0.05) == groups


def test_group_consecutive_refuses_what_has_no_grouping():
    with pytest.raises(ValueError, match="min_duration"):
        group_consecutive([1.0], -1.0)
    with pytest.raises(ValueError, match="> 0"):
        group_consecutive([1.0, 0.0], 1.0)
    assert group_consecutive([], 1.0) == []


def test_pieces_stay_within_a_speaker_and_genre_and_are_named_as_wespeaker():
    assert genre_group("id00000/interview-01-001") == "id00000/interview"
    assert combined_key(["a/x-01-001"]) == "a/x-01-001"
    assert combined_key(["a/x-01-001", "a/x-01-002", "a/x-02-001"]) == "a/x-01-001-comb3"
    durations = {"a/sing-01-001": 1.0, "a/sing-01-002": 1.0, "a/talk-01-001": 1.0,
                 "b/sing-01-001": 1.0, "a/sing-02-001": 4.0}
    # a/sing-02-001 joins its genre although the list puts other genres between
    assert plan_pieces(durations, 5.0) == [
        ["a/sing-01-001", "a/sing-01-002", "a/sing-02-001"], ["a/talk-01-001"],
        ["b/sing-01-001"]]


def _corpus(root, durations):
    """FLAC files of the given seconds (distinct signals), and their wav.scp."""
    lines = []
    for index, (key, seconds) in enumerate(durations.items()):
        path = os.path.join(root, "flac", key + ".flac")
        write_tone(path, seconds, RATE, 100 + 30 * index, seed=index)
        lines.append(f"{key} {path}\n")
    scp = os.path.join(root, "in.scp")
    with open(scp, "w") as out:
        out.writelines(lines)
    return scp


DURATIONS = {"s1/talk-01-001": 1.0, "s1/talk-01-002": 2.0, "s1/talk-01-003": 6.0,
             "s1/sing-01-001": 1.5, "s2/vlog-01-001": 3.0, "s2/vlog-01-002": 2.5}


def test_combined_audio_and_lists(tmp_path):
    scp = _corpus(str(tmp_path), DURATIONS)
    audio, lists = tmp_path / "audio", tmp_path / "lists"
    result = combine_short_utterances(scp, str(audio), str(lists), 5.0, key_suffix=".wav")
    assert result.inputs == 6 and result.combined == 2 and not result.skipped
    wav_scp = read_table(lists / "wav.scp")
    assert sorted(wav_scp) == ["s1/sing-01-001.wav", "s1/talk-01-001-comb3.wav",
                               "s2/vlog-01-001-comb2.wav"]
    # one utterance: its own file; a piece: the concatenated samples as 16-bit wav
    assert wav_scp["s1/sing-01-001.wav"] == [str(tmp_path / "flac" / "s1" / "sing-01-001.flac")]
    piece = str(audio / "s1" / "talk-01-001-comb3.wav")
    assert wav_scp["s1/talk-01-001-comb3.wav"] == [piece]
    samples, rate = sf.read(piece, dtype="int16")
    parts = [sf.read(str(tmp_path / "flac" / "s1" / f"talk-01-00{i}.flac"), dtype="int16")[0]
             for i in (1, 2, 3)]
    assert rate == RATE and sf.info(piece).subtype == "PCM_16"
    np.testing.assert_array_equal(samples, np.concatenate(parts))
    assert read_table(lists / "utt2utts")["s1/talk-01-001-comb3.wav"] == [
        "s1/talk-01-001", "s1/talk-01-002", "s1/talk-01-003"]
    assert read_table(lists / "utt2dur") == {"s1/sing-01-001.wav": ["1.5000"],
                                             "s1/talk-01-001-comb3.wav": ["9.0000"],
                                             "s2/vlog-01-001-comb2.wav": ["5.5000"]}
    assert read_table(lists / "utt2spk")["s2/vlog-01-001-comb2.wav"] == ["s2"]
    with open(lists / "wav.scp") as handle:
        keys = [line.split()[0] for line in handle]
    assert keys == sorted(keys)


def test_a_rerun_keeps_written_pieces_and_parallel_runs_agree(tmp_path):
    scp = _corpus(str(tmp_path), DURATIONS)
    audio = tmp_path / "audio"
    combine_short_utterances(scp, str(audio), str(tmp_path / "one"), 5.0)
    kept, removed = audio / "s1" / "talk-01-001-comb3.wav", audio / "s2" / "vlog-01-001-comb2.wav"
    before = os.stat(kept).st_mtime_ns
    os.remove(removed)
    combine_short_utterances(scp, str(audio), str(tmp_path / "two"), 5.0, nj=2)
    assert os.stat(kept).st_mtime_ns == before and removed.is_file()
    for name in ("wav.scp", "utt2spk", "utt2dur", "utt2utts"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text()
    assert not [name for name in os.listdir(audio / "s1") if not name.endswith(".wav")]


def test_no_minimum_lists_every_utterance_as_it_is(tmp_path):
    scp = _corpus(str(tmp_path), DURATIONS)
    combine_short_utterances(scp, str(tmp_path / "audio"), str(tmp_path / "lists"), 0.0)
    assert sorted(read_table(tmp_path / "lists" / "wav.scp")) == sorted(DURATIONS)
    assert not (tmp_path / "audio").exists()


def test_unreadable_files_are_skipped_and_reported(tmp_path):
    scp = _corpus(str(tmp_path), DURATIONS)
    flac = tmp_path / "flac"
    (flac / "s1" / "sing-01-001.flac").write_bytes(b"not audio" * 20)   # header unreadable
    with open(flac / "s2" / "vlog-01-002.flac", "r+b") as handle:     # body cut short
        handle.truncate(os.path.getsize(flac / "s2" / "vlog-01-002.flac") // 2)
    with open(scp, "a") as out:
        out.write(f"s3/talk-01-001 {tmp_path / 'missing.flac'}\n")
    result = combine_short_utterances(scp, str(tmp_path / "audio"), str(tmp_path / "lists"), 5.0)
    assert result.skipped == {"s1/sing-01-001": "not_audio", "s3/talk-01-001": "missing_file",
                              "s2/vlog-01-002": "truncated"}
    # the truncated file's partner stays, alone
    assert sorted(read_table(tmp_path / "lists" / "wav.scp")) == ["s1/talk-01-001-comb3",
                                                                  "s2/vlog-01-001"]
    line = result.describe()
    assert "; 3 skipped (1 missing_file, 1 not_audio, 1 truncated)" in line
    assert "s1/sing-01-001" in line and "s3/talk-01-001" in line


def _truncate(path):
    """Cut the body of an audio file: its header still reads, decoding it fails."""
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)


def _samples(*paths):
    return np.concatenate([sf.read(str(path), dtype="int16")[0] for path in paths])


SHORT = {"s/x-01-001": 1.5, "s/x-01-002": 6.0, "s/x-01-003": 3.0}


def test_a_piece_written_with_other_members_is_written_again(tmp_path):
    scp = _corpus(str(tmp_path), SHORT)
    flac, audio = tmp_path / "flac" / "s", tmp_path / "audio"
    os.rename(flac / "x-01-002.flac", tmp_path / "aside.flac")   # unreadable in run 1
    one = combine_short_utterances(scp, str(audio), str(tmp_path / "one"), 2.0)
    assert read_table(tmp_path / "one" / "utt2utts")["s/x-01-001-comb2"] == [
        "s/x-01-001", "s/x-01-003"]
    piece = audio / "s" / "x-01-001-comb2.wav"
    np.testing.assert_array_equal(sf.read(str(piece), dtype="int16")[0],
                                  _samples(flac / "x-01-001.flac", flac / "x-01-003.flac"))
    assert one.skipped == {"s/x-01-002": "missing_file"}
    os.rename(tmp_path / "aside.flac", flac / "x-01-002.flac")   # fixed: the same name now
    two = combine_short_utterances(scp, str(audio), str(tmp_path / "two"), 2.0)
    assert not two.skipped
    assert read_table(tmp_path / "two" / "utt2utts")["s/x-01-001-comb2"] == [
        "s/x-01-001", "s/x-01-002"]
    np.testing.assert_array_equal(sf.read(str(piece), dtype="int16")[0],
                                  _samples(flac / "x-01-001.flac", flac / "x-01-002.flac"))
    assert read_table(tmp_path / "two" / "utt2dur")["s/x-01-001-comb2"] == [
        f"{sf.info(str(piece)).frames / RATE:.4f}"] == ["7.5000"]
    assert _manifest(audio) == [["s/x-01-001-comb2", "s/x-01-001", "s/x-01-003"],
                                ["s/x-01-001-comb2", "s/x-01-001", "s/x-01-002"]]


def test_a_changed_list_rewrites_a_piece_of_the_same_name(tmp_path):
    scp = _corpus(str(tmp_path), {"s/x-01-001": 1.5, "s/x-01-002": 1.0, "s/x-01-004": 1.0,
                                  "s/x-01-003": 6.0})
    lines = open(scp).readlines()
    flac, audio = tmp_path / "flac" / "s", tmp_path / "audio"
    piece = audio / "s" / "x-01-001-comb2.wav"
    for dropped, partner in ((2, "x-01-002"), (1, "x-01-004")):
        with open(scp, "w") as out:
            out.writelines(line for index, line in enumerate(lines) if index != dropped)
        combine_short_utterances(scp, str(audio), str(tmp_path / "lists"), 2.0)
        assert read_table(tmp_path / "lists" / "utt2utts")["s/x-01-001-comb2"] == [
            "s/x-01-001", f"s/{partner}"]
        np.testing.assert_array_equal(sf.read(str(piece), dtype="int16")[0],
                                      _samples(flac / "x-01-001.flac", flac / f"{partner}.flac"))


def test_a_piece_file_the_manifest_does_not_list_is_written_again(tmp_path):
    scp = _corpus(str(tmp_path), SHORT)
    flac, audio = tmp_path / "flac" / "s", tmp_path / "audio"
    piece = audio / "s" / "x-01-001-comb2.wav"
    os.makedirs(piece.parent)
    # a run cut short after writing the file, before its manifest line
    sf.write(str(piece), np.zeros(RATE, dtype=np.int16), RATE, subtype="PCM_16")
    combine_short_utterances(scp, str(audio), str(tmp_path / "lists"), 2.0)
    np.testing.assert_array_equal(sf.read(str(piece), dtype="int16")[0],
                                  _samples(flac / "x-01-001.flac", flac / "x-01-002.flac"))
    assert _manifest(audio) == [["s/x-01-001-comb2", "s/x-01-001", "s/x-01-002"]]


def _manifest(audio):
    """The manifest's lines as ``[piece, member, ...]``, each line's sources digest checked
    for its form and left out."""
    rows = [line.split() for line in (audio / "pieces.txt").read_text().splitlines()]
    assert all(len(row) > 2 and re.fullmatch(r"src:[0-9a-f]{16}", row[1]) for row in rows)
    return [[row[0]] + row[2:] for row in rows]


def test_a_member_file_replaced_under_its_name_rewrites_the_piece(tmp_path):
    scp = _corpus(str(tmp_path), SHORT)
    flac, audio = tmp_path / "flac" / "s", tmp_path / "audio"
    piece = audio / "s" / "x-01-001-comb2.wav"
    combine_short_utterances(scp, str(audio), str(tmp_path / "lists"), 2.0)
    kept = os.stat(piece).st_mtime_ns
    combine_short_utterances(scp, str(audio), str(tmp_path / "lists"), 2.0)
    assert os.stat(piece).st_mtime_ns == kept   # nothing changed: reused
    # the same duration, other samples: the grouping is the same, the piece is not
    write_tone(str(flac / "x-01-002.flac"), SHORT["s/x-01-002"], RATE, 440, seed=99)
    combine_short_utterances(scp, str(audio), str(tmp_path / "lists"), 2.0)
    np.testing.assert_array_equal(sf.read(str(piece), dtype="int16")[0],
                                  _samples(flac / "x-01-001.flac", flac / "x-01-002.flac"))
    assert [row[0] for row in _manifest(audio)] == ["s/x-01-001-comb2"] * 2


def test_a_manifest_line_without_sources_is_written_again(tmp_path):
    scp = _corpus(str(tmp_path), SHORT)
    flac, audio = tmp_path / "flac" / "s", tmp_path / "audio"
    piece = audio / "s" / "x-01-001-comb2.wav"
    os.makedirs(piece.parent)
    # a piece and manifest line of the format before sources were recorded
    sf.write(str(piece), np.zeros(RATE, dtype=np.int16), RATE, subtype="PCM_16")
    (audio / "pieces.txt").write_text("s/x-01-001-comb2 s/x-01-001 s/x-01-002\n")
    combine_short_utterances(scp, str(audio), str(tmp_path / "lists"), 2.0)
    np.testing.assert_array_equal(sf.read(str(piece), dtype="int16")[0],
                                  _samples(flac / "x-01-001.flac", flac / "x-01-002.flac"))


def test_a_truncated_member_is_skipped_alone_and_the_rest_grouped_again(tmp_path):
    scp = _corpus(str(tmp_path), {"s/x-01-001": 1.0, "s/x-01-002": 1.5, "s/x-01-003": 1.2,
                                  "s/x-01-004": 6.0})
    flac, audio = tmp_path / "flac" / "s", tmp_path / "audio"
    _truncate(flac / "x-01-002.flac")
    with pytest.raises(sf.LibsndfileError):   # its header reads, its samples do not
        sf.read(str(flac / "x-01-002.flac"))
    # with it, the plan was one piece of 001, 002 and 003
    result = combine_short_utterances(scp, str(audio), str(tmp_path / "lists"), 2.0)
    assert result.skipped == {"s/x-01-002": "truncated"}
    assert read_table(tmp_path / "lists" / "utt2utts") == {
        "s/x-01-001-comb2": ["s/x-01-001", "s/x-01-003"], "s/x-01-004": ["s/x-01-004"]}
    np.testing.assert_array_equal(
        sf.read(str(audio / "s" / "x-01-001-comb2.wav"), dtype="int16")[0],
        _samples(flac / "x-01-001.flac", flac / "x-01-003.flac"))
    assert not (audio / "s" / "x-01-001-comb3.wav").exists()


def test_bad_input_lists_are_errors_naming_the_file(tmp_path):
    scp = tmp_path / "in.scp"
    scp.write_text("s1/a-01-001 /x.flac\ns1/a-01-002\n")
    with pytest.raises(DataFormatError, match=r"in\.scp:2"):
        combine_short_utterances(str(scp), str(tmp_path), str(tmp_path), 5.0)
    scp.write_text("s1/a-01-001 sox x.wav -t wav - |\n")
    with pytest.raises(DataFormatError, match="pipes are not supported"):
        combine_short_utterances(str(scp), str(tmp_path), str(tmp_path), 5.0)
    scp.write_text(f"s1/a-01-001 {tmp_path / 'none.flac'}\n")
    with pytest.raises(RunFailedError, match="no file of .*in.scp is readable"):
        combine_short_utterances(str(scp), str(tmp_path), str(tmp_path / "lists"), 5.0)
    assert not (tmp_path / "lists").exists()


def _tool(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "combine_short_utts.py"),
                           *args], capture_output=True, text=True, env=env)


def test_the_tool_reports_what_it_did_and_errors_in_one_line(tmp_path):
    scp = _corpus(str(tmp_path), DURATIONS)
    done = _tool("--min_duration", "5", "--nj", "2", "--key_suffix", ".wav", scp,
                 str(tmp_path / "audio"), str(tmp_path / "lists"))
    assert done.returncode == 0, done.stderr
    assert "6 utterances -> 3 (2 combined from 5)" in done.stdout
    assert "s2/vlog-01-001-comb2.wav" in read_table(tmp_path / "lists" / "utt2utts")
    (tmp_path / "bad.scp").write_text("lonely\n")
    bad = _tool(str(tmp_path / "bad.scp"), str(tmp_path / "audio"), str(tmp_path / "lists"))
    assert bad.returncode == 2 and "bad.scp:1: expected" in bad.stderr
    assert "Traceback" not in bad.stderr
    negative = _tool("--min_duration", "-1", scp, str(tmp_path), str(tmp_path))
    assert negative.returncode == 2 and "must be a finite number >= 0, got -1" in negative.stderr
