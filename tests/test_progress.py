"""progress_bar: an in-place tqdm bar at a terminal, plain timed lines in a log."""
import io
import re

import numpy as np
import pytest

from wespeaker_py.errors import WespeakerError
from wespeaker_py.io.ark import load_embeddings, write_embeddings
from wespeaker_py.utils.progress import (INTERVAL_ENV, PROGRESS_ENV, ProgressSettingError,
                                         progress_bar)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_progress_env(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    monkeypatch.delenv(INTERVAL_ENV, raising=False)


def _counts(text: str) -> list:
    """The ``n`` of each ``n/total`` line."""
    return [int(re.search(r" (\d+)/\d+ ", line).group(1)) for line in text.splitlines()]


def test_log_file_gets_one_line_per_update_with_interval_zero(monkeypatch, tmp_path):
    monkeypatch.setenv(INTERVAL_ENV, "0")
    log = tmp_path / "run.log"
    with open(log, "w") as stream:
        assert list(progress_bar(range(5), desc="extract", unit="utt", file=stream)) \
            == list(range(5))
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert all(line.startswith("extract:") and "utt" in line for line in lines)
    counts = _counts(text)
    assert counts[:6] == [0, 1, 2, 3, 4, 5] and counts[-1] == 5


@pytest.mark.parametrize("interval", [None, "3600"])
def test_long_interval_gives_the_first_and_final_lines_only(monkeypatch, interval):
    if interval is not None:
        monkeypatch.setenv(INTERVAL_ENV, interval)
    stream = io.StringIO()
    for _ in progress_bar(range(1000), desc="scores", file=stream):
        pass
    assert _counts(stream.getvalue()) == [0, 1000]


def test_manual_bar_closes_with_a_kept_line_in_a_log(monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "3600")
    stream = io.StringIO()
    # leave=False and position erase and move a bar at a terminal; a log keeps every line
    with progress_bar(total=4, initial=1, desc="epoch 2", unit="batch", file=stream,
                      leave=False, position=2) as bar:
        bar.update(1)
        bar.set_postfix(loss="1.250", refresh=False)
        bar.update(2)
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert _counts(text) == [1, 4]
    assert "loss=1.250" in text.splitlines()[-1]


def test_redirected_stderr_gets_lines(monkeypatch, capsys):
    monkeypatch.setenv(INTERVAL_ENV, "0")
    for _ in progress_bar(range(3), desc="plots", unit="rec"):
        pass
    err = capsys.readouterr().err
    assert "\r" not in err and _counts(err)[-1] == 3


def test_terminal_bar_redraws_in_place():
    stream = _Terminal()
    for _ in progress_bar(range(3), desc="models", file=stream):
        pass
    assert "\r" in stream.getvalue() and "3/3" in stream.getvalue()


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_env_zero_turns_bars_off(monkeypatch, terminal):
    monkeypatch.setenv(PROGRESS_ENV, "0")
    stream = _Terminal() if terminal else io.StringIO()
    assert list(progress_bar(range(4), desc="x", file=stream)) == [0, 1, 2, 3]
    with progress_bar(total=2, desc="y", file=stream) as bar:
        bar.update(2)
    assert stream.getvalue() == ""


def test_disabled_bar_still_iterates():
    stream = _Terminal()
    assert list(progress_bar(iter("abc"), desc="x", enabled=False, file=stream)) \
        == ["a", "b", "c"]
    assert stream.getvalue() == ""


@pytest.mark.parametrize("name, value", [(PROGRESS_ENV, "yes"), (PROGRESS_ENV, "2"),
                                         (INTERVAL_ENV, "ten"), (INTERVAL_ENV, "-1"),
                                         (INTERVAL_ENV, "nan")])
def test_bad_env_value_is_an_error_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ProgressSettingError, match=f"{name}={value!r}") as caught:
        progress_bar(range(2), desc="x", file=io.StringIO())
    assert isinstance(caught.value, WespeakerError)


def test_a_call_site_writes_lines_to_a_log(monkeypatch, tmp_path, capsys):
    """load_embeddings(progress=True) with stderr redirected: lines, no carriage return."""
    monkeypatch.setenv(INTERVAL_ENV, "0")
    scp = write_embeddings(str(tmp_path / "xvector.ark"), ["a", "b", "c"],
                           np.eye(3, dtype=np.float32))
    assert list(load_embeddings(scp, progress=True).keys) == ["a", "b", "c"]
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) >= 2 and lines[-1].startswith("loading xvector.scp: 3emb ")  # no total


def test_a_command_refuses_a_bad_setting_before_it_starts(monkeypatch, capsys):
    from wespeaker_py.cli.common import run_main
    ran = []
    monkeypatch.setenv(INTERVAL_ENV, "soon")
    status = run_main(ran.append, ["--flag"], prog="tool")
    assert status == 2 and ran == []
    assert INTERVAL_ENV in capsys.readouterr().err


def _pipe_without_reader() -> io.TextIOWrapper:
    """The writing end of a pipe whose reader is gone (a killed ``| tee``), unbuffered
    below the text layer as standard error is."""
    import os
    read_end, write_end = os.pipe()
    os.close(read_end)
    return io.TextIOWrapper(io.FileIO(write_end, "w"), line_buffering=True, write_through=True)


def test_a_stream_whose_reader_is_gone_turns_its_bars_off_with_one_warning(monkeypatch,
                                                                           caplog):
    monkeypatch.setenv(INTERVAL_ENV, "0")
    with _pipe_without_reader() as stream:
        assert list(progress_bar(range(5), desc="epoch 1", file=stream)) == list(range(5))
        with progress_bar(total=3, desc="epoch 2", file=stream) as bar:
            bar.update(3)
    warnings = [record.getMessage() for record in caplog.records
                if record.levelname == "WARNING"]
    assert len(warnings) == 1 and "progress bars are off" in warnings[0]
    assert "BrokenPipeError" in warnings[0]

    class Unencodable(io.StringIO):
        def write(self, text):
            raise UnicodeEncodeError("ascii", text, 0, 1, "cannot encode")

    # only a failing stream turns bars off, not other errors
    with pytest.raises(UnicodeEncodeError):
        list(progress_bar(range(2), desc="x", file=Unencodable()))


def test_a_command_started_without_standard_error_runs_without_bars():
    import subprocess
    import sys
    script = ("import sys; from wespeaker_py.utils.progress import progress_bar; "
              "assert sys.stderr is None; "
              "bar = progress_bar(desc='manual', total=2); bar.update(2); bar.close(); "
              "print(sum(progress_bar(range(4), desc='loop')))")
    result = subprocess.run(["bash", "-c", f'"{sys.executable}" -c "{script}" 2>&-'],
                            capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "6\n")
