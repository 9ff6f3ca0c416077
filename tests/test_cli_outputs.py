"""No output of a wespeaker-py subcommand replaces one of the files its model consists of
(checkpoint, config, mean vector, calibration, window LDAs, band fills), except the one the
command is there to write: refused once the model is loaded, before any embedding (exit 2,
one line naming the flag and the model's file, the file untouched)."""
import os
import shutil

import numpy as np
import pytest

from api_helpers import MINI_CORPUS, mini_speech, wespeaker_folder
from tool_helpers import assert_output_refused, run_cli

EMBED_DIM = 8   # the tiny XVEC model's


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder, _ = wespeaker_folder(str(tmp_path_factory.mktemp("cli_outputs") / "model"))
    return folder


@pytest.fixture
def model(trained, tmp_path):
    """A copy of the tiny model folder with a mean vector and a calibration beside it."""
    folder = shutil.copytree(trained, tmp_path / "model")
    np.save(folder / "mean_vec.npy", np.full(EMBED_DIM, 0.1, np.float32))
    (folder / "calibration.json").write_text("{}\n")
    return folder


@pytest.fixture
def data(tmp_path):
    """A Kaldi data folder of two utterances of two speakers, and a trial list over the mini
    corpus (20 target, 20 nontarget trials) with its wav.scp."""
    folder = tmp_path / "data"
    folder.mkdir()
    speech = mini_speech(2)
    (folder / "wav.scp").write_text("".join(f"u{n} {path}\n" for n, path in enumerate(speech)))
    (folder / "utt2spk").write_text("u0 s0\nu1 s1\n")
    lines = open(os.path.join(MINI_CORPUS, "trials")).readlines()
    lines = [line for line in lines if line.split()[2] == "target"][:20] + \
        [line for line in lines if line.split()[2] == "nontarget"][:20]
    (folder / "trials").write_text("".join(lines))
    needed = {key for line in lines for key in line.split()[:2]}
    (folder / "trials.scp").write_text("".join(
        f"{key} {os.path.join(MINI_CORPUS, path)}\n" for key, path in
        (line.split() for line in open(os.path.join(MINI_CORPUS, "wav.scp")))
        if key in needed))
    return folder


@pytest.mark.parametrize("argv, kept, named", [
    (["embed", "{audio}", "--output", "{model}/mean_vec.npy"], "mean_vec.npy",
     ["--output", "--model {model}'s mean_vec.npy"]),
    (["diarize", "--vad", "energy", "--num_speakers", "1", "{audio}", "-o",
      "{model}/config.yaml"], "config.yaml", ["-o/--output", "--model {model}'s config"]),
    (["calibrate", "--trials", "{data}/trials", "--wav_scp", "{data}/trials.scp",
      "--calibration", "{model}/mean_vec.npy"], "mean_vec.npy",
     ["--calibration", "--model {model}'s mean_vec.npy"]),
    (["window-lda", "--data", "{data}", "--output", "{model}/mean_vec.npy"], "mean_vec.npy",
     ["--output", "--model {model}'s mean_vec.npy"]),
    (["band-fill", "--data", "{data}", "--heard_rate", "8000", "--output",
      "{model}/calibration.json"], "calibration.json",
     ["--output", "--model {model}'s calibration.json"]),
    (["window-lda", "--data", "{data}", "--output", "{model}/avg_model.pt"], "avg_model.pt",
     ["--output", "--model {model}'s checkpoint"]),
])
def test_an_output_over_one_of_the_models_files_is_refused(model, data, capsys, argv,
                                                           kept, named):
    paths = dict(model=model, data=data, audio=mini_speech(1)[0])
    kept = model / kept
    before = kept.read_bytes()
    status, _, err = run_cli(capsys, argv[0], "--model", model, "--device", "cpu",
                             *[arg.format(**paths) for arg in argv[1:]])
    assert_output_refused(status, err, kept, before, *[name.format(**paths) for name in named])


def test_calibrate_writes_the_models_own_calibration(model, data, capsys):
    status, out, err = run_cli(capsys, "calibrate", "--model", model, "--device", "cpu",
                               "--trials", data / "trials", "--wav_scp", data / "trials.scp",
                               "--output", model / "calibration.json")
    assert status == 0, err
    assert "20 target and 20 nontarget trials" in out
    assert '"operating_points"' in (model / "calibration.json").read_text()


def test_export_beside_the_checkpoint_it_loads_is_refused(trained, tmp_path, capsys):
    # a graph named as the checkpoint takes the checkpoint's files beside it: an export
    # without the front-end would have removed the calibration
    folder = shutil.copytree(trained, tmp_path / "model")
    calibration = folder / "avg_model.calibration.json"
    calibration.write_text("{}\n")
    status, _, err = run_cli(capsys, "export", "--model", folder / "avg_model.pt",
                             "--device", "cpu", "--onnx", folder / "avg_model.onnx")
    graph = folder / "avg_model.onnx"
    assert_output_refused(status, err, calibration, b"{}\n",
                          f"--onnx {graph}'s calibration.json {folder}/avg_model.calibration.json",
                          f"--model {folder / 'avg_model.pt'}'s calibration.json")
    assert not graph.exists()


class Reached(Exception):
    """The subcommand got past its checks to the model's work."""


@pytest.mark.parametrize("source, argv, output, name", [
    ("", ["enroll", "--gallery", "{output}", "alice", "{audio}"], "band_fill_8000hz.npz",
     "band_fill_8000hz.npz"),
    ("", ["window-lda", "--data", "{data}", "--heard_rate", "8000", "--output", "{output}"],
     "window_lda.npz", "window_lda.npz"),
    ("", ["diarize", "--vad", "energy", "--num_speakers", "1", "{audio}", "-o", "{output}"],
     "window_lda_8000hz.npz", "window_lda_8000hz.npz"),
    ("avg_model.pt", ["embed", "{audio}", "--output", "{output}"], "avg_model.mean_vec.npy",
     "mean_vec.npy"),
])
def test_an_output_under_a_companion_name_not_there_yet_is_refused(model, data, capsys, source,
                                                                   argv, output, name):
    # the model would read it as its own at every later load (a gallery as its band fill)
    source, output = model / source, model / output
    paths = dict(data=data, audio=mini_speech(1)[0], output=output)
    status, _, err = run_cli(capsys, argv[0], "--model", source, "--device", "cpu",
                             *[arg.format(**paths) for arg in argv[1:]])
    assert status == 2, err
    assert f"{output} would be --model {source}'s {name}, which" in err.strip().splitlines()[-1]
    assert not output.exists()


def test_the_companion_file_a_command_is_there_to_write_is_not_refused(model, data, capsys,
                                                                       monkeypatch):
    from wespeaker_py.api.model import SpeakerModel

    def reached(*args, **kwargs):
        raise Reached
    monkeypatch.setattr(SpeakerModel, "train_band_fill", reached)
    with pytest.raises(Reached):
        run_cli(capsys, "band-fill", "--model", model, "--device", "cpu", "--data", data,
                "--heard_rate", "8000", "--output", model / "band_fill_8000hz.npz")


def test_a_calibration_named_elsewhere_leaves_the_one_beside_the_model_protected(
        model, tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text("{}\n")
    for output, named in ((model / "calibration.json", f"--model {model}'s calibration.json"),
                          (other, "--calibration")):
        before = output.read_bytes()
        status, _, err = run_cli(capsys, "diarize", "--model", model, "--device", "cpu",
                                 "--calibration", other, "--vad", "energy", "--num_speakers",
                                 "1", mini_speech(1)[0], "-o", output)
        assert_output_refused(status, err, output, before, f"-o/--output {output}", f"{named} (")
