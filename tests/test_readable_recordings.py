"""Reading a list's recordings: the unreadable ones skipped and counted under their reason."""
from collections import Counter

import numpy as np

from dataset_helpers import RATE, random_int16, write_audio
from wespeaker_py.audio.errors import AudioMissingError, AudioUnreadableError
from wespeaker_py.audio.readable import readable_recordings
from wespeaker_py.errors import AudioInputError


def test_unreadable_recordings_are_counted_by_reason_and_left_out(tmp_path, caplog):
    good = write_audio(str(tmp_path / "good.wav"), random_int16(RATE // 2, seed=1), RATE // 2)
    not_audio = tmp_path / "text.wav"
    not_audio.write_text("not a wav")
    recordings = {"gone": str(tmp_path / "gone.wav"), "good": good, "text": str(not_audio)}
    skipped = Counter()
    read = list(readable_recordings(recordings, RATE, skipped, "reading", progress=False))
    assert [(key, rate) for key, _, rate in read] == [("good", RATE // 2)]
    assert read[0][1].dtype == np.float32 and read[0][1].size == RATE   # resampled to RATE
    assert skipped == {AudioMissingError.reason: 1, AudioUnreadableError.reason: 1}
    assert "skipping gone:" in caplog.text and "skipping text:" in caplog.text


def test_audio_input_error_has_a_reason_of_its_own():
    assert AudioInputError("an array of the wrong shape").reason == "unreadable_audio"
