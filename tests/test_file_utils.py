import os

import pytest

from wespeaker_py.utils.file_utils import (DataFormatError, atomic_open, atomic_path,
                                           file_digest, iter_table, read_key_value)


def test_file_digest_reads_the_whole_content_in_blocks(tmp_path):
    import hashlib
    path = tmp_path / "big.bin"
    content = os.urandom((1 << 20) + 17)   # more than one block
    path.write_bytes(content)
    assert file_digest(str(path)) == hashlib.sha256(content).hexdigest()
    assert file_digest(str(path), "sha1") == hashlib.sha1(content).hexdigest()
    path.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))   # the last byte changed
    assert file_digest(str(path)) != hashlib.sha256(content).hexdigest()


def test_read_key_value_keeps_rest_of_line(tmp_path):
    path = tmp_path / "wav.scp"
    path.write_text("a /x/a.wav\n\nb sox /x/b.wav -t wav - |\n")
    assert read_key_value(str(path)) == {"a": "/x/a.wav", "b": "sox /x/b.wav -t wav - |"}


def test_read_key_value_names_file_and_line(tmp_path):
    path = tmp_path / "utt2spk"
    path.write_text("a s1\nb\n")
    with pytest.raises(DataFormatError, match=r"utt2spk:2"):
        read_key_value(str(path))


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


def test_atomic_open_leaves_old_file_on_error(tmp_path):
    path = tmp_path / "scores"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(str(path)) as handle:
            handle.write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["scores"]


def test_atomic_path_renames_on_success(tmp_path):
    path = tmp_path / "sub" / "x.ark"
    with atomic_path(str(path)) as tmp:
        assert tmp.endswith(".ark") and tmp != str(path)
        with open(tmp, "w") as handle:
            handle.write("data")
    assert path.read_text() == "data"
    assert os.listdir(tmp_path / "sub") == ["x.ark"]


def test_atomic_outputs_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_open(str(tmp_path / "a.txt")) as handle:
            handle.write("x")
        with atomic_path(str(tmp_path / "b.ark")) as tmp:
            open(tmp, "w").close()
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.ark").stat().st_mode & 0o777 == 0o644


def test_data_format_error_pickles():
    import pickle
    err = pickle.loads(pickle.dumps(DataFormatError("f.txt", 3, "bad")))
    assert str(err) == "f.txt:3: bad" and err.line_no == 3
