"""Values of the scoring commands' flags that make no sense are refused by name before any
work: costs, duration caps, EM iterations and LDA dimensions, and a mean of embeddings of
another dimension than those it is subtracted from."""
import os

import numpy as np
import pytest

from wespeaker_py.bin import compute_metrics, score, score_calibration, train_plda
from wespeaker_py.cli.common import run_main
from wespeaker_py.errors import WespeakerError
from wespeaker_py.io.ark import write_embeddings
from wespeaker_py.scoring.plda import PLDAOptionError, TwoCovPLDA

DIM = 16
NONSENSE_NUMBERS = ["0", "-1", "nan", "inf"]


def run(capsys, main, *argv):
    """(exit status, stdout, stderr) of ``main`` run as its console script runs it."""
    try:
        status = run_main(main, [str(arg) for arg in argv])
    except SystemExit as stopped:   # argparse exits itself
        status = stopped.code
    out, err = capsys.readouterr()
    return status, out, err


def argument(flag):
    """How argparse names ``flag`` in its errors (both spellings where there are two)."""
    hyphenated = flag.replace("_", "-")
    return f"argument {flag}/{hyphenated}" if hyphenated != flag else f"argument {flag}"


def write_speakers(tmp_path, name, dim=DIM, num_speakers=6, per_speaker=4):
    """``name``/xvector.scp of ``num_speakers`` speakers in ``dim`` dimensions, and its
    utt2spk; return both paths."""
    rng = np.random.default_rng(0)
    keys = [f"s{s}-u{u}" for s in range(num_speakers) for u in range(per_speaker)]
    centres = rng.normal(size=(num_speakers, dim))
    matrix = np.repeat(centres, per_speaker, axis=0) + 0.3 * rng.normal(size=(len(keys), dim))
    scp = write_embeddings(str(tmp_path / name / "xvector.ark"), keys, matrix.astype(np.float32))
    utt2spk = tmp_path / name / "utt2spk"
    utt2spk.write_text("".join(f"{key} {key.split('-')[0]}\n" for key in keys))
    return scp, str(utt2spk)


# -- costs and duration caps -------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--c_miss", "--c_fa"])
@pytest.mark.parametrize("value", NONSENSE_NUMBERS)
def test_compute_metrics_refuses_a_cost_that_is_not_a_finite_positive_number(
        tmp_path, capsys, flag, value):
    scores = tmp_path / "s.score"
    scores.write_text("a b 0.9 target\na c 0.1 nontarget\n")
    status, out, err = run(capsys, compute_metrics.main, flag, value, scores)
    assert status == 2 and out == "" and "Traceback" not in err
    assert f"{argument(flag)}: must be a finite number > 0, got {value}" in err


@pytest.mark.parametrize("value", NONSENSE_NUMBERS)
def test_gather_calibration_factors_refuses_a_duration_cap_that_is_no_duration(
        tmp_path, capsys, value):
    norm = tmp_path / "n.score"
    norm.write_text("a b 1.0 target 1 1 0.2 0.2\n")
    (tmp_path / "utt2dur").write_text("a 3.0\nb 5.0\n")
    status, _, err = run(capsys, score_calibration.main, "gather_calibration_factors",
                         "--score_norm_file", norm, "--wav_dur_scp", tmp_path / "utt2dur",
                         "--calibration_factor_file", tmp_path / "f", "--max_dur", value)
    assert status == 2 and "Traceback" not in err
    assert f"{argument('--max_dur')}: must be a finite number > 0, got {value}" in err
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("value", [0.0, -5.0, float("nan")])
def test_gather_calibration_factors_refuses_such_a_cap_from_python_too(tmp_path, value):
    # from the API, -5 made every duration -5 and NaN every duration NaN
    from wespeaker_py.scoring import qmf
    norm = tmp_path / "n.score"
    norm.write_text("a b 1.0 target 1 1 0.2 0.2\n")
    (tmp_path / "utt2dur").write_text("a 3.0\nb 5.0\n")
    with pytest.raises(ValueError, match=f"max_dur must be a number of seconds > 0, got {value}"):
        qmf.gather_calibration_factors(str(norm), str(tmp_path / "f"),
                                       str(tmp_path / "utt2dur"), max_dur=value)
    assert not (tmp_path / "f").exists()


# -- PLDA training -----------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value", [("--iter", "0"), ("--iter", "-2"),
                                         ("--lda_dim", "0"), ("--lda_dim", "-3")])
def test_train_plda_refuses_counts_below_one(tmp_path, capsys, flag, value):
    scp, utt2spk = write_speakers(tmp_path, "train")
    status, _, err = run(capsys, train_plda.main, "--scp_path", scp, "--utt2spk", utt2spk,
                         "--exp_dir", tmp_path, f"{flag}={value}")
    assert status == 2 and "Traceback" not in err
    assert f"{argument(flag)}: must be at least 1, got {value}" in err
    assert not (tmp_path / "plda").exists()


def test_train_plda_refuses_whitening_together_with_lda(tmp_path, capsys):
    scp, utt2spk = write_speakers(tmp_path, "train")
    status, _, err = run(capsys, train_plda.main, "--scp_path", scp, "--utt2spk", utt2spk,
                         "--exp_dir", tmp_path, "--whiten", "--lda_dim", "4")
    assert status == 2 and "Traceback" not in err
    assert "give --whiten or --lda_dim, not both" in err


def test_train_plda_refuses_an_lda_dimension_above_the_embeddings_in_one_line(tmp_path, capsys):
    scp, utt2spk = write_speakers(tmp_path, "train")
    status, _, err = run(capsys, train_plda.main, "--scp_path", scp, "--utt2spk", utt2spk,
                         "--exp_dir", tmp_path, "--lda_dim", "40")
    assert status == 2 and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    assert f"--lda_dim 40 must lie between 1 and {DIM}, the dimension of the embeddings in " \
           f"{scp}" in err
    assert not (tmp_path / "plda").exists()
    status, _, _ = run(capsys, train_plda.main, "--scp_path", scp, "--utt2spk", utt2spk,
                       "--exp_dir", tmp_path, "--lda_dim", str(DIM), "--iter", "1")
    assert status == 0 and (tmp_path / "plda").exists()


@pytest.mark.parametrize("options, says", [
    ({"lda_dim": DIM + 1}, f"lda_dim {DIM + 1} must lie between 1 and {DIM}"),
    ({"lda_dim": 0}, f"lda_dim 0 must lie between 1 and {DIM}"),
    ({"whiten": True, "lda_dim": 4}, "choose whitening or LDA, not both"),
    ({"num_iters": 0}, "num_iters 0: PLDA training needs at least one EM iteration"),
])
def test_plda_training_options_that_do_not_fit_are_the_projects_errors(options, says):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 4)
    embeddings = rng.normal(size=(len(labels), DIM))
    with pytest.raises(PLDAOptionError, match=says) as error:
        TwoCovPLDA.train(embeddings, labels, **options)
    assert isinstance(error.value, WespeakerError)


# -- a mean of other embeddings ----------------------------------------------------------------

def test_score_refuses_a_cal_mean_dir_of_another_dimension_before_writing_its_mean(
        tmp_path, capsys):
    eval_scp, _ = write_speakers(tmp_path, "eval")
    reference_scp, _ = write_speakers(tmp_path, "reference", dim=8)
    trials = tmp_path / "trials"
    trials.write_text("s0-u0 s0-u1 target\ns0-u0 s1-u0 nontarget\n")
    status, _, err = run(capsys, score.main, "--exp_dir", tmp_path / "exp", "--eval_scp_path",
                         eval_scp, "--cal_mean", "True", "--cal_mean_dir", tmp_path / "reference",
                         "--device", "cpu", trials)
    assert status == 2 and "Traceback" not in err
    assert f"{reference_scp}: embeddings have dimension 8, but the evaluation embeddings " \
           f"{eval_scp} have {DIM}" in err
    assert not os.path.exists(tmp_path / "reference" / "mean_vec.npy")
    assert not os.path.exists(tmp_path / "exp" / "scores" / "trials.score")
