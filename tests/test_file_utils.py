import os

import pytest

from wespeaker_py.utils.atomic_files import atomic_open, atomic_path
from wespeaker_py.utils.paths import file_digest
from wespeaker_py.utils.tables import (DataFormatError, iter_table, read_key_value, resolve_wav,
                                       write_table)


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


def _killed_while_writing(code: str) -> None:
    """Run ``code`` (which ends by killing its own process mid-write) in a new Python."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], cwd=root,
                            env=dict(os.environ, PYTHONPATH=root))
    assert result.returncode == 9


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path):
    from wespeaker_py.utils.atomic_files import atomic_dir
    target = tmp_path / "parent" / "model"
    with atomic_dir(str(target)) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path / "parent") and not target.exists()
        (tmp_path / "parent" / os.path.basename(tmp) / "a.txt").write_text("x")
    assert sorted(os.listdir(tmp_path / "parent")) == ["model"]
    assert (target / "a.txt").read_text() == "x"
    # an existing empty folder is replaced; on an error nothing is left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeError, match="stop"):
        with atomic_dir(str(empty)) as tmp:
            open(os.path.join(tmp, "half"), "w").close()
            raise RuntimeError("stop")
    assert sorted(os.listdir(tmp_path)) == ["empty", "parent"] and not os.listdir(empty)
    with atomic_dir(str(empty)) as tmp:
        open(os.path.join(tmp, "b"), "w").close()
    assert os.listdir(empty) == ["b"]


def test_atomic_dir_refuses_a_file_or_a_folder_with_files(tmp_path):
    from wespeaker_py.utils.atomic_files import atomic_dir
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="file exists and is not a directory"):
        with atomic_dir(str(tmp_path / "file")):
            pass
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "kept").write_text("x")
    with pytest.raises(FileExistsError, match="full exists and is not empty"):
        with atomic_dir(str(tmp_path / "full")):
            pass
    assert sorted(os.listdir(tmp_path)) == ["file", "full"]


def test_atomic_dir_follows_umask(tmp_path):
    from wespeaker_py.utils.atomic_files import atomic_dir
    old = os.umask(0o027)
    try:
        with atomic_dir(str(tmp_path / "out")):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o750


def test_a_killed_writers_temporary_folder_is_removed_by_the_next_write(tmp_path):
    from wespeaker_py.utils.atomic_files import atomic_dir
    _killed_while_writing(
        "import os\nfrom wespeaker_py.utils.atomic_files import atomic_dir\n"
        f"with atomic_dir({str(tmp_path / 'first')!r}) as tmp:\n"
        "    open(os.path.join(tmp, 'half'), 'w').close()\n"
        "    os._exit(9)\n")
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith(".tmp_first.")
    with atomic_dir(str(tmp_path / "second")):
        pass
    assert os.listdir(tmp_path) == ["second"]


def test_atomic_symlink_replaces_a_link_in_one_step(tmp_path):
    from wespeaker_py.utils.atomic_files import atomic_symlink
    for name in ("model_1.pt", "model_2.pt"):
        (tmp_path / name).write_text(name)
    link = str(tmp_path / "final_model.pt")
    atomic_symlink("model_1.pt", link)
    atomic_symlink("model_2.pt", link)
    assert os.readlink(link) == "model_2.pt" and open(link).read() == "model_2.pt"
    assert sorted(os.listdir(tmp_path)) == ["final_model.pt", "model_1.pt", "model_2.pt"]
    # a link that cannot replace what is there leaves no temporary link
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "kept").write_text("x")
    with pytest.raises(OSError):
        atomic_symlink("model_2.pt", str(tmp_path / "folder"))
    assert sorted(os.listdir(tmp_path)) == ["final_model.pt", "folder", "model_1.pt",
                                            "model_2.pt"]
