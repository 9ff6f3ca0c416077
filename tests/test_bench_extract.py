"""bench/bench_extract.py in its smallest mode (one round of one path) times extraction on
today's code and removes its temporary folder when it exits."""
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_one_round_prints_its_row_and_leaves_no_temporary_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "bench", "bench_extract.py"), "--rounds", "1",
         "--threads", "1", "--paths", "bin.extract"],
        capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    row = [line for line in result.stdout.splitlines() if line.startswith("| bin.extract |")]
    assert len(row) == 1 and float(row[0].split("|")[3]) > 0, result.stdout
    assert os.listdir(tmp_path) == []
