"""bench/bench_audio_energy.py on a few files of the mini corpus: the chosen energy floor
keeps real speech (even 50 dB quieter) and faint noise, and refuses digital silence and
±1 LSB dither."""
import os
import sys

from api_helpers import MINI_CORPUS
from wespeaker_py.audio import SILENCE_FLOOR_DBFS

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import bench_audio_energy  # noqa: E402


def test_the_chosen_floor_keeps_speech_and_refuses_silence(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_audio_energy.py", "--corpus", MINI_CORPUS,
                                      "--limit", "4"])
    bench_audio_energy.main()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    below_floor = header.index(f"< {SILENCE_FLOOR_DBFS:g}")
    rows = {cells[0]: cells for cells in ([cell.strip() for cell in line.strip("|").split("|")]
                                          for line in lines[1:])}
    for condition in ("speech as recorded", "speech 50 dB quieter, int16"):
        cells = rows[f"librispeech_tc100: {condition}"]
        assert cells[1] == "4" and cells[below_floor] == "0", cells
    for seconds in ("5", "600"):
        assert rows[f"digital silence, {seconds} s"][below_floor] == "1"
        assert rows[f"dither ±1 LSB (-1/0/+1), {seconds} s"][below_floor] == "1"
        assert rows[f"faint noise, 1e-4 full scale (float), {seconds} s"][below_floor] == "0"
