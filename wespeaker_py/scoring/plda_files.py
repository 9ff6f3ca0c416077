"""PLDA on Kaldi files: train on xvector.scp + utt2spk, adapt, score trial lists."""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

import numpy as np

from wespeaker_py.io.ark import EmbeddingTable, load_embeddings
from wespeaker_py.scoring.embeddings import read_utt2spk, speaker_rows
from wespeaker_py.scoring.plda import TwoCovPLDA, check_lda_dim, scale_to_sqrt_dim
from wespeaker_py.scoring.trials import keep_scorable_trials, read_trials, write_score_file
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.tables import DataFormatError

logger = get_logger(__name__)

TRIAL_CHUNK = 65536


def train_plda_files(scp_path: str, utt2spk_path: str, model_path: str, num_iters: int = 5,
                     indim: Optional[int] = None, whiten: bool = False,
                     lda_dim: Optional[int] = None, normalize_length: bool = False,
                     max_missing_fraction: float = 0.0) -> TwoCovPLDA:
    """Train a PLDA on the embeddings of ``scp_path`` labelled by ``utt2spk`` and save it.

    Utterances of ``utt2spk`` without an embedding are left out up to
    ``max_missing_fraction`` of them (see :func:`speaker_rows`).
    """
    table = load_embeddings(scp_path, progress=True)
    if indim is not None and table.dim != indim:
        raise DataFormatError(scp_path, None, f"embeddings have dimension {table.dim}, "
                                              f"but --indim {indim} was given")
    if lda_dim is not None:   # before the speakers are grouped and the model trained
        check_lda_dim(lda_dim, table.dim, f"the embeddings in {scp_path}", "--lda_dim")
    grouped = speaker_rows(table, read_utt2spk(utt2spk_path), utt2spk_path,
                           max_missing_fraction)
    plda = TwoCovPLDA.train(grouped.take(table.matrix), grouped.labels, num_iters,
                            whiten=whiten, lda_dim=lda_dim, normalize_length=normalize_length,
                            progress=True)
    plda.save(model_path)
    logger.info("PLDA of %d speakers saved to %s", len(grouped.speakers), model_path)
    return plda


def load_plda(model_path: str, kaldi_format: bool = False) -> TwoCovPLDA:
    """Load a model saved here, or a Kaldi PLDA with ``kaldi_format``."""
    return TwoCovPLDA.load_kaldi(model_path) if kaldi_format else TwoCovPLDA.load(model_path)


def _embeddings_for(plda: TwoCovPLDA, model_path: str, scp_path: str) -> EmbeddingTable:
    """The embeddings of ``scp_path``, checked to have the dimension the PLDA model takes."""
    table = load_embeddings(scp_path, progress=True)
    if table.dim != plda.input_dim:
        raise DataFormatError(scp_path, None, f"embeddings have dimension {table.dim}, the "
                                              f"PLDA model {model_path} takes {plda.input_dim}")
    return table


def adapt_plda_files(mdl_org: str, adp_scp: str, mdl_adp: str, across_class_scale: float = 0.5,
                     within_class_scale: float = 0.5, kaldi_format: bool = False) -> TwoCovPLDA:
    """Adapt a PLDA to the unlabelled embeddings of ``adp_scp`` and save the result."""
    plda = load_plda(mdl_org, kaldi_format)
    table = _embeddings_for(plda, mdl_org, adp_scp)
    if len(table) < 2:
        raise DataFormatError(adp_scp, None, f"adaptation needs at least two embeddings, "
                                             f"it holds {len(table)}")
    adapted = plda.adapt(table.matrix, across_class_scale, within_class_scale)
    adapted.save(mdl_adp)
    return adapted


def _enrollment_models(plda: TwoCovPLDA, table: EmbeddingTable, utt2spk_path: str,
                       max_missing_fraction: float) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """(model ids, projected mean vectors, utterance counts) of the enrollment models."""
    grouped = speaker_rows(table, read_utt2spk(utt2spk_path), utt2spk_path,
                           max_missing_fraction)
    means = grouped.means(plda.to_plda_space(grouped.take(table.matrix)))
    if plda.preprocessing is not None and plda.preprocessing.normalize_length:
        means = scale_to_sqrt_dim(means)
    return grouped.speakers, plda.project(means), grouped.counts()


def eval_plda_files(model_path: str, enroll_scp_path: str, utt2spk: str, test_scp_path: str,
                    trial: str, score_path: str, multisession_avg: bool = False,
                    indomain_scp_path: Optional[str] = None,
                    kaldi_format: bool = False, max_missing_fraction: float = 0.0) -> None:
    """Score a trial list ``model_id test_utt [label]`` by PLDA log-likelihood ratio.

    Enrollment models group the enrollment embeddings by ``utt2spk``; their
    count enters the LLR unless ``multisession_avg`` (then every model counts as
    one embedding). With ``indomain_scp_path`` the model is re-centred on the mean
    of those embeddings (it replaces the training mean). Enrollment utterances and
    trials without an embedding are left out and counted, up to
    ``max_missing_fraction`` of each (see :func:`speaker_rows` and
    :func:`keep_scorable_trials`).
    """
    plda = load_plda(model_path, kaldi_format)
    if indomain_scp_path:
        plda = plda.with_mean_of(_embeddings_for(plda, model_path, indomain_scp_path).matrix)
    enroll_table = _embeddings_for(plda, model_path, enroll_scp_path)
    models, model_vectors, counts = _enrollment_models(plda, enroll_table, utt2spk,
                                                       max_missing_fraction)
    if multisession_avg:
        counts = np.ones_like(counts)
    # the recipes give one file for both: read it once
    test_table = enroll_table if os.path.realpath(test_scp_path) == os.path.realpath(
        enroll_scp_path) else _embeddings_for(plda, model_path, test_scp_path)
    trials = read_trials(trial)
    trials, enroll_of_trial, test_rows, coverage = keep_scorable_trials(
        trials, {m: i for i, m in enumerate(models)}, test_table.index,
        f"{enroll_scp_path} (models of {utt2spk}) or {test_scp_path}", max_missing_fraction)
    used_tests, test_of_trial = np.unique(test_rows, return_inverse=True)
    test_vectors = plda.project(plda.to_plda_space(test_table.matrix[used_tests]))
    scores = np.empty(len(trials))
    for start in range(0, len(trials), TRIAL_CHUNK):
        stop = start + TRIAL_CHUNK
        enroll = enroll_of_trial[start:stop]
        scores[start:stop] = plda.log_likelihood_ratio(
            model_vectors[enroll], test_vectors[test_of_trial[start:stop]], counts[enroll])
    write_score_file(score_path, trials, scores)
    coverage.log(score_path)
