"""Running a ``tools/`` script in the test's own process, as its command line would."""
from __future__ import annotations

import os
import runpy
import sys

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
