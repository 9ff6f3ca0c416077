"""utils.atomic_files: outputs that appear whole or not at all, follow the umask, and are
refused (naming the path) where a folder or a file is in the way."""
import json
import os

import numpy as np
import pytest

from wespeaker_py.utils.atomic_files import (atomic_open, atomic_path, read_json_or_none,
                                             require_writable, write_json_atomically)
from wespeaker_py.utils.paths import OutputNotWritableError
from wespeaker_py.utils.tables import write_table


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


def test_a_killed_writers_temporary_folder_is_removed_by_the_next_write(tmp_path, caplog):
    import logging

    from wespeaker_py.utils.atomic_files import atomic_dir
    _killed_while_writing(
        "import os\nfrom wespeaker_py.utils.atomic_files import atomic_dir\n"
        f"with atomic_dir({str(tmp_path / 'first')!r}) as tmp:\n"
        "    open(os.path.join(tmp, 'half'), 'w').write('x' * 1500)\n"
        "    os._exit(9)\n")
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith(".tmp_first.")
    with caplog.at_level(logging.INFO, logger="wespeaker_py"):
        with atomic_dir(str(tmp_path / "second")):
            pass
    assert os.listdir(tmp_path) == ["second"]
    pid = left[0].split("-")[-1].split(".")[0]
    assert [record.getMessage() for record in caplog.records] == [
        f"removed {tmp_path / left[0]} (1.5 kB), a temporary output of an interrupted write: "
        f"its writer, process {pid} of this machine, has ended"]


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


def test_an_existing_folder_is_refused_as_an_output_file(tmp_path):
    folder = tmp_path / "odir"
    folder.mkdir()
    with pytest.raises(OutputNotWritableError, match=f"^{folder} is a folder; give a file name$"):
        require_writable(str(folder))
    assert os.listdir(folder) == [] and sorted(os.listdir(tmp_path)) == ["odir"]
    require_writable(str(folder), folder_ok=True)    # an output folder to write in
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


def test_temporary_files_idle_for_an_hour_are_removed_whoever_their_owner(tmp_path, caplog):
    """A restarted container: another host name, or the dead writer's pid given again
    (here our own, alive); an hour without a write tells what host and pid cannot."""
    import logging
    import time

    from wespeaker_py.utils.atomic_files import (STALE_AFTER_SECONDS, remove_stale_temp_files,
                                                 temp_name_for)
    reused_pid = temp_name_for(str(tmp_path / "interrupted.pt"))
    other_host = str(tmp_path / ".tmp_model_3.pt.trainer_7f9c_abcde-7.0123abcd")
    fresh_ones = [temp_name_for(str(tmp_path / "model_4.pt")),
                  str(tmp_path / ".tmp_model_5.pt.trainer_7f9c_abcde-8.4567cdef")]
    live_folder = temp_name_for(str(tmp_path / "wavlm"))   # its files' writes do not show
    not_ours = str(tmp_path / ".tmp_report-2024.01.csv")    # another program's
    for path in [reused_pid, other_host, not_ours] + fresh_ones:
        with open(path, "wb") as handle:
            handle.write(b"\0" * 3000)
    os.mkdir(live_folder)
    long_ago = time.time() - STALE_AFTER_SECONDS - 60
    for path in (reused_pid, other_host, live_folder, not_ours):
        os.utime(path, (long_ago, long_ago))
    with caplog.at_level(logging.INFO, logger="wespeaker_py"):
        removed = remove_stale_temp_files(str(tmp_path))
    assert sorted(removed) == sorted([reused_pid, other_host])
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(path) for path
                                                  in fresh_ones + [live_folder, not_ours])
    told = [record.getMessage() for record in caplog.records]
    assert len(told) == 2 and all("3.0 kB" in line and "not modified for 1.0 hours" in line
                                  for line in told)
    assert {line.split(" ")[1] for line in told} == {reused_pid, other_host}


@pytest.mark.parametrize("options, expected", [
    ({}, '{"b": [1, 2], "a": "\\u00e9"}'),
    ({"indent": 1, "sort_keys": True}, '{\n "a": "\\u00e9",\n "b": [\n  1,\n  2\n ]\n}'),
    ({"indent": 2, "final_newline": True},
     '{\n  "b": [\n    1,\n    2\n  ],\n  "a": "\\u00e9"\n}\n'),
])
def test_json_written_atomically_is_json_dump_with_the_options_given(
        tmp_path, options, expected):
    path = tmp_path / "state.json"
    write_json_atomically(str(path), {"b": [1, 2], "a": "\u00e9"}, **options)
    assert path.read_bytes() == expected.encode("ascii")
    assert os.listdir(tmp_path) == ["state.json"]


def test_json_that_cannot_be_written_leaves_the_old_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"old": true}')
    with pytest.raises(TypeError):
        write_json_atomically(str(path), {"new": object()})
    assert json.loads(path.read_text()) == {"old": True}
    assert os.listdir(tmp_path) == ["state.json"]


def test_read_json_or_none_reads_json_and_gives_none_for_what_is_not(tmp_path):
    good = tmp_path / "good.json"
    write_json_atomically(str(good), {"jobs": 2, "list": ["a"]}, indent=1)
    assert read_json_or_none(str(good)) == {"jobs": 2, "list": ["a"]}
    torn = tmp_path / "torn.json"
    torn.write_text(good.read_text()[:-3])   # a writer cut short
    garbled = tmp_path / "garbled.json"
    garbled.write_bytes(b'{"key": "\xff"}')   # not UTF-8
    for path in (tmp_path / "missing.json", torn, garbled, tmp_path):
        assert read_json_or_none(str(path)) is None
