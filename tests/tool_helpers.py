"""Running a ``tools/`` script or ``wespeaker-py`` in the test's own process, as their command
lines would, and the check that a command refused an output over one of its inputs."""
from __future__ import annotations

import os
import runpy
import sys
from typing import Tuple, Union

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_tool(name: str, *args: str) -> None:
    """Run ``tools/<name>`` with ``args``; a non-zero exit status escapes as SystemExit
    (every tool ends in ``sys.exit(run_main(main))``, so success is swallowed)."""
    saved = sys.argv
    sys.argv = [name, *args]
    try:
        runpy.run_path(os.path.join(REPO, "tools", name), run_name="__main__")
    except SystemExit as done:
        if done.code:
            raise
    finally:
        sys.argv = saved


def run_cli(capsys, *argv) -> Tuple[int, str, str]:
    """Run ``wespeaker-py ARGV`` (each argument made a string); return (exit status,
    stdout, stderr) as pytest's ``capsys`` caught them."""
    from wespeaker_py.cli.main import main as cli_main
    try:
        cli_main([str(arg) for arg in argv])
    except SystemExit as done:
        out, err = capsys.readouterr()
        return done.code, out, err
    raise AssertionError("wespeaker-py returned without an exit status")


def assert_output_refused(status: int, err: str, kept: Union[str, os.PathLike], before: bytes,
                          *named: str) -> None:
    """A command refused an output that would replace one of its inputs: exit status 2, one
    error line naming each of ``named``, and ``kept`` still holding ``before``."""
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "would replace an input" in lines[0], err
    assert all(name in lines[0] for name in named), (named, err)
    assert open(kept, "rb").read() == before
