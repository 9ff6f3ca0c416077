"""Two-covariance PLDA: parameter recovery, exact LLRs, adaptation, preprocessing, I/O."""
import logging
import struct

import numpy as np
import scipy.linalg
import pytest
from scipy.stats import multivariate_normal

from wespeaker_py.scoring.metrics import compute_eer
from wespeaker_py.scoring.plda import TwoCovPLDA, class_statistics
from wespeaker_py.utils.tables import DataFormatError

DIM = 6


def random_spd(rng, dim, scales):
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return (basis * np.asarray(scales)) @ basis.T


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    between = random_spd(rng, DIM, [4.0, 2.5, 1.5, 0.8, 0.3, 0.1])
    # within-class variance dominates a few directions: cosine is misled there
    within = random_spd(rng, DIM, [6.0, 3.0, 0.5, 0.3, 0.2, 0.1])
    mu = rng.normal(size=DIM) * 3.0
    return mu, between, within


def sample(rng, model, num_speakers, per_speaker):
    mu, between, within = model
    speakers = rng.multivariate_normal(np.zeros(DIM), between, size=num_speakers)
    labels = np.repeat(np.arange(num_speakers), per_speaker)
    noise = rng.multivariate_normal(np.zeros(DIM), within, size=labels.size)
    return (mu + speakers[labels] + noise).astype(np.float32), labels


def relative_error(estimate, truth):
    return np.linalg.norm(estimate - truth) / np.linalg.norm(truth)


def test_em_recovers_the_generating_covariances(model):
    rng = np.random.default_rng(1)
    data, labels = sample(rng, model, 3000, 6)
    plda = TwoCovPLDA.train(data, labels, num_iters=20)
    mu, between, within = model
    assert relative_error(plda.within_covariance(), within) < 0.05
    assert relative_error(plda.between_covariance(), between) < 0.1
    np.testing.assert_allclose(plda.mu, mu, atol=0.15)
    # the stored parametrisation whitens W and diagonalises B
    t = plda.transform
    np.testing.assert_allclose(t @ plda.within_covariance() @ t.T, np.eye(DIM), atol=1e-8)
    assert np.all(np.diff(plda.psi) <= 0)


def test_class_statistics_chunking_matches_direct(model):
    rng = np.random.default_rng(2)
    data, labels = sample(rng, model, 20, 5)
    stats = class_statistics(data, labels, 20, chunk_size=7)
    means = np.stack([data[labels == c].astype(np.float64).mean(axis=0) for c in range(20)])
    scatter = sum((data[labels == c] - means[c]).T @ (data[labels == c] - means[c])
                  for c in range(20))
    np.testing.assert_allclose(stats.means, means, atol=1e-10)
    np.testing.assert_allclose(stats.within_scatter, scatter, rtol=1e-9, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_leaves_the_embeddings_as_they_were_and_the_model_alike(model, dtype):
    rng = np.random.default_rng(3)
    data, labels = sample(rng, model, 40, 4)
    data = data.astype(dtype)
    before = data.copy()
    plda = TwoCovPLDA.train(data, labels, 3, whiten=True, normalize_length=True)
    np.testing.assert_array_equal(data, before)
    reference = TwoCovPLDA.train(before.astype(np.float32), labels, 3, whiten=True,
                                 normalize_length=True)
    np.testing.assert_allclose(plda.mu, reference.mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plda.psi, reference.psi, rtol=1e-4)


def direct_llr(mu, between, within, enroll_utts, test):
    """log p(enrollment, test | same speaker) - log p(enrollment) - log p(test), as Gaussians."""
    n = len(enroll_utts)
    stacked = np.concatenate(list(enroll_utts) + [test])
    total = np.kron(np.ones((n + 1, n + 1)), between) + np.kron(np.eye(n + 1), within)
    joint = multivariate_normal(np.tile(mu, n + 1), total).logpdf(stacked)
    enroll_only = multivariate_normal(np.tile(mu, n), total[:n * DIM, :n * DIM]).logpdf(
        np.concatenate(enroll_utts))
    test_only = multivariate_normal(mu, between + within).logpdf(test)
    return joint - enroll_only - test_only


@pytest.mark.parametrize("num_enroll", [1, 3])
def test_llr_equals_the_exact_gaussian_ratio(model, num_enroll):
    mu, between, within = model
    plda = TwoCovPLDA.from_covariances(mu, between, within)
    rng = np.random.default_rng(3)
    for _ in range(5):
        enroll_utts = rng.normal(size=(num_enroll, DIM)) * 2 + mu
        test = rng.normal(size=DIM) * 2 + mu
        enroll_vec = plda.project(enroll_utts.mean(axis=0)[None])
        llr = plda.log_likelihood_ratio(enroll_vec, plda.project(test[None]), [num_enroll])[0]
        assert llr == pytest.approx(direct_llr(mu, between, within, enroll_utts, test), abs=1e-8)


def test_llr_with_mixed_enrollment_counts_matches_row_by_row(model):
    plda = TwoCovPLDA.from_covariances(*model)
    rng = np.random.default_rng(8)
    enroll, test = rng.normal(size=(20, DIM)), rng.normal(size=(20, DIM))
    counts = rng.integers(1, 4, size=20)
    together = plda.log_likelihood_ratio(enroll, test, counts)
    one_by_one = [plda.log_likelihood_ratio(enroll[i:i + 1], test[i:i + 1], counts[i:i + 1])[0]
                  for i in range(20)]
    np.testing.assert_allclose(together, one_by_one, rtol=1e-12)
    assert len(set(counts.tolist())) > 1


def make_trials(rng, model, num_speakers=300):
    data, labels = sample(rng, model, num_speakers, 2)
    enroll, test = data[0::2], data[1::2]
    impostor = np.roll(np.arange(num_speakers), 1)
    pairs_e = np.concatenate([enroll, enroll])
    pairs_t = np.concatenate([test, test[impostor]])
    trial_labels = np.concatenate([np.ones(num_speakers), np.zeros(num_speakers)])
    return pairs_e, pairs_t, trial_labels


def cosine(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def plda_scores(plda, a, b):
    pa = plda.project(plda.to_plda_space(a))
    pb = plda.project(plda.to_plda_space(b))
    return plda.log_likelihood_ratio(pa, pb, np.ones(len(a)))


@pytest.mark.parametrize("options", [{}, {"lda_dim": DIM, "normalize_length": True},
                                     {"whiten": True}])
def test_plda_beats_cosine_on_two_covariance_data(model, options):
    rng = np.random.default_rng(4)
    data, labels = sample(rng, model, 1000, 6)
    plda = TwoCovPLDA.train(data, labels, num_iters=10, **options)
    pairs_e, pairs_t, trial_labels = make_trials(rng, model)
    centre = data.mean(axis=0)
    cosine_eer = compute_eer(cosine(pairs_e - centre, pairs_t - centre), trial_labels)
    plda_eer = compute_eer(plda_scores(plda, pairs_e, pairs_t), trial_labels)
    assert plda_eer < cosine_eer - 0.02


def test_lda_reduces_dimension_and_round_trips(model, tmp_path):
    rng = np.random.default_rng(5)
    data, labels = sample(rng, model, 200, 4)
    plda = TwoCovPLDA.train(data, labels, num_iters=3, lda_dim=3, normalize_length=True)
    assert plda.dim == 3 and plda.input_dim == DIM
    path = str(tmp_path / "plda")
    plda.save(path)
    loaded = TwoCovPLDA.load(path)
    a, b = data[:10], data[10:20]
    np.testing.assert_allclose(plda_scores(loaded, a, b), plda_scores(plda, a, b))
    (tmp_path / "junk").write_bytes(b"not a model")
    with pytest.raises(DataFormatError, match="not a wespeaker_py PLDA"):
        TwoCovPLDA.load(str(tmp_path / "junk"))


def test_adaptation_matches_in_domain_covariance(model):
    """With scales summing to 1, B + W takes the in-domain covariance where it is larger."""
    mu, between, within = model
    plda = TwoCovPLDA.from_covariances(mu, between, within)
    rng = np.random.default_rng(6)
    extra = np.zeros(DIM)
    extra[0] = 1.0
    domain_cov = between + within + 9.0 * np.outer(extra, extra)
    shift = np.full(DIM, 0.7)
    domain = rng.multivariate_normal(mu + shift, domain_cov, size=40000)
    adapted = plda.adapt(domain, across_class_scale=0.3, within_class_scale=0.7)
    total = adapted.between_covariance() + adapted.within_covariance()
    assert relative_error(total, np.cov(domain, rowvar=False)) < 0.02
    np.testing.assert_allclose(adapted.mu, domain.mean(axis=0))
    # the excess went 30 % to B and 70 % to W
    added_b = adapted.between_covariance() - between
    added_w = adapted.within_covariance() - within
    np.testing.assert_allclose(added_b * 0.7, added_w * 0.3, atol=1e-8)
    assert added_w[0, 0] > 5.0


def write_kaldi_binary_plda(path, mean, transform, psi):
    def vector(values):
        return b"DV \x04" + struct.pack("<i", len(values)) + np.asarray(values, "<f8").tobytes()
    rows, cols = transform.shape
    matrix = (b"DM \x04" + struct.pack("<i", rows) + b"\x04" + struct.pack("<i", cols)
              + np.asarray(transform, "<f8").tobytes())
    with open(path, "wb") as handle:
        handle.write(b"\0B<Plda> " + vector(mean) + matrix + vector(psi) + b"</Plda> ")


def test_kaldi_models_load_in_both_encodings(model, tmp_path):
    mu, between, within = model
    plda = TwoCovPLDA.from_covariances(mu, between, within)
    write_kaldi_binary_plda(tmp_path / "plda.bin", plda.mu, plda.transform, plda.psi)
    text_rows = "\n".join("  " + " ".join(f"{v:.17g}" for v in row) for row in plda.transform)
    (tmp_path / "plda.txt").write_text(
        "<Plda>  [ " + " ".join(f"{v:.17g}" for v in plda.mu) + " ]\n [\n" + text_rows
        + " ]\n [ " + " ".join(f"{v:.17g}" for v in plda.psi) + " ]\n</Plda> ")
    for name in ("plda.bin", "plda.txt"):
        loaded = TwoCovPLDA.load_kaldi(str(tmp_path / name))
        np.testing.assert_allclose(loaded.transform, plda.transform, rtol=1e-12)
        np.testing.assert_allclose(loaded.psi, plda.psi, rtol=1e-12)
        np.testing.assert_allclose(loaded.mu, plda.mu, rtol=1e-12)


def test_training_warns_when_speakers_do_not_outnumber_dimensions(model, caplog):
    # 31 speakers in 192 dimensions trained silently, and scored from -19,914 to +540
    rng = np.random.default_rng(7)
    few, few_labels = sample(rng, model, DIM, 5)
    with caplog.at_level(logging.WARNING, logger="wespeaker_py.scoring.plda"):
        TwoCovPLDA.train(few, few_labels, num_iters=2)
    assert f"{DIM} speakers for {DIM} dimensions" in caplog.text
    assert "not be calibrated log-likelihood ratios" in caplog.text
    assert f"--lda_dim (at most {DIM - 1})" in caplog.text
    caplog.clear()
    enough, enough_labels = sample(rng, model, DIM + 1, 5)
    with caplog.at_level(logging.WARNING, logger="wespeaker_py.scoring.plda"):
        TwoCovPLDA.train(enough, enough_labels, num_iters=2)
        TwoCovPLDA.train(few, few_labels, num_iters=2, lda_dim=DIM - 1)
    assert "speakers for" not in caplog.text


def test_a_single_array_file_is_no_plda_model(tmp_path):
    np.save(tmp_path / "plda.npy", np.zeros(3))
    with pytest.raises(DataFormatError, match="not a wespeaker_py PLDA model \\(a single "
                                              "array, not an .npz archive"):
        TwoCovPLDA.load(str(tmp_path / "plda.npy"))


def test_wespeakers_hdf5_plda_model_is_named_with_how_to_train_ours(tmp_path):
    path = tmp_path / "plda"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(56))
    with pytest.raises(DataFormatError) as caught:
        TwoCovPLDA.load(str(path))
    assert caught.value.reason == (
        "WeSpeaker's HDF5 PLDA model, which wespeaker_py does not read: train one of "
        "wespeaker_py on the same embeddings in its place (tools/recipe/score_plda.sh's "
        "stage 1, or python -m wespeaker_py.bin.train_plda)")


def test_a_missing_plda_model_says_to_train_one(tmp_path):
    with pytest.raises(DataFormatError, match="no PLDA model here: train one first"):
        TwoCovPLDA.load(str(tmp_path / "plda"))


def test_lda_keeps_the_most_discriminative_directions(model):
    # the generalised eigenvectors of (between, within) with the largest eigenvalues,
    # from the class scatters computed here
    rng = np.random.default_rng(8)
    data, labels = sample(rng, model, 300, 5)
    plda = TwoCovPLDA.train(data, labels, num_iters=1, lda_dim=3)
    speakers = np.unique(labels)
    means = np.stack([data[labels == s].mean(axis=0) for s in speakers])
    counts = np.array([np.sum(labels == s) for s in speakers])
    centred = means - data.mean(axis=0)
    between = (centred * counts[:, None]).T @ centred / len(data)
    within = sum((data[labels == s] - m).T @ (data[labels == s] - m)
                 for s, m in zip(speakers, means)) / len(data)
    values, vectors = scipy.linalg.eigh(between, within)
    best = vectors[:, np.argsort(values)[::-1][:3]]
    angles = scipy.linalg.subspace_angles(plda.preprocessing.projection.T, best)
    assert np.max(angles) < 1e-4


def test_the_in_domain_mean_is_the_mean_of_the_in_domain_set(model):
    mu, between, within = model
    plda = TwoCovPLDA.from_covariances(mu, between, within)   # no preprocessing
    in_domain = np.random.default_rng(9).normal(size=(50, DIM)) + 7.0
    np.testing.assert_allclose(plda.with_mean_of(in_domain).mu, in_domain.mean(axis=0))


def test_the_commands_pass_lda_dim_and_each_adaptation_scale_to_their_place(model, tmp_path):
    from wespeaker_py.bin import adapt_plda, train_plda
    from wespeaker_py.io.ark import write_embeddings
    rng = np.random.default_rng(10)
    data, labels = sample(rng, model, 60, 4)
    keys = [f"s{label}-u{i}" for i, label in enumerate(labels)]
    scp = write_embeddings(str(tmp_path / "xvector.ark"), keys, data)
    (tmp_path / "utt2spk").write_text("".join(f"{key} s{label}\n"
                                              for key, label in zip(keys, labels)))
    train_plda.main(["--scp_path", scp, "--utt2spk", str(tmp_path / "utt2spk"),
                     "--exp_dir", str(tmp_path), "--lda_dim", "3"])
    trained = TwoCovPLDA.load(str(tmp_path / "plda"))
    assert trained.dim == 3
    shifted = data[:100] * 1.5 + 2.0
    adapt_scp = write_embeddings(str(tmp_path / "adapt.ark"), keys[:100], shifted)
    adapt_plda.main(["-mo", str(tmp_path / "plda"), "-ad", adapt_scp, "-ma",
                     str(tmp_path / "plda_adapted"), "-as", "0.25", "-ws", "0.75"])
    adapted = TwoCovPLDA.load(str(tmp_path / "plda_adapted"))
    direct = trained.adapt(shifted, across_class_scale=0.25, within_class_scale=0.75)
    np.testing.assert_allclose(adapted.transform, direct.transform, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(adapted.psi, direct.psi, rtol=1e-6, atol=1e-9)
