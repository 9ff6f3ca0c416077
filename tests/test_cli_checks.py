"""The checks wespeaker-py makes before any work (cli.checks): an output that cannot be
written is refused first, and a failed run leaves no output folder behind."""
import os

import numpy as np
import soundfile as sf

from tool_helpers import run_cli


def test_the_cli_refuses_a_folder_output_before_any_work(tmp_path, capsys):
    audio = tmp_path / "a.wav"
    sf.write(str(audio), np.zeros(1600, dtype=np.float32), 16000)
    folder = tmp_path / "d"
    folder.mkdir()
    # the model does not exist: the output is checked before it is loaded
    status, _, err = run_cli(capsys, "diarize", "--model", tmp_path / "no_model", audio,
                             "-o", folder)
    assert status == 2 and f"{folder} is a folder; give a file name" in err
    assert os.listdir(folder) == []


def test_a_failed_run_leaves_no_output_folder(tmp_path, capsys):
    audio = tmp_path / "a.wav"
    sf.write(str(audio), np.zeros(1600, dtype=np.float32), 16000)
    status, _, err = run_cli(capsys, "embed", "--model", tmp_path / "no_model", audio,
                             "--output", tmp_path / "new" / "v.npy")
    assert status == 2 and "no_model" in err
    assert sorted(os.listdir(tmp_path)) == ["a.wav"]
