"""What the scoring entry points write, checked line by line against oracles computed here.

The units behind these files have their own tests; these check the joins between them:
that ``bin.score --cal_mean_dir`` subtracts that set's mean, that ``bin.score_norm``
normalises after subtracting ``--mean_vec_path``, and that the QMF columns it writes are
the ones ``gather_calibration_factors`` reads them as.
"""
import numpy as np
import pytest

from scoring_helpers import pair_features
from scoring_helpers import naive_norm
from wespeaker_py.bin import score, score_calibration, score_norm
from wespeaker_py.io.ark import write_embeddings

DIM = 8
TOP_N = 5
# utterance -> how far it lies from the mean, so that each side's magnitude tells them apart
SCALES = {"u1": 1.0, "u2": 2.5, "u3": 4.0, "u4": 5.5, "u5": 7.0, "u6": 8.5}
DURATIONS = {"u1": 3.0, "u2": 5.5, "u3": 8.0, "u4": 11.5, "u5": 14.0, "u6": 17.5}
TRIALS = [("u1", "u2", "target"), ("u3", "u1", "nontarget"), ("u4", "u6", "target"),
          ("u5", "u2", "nontarget"), ("u6", "u3", "nontarget")]


def unit_cosine(first: np.ndarray, second: np.ndarray) -> float:
    return float(first @ second / (np.linalg.norm(first) * np.linalg.norm(second)))


def fields_of(path: str):
    return [line.split() for line in open(path).read().splitlines()]


@pytest.fixture
def normalised(tmp_path):
    """Embeddings around a mean vector far from zero, a cohort around the same mean, the
    cosine scores of TRIALS after subtracting that mean (computed here), and the
    score_norm file that ``bin.score_norm --mean_vec_path`` writes from them."""
    rng = np.random.default_rng(7)
    mean = (2.0 + rng.normal(size=DIM)).astype(np.float32)
    shared = rng.normal(size=DIM)   # a direction all speakers lean to: cohort top-N means > 0
    eval_rows = {key: (mean + scale * (shared + rng.normal(size=DIM)) / 3).astype(np.float32)
                 for key, scale in SCALES.items()}
    cohort = (mean + shared + rng.normal(size=(20, DIM))).astype(np.float32)
    write_embeddings(str(tmp_path / "eval" / "xvector.ark"), list(eval_rows),
                     np.stack(list(eval_rows.values())))
    write_embeddings(str(tmp_path / "cohort" / "spk_xvector.ark"),
                     [f"spk{i}" for i in range(len(cohort))], cohort)
    np.save(tmp_path / "mean_vec.npy", mean)
    scores = [round(unit_cosine(eval_rows[e].astype(np.float64) - mean,
                                eval_rows[t].astype(np.float64) - mean), 5)
              for e, t, _ in TRIALS]
    (tmp_path / "trials.score").write_text("".join(
        f"{e} {t} {s:.5f} {label}\n" for (e, t, label), s in zip(TRIALS, scores)))
    (tmp_path / "utt2dur").write_text("".join(f"{k} {d}\n" for k, d in DURATIONS.items()))
    norm_file = str(tmp_path / "asnorm.score")
    score_norm.main(["--score_norm_method", "asnorm", "--top_n", str(TOP_N),
                     "--trial_score_file", str(tmp_path / "trials.score"),
                     "--score_norm_file", norm_file,
                     "--cohort_emb_scp", str(tmp_path / "cohort" / "spk_xvector.scp"),
                     "--eval_emb_scp", str(tmp_path / "eval" / "xvector.scp"),
                     "--mean_vec_path", str(tmp_path / "mean_vec.npy"), "--device", "cpu"])
    expected = [naive_norm(s, eval_rows[e].astype(np.float64), eval_rows[t].astype(np.float64),
                           cohort.astype(np.float64), TOP_N, mean.astype(np.float64))
                for (e, t, _), s in zip(TRIALS, scores)]
    return tmp_path, norm_file, expected


def test_score_norm_file_matches_the_naive_oracle_after_the_mean_vector(normalised):
    """Every column of every line: the normalised score, then |enroll - mean|,
    |test - mean| and the two sides' top-N cohort means, in that order."""
    _, norm_file, expected = normalised
    lines = fields_of(norm_file)
    assert [tuple(fields[:2]) + (fields[3],) for fields in lines] == TRIALS
    for fields, (normed, e_mag, t_mag, e_mean, t_mean) in zip(lines, expected):
        np.testing.assert_allclose(float(fields[2]), normed, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose([float(value) for value in fields[4:8]],
                                   [e_mag, t_mag, e_mean, t_mean], atol=1.5e-4)
    # the data tell the columns apart: magnitudes are not cohort means, nor sides alike
    magnitudes = np.array([row[1:3] for row in expected])
    cohort_means = np.array([row[3:5] for row in expected])
    assert magnitudes.min() > 1.0 and np.abs(cohort_means).max() < 1.0
    assert np.abs(magnitudes[:, 0] - magnitudes[:, 1]).min() > 0.5


def test_calibration_factors_read_the_score_norm_columns_as_written(normalised):
    """gather_calibration_factors pairs the file's columns per quality measure: its
    features are those of (enroll, test) durations, magnitudes and cohort means."""
    root, norm_file, expected = normalised
    factors = str(root / "trials.calibration")
    score_calibration.main(["gather_calibration_factors", "--wav_dur_scp", str(root / "utt2dur"),
                            "--score_norm_file", norm_file,
                            "--calibration_factor_file", factors])
    lines = fields_of(factors)
    assert len(lines) == len(TRIALS)
    for fields, (e, t, label), (normed, e_mag, t_mag, e_mean, t_mean) in zip(
            lines, TRIALS, expected):
        assert fields[:3] == [e, t, label]
        want = (pair_features(DURATIONS[e], DURATIONS[t]) + pair_features(e_mag, t_mag)
                + pair_features(e_mean, t_mean))
        np.testing.assert_allclose([float(value) for value in fields[4:]], want,
                                   rtol=1e-3, atol=3e-4)


def test_score_subtracts_the_mean_of_cal_mean_dir_not_of_the_evaluation_set(tmp_path):
    """``bin.score --cal_mean_dir`` with a reference set far from the evaluation set: the
    saved mean_vec.npy is the reference set's mean, and every score is the cosine after
    subtracting it."""
    rng = np.random.default_rng(3)
    reference = (5.0 + rng.normal(size=(40, DIM))).astype(np.float32)
    eval_rows = {key: (-5.0 + rng.normal(size=DIM)).astype(np.float32) for key in SCALES}
    emb = tmp_path / "embeddings"
    write_embeddings(str(emb / "vox2_dev" / "xvector.ark"),
                     [f"ref{i}" for i in range(len(reference))], reference)
    eval_scp = write_embeddings(str(emb / "vox1" / "xvector.ark"), list(eval_rows),
                                np.stack(list(eval_rows.values())))
    trials = tmp_path / "vox1_O.kaldi"
    trials.write_text("".join(f"{e} {t} {label}\n" for e, t, label in TRIALS))
    (score_file,) = score.main(["--exp_dir", str(tmp_path / "exp"), "--eval_scp_path", eval_scp,
                                "--cal_mean", "True", "--cal_mean_dir", str(emb / "vox2_dev"),
                                "--device", "cpu", str(trials)])
    want_mean = reference.astype(np.float64).mean(axis=0)
    eval_mean = np.stack(list(eval_rows.values())).astype(np.float64).mean(axis=0)
    assert np.abs(want_mean - eval_mean).min() > 5.0
    np.testing.assert_allclose(np.load(emb / "vox2_dev" / "mean_vec.npy"), want_mean, rtol=1e-6)
    lines = fields_of(score_file)
    assert [(f[0], f[1], f[3]) for f in lines] == TRIALS
    for fields, (e, t, _) in zip(lines, TRIALS):
        assert float(fields[2]) == pytest.approx(
            unit_cosine(eval_rows[e] - want_mean, eval_rows[t] - want_mean), abs=2e-5)
