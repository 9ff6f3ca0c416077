"""utils.tables: reading Kaldi-style tables (their errors name the file and line, a line
that is not UTF-8 names its byte), resolving wav paths, and writing tables and their digests."""
import os

import numpy as np
import pytest
import soundfile as sf

from tool_helpers import run_cli
from wespeaker_py.dataset.lists import read_list_file
from wespeaker_py.utils.paths import file_digest
from wespeaker_py.utils.tables import (DataFormatError, iter_key_rest, iter_table, read_key_value,
                                       read_lines, read_wav_scp, resolve_wav, table_digest,
                                       write_table)


def test_read_key_value_keeps_rest_of_line(tmp_path):
    path = tmp_path / "wav.scp"
    path.write_text("a /x/a.wav\n\nb sox /x/b.wav -t wav - |\n")
    assert read_key_value(str(path)) == {"a": "/x/a.wav", "b": "sox /x/b.wav -t wav - |"}


def test_read_key_value_names_file_and_line(tmp_path):
    path = tmp_path / "utt2spk"
    path.write_text("a s1\nb\n")
    with pytest.raises(DataFormatError, match=r"utt2spk:2"):
        read_key_value(str(path))


@pytest.mark.parametrize("wav, resolved", [
    ("a.wav", "{base}/a.wav"),
    ("sub/b.flac", "{base}/sub/b.flac"),
    ("/abs/c.wav", "/abs/c.wav"),
    # a pipe is a command: a folder put in front of it made "/dir/sox x.wav ... |"
    ("sox x.wav -t wav - |", "sox x.wav -t wav - |"),
    ("flac -c -d -s x.flac |  ", "flac -c -d -s x.flac |  "),
])
def test_resolve_wav_joins_relative_paths_only(tmp_path, monkeypatch, wav, resolved):
    monkeypatch.chdir(tmp_path)
    assert resolve_wav(wav, "data") == resolved.format(base=os.path.join(os.getcwd(), "data"))


def test_write_table_joins_fields_one_row_a_line_in_utf8(tmp_path):
    path = tmp_path / "sub" / "wav.scp"
    write_table(str(path), [("a", "/x/a.wav"), ("b", "sox /x/b.wav -t wav - |"),
                            ("ü", "/x/ü.wav")])
    assert path.read_bytes() == ("a /x/a.wav\nb sox /x/b.wav -t wav - |\nü /x/ü.wav\n"
                                 ).encode("utf-8")
    assert read_key_value(str(path)) == {"a": "/x/a.wav", "b": "sox /x/b.wav -t wav - |",
                                         "ü": "/x/ü.wav"}
    write_table(str(tmp_path / "utt2dur"), (row for row in [("u1", "1.5000")]))
    assert (tmp_path / "utt2dur").read_text() == "u1 1.5000\n"


def test_table_digest_is_the_sha256_of_the_file_write_table_writes(tmp_path):
    rows = [("a", "/x/a.wav"), ("b", "sox /x/b.wav -t wav - |"), ("ü", "/x/ü.wav")]
    write_table(str(tmp_path / "wav.scp"), rows)
    assert table_digest(iter(rows)) == file_digest(str(tmp_path / "wav.scp"))
    write_table(str(tmp_path / "empty"), [])
    assert table_digest([]) == file_digest(str(tmp_path / "empty"))


def test_write_table_leaves_the_old_table_when_a_row_fails(tmp_path):
    path = tmp_path / "utt2spk"
    path.write_text("old s\n")

    def rows():
        yield "a", "s1"
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        write_table(str(path), rows())
    with pytest.raises(ValueError, match="line break"):
        write_table(str(path), [("a", "s1\nb s2")])
    assert path.read_text() == "old s\n"
    assert os.listdir(tmp_path) == ["utt2spk"]


def test_duplicate_key_is_an_error(tmp_path):
    path = tmp_path / "utt2spk"
    path.write_text("a s1\na s2\n")
    with pytest.raises(DataFormatError, match=r"utt2spk:2: duplicate key 'a'"):
        read_key_value(str(path))


def test_iter_table_field_counts(tmp_path):
    path = tmp_path / "trials"
    path.write_text("e t target\ne t\n")
    with pytest.raises(DataFormatError, match=r"trials:2"):
        list(iter_table(str(path), min_fields=3))


def test_data_format_error_pickles():
    import pickle
    err = pickle.loads(pickle.dumps(DataFormatError("f.txt", 3, "bad")))
    assert str(err) == "f.txt:3: bad" and err.line_no == 3


def latin1_table(tmp_path):
    """A table whose third line (counted after a CRLF and a lone CR line break) is Latin-1."""
    path = tmp_path / "wav.scp"
    path.write_bytes(b"a /x/a.wav\r\nb /x/b.wav\rc /x/caf\xe9.wav\nd /x/d.wav\n")
    return str(path)


@pytest.mark.parametrize("reader", [
    lambda path: list(iter_table(path)),
    lambda path: list(iter_key_rest(path)),
    read_key_value,
    read_lines,
    read_wav_scp,
    read_list_file,
])
def test_a_line_that_is_not_utf8_names_the_file_line_and_byte(tmp_path, reader):
    path = latin1_table(tmp_path)
    with pytest.raises(DataFormatError) as raised:
        reader(path)
    assert raised.value.path == path and raised.value.line_no == 3
    assert str(raised.value).startswith(f"{path}:3: not UTF-8 text (byte 0xe9 at column 9)")


def test_the_column_counts_from_the_start_of_a_very_long_line(tmp_path):
    path = tmp_path / "trials"
    path.write_bytes(b"a b target\n" + b"x" * 200_000 + b"\xff target\n")
    with pytest.raises(DataFormatError, match=r"trials:2: not UTF-8 text "
                                              r"\(byte 0xff at column 200001\)"):
        read_lines(str(path))


def test_utf8_tables_read_as_before(tmp_path):
    path = tmp_path / "utt2spk"
    path.write_bytes("\ufeffü1 spk\r\nü2 spk\n".encode("utf-8"))
    assert read_key_value(str(path)) == {"ü1": "spk", "ü2": "spk"}
    assert read_lines(str(path)) == ["ü1 spk", "ü2 spk"]


def test_a_wav_given_as_a_wav_scp_is_one_line_error(tmp_path, capsys):
    wav = tmp_path / "speech.wav"
    sf.write(str(wav), np.zeros(16000, dtype=np.float32), 16000, subtype="PCM_16")
    with pytest.raises(DataFormatError, match=r"speech.wav:1: not UTF-8 text"):
        read_wav_scp(str(wav))
    status, _, err = run_cli(capsys, "embed", "--model", tmp_path / "no_model",
                             "--wav_scp", wav, "--output", tmp_path / "out" / "e.ark")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert f"{wav}:1: not UTF-8 text" in err
    assert not (tmp_path / "out").exists()
