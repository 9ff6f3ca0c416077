"""Lists that are not UTF-8 text, and outputs that are folders or sit in missing folders."""
import os

import numpy as np
import pytest
import soundfile as sf

from tool_helpers import run_cli
from wespeaker_py.dataset.lists import read_list_file
from wespeaker_py.utils.atomic_files import atomic_open, atomic_path, require_writable
from wespeaker_py.utils.paths import OutputNotWritableError
from wespeaker_py.utils.tables import (DataFormatError, iter_key_rest, iter_table, read_key_value,
                                       read_lines, read_wav_scp, write_table)


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


def test_an_existing_folder_is_refused_as_an_output_file(tmp_path):
    folder = tmp_path / "odir"
    folder.mkdir()
    with pytest.raises(OutputNotWritableError, match=f"^{folder} is a folder; give a file name$"):
        require_writable(str(folder))
    assert os.listdir(folder) == [] and sorted(os.listdir(tmp_path)) == ["odir"]
    require_writable(str(folder), folder_ok=True)    # an output folder to write in
    assert os.listdir(folder) == []


def test_the_cli_refuses_a_folder_output_before_any_work(tmp_path, capsys):
    audio = tmp_path / "a.wav"
    sf.write(str(audio), np.zeros(1600, dtype=np.float32), 16000)
    folder = tmp_path / "d"
    folder.mkdir()
    # the model does not exist: the output is checked before it is loaded
    status, _, err = run_cli(capsys, "diarize", "--model", tmp_path / "no_model", audio,
                             "-o", folder)
    assert status == 2 and f"{folder} is a folder; give a file name" in err
    assert os.listdir(folder) == []


def write_with_atomic_open(path):
    with atomic_open(path, "w") as handle:
        handle.write("x")


@pytest.mark.parametrize("write", [lambda path: write_table(path, [("a", "b")]),
                                   write_with_atomic_open])
def test_writing_onto_a_folder_names_the_folder_not_the_temporary_file(tmp_path, write):
    folder = tmp_path / "out.txt"
    folder.mkdir()
    with pytest.raises(OutputNotWritableError) as raised:
        write(str(folder))
    assert str(raised.value) == f"{folder} is a folder; give a file name"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"] and os.listdir(folder) == []


def test_atomic_path_onto_a_folder_names_the_folder(tmp_path):
    folder = tmp_path / "vector.npy"
    folder.mkdir()
    with pytest.raises(OutputNotWritableError, match=f"^{folder} is a folder"):
        with atomic_path(str(folder)) as tmp:
            np.save(tmp, np.zeros(3))
    assert sorted(os.listdir(tmp_path)) == ["vector.npy"]


def test_a_checked_output_in_missing_folders_makes_none(tmp_path):
    target = tmp_path / "emb" / "sub" / "xvector.ark"
    require_writable(str(target))
    assert os.listdir(tmp_path) == []
    with atomic_open(str(target), "w") as handle:   # the writer makes them
        handle.write("x")
    assert target.read_text() == "x"


def test_an_output_below_a_file_is_refused_naming_the_file(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(OutputNotWritableError, match=f"{tmp_path / 'plain'} is not a folder"):
        require_writable(str(tmp_path / "plain" / "sub" / "out.ark"))


def test_a_failed_run_leaves_no_output_folder(tmp_path, capsys):
    audio = tmp_path / "a.wav"
    sf.write(str(audio), np.zeros(1600, dtype=np.float32), 16000)
    status, _, err = run_cli(capsys, "embed", "--model", tmp_path / "no_model", audio,
                             "--output", tmp_path / "new" / "v.npy")
    assert status == 2 and "no_model" in err
    assert sorted(os.listdir(tmp_path)) == ["a.wav"]
