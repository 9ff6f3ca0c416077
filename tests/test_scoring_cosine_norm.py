"""Cosine scoring and AS-Norm / S-Norm against direct per-trial implementations."""
import numpy as np
import pytest
import torch

from scoring_helpers import naive_cosine, naive_norm
from wespeaker_py.scoring.cosine import cosine_score_trials
from wespeaker_py.io.ark import EmbeddingTable
from wespeaker_py.scoring.norm import cohort_statistics, normalize_trial_scores, top_row_values
from wespeaker_py.scoring.trials import read_trials


@pytest.fixture
def table_and_trials(tmp_path):
    rng = np.random.default_rng(0)
    keys = [f"u{i}" for i in range(40)]
    matrix = (rng.normal(size=(40, 16)) + 2.0).astype(np.float32)  # far from zero mean
    lines = [f"u{rng.integers(40)} u{rng.integers(40)} "
             f"{'target' if rng.random() < 0.5 else 'nontarget'}" for _ in range(200)]
    (tmp_path / "trials").write_text("\n".join(lines) + "\n")
    return EmbeddingTable(keys=keys, matrix=matrix, source="mem"), \
        read_trials(str(tmp_path / "trials")), lines


@pytest.mark.parametrize("with_mean", [False, True])
def test_cosine_matches_direct_loop(table_and_trials, with_mean):
    table, trials, lines = table_and_trials
    mean_vec = table.matrix[:10].mean(axis=0) if with_mean else None
    scores = cosine_score_trials(table, trials, mean_vec, device="cpu", chunk_size=7)
    for score, line in zip(scores, lines):
        enroll, test, _ = line.split()
        a = table.matrix[table.index[enroll]].astype(np.float64)
        b = table.matrix[table.index[test]].astype(np.float64)
        if with_mean:
            a, b = a - mean_vec, b - mean_vec
        assert score == pytest.approx(naive_cosine(a, b), abs=1e-5)


def test_mean_subtraction_changes_scores(table_and_trials):
    table, trials, _ = table_and_trials
    plain = cosine_score_trials(table, trials, None, device="cpu")
    centred = cosine_score_trials(table, trials, table.matrix.mean(axis=0), device="cpu")
    assert np.abs(plain - centred).max() > 0.1


@pytest.mark.parametrize("method,top_n", [("asnorm", 5), ("asnorm", 17), ("snorm", 0)])
def test_norm_matches_naive_per_trial(method, top_n):
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(30, 12)).astype(np.float32) + 0.5
    cohort = rng.normal(size=(23, 12)).astype(np.float32) + 0.5
    mean_vec = rng.normal(size=12).astype(np.float32) * 0.3
    enroll_rows = rng.integers(0, 30, size=50)
    test_rows = rng.integers(0, 30, size=50)
    scores = rng.uniform(-0.5, 0.9, size=50)
    result = normalize_trial_scores(scores, enroll_rows, test_rows, embeddings, cohort, method,
                                    top_n, mean_vec, device="cpu", chunk_size=4)
    effective_top = top_n if method == "asnorm" else len(cohort)
    for i in range(50):
        expected = naive_norm(scores[i], embeddings[enroll_rows[i]].astype(np.float64),
                              embeddings[test_rows[i]].astype(np.float64),
                              cohort.astype(np.float64), effective_top,
                              mean_vec.astype(np.float64))
        got = (result.scores[i], result.enroll_magnitude[i], result.test_magnitude[i],
               result.enroll_cohort_mean[i], result.test_cohort_mean[i])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_cohort_statistics_top_n_bounds():
    normed = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    with pytest.raises(ValueError, match="top_n"):
        cohort_statistics(normed, normed, top_n=4)


@pytest.mark.parametrize("width,top_n", [(1200, 50), (1203, 50), (1000, 1), (400, 150),
                                         (64, 64)])
def test_top_row_values_equal_a_full_sort(width, top_n):
    rng = np.random.default_rng(width + top_n)
    scores = rng.normal(size=(37, width)).astype(np.float32)
    scores[:5] = np.round(scores[:5], 1)  # many ties, also at the selection boundary
    scores[5, :] = 0.25  # one row all equal
    got = np.sort(top_row_values(scores, top_n), axis=1)
    np.testing.assert_array_equal(got, np.sort(scores, axis=1)[:, width - top_n:])


def reference_normalized_scores(scores, enroll_rows, test_rows, embeddings, cohort, top_n,
                                mean_vec):
    """Straightforward AS-Norm: float32 cosines, a full sort per utterance, float64 stats."""
    def unit(x):
        x = x.astype(np.float64) - mean_vec
        return torch.nn.functional.normalize(torch.from_numpy(x.astype(np.float32)), dim=1)
    cohort_scores = (unit(embeddings) @ unit(cohort).t()).numpy()
    top = np.sort(cohort_scores, axis=1)[:, -top_n:].astype(np.float64)
    mean, std = top.mean(axis=1), top.std(axis=1)
    return 0.5 * ((scores - mean[enroll_rows]) / std[enroll_rows]
                  + (scores - mean[test_rows]) / std[test_rows])


def test_pruned_asnorm_matches_a_full_sort():
    rng = np.random.default_rng(5)
    embeddings = rng.normal(size=(700, 32)).astype(np.float32)
    cohort = rng.normal(size=(1500, 32)).astype(np.float32)
    cohort[700:720] = cohort[:20]  # duplicated cohort members tie exactly
    mean_vec = rng.normal(size=32).astype(np.float32) * 0.1
    enroll_rows, test_rows = rng.integers(0, 700, size=2000), rng.integers(0, 700, size=2000)
    scores = rng.uniform(-0.5, 0.9, size=2000)
    result = normalize_trial_scores(scores, enroll_rows, test_rows, embeddings, cohort,
                                    "asnorm", 60, mean_vec, device="cpu", chunk_size=300)
    expected = reference_normalized_scores(scores, enroll_rows, test_rows, embeddings, cohort,
                                           60, mean_vec.astype(np.float64))
    np.testing.assert_allclose(result.scores, expected, rtol=0, atol=1e-12)


@pytest.mark.gpu
def test_cuda_cosine_matches_cpu(table_and_trials):
    table, trials, _ = table_and_trials
    mean_vec = table.matrix.mean(axis=0)
    np.testing.assert_allclose(cosine_score_trials(table, trials, mean_vec, device="cuda"),
                               cosine_score_trials(table, trials, mean_vec, device="cpu"),
                               atol=1e-5)


@pytest.mark.gpu
def test_cuda_norm_matches_cpu():
    rng = np.random.default_rng(2)
    embeddings = rng.normal(size=(64, 32)).astype(np.float32)
    cohort = rng.normal(size=(100, 32)).astype(np.float32)
    rows = rng.integers(0, 64, size=200)
    scores = rng.normal(size=200)
    cpu = normalize_trial_scores(scores, rows, rows[::-1].copy(), embeddings, cohort, "asnorm",
                                 10, device="cpu")
    gpu = normalize_trial_scores(scores, rows, rows[::-1].copy(), embeddings, cohort, "asnorm",
                                 10, device="cuda")
    np.testing.assert_allclose(gpu.scores, cpu.scores, rtol=1e-4, atol=1e-4)
