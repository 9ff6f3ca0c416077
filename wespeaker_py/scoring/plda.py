"""Two-covariance PLDA: EM training, unsupervised adaptation, LLR scoring, save/load.

Model: an embedding ``x`` of speaker ``s`` is ``x = mu + y_s + e`` with speaker
variable ``y_s ~ N(0, B)`` (between-class) and residual ``e ~ N(0, W)``
(within-class). Training alternates the exact posterior of every ``y_s`` with
re-estimation of ``B`` and ``W`` (Kaldi's ``ivector-compute-plda`` EM, which
WeSpeaker follows). Every EM step works in the basis that whitens ``W`` and
diagonalises ``B``, where each speaker's posterior covariance is diagonal, so an
iteration costs a few [num_speakers x dim] products instead of a matrix inverse
per speaker.

Optional preprocessing before PLDA (all fitted on the training set and stored
with the model): centring, then either whitening of the total covariance or an
LDA projection (which whitens the within-class covariance and may reduce the
dimension), then length normalisation to norm ``sqrt(dim)``. Without options the
embeddings enter PLDA unchanged, as in WeSpeaker's VoxCeleb recipe.

A trained model is stored the way Kaldi and WeSpeaker parametrise it: ``mu``,
``transform`` (whitens W, diagonalises B) and ``psi`` (that diagonal).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import scipy.linalg
import scipy.sparse

from wespeaker_py.errors import WespeakerError
from wespeaker_py.scoring.kaldi_plda import read_kaldi_plda
from wespeaker_py.utils.atomic_files import atomic_open
from wespeaker_py.utils.npz_files import NpzArray, NpzKind, read_npz
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.progress import progress_bar
from wespeaker_py.utils.tables import DataFormatError

logger = get_logger(__name__)

STATS_CHUNK = 65536
_MODEL_FORMAT = "wespeaker_py.two_cov_plda.v1"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"   # the start of WeSpeaker's PLDA model (h5py)
_WESPEAKER_MODEL = ("WeSpeaker's HDF5 PLDA model, which wespeaker_py does not read: train one "
                    "of wespeaker_py on the same embeddings in its place "
                    "(tools/recipe/score_plda.sh's stage 1, or python -m "
                    "wespeaker_py.bin.train_plda)")
# DataFormatError names the file itself: these messages leave {path} out
_PLDA_FILE = NpzKind(
    "PLDA model", "bin.train_plda, or score_plda.sh's stage 1",
    {"format": NpzArray("text", 0), "mu": NpzArray("number", 1),
     "transform": NpzArray("number", 2), "psi": NpzArray("number", 1),
     "has_preprocessing": NpzArray("bool", 0), "pre_mean": NpzArray("number", 1),
     "pre_projection": NpzArray("number", 2), "pre_normalize_length": NpzArray("bool", 0)},
    missing="no {name} here: train one first ({written_by})",
    unreadable="not a wespeaker_py {name} ({why}; train one with {written_by}; for a Kaldi "
               "model use the kaldi type)")


@dataclass
class ClassStatistics:
    """Per-class counts and means plus the pooled within-class scatter (float64)."""

    counts: np.ndarray
    means: np.ndarray
    within_scatter: np.ndarray

    @property
    def num_samples(self) -> int:
        return int(self.counts.sum())


def class_statistics(embeddings: np.ndarray, labels: np.ndarray, num_classes: int,
                     preprocessing: Optional["Preprocessing"] = None,
                     chunk_size: int = STATS_CHUNK) -> ClassStatistics:
    """Accumulate class statistics chunk by chunk (embeddings may be a large float32 array).

    ``labels`` are class indices in ``[0, num_classes)``; every class needs a sample.
    """
    counts = np.bincount(labels, minlength=num_classes)
    if counts.shape[0] != num_classes or np.any(counts == 0):
        raise ValueError("every class index in [0, num_classes) needs at least one sample")
    sums = None
    scatter = None
    reference = None
    for start in range(0, embeddings.shape[0], chunk_size):
        # a copy: the block is centred in place below, and float64 input must not change
        block = np.array(embeddings[start:start + chunk_size], dtype=np.float64)
        if preprocessing is not None:
            block = preprocessing.apply(block)
        if reference is None:  # a rough centre keeps the scatter subtraction accurate
            reference = block.mean(axis=0)
            sums = np.zeros((num_classes, block.shape[1]))
            scatter = np.zeros((block.shape[1], block.shape[1]))
        block -= reference
        block_labels = labels[start:start + chunk_size]
        indicator = scipy.sparse.csr_matrix(
            (np.ones(block.shape[0]), (block_labels, np.arange(block.shape[0]))),
            shape=(num_classes, block.shape[0]))
        sums += indicator @ block
        scatter += block.T @ block
    centred_means = sums / counts[:, None]
    within = scatter - (centred_means * counts[:, None]).T @ centred_means
    return ClassStatistics(counts=counts, means=centred_means + reference,
                           within_scatter=0.5 * (within + within.T))


@dataclass
class Preprocessing:
    """``x -> (x - mean) @ projection.T``, then optional length normalisation to sqrt(dim)."""

    mean: np.ndarray
    projection: np.ndarray
    normalize_length: bool = False

    @classmethod
    def identity(cls, dim: int) -> "Preprocessing":
        return cls(mean=np.zeros(dim), projection=np.eye(dim), normalize_length=False)

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        projected = (np.asarray(embeddings, dtype=np.float64) - self.mean) @ self.projection.T
        if self.normalize_length:
            projected = scale_to_sqrt_dim(projected)
        return projected


class PLDAOptionError(WespeakerError, ValueError):
    """PLDA preprocessing options that do not fit together or do not fit the embeddings."""


def check_lda_dim(lda_dim: int, dim: int, source: str = "the embeddings",
                  name: str = "lda_dim") -> None:
    """Refuse an LDA dimension (option ``name``) outside 1 to ``dim``, the dimension of
    ``source``, with a :class:`PLDAOptionError`."""
    if not 1 <= lda_dim <= dim:
        raise PLDAOptionError(f"{name} {lda_dim} must lie between 1 and {dim}, the dimension "
                              f"of {source}")


def scale_to_sqrt_dim(vectors: np.ndarray) -> np.ndarray:
    """Scale rows to norm ``sqrt(dim)`` (Kaldi's convention for PLDA inputs)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors * (np.sqrt(vectors.shape[-1]) / np.maximum(norms, 1e-12))


def fit_preprocessing(stats: ClassStatistics, whiten: bool = False,
                      lda_dim: Optional[int] = None,
                      normalize_length: bool = False) -> Preprocessing:
    """Fit centring + whitening or LDA (+ length normalisation) on raw class statistics."""
    if whiten and lda_dim is not None:
        raise PLDAOptionError("choose whitening or LDA, not both (LDA already whitens)")
    dim = stats.means.shape[1]
    total = stats.num_samples
    mean = stats.counts @ stats.means / total
    centred = stats.means - mean
    between = (centred * stats.counts[:, None]).T @ centred / total
    within = stats.within_scatter / total
    if lda_dim is not None:
        check_lda_dim(lda_dim, dim)
        # generalised eigenvectors satisfy V' within V = I; keep the most discriminative
        values, vectors = scipy.linalg.eigh(between, within + 1e-10 * np.eye(dim))
        projection = vectors[:, np.argsort(values)[::-1][:lda_dim]].T
    elif whiten:
        values, vectors = np.linalg.eigh(between + within)
        projection = (vectors / np.sqrt(np.maximum(values, 1e-10))).T
    else:
        projection = np.eye(dim)
    return Preprocessing(mean=mean, projection=projection, normalize_length=normalize_length)


def simultaneous_diagonalization(between: np.ndarray, within: np.ndarray
                                 ) -> Tuple[np.ndarray, np.ndarray]:
    """``(T, psi)`` with ``T W T' = I`` and ``T B T' = diag(psi)``, psi descending, >= 0."""
    try:
        lower = np.linalg.cholesky(within)
    except np.linalg.LinAlgError:
        lower = np.linalg.cholesky(within + 1e-6 * np.eye(within.shape[0]))
    whitening = scipy.linalg.solve_triangular(lower, np.eye(within.shape[0]), lower=True)
    projected = whitening @ between @ whitening.T
    values, vectors = np.linalg.eigh(0.5 * (projected + projected.T))
    order = np.argsort(values)[::-1]
    return vectors[:, order].T @ whitening, np.maximum(values[order], 0.0)


def two_covariance_em(stats: ClassStatistics, num_iters: int, progress: bool = False
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EM for the two-covariance model from B = W = I; return ``(mu, B, W)``.

    ``mu`` is the mean of the class means (every class weighs the same).
    """
    counts = stats.counts.astype(np.float64)[:, None]
    num_classes, dim = stats.means.shape
    mu = stats.means.mean(axis=0)
    centred = stats.means - mu
    between, within = np.eye(dim), np.eye(dim)
    for iteration in progress_bar(range(num_iters), desc="PLDA EM", enabled=progress):
        transform, psi = simultaneous_diagonalization(between, within)
        means_t = centred @ transform.T
        # per class, the posterior of y (in this basis) has diagonal covariance
        post_var = psi / (1.0 + counts * psi)
        post_mean = counts * post_var * means_t
        residual = means_t - post_mean
        between_t = (np.diag(post_var.sum(axis=0)) + post_mean.T @ post_mean) / num_classes
        within_t = (transform @ stats.within_scatter @ transform.T
                    + np.diag((counts * post_var).sum(axis=0))
                    + (residual * counts).T @ residual) / stats.num_samples
        inverse = np.linalg.inv(transform)
        between = inverse @ between_t @ inverse.T
        within = inverse @ within_t @ inverse.T
        between, within = 0.5 * (between + between.T), 0.5 * (within + within.T)
        logger.info("PLDA EM iteration %d/%d: trace(B)=%.4g trace(W)=%.4g",
                    iteration + 1, num_iters, np.trace(between), np.trace(within))
    return mu, between, within


def _warn_if_too_few_classes(num_classes: int, dim: int) -> None:
    """Warn that the scores will not be calibrated LLRs when ``num_classes <= dim``.

    The between-class covariance of ``num_classes`` class means has rank at most
    ``num_classes - 1``: in the other directions EM shrinks it towards zero, and the
    scores grow far out of scale (their order is still usable: EER and minDCF).
    """
    if num_classes > dim:
        return
    logger.warning(
        "PLDA: %d speakers for %d dimensions: the between-speaker covariance has rank at most "
        "%d < %d, so the scores will not be calibrated log-likelihood ratios (a threshold at 0 "
        "means nothing; EER and minDCF, which only rank the trials, are not affected). Train on "
        "more speakers than dimensions, or project to fewer with --lda_dim (at most %d) of "
        "bin.train_plda or tools/recipe/score_plda.sh",
        num_classes, dim, num_classes - 1, dim, num_classes - 1)


class TwoCovPLDA:
    """A trained two-covariance PLDA with its preprocessing."""

    def __init__(self, mu: np.ndarray, transform: np.ndarray, psi: np.ndarray,
                 preprocessing: Optional[Preprocessing] = None):
        self.mu = np.asarray(mu, dtype=np.float64)
        self.transform = np.asarray(transform, dtype=np.float64)
        self.psi = np.asarray(psi, dtype=np.float64)
        dim = self.mu.shape[0]
        if self.transform.shape != (dim, dim) or self.psi.shape != (dim,):
            raise ValueError(f"inconsistent PLDA shapes: mu {self.mu.shape}, transform "
                             f"{self.transform.shape}, psi {self.psi.shape}")
        self.preprocessing = preprocessing

    @property
    def dim(self) -> int:
        """Dimension of the PLDA space (after preprocessing)."""
        return int(self.mu.shape[0])

    @property
    def input_dim(self) -> int:
        """Dimension of the embeddings the model scores."""
        if self.preprocessing is None:
            return self.dim
        return int(self.preprocessing.projection.shape[1])

    @property
    def offset(self) -> np.ndarray:
        return -self.transform @ self.mu

    def within_covariance(self) -> np.ndarray:
        """W in the PLDA space: ``inv(T' T)``."""
        inverse = np.linalg.inv(self.transform)
        return inverse @ inverse.T

    def between_covariance(self) -> np.ndarray:
        """B in the PLDA space: ``inv(T) diag(psi) inv(T)'``."""
        inverse = np.linalg.inv(self.transform)
        return (inverse * self.psi) @ inverse.T

    @classmethod
    def from_covariances(cls, mu: np.ndarray, between: np.ndarray, within: np.ndarray,
                         preprocessing: Optional[Preprocessing] = None) -> "TwoCovPLDA":
        transform, psi = simultaneous_diagonalization(between, within)
        return cls(mu, transform, psi, preprocessing)

    @classmethod
    def train(cls, embeddings: np.ndarray, labels: np.ndarray, num_iters: int = 5,
              whiten: bool = False, lda_dim: Optional[int] = None,
              normalize_length: bool = False, progress: bool = False) -> "TwoCovPLDA":
        """Fit preprocessing (if any) and the PLDA on ``embeddings`` with class ``labels``."""
        if num_iters < 1:
            raise PLDAOptionError(f"num_iters {num_iters}: PLDA training needs at least one "
                                  f"EM iteration")
        labels = np.asarray(labels)
        _, labels = np.unique(labels, return_inverse=True)
        num_classes = int(labels.max()) + 1
        preprocessing = None
        if whiten or lda_dim is not None or normalize_length:
            raw = class_statistics(embeddings, labels, num_classes)
            preprocessing = fit_preprocessing(raw, whiten, lda_dim, normalize_length)
            stats = class_statistics(embeddings, labels, num_classes, preprocessing)
        else:
            stats = class_statistics(embeddings, labels, num_classes)
        logger.info("PLDA training on %d embeddings of %d classes, dimension %d",
                    stats.num_samples, num_classes, stats.means.shape[1])
        _warn_if_too_few_classes(num_classes, stats.means.shape[1])
        mu, between, within = two_covariance_em(stats, num_iters, progress)
        return cls.from_covariances(mu, between, within, preprocessing)

    def with_mean_of(self, embeddings: np.ndarray) -> "TwoCovPLDA":
        """The same model centred on the (preprocessed) mean of in-domain ``embeddings``."""
        return TwoCovPLDA(self.to_plda_space(embeddings).mean(axis=0), self.transform,
                          self.psi, self.preprocessing)

    def to_plda_space(self, embeddings: np.ndarray) -> np.ndarray:
        """Apply the stored preprocessing (identity when there is none)."""
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.shape[-1] != self.input_dim:
            raise ValueError(f"PLDA expects {self.input_dim}-dim embeddings, "
                             f"got {embeddings.shape[-1]}")
        if self.preprocessing is None:
            return embeddings
        return self.preprocessing.apply(embeddings)

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """PLDA-space vectors into the model basis: ``T (v - mu)``."""
        return vectors @ self.transform.T + self.offset

    def log_likelihood_ratio(self, enroll: np.ndarray, test: np.ndarray,
                             num_enroll: np.ndarray) -> np.ndarray:
        """LLR same-speaker vs different-speaker for rows of projected vectors.

        ``enroll`` rows are projected means of ``num_enroll`` enrollment
        embeddings (by-the-book multi-session scoring), ``test`` rows projected
        single test embeddings.
        """
        counts = np.asarray(num_enroll, dtype=np.float64).reshape(-1)
        psi = self.psi
        without_var = 1.0 + psi
        llr = 0.5 * (np.sum(np.log(without_var))
                     + np.einsum("ij,ij,j->i", test, test, 1.0 / without_var))
        # the same-speaker Gaussian depends on the count only: one pass per distinct count
        distinct = np.unique(counts)
        for count in distinct:
            rows = slice(None) if len(distinct) == 1 else counts == count
            shrink = count * psi / (count * psi + 1.0)
            given_var = 1.0 + psi / (count * psi + 1.0)
            diff = test[rows] - shrink * enroll[rows]
            llr[rows] -= 0.5 * (np.sum(np.log(given_var))
                                + np.einsum("ij,ij,j->i", diff, diff, 1.0 / given_var))
        return llr

    def adapt(self, embeddings: np.ndarray, across_class_scale: float = 0.5,
              within_class_scale: float = 0.5) -> "TwoCovPLDA":
        """Unsupervised adaptation to unlabelled in-domain ``embeddings``.

        Where the in-domain covariance exceeds the model's total covariance
        ``B + W`` (generalised eigenvalues above 1), the excess is added to B and W
        in the proportions ``across_class_scale`` and ``within_class_scale``; the
        mean moves to the in-domain mean. Preprocessing is kept.
        """
        data = self.to_plda_space(embeddings)
        if data.shape[0] < 2:
            raise ValueError("adaptation needs at least two embeddings")
        data_mean = data.mean(axis=0)
        data_cov = np.cov(data, rowvar=False)
        between, within = self.between_covariance(), self.within_covariance()
        total = between + within
        values, vectors = scipy.linalg.eigh(data_cov, 0.5 * (total + total.T))
        # vectors' total vectors = I, so inv(vectors') maps back to the original basis
        back = np.linalg.inv(vectors.T)
        larger = values > 1.0
        excess = back[:, larger] * np.sqrt(values[larger] - 1.0)
        excess_cov = excess @ excess.T
        return TwoCovPLDA.from_covariances(data_mean, between + across_class_scale * excess_cov,
                                           within + within_class_scale * excess_cov,
                                           self.preprocessing)

    def save(self, path: str) -> None:
        """Save as a NumPy ``.npz`` archive (at ``path`` exactly), atomically."""
        pre = self.preprocessing or Preprocessing.identity(self.dim)
        with atomic_open(path, "wb") as handle:
            np.savez(handle, format=np.array(_MODEL_FORMAT), mu=self.mu,
                     transform=self.transform, psi=self.psi,
                     has_preprocessing=np.array(self.preprocessing is not None),
                     pre_mean=pre.mean, pre_projection=pre.projection,
                     pre_normalize_length=np.array(pre.normalize_length))

    @classmethod
    def load(cls, path: str) -> "TwoCovPLDA":
        """Load a model written by :meth:`save`."""
        error = functools.partial(DataFormatError, path, None)
        if os.path.isfile(path):
            with open(path, "rb") as stream:
                if stream.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
                    raise error(_WESPEAKER_MODEL)
        stored = read_npz(path, _PLDA_FILE, error)
        written_as = str(stored["format"])
        if written_as != _MODEL_FORMAT:
            raise error(_PLDA_FILE.damaged(path, f"format {written_as!r}"))
        preprocessing = None
        if bool(stored["has_preprocessing"]):
            preprocessing = Preprocessing(
                mean=stored["pre_mean"], projection=stored["pre_projection"],
                normalize_length=bool(stored["pre_normalize_length"]))
        try:
            return cls(stored["mu"], stored["transform"], stored["psi"], preprocessing)
        except ValueError as mismatch:   # shapes that do not fit together
            raise error(_PLDA_FILE.damaged(path, str(mismatch))) from None

    @classmethod
    def load_kaldi(cls, path: str) -> "TwoCovPLDA":
        """Load a Kaldi PLDA (no preprocessing: apply Kaldi's own beforehand)."""
        mean, transform, psi = read_kaldi_plda(path)
        return cls(mean, transform, psi)
