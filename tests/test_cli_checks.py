"""The checks wespeaker-py makes before any work (cli.checks): an output that cannot be
written is refused first, and a failed run leaves no output folder behind."""
import os

import numpy as np
import soundfile as sf

from tool_helpers import run_cli


def test_the_cli_refuses_a_file_output_given_as_a_folder_before_any_work(tmp_path, capsys):
    audio = tmp_path / "a.wav"
    sf.write(str(audio), np.zeros(1600, dtype=np.float32), 16000)
    taken = tmp_path / "sys.rttm"
    taken.write_text("kept\n")
    # the model does not exist: the output is checked before it is loaded
    status, _, err = run_cli(capsys, "diarize", "--model", tmp_path / "no_model", audio,
                             "-o", f"{taken}/")
    assert status == 2 and f"{taken}/ is a file; give a folder for one RTTM per recording" in err
    assert taken.read_text() == "kept\n"


def test_a_failed_run_leaves_no_output_folder(tmp_path, capsys):
    audio = tmp_path / "a.wav"
    sf.write(str(audio), np.zeros(1600, dtype=np.float32), 16000)
    status, _, err = run_cli(capsys, "embed", "--model", tmp_path / "no_model", audio,
                             "--output", tmp_path / "new" / "v.npy")
    assert status == 2 and "no_model" in err
    assert sorted(os.listdir(tmp_path)) == ["a.wav"]
