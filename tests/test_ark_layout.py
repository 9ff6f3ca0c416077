"""The ark entry layout has one owner (io.ark.ark_entry): the writer's offsets, and the
recovery of a killed extraction's part (inference.parts.recover_part), follow it."""
import os

import kaldiio
import numpy as np

from wespeaker_py.inference.parts import open_part_writer, recover_part
from wespeaker_py.io import ark
from wespeaker_py.io.ark import (entry_end, open_embedding_writer, read_scp_offsets,
                                 scp_path_for, split_location)

VECTORS = {"a": np.arange(4, dtype=np.float64), "utt-\u00e9": np.ones(3, dtype=np.float32),
           "c": np.full(5, -2.5, dtype=np.float32)}


def test_the_writer_writes_kaldis_bytes_and_offsets(tmp_path):
    path = str(tmp_path / "xvector.ark")
    with open_embedding_writer(path) as writer:
        for key, vector in VECTORS.items():
            writer.write(key, vector)
    reference = str(tmp_path / "kaldi.ark")
    kaldiio.save_ark(reference, {key: vector.astype(np.float32)
                                 for key, vector in VECTORS.items()},
                     scp=str(tmp_path / "kaldi.scp"))
    assert open(path, "rb").read() == open(reference, "rb").read()
    offsets = read_scp_offsets(scp_path_for(path), expected_ark=path)
    kaldi_offsets = [split_location(line.split(maxsplit=1)[1].strip())[1]
                     for line in open(tmp_path / "kaldi.scp", encoding="utf-8")]
    assert [offset for _, offset in offsets] == kaldi_offsets
    # each entry ends where the next one starts, the last one at the end of the file
    starts = [offset - ark.ark_entry(key, VECTORS[key])[1] for key, offset in offsets]
    ends = [entry_end(key, offset, VECTORS[key]) for key, offset in offsets]
    assert ends == starts[1:] + [os.path.getsize(path)]


def test_recovery_follows_the_writers_entry_layout(tmp_path, monkeypatch):
    kaldi_entry = ark.ark_entry

    def padded(key, vector):   # another layout: 3 bytes after each vector
        entry, data_start = kaldi_entry(key, vector)
        return entry + b"\0\0\0", data_start

    monkeypatch.setattr(ark, "ark_entry", padded)
    part = str(tmp_path / "part.ark")
    with open_part_writer(part) as writer:
        for key, vector in VECTORS.items():
            writer.write(key, vector)
    whole = open(part, "rb").read()
    with open(part, "ab") as handle:   # a killed writer's half entry
        handle.write(b"d \0BFV")
    assert recover_part(part) == list(VECTORS)
    assert open(part, "rb").read() == whole
    for key, location in (line.split() for line in open(scp_path_for(part))):
        assert np.array_equal(kaldiio.load_mat(location), VECTORS[key].astype(np.float32))


def test_recovery_cuts_the_scp_in_place_and_needs_no_free_space(tmp_path, monkeypatch):
    import builtins
    import errno
    part = str(tmp_path / "part_000.ark")
    with open_part_writer(part) as writer:
        for key, vector in VECTORS.items():
            writer.write(key, vector)
    scp = scp_path_for(part)
    whole = open(scp, "rb").read()
    kept = whole[:whole.index(b"\n", whole.index(b"\n") + 1) + 1]   # the first two lines
    with open(part, "r+b") as handle:   # a kill in the middle of the third entry
        handle.truncate(os.path.getsize(part) - 3)
    with open(scp, "ab") as handle:
        handle.write(b"d " + part.encode() + b":1")   # and half a line after it
    real_open = builtins.open

    def full_disk_for_the_scp(file, mode="r", *args, **kwargs):
        if os.path.abspath(str(file)) == scp and any(flag in mode for flag in "wax+"):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    inode = os.stat(scp).st_ino
    monkeypatch.setattr(builtins, "open", full_disk_for_the_scp)
    assert recover_part(part) == ["a", "utt-\u00e9"]
    monkeypatch.undo()
    assert open(scp, "rb").read() == kept and os.stat(scp).st_ino == inode
    # the writer carries on after them
    with open_part_writer(part) as writer:
        writer.write("c", VECTORS["c"])
    assert open(scp, "rb").read() == whole
