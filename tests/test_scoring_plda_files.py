"""PLDA scoring of files: one embedding file given for enrolment and test is read once;
every score equals the Gaussian ratio computed here under each option of eval_plda."""
import shutil

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from wespeaker_py.io.ark import write_embeddings
from wespeaker_py.scoring import plda_files
from wespeaker_py.scoring.plda import Preprocessing, TwoCovPLDA


def test_one_file_for_enrolment_and_test_is_read_once_and_scores_the_same(tmp_path,
                                                                          monkeypatch):
    rng = np.random.default_rng(6)
    speakers = rng.standard_normal((12, 6))
    keys = [f"s{i // 5:02d}-u{i}" for i in range(60)]
    matrix = (speakers[np.arange(60) // 5] + 0.3 * rng.standard_normal((60, 6))
              ).astype(np.float32)
    scp = write_embeddings(str(tmp_path / "xvector.ark"), keys, matrix)
    (tmp_path / "utt2spk").write_text("".join(f"{k} {k[:3]}\n" for k in keys))
    (tmp_path / "utt2self").write_text("".join(f"{k} {k}\n" for k in keys))
    (tmp_path / "trials").write_text("".join(
        f"{keys[a]} {keys[b]} {'target' if a // 5 == b // 5 else 'nontarget'}\n"
        for a, b in rng.integers(0, 60, (200, 2))))
    model = str(tmp_path / "plda.pt")
    plda_files.train_plda_files(scp, str(tmp_path / "utt2spk"), model, num_iters=2)
    shutil.copy(scp, tmp_path / "copy.scp")

    reads = []
    load = plda_files.load_embeddings

    def counting_load(path, *args, **kwargs):
        reads.append(path)
        return load(path, *args, **kwargs)

    monkeypatch.setattr(plda_files, "load_embeddings", counting_load)
    monkeypatch.chdir(tmp_path)
    outputs = {}
    for name, test_scp in (("same", scp), ("same, relative", "./xvector.scp"),
                           ("copy", str(tmp_path / "copy.scp"))):
        reads.clear()
        outputs[name] = str(tmp_path / f"{name}.score")
        plda_files.eval_plda_files(model, scp, str(tmp_path / "utt2self"), test_scp,
                                   str(tmp_path / "trials"), outputs[name])
        assert len(reads) == (2 if name == "copy" else 1), name
    texts = {name: open(path).read() for name, path in outputs.items()}
    assert len(texts["copy"].splitlines()) == 200
    assert texts["same"] == texts["copy"] == texts["same, relative"]


def gaussian_llr(mu, between, within, enroll_mean, count, test):
    """log p(mean of ``count`` enrolment embeddings, test | one speaker) minus the log of
    the two marginals, for x = mu + y + e, y ~ N(0, B), e ~ N(0, W)."""
    mean_cov = between + within / count
    joint = np.block([[mean_cov, between], [between, between + within]])
    same = multivariate_normal(np.concatenate([mu, mu]), joint).logpdf(
        np.concatenate([enroll_mean, test]))
    return (same - multivariate_normal(mu, mean_cov).logpdf(enroll_mean)
            - multivariate_normal(mu, between + within).logpdf(test))


@pytest.mark.parametrize("normalize_length", [False, True])
@pytest.mark.parametrize("indomain", [False, True])
@pytest.mark.parametrize("multisession_avg", [False, True])
def test_every_score_is_the_gaussian_ratio_under_each_option(tmp_path, normalize_length,
                                                             indomain, multisession_avg):
    dim = 4
    rng = np.random.default_rng(11)
    mu = 0.3 * rng.standard_normal(dim)
    factor = rng.standard_normal((dim, dim))
    between = factor @ factor.T + np.eye(dim)
    factor = rng.standard_normal((dim, dim))
    within = 0.5 * factor @ factor.T + 0.5 * np.eye(dim)
    pre_mean = rng.standard_normal(dim)
    projection = rng.standard_normal((dim, dim)) + 2 * np.eye(dim)
    preprocessing = (Preprocessing(pre_mean, projection, normalize_length=True)
                     if normalize_length else None)
    model = str(tmp_path / "plda")
    TwoCovPLDA.from_covariances(mu, between, within, preprocessing).save(model)

    def to_plda_space(rows):
        if not normalize_length:
            return rows
        projected = (rows - pre_mean) @ projection.T
        return projected * np.sqrt(dim) / np.linalg.norm(projected, axis=1, keepdims=True)

    # alice enrols from 1 utterance, bob from 3, carol from 2; their rows interleave
    enrol = {"alice": ["e0"], "bob": ["e1", "e3", "e5"], "carol": ["e2", "e4"]}
    tests = [f"t{i}" for i in range(4)]
    keys = [f"e{i}" for i in range(6)] + tests
    vectors = dict(zip(keys, 2.0 * rng.standard_normal((len(keys), dim)) + 1.0))
    scp = write_embeddings(str(tmp_path / "xvector.ark"), keys,
                           np.array([vectors[k] for k in keys], dtype=np.float32))
    (tmp_path / "utt2spk").write_text("".join(f"{u} {s}\n" for s, utts in enrol.items()
                                              for u in utts))
    (tmp_path / "trials").write_text("".join(f"{s} {t} nontarget\n" for s in enrol
                                             for t in tests))
    options = {"multisession_avg": multisession_avg}
    centre = mu
    if indomain:
        domain = (rng.standard_normal((30, dim)) + 3.0).astype(np.float32)
        options["indomain_scp_path"] = write_embeddings(
            str(tmp_path / "domain.ark"), [f"d{i}" for i in range(30)], domain)
        centre = to_plda_space(domain.astype(np.float64)).mean(axis=0)
    plda_files.eval_plda_files(model, scp, str(tmp_path / "utt2spk"), scp,
                               str(tmp_path / "trials"), str(tmp_path / "score"), **options)

    expected = []
    for speaker, utts in enrol.items():
        mean = to_plda_space(np.array([vectors[u] for u in utts],
                                      dtype=np.float32).astype(np.float64)).mean(axis=0)
        if normalize_length:   # Kaldi's ivector-mean | ivector-normalize-length
            mean *= np.sqrt(dim) / np.linalg.norm(mean)
        count = 1 if multisession_avg else len(utts)
        for test in tests:
            test_vector = to_plda_space(
                np.array([vectors[test]], dtype=np.float32).astype(np.float64))[0]
            expected.append(gaussian_llr(centre, between, within, mean, count, test_vector))
    lines = [line.split() for line in open(tmp_path / "score")]
    assert [line[:2] for line in lines] == [[s, t] for s in enrol for t in tests]
    np.testing.assert_allclose([float(line[2]) for line in lines], expected,
                               rtol=1e-4, atol=2e-5)
