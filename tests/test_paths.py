"""utils.paths: file digests, the visible files under a folder, the input file check."""
import os

import pytest

from wespeaker_py.utils.paths import (InputFileError, file_digest, require_input_file,
                                      visible_files_under)


def test_file_digest_reads_the_whole_content_in_blocks(tmp_path):
    import hashlib
    path = tmp_path / "big.bin"
    content = os.urandom((1 << 20) + 17)   # more than one block
    path.write_bytes(content)
    assert file_digest(str(path)) == hashlib.sha256(content).hexdigest()
    assert file_digest(str(path), "sha1") == hashlib.sha1(content).hexdigest()
    path.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))   # the last byte changed
    assert file_digest(str(path)) != hashlib.sha256(content).hexdigest()


def test_visible_files_under_follows_linked_folders_once_and_skips_hidden_names(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    for folder in (root / "sub", root / ".hidden_dir", outside):
        folder.mkdir(parents=True)
    for path in (root / "a.wav", root / ".hidden.wav", root / ".hidden_dir" / "x.wav",
                 root / "sub" / "b.txt", outside / "c.wav"):
        path.write_bytes(b"x")
    os.symlink(outside, root / "linked")            # a linked folder: followed
    os.symlink(root, root / "sub" / "loop")         # a loop back to the top
    os.symlink(root / "sub", root / "zz_again")     # a link to a folder listed already
    top = str(root)
    assert list(visible_files_under(top)) == [os.path.join(top, "a.wav"),
                                              os.path.join(top, "linked", "c.wav"),
                                              os.path.join(top, "sub", "b.txt")]


def test_require_input_file_names_what_is_wrong_with_the_file(tmp_path, monkeypatch):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    locked = tmp_path / "locked"
    locked.write_text("a 1\n")
    os.chmod(locked, 0)
    if os.access(locked, os.R_OK):   # root reads any file: os.access says it cannot
        access = os.access
        monkeypatch.setattr(os, "access", lambda name, mode, **kwargs: (
            False if str(name) == str(locked) else access(name, mode, **kwargs)))
    for name, why in (("gone", "does not exist"), ("folder", "is a folder, not a file"),
                      ("empty", "is empty"), ("locked", "cannot be read (no read permission)")):
        with pytest.raises(InputFileError) as error:
            require_input_file(str(tmp_path / name), "--counts")
        assert str(error.value) == f"--counts {tmp_path / name} {why}"
    (tmp_path / "fine").write_text("a 1\n")
    require_input_file(str(tmp_path / "fine"), "--counts")
