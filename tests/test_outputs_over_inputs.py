"""An output path that is one of the command's inputs is refused before any work (exit 2, one
line naming both flags, the input untouched); diarize --plot takes an image extension only;
list jobs of wespeaker-py show progress in a log too."""
import os
import shutil

import numpy as np
import pytest

from api_helpers import mini_speech, wespeaker_folder
from inference_helpers import make_experiment, make_raw_list_corpus
from tool_helpers import assert_output_refused, run_cli
from wespeaker_py.bin import (adapt_plda, compute_det, convert_checkpoint, eval_plda,
                              export_onnx, extract, merge_lora, plot_training, score,
                              score_calibration, score_diarization, score_norm, train_plda)
from wespeaker_py.cli.common import run_main
from wespeaker_py.diarization import write_rttm
from wespeaker_py.diarization.turns import Turn
from wespeaker_py.io.ark import write_embeddings
from wespeaker_py.utils.progress import INTERVAL_ENV, PROGRESS_ENV


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder, _ = wespeaker_folder(str(tmp_path_factory.mktemp("over_inputs") / "model"))
    return folder


@pytest.fixture
def audio(tmp_path):
    """Two utterances of the mini corpus copied here, and a wav.scp of them."""
    paths = [shutil.copy(source, tmp_path / f"{name}.wav")
             for name, source in zip("ab", mini_speech(2))]
    (tmp_path / "wav.scp").write_text("".join(f"{name} {path}\n"
                                              for name, path in zip("ab", paths)))
    return tmp_path


@pytest.mark.parametrize("argv, kept, flags", [
    (["embed", "--wav_scp", "wav.scp", "--output", "wav.ark"], "wav.scp",
     ["--output wav.ark's .scp wav.scp", "--wav_scp"]),
    (["diarize", "--vad", "energy", "a.wav", "-o", "a.wav"], "a.wav",
     ["-o/--output", "the audio argument"]),
    (["diarize", "--vad", "energy", "a.wav", "--plot", "a.wav"], "a.wav",
     ["--plot", "the audio argument"]),
    (["diarize", "--vad", "energy", "wav.scp", "-o", "wav.scp"], "wav.scp",
     ["-o/--output", "the audio argument"]),
    (["enroll", "--gallery", "b.wav", "alice", "a.wav", "b.wav"], "b.wav",
     ["--gallery", "audio argument 2"]),
])
def test_the_cli_refuses_an_output_that_is_an_input(model, audio, capsys, monkeypatch, argv,
                                                    kept, flags):
    monkeypatch.chdir(audio)
    before = open(kept, "rb").read()
    status, _, err = run_cli(capsys, argv[0], "--model", model, "--device", "cpu", *argv[1:])
    assert_output_refused(status, err, kept, before, *flags)
    assert not os.path.exists("wav.ark")


def test_diarize_refuses_a_plot_that_is_no_image_before_any_work(model, audio, capsys):
    status, _, err = run_cli(capsys, "diarize", "--model", model, "--vad", "energy",
                             audio / "a.wav", "--plot", audio / "p.txt")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert f"--plot {audio / 'p.txt'}" in err and ".png" in err and ".svg" in err
    assert not (audio / "p.txt").exists()


@pytest.mark.parametrize("suffix, magic", [(".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_diarize_draws_the_plot_in_the_format_of_its_extension(model, audio, capsys, suffix,
                                                               magic):
    plot = audio / f"a{suffix}"
    status, _, err = run_cli(capsys, "diarize", "--model", model, "--vad", "energy",
                             "--num_speakers", "1", audio / "a.wav", "--plot", plot)
    assert status == 0, err
    assert plot.read_bytes().startswith(magic)


def test_embed_wav_scp_shows_progress_in_a_log(model, audio, capsys, monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    monkeypatch.setenv(INTERVAL_ENV, "0")
    status, _, err = run_cli(capsys, "embed", "--model", model, "--device", "cpu",
                             "--wav_scp", audio / "wav.scp", "--output", audio / "e.ark")
    assert status == 0, err
    lines = [line for line in err.splitlines() if line.startswith("embedding:")]
    assert lines and "2/2" in lines[-1], err


# -- the recipes' entry points ------------------------------------------------------------------

@pytest.fixture
def scored(tmp_path):
    """Embeddings of four speakers, their utt2spk, a trial list, a PLDA model and the trials'
    cosine scores, as the recipe's stages leave them."""
    rng = np.random.default_rng(0)
    keys = [f"spk{s}-utt{u}" for s in range(4) for u in range(4)]
    centres = rng.normal(size=(4, 8))
    vectors = np.array([centres[int(key[3])] + 0.3 * rng.normal(size=8) for key in keys])
    write_embeddings(str(tmp_path / "xvector.ark"), keys, vectors.astype(np.float32))
    (tmp_path / "utt2spk").write_text("".join(f"{key} {key[:4]}\n" for key in keys))
    (tmp_path / "utt2utt").write_text("".join(f"{key} {key}\n" for key in keys))
    (tmp_path / "trials").write_text("".join(
        f"{a} {b} {'target' if a[:4] == b[:4] else 'nontarget'}\n"
        for a in keys[::3] for b in keys[1::3]))
    train_plda.main(["--exp_dir", str(tmp_path), "--scp_path", str(tmp_path / "xvector.scp"),
                     "--utt2spk", str(tmp_path / "utt2spk"), "--iter", "2"])
    score.main(["--exp_dir", str(tmp_path), "--eval_scp_path", str(tmp_path / "xvector.scp"),
                str(tmp_path / "trials")])
    return tmp_path


def run_bin(capsys, main, argv):
    """(exit status, stderr) of an entry point run as its command line would."""
    status = run_main(main, [str(arg) for arg in argv], prog="tool")
    return status, capsys.readouterr().err


def test_eval_plda_refuses_to_write_scores_over_the_trials(scored, capsys):
    trials = scored / "trials"
    before = trials.read_bytes()
    status, err = run_bin(capsys, eval_plda.main, [
        "--enroll_scp_path", scored / "xvector.scp", "--test_scp_path", scored / "xvector.scp",
        "--utt2spk", scored / "utt2utt", "--model_path", scored / "plda",
        "--trial", trials, "--score_path", trials])
    assert_output_refused(status, err, trials, before, "--score_path", "--trial")


def test_score_norm_refuses_to_write_over_the_cosine_scores(scored, capsys):
    cosine = scored / "scores" / "trials.score"
    before = cosine.read_bytes()
    status, err = run_bin(capsys, score_norm.main, [
        "--score_norm_method", "snorm", "--top_n", "2", "--trial_score_file", cosine,
        "--score_norm_file", cosine, "--cohort_emb_scp", scored / "xvector.scp",
        "--eval_emb_scp", scored / "xvector.scp"])
    assert_output_refused(status, err, cosine, before, "--score_norm_file", "--trial_score_file")


def test_score_refuses_scores_over_another_trial_list(scored, capsys):
    # trial lists 'x' and 'x.score' in EXP/scores: the first's scores would replace the second
    listed = scored / "scores" / "x.score"
    shutil.copy(scored / "trials", scored / "scores" / "x")
    shutil.copy(scored / "trials", listed)
    before = listed.read_bytes()
    status, err = run_bin(capsys, score.main, [
        "--exp_dir", scored, "--eval_scp_path", scored / "xvector.scp",
        scored / "scores" / "x", listed])
    assert_output_refused(status, err, listed, before, "the scores of trial list 1", "trial list 2")


def labelled_scores(path):
    """A small labelled score file at ``path``; returns its bytes."""
    path.write_text("".join(f"e{n} t{n} {n / 10:.1f} {'target' if n % 2 else 'nontarget'}\n"
                            for n in range(10)))
    return path.read_bytes()


def test_compute_det_refuses_points_over_another_score_file(tmp_path, capsys):
    # score files 'a' and 'a.det.txt': the DET points of the first would replace the second
    listed = tmp_path / "a.det.txt"
    labelled_scores(tmp_path / "a")
    before = labelled_scores(listed)
    status, err = run_bin(capsys, compute_det.main, [tmp_path / "a", listed])
    assert_output_refused(status, err, listed, before, "the DET points of score file 1",
                          "score file 2")
    assert sorted(os.listdir(tmp_path)) == ["a", "a.det.txt"]


def test_compute_det_checks_every_file_before_any_work(tmp_path, capsys):
    labelled_scores(tmp_path / "a")
    labelled_scores(tmp_path / "b")
    (tmp_path / "b.hist.png").mkdir()   # a folder where the second file's histogram goes
    status, err = run_bin(capsys, compute_det.main, [tmp_path / "a", tmp_path / "b"])
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{tmp_path / 'b.hist.png'} is a folder" in err
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "b.hist.png"]
    status, err = run_bin(capsys, compute_det.main, [tmp_path / "a", tmp_path / "c"])
    assert status == 2 and f"score file 2 {tmp_path / 'c'} does not exist" in err, err
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "b.hist.png"]


def test_extract_refuses_an_scp_over_the_data_list(tmp_path, capsys):
    config, checkpoint, _ = make_experiment(str(tmp_path / "exp"), bare=True)
    raw_list, _ = make_raw_list_corpus(str(tmp_path / "data"), [16000, 16000])
    data_list = tmp_path / "emb" / "xvector.scp"
    data_list.parent.mkdir()
    shutil.copy(raw_list, data_list)
    before = data_list.read_bytes()
    status, err = run_bin(capsys, extract.main, [
        "--config", config, "--model_path", checkpoint, "--data_type", "raw",
        "--data_list", data_list, "--embed_ark", tmp_path / "emb" / "xvector.ark",
        "--device", "cpu"])
    assert_output_refused(status, err, data_list, before, "--embed_ark", "--data_list")


def test_score_diarization_refuses_to_write_the_table_over_the_reference(tmp_path, capsys):
    reference = tmp_path / "ref.rttm"
    write_rttm(str(reference), {"rec": [Turn(0.0, 2.0, "x"), Turn(2.0, 4.0, "y")]})
    write_rttm(str(tmp_path / "sys.rttm"), {"rec": [Turn(0.0, 4.0, "s")]})
    before = reference.read_bytes()
    status, err = run_bin(capsys, score_diarization._main, [
        "--ref_rttm", reference, "--sys_rttm", tmp_path / "sys.rttm", "--output", reference])
    assert_output_refused(status, err, reference, before, "--output", "--ref_rttm")


@pytest.mark.parametrize("main, argv, flags", [
    (adapt_plda.main, ["-mo", "f", "-ma", "f", "-ad", "g"], ["--mdl_adp", "--mdl_org"]),
    (merge_lora.main, ["--config", "g", "--checkpoint_in", "f", "--checkpoint_out", "f"],
     ["--checkpoint_out", "--checkpoint_in"]),
    (convert_checkpoint.main, ["wavlm-export", "--src", "f", "--dst", "f"], ["--dst", "--src"]),
    (export_onnx.main, ["--config", "g", "--checkpoint", "f", "--output_model", "f"],
     ["--output_model", "--checkpoint"]),
    (plot_training.main, ["f", "--output", "f"], ["--output", "the log"]),
    (score_calibration.main, ["infer_calibration", "--calibration_factor_file", "f",
                              "--save_model_path", "g", "--calibration_score_file", "f"],
     ["--calibration_score_file", "--calibration_factor_file"]),
])
def test_other_entry_points_refuse_an_output_that_is_an_input(tmp_path, capsys, monkeypatch,
                                                              main, argv, flags):
    monkeypatch.chdir(tmp_path)
    for name in ("f", "g"):
        (tmp_path / name).write_bytes(b"an input\n")
    status, err = run_bin(capsys, main, argv)
    assert_output_refused(status, err, "f", b"an input\n", *flags)


@pytest.mark.skipif(not all(__import__("importlib").util.find_spec(name)
                            for name in ("onnx", "onnxruntime")), reason="needs onnx")
def test_export_into_the_model_folder_is_not_taken_for_an_input(tmp_path, capsys):
    # --onnx DIR/ writes DIR/model.onnx, which the model does not read: the folder itself is
    # no output over an input
    folder, _ = wespeaker_folder(str(tmp_path / "model"))
    status, _, err = run_cli(capsys, "export", "--model", folder, "--device", "cpu",
                             "--onnx", folder + os.sep)
    assert status == 0, err
    assert os.path.isfile(os.path.join(folder, "model.onnx"))
