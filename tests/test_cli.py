"""The wespeaker-py command end to end, its one-line errors, and --help of every command
without torch."""
import json
import os
import re
import shutil
import subprocess
import sys

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from tool_helpers import run_cli
from wespeaker_py.cli.main import main as cli_main
import wespeaker_py
from api_helpers import MINI_CORPUS, mini_speech, wespeaker_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN_MODULES = sorted(name[:-3] for name in os.listdir(os.path.join(REPO, "wespeaker_py", "bin"))
                     if name.endswith(".py") and not name.startswith("_"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root, _ = wespeaker_folder(str(tmp_path_factory.mktemp("cli") / "model"))
    return root


def test_every_help_answers_without_torch_and_names_the_command_to_type():
    script = f"""
import contextlib, importlib, io, re, sys
from wespeaker_py.cli.main import main, build_parser
texts = {{}}
for argv in [["--help"]] + [[name, "--help"] for name in
                            build_parser()._subparsers._group_actions[0].choices]:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        main(argv)
    texts["wespeaker-py " + " ".join(argv[:-1])] = out.getvalue()
for name in {BIN_MODULES!r}:
    module = importlib.import_module("wespeaker_py.bin." + name)
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        module.main(["--help"])
    texts[name] = out.getvalue()
    assert not re.search(r"\\S {{5,}}--", module.__doc__), name + ": collapsed continuation"
heavy = [m for m in ("torch", "scipy", "onnxruntime") if m in sys.modules]
print(repr((heavy, texts)))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr
    heavy, texts = eval(result.stdout)
    assert heavy == []
    assert len(texts) == 1 + 13 + len(BIN_MODULES)
    for name in BIN_MODULES:
        assert texts[name].startswith(f"usage: python -m wespeaker_py.bin.{name} "), name
    for command in ("embed", "similarity", "verify", "enroll", "unenroll", "identify",
                    "calibrate", "diarize", "window-lda", "band-fill", "export", "info",
                    "finetune"):
        assert texts[f"wespeaker-py {command}"].startswith(f"usage: wespeaker-py {command} ")
        assert "examples:" in texts[f"wespeaker-py {command}"]
    assert "adaptive S-Norm" in texts["score_norm"]   # --score_norm_method has help
    # every command is built with the shared flags of wespeaker_py.cli.common
    assert [name for name, text in texts.items() if "--debug" not in text] == []
    # --num_threads' help speaks of --nj jobs only where the command has --nj
    shared = {name for name, text in texts.items()
              if "shared among --nj jobs" in " ".join(text.split())}
    assert shared == {name for name, text in texts.items() if "--nj NJ" in text}
    assert "extract" in shared


def test_console_script_entry_point_resolves():
    setup = open(os.path.join(REPO, "setup.py")).read()
    target = re.search(r'"wespeaker-py = ([\w.]+):(\w+)"', setup)
    module = __import__(target.group(1), fromlist=[target.group(2)])
    assert getattr(module, target.group(2)) is cli_main


def test_subcommands_end_to_end(folder, tmp_path, capsys):
    speech = mini_speech(3)
    model = wespeaker_py.load_model(folder, device="cpu")
    common = ["--model", folder, "--device", "cpu"]

    status, out, _ = run_cli(capsys, "info", *common, "--json")
    details = json.loads(out)
    assert status == 0 and details["embed_dim"] == 8 and details["sample_rate"] == 16000

    expected = model.embed(speech[0])
    assert run_cli(capsys, "embed", *common, speech[0], "--output", tmp_path / "a.npy")[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), expected)
    status, out, _ = run_cli(capsys, "embed", *common, speech[0])
    np.testing.assert_allclose(np.array(out.split(), dtype=float), expected, rtol=1e-5)

    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text(f"u0 {speech[0]}\nu1 {speech[1]}\ngone {tmp_path}/gone.wav\n")
    status, _, err = run_cli(capsys, "embed", *common, "--wav_scp", wav_scp,
                             "--output", tmp_path / "emb" / "xvector.ark")
    assert status == 0 and "2 embeddings" in err and "1 skipped" in err
    table = dict(kaldiio.load_scp(str(tmp_path / "emb" / "xvector.scp")))
    assert sorted(table) == ["u0", "u1"]
    np.testing.assert_allclose(table["u0"], expected, rtol=1e-6)

    status, out, _ = run_cli(capsys, "similarity", *common, speech[0], speech[0])
    assert status == 0 and float(out) == pytest.approx(1.0, abs=1e-5)
    status, out, _ = run_cli(capsys, "verify", *common, speech[0], speech[1], "--json")
    assert status == 0 and json.loads(out)["calibrated"] is False

    trials = tmp_path / "trials"
    corpus_trials = open(os.path.join(MINI_CORPUS, "trials")).readlines()
    lines = [line for line in corpus_trials if line.split()[2] == "target"][:20] + \
        [line for line in corpus_trials if line.split()[2] == "nontarget"][:20]
    trials.write_text("".join(lines))
    needed = {key for line in lines for key in line.split()[:2]}
    corpus_scp = tmp_path / "corpus.scp"
    corpus_scp.write_text("".join(
        f"{key} {os.path.join(MINI_CORPUS, path)}\n" for key, path in
        (line.split() for line in open(os.path.join(MINI_CORPUS, "wav.scp")))
        if key in needed))
    calibration = tmp_path / "calibration.json"
    status, out, _ = run_cli(capsys, "calibrate", *common, "--trials", trials,
                             "--wav_scp", corpus_scp, "--output", calibration)
    assert status == 0 and "20 target and 20 nontarget trials" in out
    status, out, _ = run_cli(capsys, "verify", *common, "--calibration", calibration,
                             speech[0], speech[1], "--json", "--operating_point", "fa1")
    result = json.loads(out)
    stored = json.loads(calibration.read_text())
    assert result["calibrated"] and result["threshold"] == \
        stored["operating_points"]["fa1"]["threshold"]

    gallery = tmp_path / "speakers.npz"
    assert run_cli(capsys, "enroll", *common, "--gallery", gallery, "alice", speech[0])[0] == 0
    status, out, _ = run_cli(capsys, "enroll", *common, "--gallery", gallery, "bob", speech[1])
    assert "holds 2 speaker(s)" in out
    status, out, _ = run_cli(capsys, "enroll", *common, "--gallery", gallery, "bob",
                             speech[0], "--append")
    assert status == 0 and "bob (1 recording(s), 2 in all)" in out
    # a stray argument: the subcommand's usage says what it takes
    status, _, err = run_cli(capsys, "identify", *common, "--gallery", gallery, speech[0],
                             speech[1])
    assert status == 2 and "wespeaker-py identify: error: unrecognized arguments" in err
    status, out, _ = run_cli(capsys, "identify", *common, "--gallery", gallery, speech[1],
                             "--json")
    assert [entry["speaker"] for entry in json.loads(out)][0] == "bob"


def test_unenroll_without_a_model_then_identify_names_the_emptied_gallery(
        folder, tmp_path, capsys, caplog, monkeypatch):
    from wespeaker_py.api.gallery import read_gallery
    speech = mini_speech(2)
    common = ["--model", folder, "--device", "cpu"]
    gallery = tmp_path / "speakers.npz"
    status, out, _ = run_cli(capsys, "enroll", *common, "--gallery", gallery, "alice",
                             speech[0], speech[0])
    assert status == 0 and "enrolled alice (1 recording(s));" in out
    assert "given more than once" in caplog.text
    assert run_cli(capsys, "enroll", *common, "--gallery", gallery, "bob", speech[1])[0] == 0
    identity = read_gallery(str(gallery)).identity

    def no_model(*args, **kwargs):
        raise AssertionError("unenroll loaded the model")
    monkeypatch.setattr(wespeaker_py, "load_model", no_model)
    monkeypatch.setattr(wespeaker_py.api, "load_model", no_model)
    status, _, err = run_cli(capsys, "unenroll", "--gallery", gallery, "alcie")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "'alcie' is not enrolled; it holds alice, bob; did you mean 'alice'?" in err
    status, out, _ = run_cli(capsys, "unenroll", "--gallery", gallery, "alice")
    assert (status, out) == (0, f"removed alice; {gallery} holds 1 speaker(s)\n")
    status, out, _ = run_cli(capsys, "unenroll", "--gallery", gallery, "bob")
    assert status == 0 and f"{gallery} holds no speakers" in out
    assert read_gallery(str(gallery)).identity == identity
    # the emptied gallery is named before the model loads
    status, out, err = run_cli(capsys, "identify", *common, "--gallery", gallery, speech[0])
    assert (status, out) == (2, "") and len(err.strip().splitlines()) == 1
    assert f"gallery {gallery} holds no speakers" in err and "wespeaker-py enroll" in err


def test_info_says_dither_and_spec_aug_are_training_only(folder, capsys):
    status, out, _ = run_cli(capsys, "info", "--model", folder, "--device", "cpu")
    [line] = [line for line in out.splitlines() if line.startswith("frontend ")]
    assert status == 0 and "training only: dither=1.0, spec_aug=" in line
    status, out, _ = run_cli(capsys, "info", "--model", folder, "--device", "cpu", "--json")
    assert "training only: dither=1.0, spec_aug=" in json.loads(out)["frontend"]


@pytest.mark.skipif(not all(__import__("importlib").util.find_spec(name)
                            for name in ("onnx", "onnxruntime")), reason="needs onnx")
def test_export_with_front_end_then_use_the_onnx_file(folder, tmp_path, capsys):
    speech = mini_speech(1)
    graph = tmp_path / "model.onnx"
    status, _, _ = run_cli(capsys, "export", "--model", folder, "--device", "cpu",
                           "--onnx", graph, "--with_frontend")
    assert status == 0 and graph.exists()
    status, out, _ = run_cli(capsys, "info", "--model", graph, "--json")
    assert json.loads(out)["engine"] == "onnxruntime (CPU)"
    status, out, _ = run_cli(capsys, "embed", "--model", graph, speech[0])
    np.testing.assert_allclose(np.array(out.split(), dtype=float),
                               wespeaker_py.load_model(folder, device="cpu").embed(speech[0]),
                               rtol=1e-3, atol=1e-3)


def test_user_errors_are_one_line_with_status_2(folder, tmp_path, capsys):
    no_config = tmp_path / "empty_model"
    os.makedirs(no_config)
    shutil.copy(os.path.join(folder, "avg_model.pt"), no_config)
    cases = [(["embed", "--model", folder, tmp_path / "missing.wav"], "missing.wav does not"),
             (["info", "--model", no_config], "has no config.yaml"),
             (["embed", "--model", folder], "give one audio file or --wav_scp"),
             (["identify", "--model", folder, "--gallery", tmp_path / "none.npz",
               mini_speech(1)[0]], "none.npz does not exist"),
             (["verify", "--model", tmp_path / "nowhere", mini_speech(1)[0],
               mini_speech(1)[0]], "nowhere does not exist")]
    for argv, message in cases:
        status, out, err = run_cli(capsys, *argv)
        assert status == 2, argv
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert err.startswith("wespeaker-py")


def test_similarity_of_a_silent_wav_exits_2_naming_it(folder, tmp_path, capsys):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(32000, np.int16), 16000, subtype="PCM_16")
    for pair in ((silent, mini_speech(1)[0]), (mini_speech(1)[0], silent)):
        status, out, err = run_cli(capsys, "similarity", "--model", folder, *pair)
        assert (status, out) == (2, "")
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"wespeaker-py: error: {silent} is silent: all 32000 samples are zero"), err


def test_no_traceback_unless_debugging(folder, tmp_path):
    # a missing input is reported before the model (and torch) loads
    command = [sys.executable, "-m", "wespeaker_py.cli.main", "similarity", "--model", folder,
               str(tmp_path / "missing.wav"), str(tmp_path / "missing.wav")]
    plain = subprocess.run(command, capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [
        f"wespeaker-py: error: {tmp_path}/missing.wav does not exist "
        "(run with --debug for the traceback)"]
    debug = subprocess.run(command, capture_output=True, text=True,
                           env=dict(os.environ, WESPEAKER_PY_DEBUG="1"))
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert "AudioInputError" in debug.stderr


def test_python_dash_m_wespeaker_py_cli_is_the_command():
    for module in ("wespeaker_py.cli", "wespeaker_py.cli.main"):
        result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                                text=True, cwd=REPO)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: wespeaker-py ")


@pytest.mark.parametrize("argv, flags, task, equivalent", [
    (["-p", "exp/X", "--task", "embedding", "--audio_file", "a.wav", "--output_file", "e.txt"],
     "-p, --task, --audio_file, --output_file", "embedding",
     "wespeaker-py embed --model DIR a.wav --output e.txt"),
    (["--pretrain=exp/X", "--task=similarity", "--audio_file", "a.wav", "--audio_file2", "b.wav"],
     "--pretrain, --task, --audio_file, --audio_file2", "similarity",
     "wespeaker-py similarity --model DIR a.wav b.wav"),
    (["--task", "diarization", "--audio_file", "a.wav"], "--task, --audio_file", "diarization",
     "wespeaker-py diarize --model DIR a.wav -o a.rttm"),
    (["embed", "--model", "exp/X", "a.wav", "--output_file", "e.txt"], "--output_file",
     "embedding", "wespeaker-py embed --model DIR a.wav --output e.txt"),
])
def test_wespeaker_cli_habits_keep_argparse_error_and_name_the_migration_guide(
        argv, flags, task, equivalent, capsys):
    status, out, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert (status, out) == (2, "")
    assert lines[-2].startswith("wespeaker-py") and ": error: " in lines[-2]
    what = "a flag" if "," not in flags else "flags"
    assert lines[-1] == (f"wespeaker-py: {flags}: {what} of WeSpeaker's `wespeaker` command; "
                         f"see docs/migrating-from-wespeaker.md for what to type instead "
                         f"(its --task {task} is `{equivalent}`)")


@pytest.mark.parametrize("command", ["window-lda", "band-fill"])
def test_data_that_is_a_file_is_named_as_such(command, tmp_path, capsys):
    scp = tmp_path / "wav.scp"
    scp.write_text("a a.wav\n")
    extra = ["--heard_rate", "8000"] if command == "band-fill" else []
    status, _, err = run_cli(capsys, command, "--model", tmp_path / "no_model",
                             "--data", scp, *extra)
    assert status == 2 and f"--data {scp} is a file: give a Kaldi data folder" in err


@pytest.mark.parametrize("command", ["embed", "calibrate", "diarize", "window-lda"])
def test_a_batch_size_below_one_is_refused_by_the_flag(command, tmp_path, capsys):
    status, _, err = run_cli(capsys, command, "--model", tmp_path / "no_model",
                             "--batch_size", "0")
    assert status == 2 and "argument --batch_size/--batch-size: must be at least 1, got 0" in err
