"""Calibration trials: an utterance of utt2dur without a speaker names both files; too few
speakers is a one-line error."""
import os
import subprocess
import sys

import pytest

from wespeaker_py.scoring.calibration_set import generate_calibration_trials
from wespeaker_py.utils.tables import DataFormatError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_an_utterance_without_a_speaker_names_utt2dur_and_utt2spk():
    durations = {"a/x/1": 3.0, "a/x/2": 3.5, "b/y/1": 8.0}
    utt2spk = {"a/x/1": "a", "a/x/2": "a"}
    with pytest.raises(DataFormatError,
                       match=r"^data/u2d: 1 of its utterances are not in data/u2s, "
                             r"the first: 'b/y/1'$"):
        generate_calibration_trials(durations, utt2spk, utt2dur_path="data/u2d",
                                    utt2spk_path="data/u2s")


def test_too_few_speakers_for_calibration_trials_is_a_one_line_user_error(tmp_path):
    utt2dur = tmp_path / "utt2dur"
    # one speaker with two short and two long utterances: no nontarget trial can be drawn
    utt2dur.write_text("a/x/1 3.0\na/x/2 3.5\na/x/3 8.0\na/x/4 9.0\nb/y/1 3.0\n")
    tool = os.path.join(REPO, "tools", "generate_calibration_trial.py")
    done = subprocess.run([sys.executable, tool,
                           "--utt2dur", str(utt2dur), "--trial_path", str(tmp_path / "t")],
                          capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert done.returncode == 2
    assert f"{utt2dur}: need at least two speakers" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "t").exists()
