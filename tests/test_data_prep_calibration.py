"""Calibration trials: an utterance of utt2dur without a speaker names both files."""
import pytest

from wespeaker_py.scoring.calibration_set import generate_calibration_trials
from wespeaker_py.utils.file_utils import DataFormatError


def test_an_utterance_without_a_speaker_names_utt2dur_and_utt2spk():
    durations = {"a/x/1": 3.0, "a/x/2": 3.5, "b/y/1": 8.0}
    utt2spk = {"a/x/1": "a", "a/x/2": "a"}
    with pytest.raises(DataFormatError,
                       match=r"^data/u2d: 1 of its utterances are not in data/u2s, "
                             r"the first: 'b/y/1'$"):
        generate_calibration_trials(durations, utt2spk, utt2dur_path="data/u2d",
                                    utt2spk_path="data/u2s")
