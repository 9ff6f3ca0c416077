"""The code follows the house style: flake8 with the settings of setup.cfg (100 columns)."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("flake8")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_flake8_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "flake8", "wespeaker_py", "tests", "tools",
                           "bench", "examples"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
