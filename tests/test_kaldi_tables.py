"""Kaldi tables read through utils.tables: repeated keys name both lines, VAD files that
match no utterance are refused, and noise lists are read with one rule."""
import json
import os
import tarfile

import numpy as np
import pytest
import soundfile as sf

from finetune_helpers import read_finetune_data
from tool_helpers import run_tool
from wespeaker_py.dataset.lists import read_audio_list, read_utterance_table
from wespeaker_py.diarization.synthetic import SpeakerCorpus
from wespeaker_py.finetune.data import FinetuneDataError
from wespeaker_py.utils.tables import read_utt2dur
from wespeaker_py.scoring.embeddings import read_spk2utt
from wespeaker_py.utils.tables import DataFormatError


@pytest.fixture
def table(tmp_path):
    """wav.scp and utt2spk of three utterances (the files need not exist)."""
    wav_scp, utt2spk = tmp_path / "wav.scp", tmp_path / "utt2spk"
    wav_scp.write_text("u1 /x/u1.wav\nu2 /x/u2.wav\nu3 /x/u3.wav\n")
    utt2spk.write_text("u1 s1\nu2 s1\nu3 s2\n")
    return str(wav_scp), str(utt2spk)


def test_spk2utt_and_utt2dur_name_both_lines_of_a_repeated_key(tmp_path):
    spk2utt = tmp_path / "spk2utt"
    spk2utt.write_text("s1 u1 u2\ns2 u3\ns1 u4\n")
    with pytest.raises(DataFormatError,
                       match=r"spk2utt:3: duplicate speaker 's1', already on line 1"):
        read_spk2utt(str(spk2utt))
    utt2dur = tmp_path / "utt2dur"
    utt2dur.write_text("u1 1.0\nu2 2.0\nu2 3.0\n")
    with pytest.raises(DataFormatError,
                       match=r"utt2dur:3: duplicate utterance 'u2', already on line 2"):
        read_utt2dur(str(utt2dur))


def test_finetune_segments_refuse_a_repeated_segment(tmp_path):
    # the last line used to win silently
    (tmp_path / "wav.scp").write_text("rec1 /x/rec1.wav\n")
    (tmp_path / "utt2spk").write_text("a s1\nb s2\n")
    (tmp_path / "segments").write_text("a rec1 0.0 1.0\nb rec1 1.0 2.0\na rec1 2.0 3.0\n")
    with pytest.raises(FinetuneDataError,
                       match=r"segments:3: duplicate segment 'a', already on line 1"):
        read_finetune_data(str(tmp_path))


def test_synthetic_corpus_resolves_relative_paths_and_leaves_pipes(tmp_path, monkeypatch):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "wav.scp").write_text(
        "u1 wav/u1.wav\nu2 sox wav/u2.flac -t wav - |\nu3 /abs/u3.wav\n")
    (tmp_path / "corpus" / "utt2spk").write_text("u1 s1\nu2 s1\nu3 s2\n")
    monkeypatch.chdir(tmp_path)
    corpus = SpeakerCorpus("corpus")
    assert corpus.utterances == {
        "s1": [os.path.join(os.getcwd(), "corpus", "wav", "u1.wav"),
               "sox wav/u2.flac -t wav - |"],
        "s2": ["/abs/u3.wav"]}


def test_audio_list_names_both_lines_of_a_repeated_key(tmp_path):
    scp = tmp_path / "noise.scp"
    scp.write_text("noise/a /n/a.wav\nnoise/b /n/b.wav\nnoise/a /n/c.wav\n")
    with pytest.raises(DataFormatError,
                       match=r"noise\.scp:3: duplicate key 'noise/a', already on line 1"):
        read_audio_list(str(scp))
    raw = tmp_path / "noise.list"
    raw.write_text("".join(json.dumps({"key": key, "wav": f"/n/{i}.wav"}) + "\n"
                           for i, key in enumerate(["speech/a", "speech/a"])))
    with pytest.raises(DataFormatError, match=r"noise\.list:2: duplicate key 'speech/a'"):
        read_audio_list(str(raw))
    # one format a file: a JSON line in a wav.scp-style list is named, not read as a key
    scp.write_text('noise/a /n/a.wav\n{"key": "noise/b", "wav": "/n/b.wav"}\n')
    with pytest.raises(DataFormatError, match=r"noise\.scp:2: a raw.list JSON line"):
        read_audio_list(str(scp))


def test_a_vad_file_of_other_keys_is_refused_naming_both_sides(table, tmp_path):
    wav_scp, utt2spk = table
    vad = tmp_path / "vad"
    vad.write_text("rec9 0.0 1.0\nrec9 1.5 2.0\nrec8 0.0 2.0\n")   # another corpus's
    message = (rf"{vad}: none of its keys \(e.g. 'rec9', 2 in all\) is an utterance of "
               rf"{utt2spk} \(e.g. 'u1'\)")
    for drop in (True, False):
        with pytest.raises(DataFormatError, match=message):
            read_utterance_table(wav_scp, utt2spk, str(vad), drop_without_vad=drop)
    vad.write_text("\n")
    with pytest.raises(DataFormatError, match=rf"{vad}: holds no segments"):
        read_utterance_table(wav_scp, utt2spk, str(vad))


@pytest.mark.parametrize("tool, outputs", [("make_raw_list.py", ["raw.list"]),
                                           ("make_shard_list.py", ["shards", "shard.list"])])
def test_list_tools_refuse_a_vad_file_that_matches_no_utterance(table, tmp_path, capsys,
                                                                tool, outputs):
    # an empty raw.list with status 0, and shards that ignored the VAD file, before
    wav_scp, utt2spk = table
    vad = tmp_path / "vad"
    vad.write_text("other 0.0 1.0\n")
    outputs = [str(tmp_path / name) for name in outputs]
    with pytest.raises(SystemExit) as stop:
        run_tool(tool, "--vad_file", str(vad), wav_scp, utt2spk, *outputs)
    assert stop.value.code == 2
    assert f"{vad}: none of its keys (e.g. 'other', 1 in all)" in capsys.readouterr().err
    assert not any(os.path.exists(path) for path in outputs)


def test_utterances_without_vad_segments_are_counted_in_the_log(table, tmp_path, caplog):
    wav_scp, utt2spk = table
    vad = tmp_path / "vad"
    vad.write_text("u2 0.0 1.0\nu2 1.5 2.0\n")
    with caplog.at_level("WARNING"):
        dropped = read_utterance_table(wav_scp, utt2spk, str(vad), drop_without_vad=True)
    assert [entry.key for entry in dropped] == ["u2"]   # WeSpeaker's raw-list rule
    assert (f"2 of the 3 utterances of {utt2spk} have no segments in {vad} and are left out "
            "(the first: 'u1')") in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        kept = read_utterance_table(wav_scp, utt2spk, str(vad))
    assert [(entry.key, entry.vad) for entry in kept] == [
        ("u1", None), ("u2", ((0.0, 1.0), (1.5, 2.0))), ("u3", None)]
    assert "have no segments in" in caplog.text and "kept whole" in caplog.text


def test_shards_leave_out_an_utterance_whose_vad_segment_is_past_the_end_of_its_audio(
        tmp_path, capsys):
    # the job stopped on it before; training and extraction skip and count it too
    (tmp_path / "wav.scp").write_text("")
    for key in ("u1", "u2"):
        wav = tmp_path / f"{key}.wav"
        sf.write(str(wav), np.zeros(16000, dtype=np.int16) + 100, 16000, subtype="PCM_16")
        with open(tmp_path / "wav.scp", "a") as scp:
            scp.write(f"{key} {wav}\n")
    (tmp_path / "utt2spk").write_text("u1 s1\nu2 s1\n")
    vad = tmp_path / "vad"
    vad.write_text("u1 0.1 0.5\nu1 0.8 1.6\nu2 0.1 0.5\n")   # u1: 0.6 s past the end of 1 s
    shard_list = tmp_path / "shard.list"
    run_tool("make_shard_list.py", "--vad_file", str(vad), str(tmp_path / "wav.scp"),
             str(tmp_path / "utt2spk"), str(tmp_path / "shards"), str(shard_list))
    err = capsys.readouterr().err
    assert "utterance u1 is left out of shards_000000000.tar (segment_past_end): u1: vad " \
        "segment [0.8, 1.6] s ends more than 0.5 s past the end of its audio (1.000 s)" in err
    assert "1 done, 1 skipped (1 segment_past_end)" in err
    (shard,) = shard_list.read_text().split()
    with tarfile.open(shard) as tar:
        assert tar.getnames() == ["u2.spk", "u2.wav"]
