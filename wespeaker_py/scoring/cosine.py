"""Cosine scoring of trial lists, optionally after subtracting a reference-set mean."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from wespeaker_py.errors import WespeakerError
from wespeaker_py.utils.device import resolve_device
from wespeaker_py.io.ark import EmbeddingTable, load_embeddings
from wespeaker_py.io.layout import EmbeddingSetLayout, score_path_in
from wespeaker_py.scoring.embeddings import load_mean_vector, mean_of_embeddings, save_mean_vector
from wespeaker_py.scoring.trials import (MissingEmbeddingsError, TrialList, keep_scorable_trials,
                                         read_trials, write_score_file)
from wespeaker_py.utils.atomic_files import require_writable
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.tables import DataFormatError
from wespeaker_py.utils.vectors import MIN_NORM

logger = get_logger(__name__)

TRIAL_CHUNK = 16384


def length_normalize(matrix: np.ndarray, mean_vec: Optional[np.ndarray] = None,
                     device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """Rows of ``matrix`` minus ``mean_vec``, scaled to unit length, as float32 on ``device``
    (the torch twin of :func:`wespeaker_py.utils.vectors.unit_rows`, with its floor)."""
    rows = torch.as_tensor(matrix, dtype=torch.float32, device=device)
    if mean_vec is not None:
        rows = rows - torch.as_tensor(mean_vec, dtype=torch.float32, device=device)
    return torch.nn.functional.normalize(rows, dim=1, eps=MIN_NORM)


def paired_cosine(enroll_normed: torch.Tensor, test_normed: torch.Tensor,
                  enroll_rows: np.ndarray, test_rows: np.ndarray,
                  chunk_size: int = TRIAL_CHUNK) -> np.ndarray:
    """Cosine of ``enroll_normed[enroll_rows[i]]`` with ``test_normed[test_rows[i]]`` for all i.

    The rows are gathered chunk by chunk, so memory stays bounded for any
    number of trials.
    """
    scores = np.empty(len(enroll_rows), dtype=np.float64)
    if enroll_normed.device.type == "cpu":
        # NumPy's gather + einsum is about three times faster than torch's on CPU
        enroll_np, test_np = enroll_normed.numpy(), test_normed.numpy()
        for start in range(0, len(enroll_rows), chunk_size):
            stop = start + chunk_size
            scores[start:stop] = np.einsum("ij,ij->i", enroll_np[enroll_rows[start:stop]],
                                           test_np[test_rows[start:stop]])
        return scores
    device = enroll_normed.device
    for start in range(0, len(enroll_rows), chunk_size):
        stop = start + chunk_size
        e_idx = torch.as_tensor(enroll_rows[start:stop], dtype=torch.long, device=device)
        t_idx = torch.as_tensor(test_rows[start:stop], dtype=torch.long, device=device)
        chunk = torch.einsum("ij,ij->i", enroll_normed[e_idx], test_normed[t_idx])
        scores[start:stop] = chunk.double().cpu().numpy()
    return scores


def cosine_score_trials(table: EmbeddingTable, trials: TrialList,
                        mean_vec: Optional[np.ndarray] = None, device: str = "auto",
                        chunk_size: int = TRIAL_CHUNK) -> np.ndarray:
    """Cosine score of every trial of ``trials`` from the embeddings of ``table``."""
    enroll_rows = trials.rows_in(table.index, "enroll", table.source)[trials.enroll]
    test_rows = trials.rows_in(table.index, "test", table.source)[trials.test]
    normed = length_normalize(table.matrix, mean_vec, resolve_device(device))
    return paired_cosine(normed, normed, enroll_rows, test_rows, chunk_size)


def compute_and_save_mean(cal_mean_dir: str, eval_table: EmbeddingTable) -> np.ndarray:
    """Mean of ``cal_mean_dir/xvector.scp``, to be subtracted from the embeddings of
    ``eval_table``, saved as ``cal_mean_dir/mean_vec.npy`` and returned.

    Embeddings of another dimension than ``eval_table``'s are a :class:`DataFormatError`
    naming both files, raised before anything is written. A ``mean_vec.npy`` that already
    holds this mean is left as it is: the recipes' later stages judge their outputs by its
    time, and every scoring stage computes it again.
    """
    reference = EmbeddingSetLayout(cal_mean_dir)
    scp_path = reference.embeddings_scp
    logger.info("computing the mean embedding of %s", scp_path)
    mean = mean_of_embeddings(scp_path, progress=True)
    if mean.shape[0] != eval_table.dim:
        raise DataFormatError(scp_path, None, f"embeddings have dimension {mean.shape[0]}, "
                                              f"but the evaluation embeddings "
                                              f"{eval_table.source} have {eval_table.dim}: their "
                                              f"mean cannot be subtracted from them")
    if not _holds(reference.mean_path, mean):
        save_mean_vector(reference.mean_path, mean)
    return mean


def _holds(path: str, mean: np.ndarray) -> bool:
    """True when the mean vector file at ``path`` holds exactly ``mean`` (as saved, float32)."""
    try:
        return bool(np.array_equal(load_mean_vector(path, mean.shape[0]),
                                   np.asarray(mean, dtype=np.float32)))
    except (OSError, ValueError):   # missing, unreadable or of another size: write it
        return False


def score_trial_files(eval_scp_path: str, trial_paths: Sequence[str], store_dir: str,
                      cal_mean_dir: Optional[str] = None, device: str = "auto",
                      max_missing_fraction: float = 0.0) -> List[str]:
    """Cosine-score each trial list into ``store_dir/<trials name>.score``; return the paths.

    With ``cal_mean_dir`` the mean of its embeddings (saved there, see
    :func:`compute_and_save_mean`) is subtracted from every embedding first.
    Trials naming an utterance without an embedding (one extraction skipped) are
    left out and counted; a list that would lose more than ``max_missing_fraction``
    of its trials is not written, and :class:`MissingEmbeddingsError` is raised
    after the other lists are done. Two lists of one name are refused before any work.
    """
    out_paths: Dict[str, str] = {}
    for trial_path in trial_paths:
        out_path = score_path_in(store_dir, trial_path)
        other = out_paths.setdefault(out_path, trial_path)
        if other != trial_path:
            raise WespeakerError(f"trial lists {other} and {trial_path} would both be scored "
                                 f"into {out_path}: give them different names")
    for out_path in out_paths:
        require_writable(out_path)   # a folder in a score file's place fails before any work
    table = load_embeddings(eval_scp_path, progress=True)
    mean_vec = compute_and_save_mean(cal_mean_dir, table) if cal_mean_dir else None
    normed = None
    written, refused = [], []
    for out_path, trial_path in out_paths.items():
        trials = read_trials(trial_path)
        try:
            trials, enroll_rows, test_rows, coverage = keep_scorable_trials(
                trials, table.index, table.index, eval_scp_path, max_missing_fraction)
        except MissingEmbeddingsError as error:
            refused.append(str(error))
            continue
        logger.info("scoring %d trials of %s", len(trials), trial_path)
        if normed is None:
            normed = length_normalize(table.matrix, mean_vec, resolve_device(device))
        scores = paired_cosine(normed, normed, enroll_rows, test_rows)
        write_score_file(out_path, trials, scores)
        coverage.log(out_path)
        written.append(out_path)
    if refused:
        raise MissingEmbeddingsError(" | ".join(refused))
    return written
