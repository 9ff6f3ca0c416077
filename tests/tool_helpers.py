"""Running a ``tools/`` script or ``wespeaker-py`` in the test's own process, as their command
lines would."""
from __future__ import annotations

import os
import runpy
import sys
from typing import Tuple

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
