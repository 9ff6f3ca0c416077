"""Score normalisation against a cohort: adaptive S-norm (AS-Norm, top-N) and S-Norm.

For every utterance that appears in the trials, the cosine scores against all
cohort embeddings are computed chunk by chunk (one matrix product each) and
reduced to the mean and standard deviation of the ``top_n`` highest; S-Norm is
the case ``top_n = cohort size``. A trial score ``s`` becomes

    0.5 * ((s - mean_e) / std_e + (s - mean_t) / std_t)

Besides the normalised score, :func:`score_norm_file` writes the quantities the
QMF calibration uses: the magnitudes of both (mean-subtracted) embeddings and
both cohort means.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from wespeaker_py.defaults import NORM_METHODS
from wespeaker_py.errors import RunFailedError
from wespeaker_py.scoring.cosine import cosine_score_trials, length_normalize
from wespeaker_py.utils.device import resolve_device
from wespeaker_py.io.ark import EmbeddingTable, load_embeddings
from wespeaker_py.scoring.embeddings import load_mean_vector
from wespeaker_py.scoring.trials import (TrialList, keep_scorable_trials, read_score_file,
                                         write_score_file)
from wespeaker_py.utils.logging_utils import get_logger, listed_names
from wespeaker_py.utils.progress import progress_bar
from wespeaker_py.utils.tables import DataFormatError, iter_table

logger = get_logger(__name__)

# largest difference between a score file's cosine and the one recomputed here: score
# files hold 5 decimals, and float32 rounding differs between scorers by about 1e-6
STALE_SCORE_TOLERANCE = 1e-4
COHORT_CHUNK = 4096
# a cohort member this close to an utterance is that utterance (or a copy): the cohort
# holds the trials' own embeddings, and AS-Norm's top-N takes a ~1.0 score of each
NEAR_IDENTICAL_COSINE = 0.999
SELECT_ROWS = 128  # rows per CPU selection task: 3 MB of scores at a 6000 cohort


def top_row_values(scores: np.ndarray, top_n: int) -> np.ndarray:
    """The ``top_n`` largest values of each row of ``scores`` [R, C], in no set order.

    A full selection over every row costs as much as the matrix product that
    made it, so the rows are pruned first: the columns form ``G = C // group``
    strided groups (columns ``j, j + G, j + 2G, ...``), and only the ``top_n``
    groups with the highest maxima can hold values among a row's ``top_n``
    largest (any other group's maximum is at most the ``top_n``-th largest
    group maximum, itself at most the ``top_n``-th largest value; on ties, the
    chosen groups still hold enough equal values). The final selection then
    looks at ``top_n * group`` values, not ``C``.
    """
    rows, width = scores.shape
    if top_n == width:
        return scores
    group = max(2, round(math.sqrt(width / top_n)))  # balances the two selections
    num_groups = width // group
    if num_groups <= top_n:
        return np.partition(scores, width - top_n, axis=1)[:, width - top_n:]
    scores = np.ascontiguousarray(scores)
    grouped = scores[:, :num_groups * group].reshape(rows, group, num_groups)
    best = np.argpartition(grouped.max(axis=1), num_groups - top_n, axis=1)
    # flat positions of every member of each chosen group (a flat take is
    # several times faster than take_along_axis here)
    first_members = best[:, num_groups - top_n:] + (np.arange(rows) * width)[:, None]
    members = first_members[:, None, :] + (np.arange(group) * num_groups)[None, :, None]
    candidates = scores.reshape(-1).take(members).reshape(rows, -1)
    if num_groups * group < width:  # the few columns outside every group
        candidates = np.concatenate([candidates, scores[:, num_groups * group:]], axis=1)
    kth = candidates.shape[1] - top_n
    return np.partition(candidates, kth, axis=1)[:, kth:]


def _cpu_top_statistics(scores: np.ndarray, top_n: int, pool: ThreadPoolExecutor,
                        means: np.ndarray, stds: np.ndarray, best: np.ndarray) -> None:
    """Fill ``means``/``stds``/``best`` with each row's top-``top_n`` statistics and highest
    score, rows shared by ``pool``.

    Slices of :data:`SELECT_ROWS` rows stay in the core's cache between the
    steps of :func:`top_row_values`; NumPy releases the GIL, so the workers
    run in parallel.
    """
    def one_slice(start: int) -> None:
        stop = start + SELECT_ROWS
        top = top_row_values(scores[start:stop], top_n).astype(np.float64)
        means[start:stop] = top.mean(axis=1)
        stds[start:stop] = top.std(axis=1)
        best[start:stop] = top.max(axis=1)
    list(pool.map(one_slice, range(0, scores.shape[0], SELECT_ROWS)))


def cohort_statistics(normed: torch.Tensor, cohort_normed: torch.Tensor, top_n: int,
                      chunk_size: int = COHORT_CHUNK, progress: bool = False
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and (population) std of each row's ``top_n`` highest cohort scores, and the
    highest one (taken from those ``top_n``).

    ``normed`` [U, D] and ``cohort_normed`` [C, D] are unit-length rows on the
    same device; the [chunk, C] float32 score block is the only large
    intermediate. The selection is :func:`top_row_values` on the CPU (on as
    many threads as torch uses) and ``torch.topk`` on CUDA; the statistics are
    taken in float64 either way.
    """
    if not 1 <= top_n <= cohort_normed.shape[0]:
        raise ValueError(f"top_n={top_n} must be between 1 and the cohort size "
                         f"{cohort_normed.shape[0]}")
    means = np.empty(normed.shape[0], dtype=np.float64)
    stds = np.empty(normed.shape[0], dtype=np.float64)
    best = np.empty(normed.shape[0], dtype=np.float64)
    cohort_t = cohort_normed.t().contiguous()
    block_buffer = torch.empty((min(chunk_size, normed.shape[0]), cohort_t.shape[1]),
                               dtype=torch.float32, device=normed.device)
    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        for start in progress_bar(range(0, normed.shape[0], chunk_size), enabled=progress,
                                  desc="cohort scores", unit="chunk"):
            rows = normed[start:start + chunk_size]
            block = torch.mm(rows, cohort_t, out=block_buffer[:rows.shape[0]])
            stop = start + rows.shape[0]
            if block.device.type == "cpu":
                _cpu_top_statistics(block.numpy(), top_n, pool, means[start:stop],
                                    stds[start:stop], best[start:stop])
                continue
            if top_n < block.shape[1]:
                block = torch.topk(block, top_n, dim=1, sorted=False).values
            top = block.double()
            means[start:stop] = top.mean(dim=1).cpu().numpy()
            stds[start:stop] = top.std(dim=1, unbiased=False).cpu().numpy()
            best[start:stop] = top.max(dim=1).values.cpu().numpy()
    return means, stds, best


def centre_and_normalize(embeddings: np.ndarray, rows: np.ndarray,
                         mean_vec: Optional[np.ndarray], device: torch.device,
                         chunk_size: int = 16384) -> Tuple[np.ndarray, torch.Tensor]:
    """Magnitudes (float64) and unit-length float32 rows of ``embeddings[rows] - mean_vec``.

    The subtraction is done in float64 and the result rounded to float32
    before normalising; chunked so that no float64 copy of the whole set exists.
    """
    magnitudes = np.empty(len(rows), dtype=np.float64)
    normed = torch.empty((len(rows), embeddings.shape[1]), dtype=torch.float32, device=device)
    mean64 = None if mean_vec is None else mean_vec.astype(np.float64)
    for start in range(0, len(rows), chunk_size):
        centred = embeddings[rows[start:start + chunk_size]].astype(np.float64)
        if mean64 is not None:
            centred -= mean64
        stop = start + centred.shape[0]
        magnitudes[start:stop] = np.linalg.norm(centred, axis=1)
        normed[start:stop] = length_normalize(centred.astype(np.float32), None, device)
    return magnitudes, normed


def normalize_scores(scores: np.ndarray, enroll_mean: np.ndarray, enroll_std: np.ndarray,
                     test_mean: np.ndarray, test_std: np.ndarray) -> np.ndarray:
    """Symmetric normalisation of per-trial scores given per-trial cohort statistics."""
    return 0.5 * ((scores - enroll_mean) / enroll_std + (scores - test_mean) / test_std)


@dataclass
class NormalizedScores:
    """Normalised trial scores with the per-trial quantities QMF needs."""

    scores: np.ndarray
    enroll_magnitude: np.ndarray
    test_magnitude: np.ndarray
    enroll_cohort_mean: np.ndarray
    test_cohort_mean: np.ndarray

    def qmf_columns(self) -> np.ndarray:
        """[n, 4] columns written after the label: magnitudes then cohort means."""
        return np.stack([self.enroll_magnitude, self.test_magnitude,
                         self.enroll_cohort_mean, self.test_cohort_mean], axis=1)


def _named_rows(rows: np.ndarray, row_names: Optional[Sequence[str]]) -> str:
    """The first few of ``rows`` by name (``row N`` without ``row_names``), for a message."""
    return listed_names([row_names[row] if row_names is not None else f"row {row}"
                         for row in rows], most=5)


def _warn_near_identical_cohort(best: np.ndarray, used: np.ndarray, e_pos: np.ndarray,
                                t_pos: np.ndarray, top_n: int,
                                row_names: Optional[Sequence[str]],
                                cohort_of_trial_speakers: bool) -> None:
    """Warn when utterances have a cohort member of cosine :data:`NEAR_IDENTICAL_COSINE`.

    ``best`` is the highest cohort score of each of the ``used`` rows; ``e_pos`` and
    ``t_pos`` are the trials' positions in them. Not an error: a cohort of the
    evaluation set itself may be chosen on purpose, for analysis. With
    ``cohort_of_trial_speakers`` (QMF's calibration trials, drawn from the cohort's own
    speakers by design) it is an INFO line: a speaker of one utterance has a mean equal
    to that utterance.
    """
    near = best >= NEAR_IDENTICAL_COSINE
    if not near.any():
        return
    if cohort_of_trial_speakers:
        logger.info("%d utterances have a cohort member of cosine >= %.3f: the mean of their "
                    "own one-utterance speaker (the cohort holds the trials' speakers)",
                    int(near.sum()), NEAR_IDENTICAL_COSINE)
        return
    enroll, test = np.unique(e_pos), np.unique(t_pos)
    logger.warning(
        "%d of %d enrolment and %d of %d test utterances have a cohort member with a cosine "
        "of at least %.3f (%s): the cohort holds these utterances (or copies of them), whose "
        "own score of about 1 enters their top %d, and their normalised scores (and the EER) "
        "are biased; normalise against a cohort of other speakers' embeddings",
        int(near[enroll].sum()), len(enroll), int(near[test].sum()), len(test),
        NEAR_IDENTICAL_COSINE, _named_rows(used[near], row_names), top_n)


def normalize_trial_scores(scores: np.ndarray, enroll_rows: np.ndarray, test_rows: np.ndarray,
                           embeddings: np.ndarray, cohort: np.ndarray, method: str,
                           top_n: int, mean_vec: Optional[np.ndarray] = None,
                           device: str = "auto", chunk_size: int = COHORT_CHUNK,
                           progress: bool = False,
                           row_names: Optional[Sequence[str]] = None,
                           cohort_of_trial_speakers: bool = False) -> NormalizedScores:
    """AS-Norm / S-Norm of ``scores`` for trials ``(enroll_rows[i], test_rows[i])``.

    Rows index ``embeddings``; cohort statistics are computed once for each
    distinct row used by the trials. ``mean_vec`` is subtracted from the
    embeddings and the cohort before length normalisation.
    """
    if method not in NORM_METHODS:
        raise ValueError(f"score norm method {method!r} is not one of {NORM_METHODS}")
    if method == "snorm":
        top_n = cohort.shape[0]
    torch_device = resolve_device(device)
    used, inverse = np.unique(np.concatenate([enroll_rows, test_rows]), return_inverse=True)
    magnitudes, normed = centre_and_normalize(embeddings, used, mean_vec, torch_device)
    cohort_normed = length_normalize(cohort, mean_vec, torch_device)
    means, stds, best = cohort_statistics(normed, cohort_normed, top_n, chunk_size, progress)
    e_pos, t_pos = inverse[:len(enroll_rows)], inverse[len(enroll_rows):]
    _warn_near_identical_cohort(best, used, e_pos, t_pos, top_n, row_names,
                                cohort_of_trial_speakers)
    if np.any(stds <= 0):
        flat = used[stds <= 0]
        raise RunFailedError(
            f"the top {top_n} cohort scores of {len(flat)} utterance(s) have no spread "
            f"({_named_rows(flat, row_names)}): top_n is too small, "
            "or an embedding equals the mean vector")
    return NormalizedScores(
        scores=normalize_scores(scores, means[e_pos], stds[e_pos], means[t_pos], stds[t_pos]),
        enroll_magnitude=magnitudes[e_pos], test_magnitude=magnitudes[t_pos],
        enroll_cohort_mean=means[e_pos], test_cohort_mean=means[t_pos])


def check_cosine_scores(trials: TrialList, cosine: np.ndarray, eval_emb_scp: str,
                        mean_vec_path: Optional[str]) -> None:
    """Refuse a score file whose scores are not the ``cosine`` of its trials' embeddings.

    A score file made from earlier embeddings, or with another mean vector, would
    otherwise be normalised with statistics of the current ones. The error names the
    first differing line (of ``trials.path``) and both values.
    """
    differs = np.abs(cosine - trials.scores) > STALE_SCORE_TOLERANCE
    if not differs.any():
        return
    first = int(np.argmax(differs))
    enroll, test = trials.enroll_keys[trials.enroll[first]], trials.test_keys[trials.test[first]]
    line_no = next((line_no for line_no, fields in iter_table(trials.path)
                    if fields[:2] == [enroll, test]
                    and float(fields[2]) == trials.scores[first]), None)
    mean = f"minus the mean vector {mean_vec_path}" if mean_vec_path else "(no mean vector)"
    raise DataFormatError(
        trials.path, line_no,
        f"score {trials.scores[first]:.5f} is not the cosine {cosine[first]:.5f} of the "
        f"embeddings of {eval_emb_scp} {mean} ({int(differs.sum())} of {len(trials)} trials "
        f"differ): the score file was made from other embeddings or another mean vector; "
        f"score the trials again (score.sh) first")


def _warn_cohort_holds_trial_utterances(table: EmbeddingTable, rows: np.ndarray,
                                        cohort: EmbeddingTable, trial_score_file: str,
                                        cohort_emb_scp: str) -> None:
    """Warn when keys of the trials' utterances (``rows`` of ``table``) are cohort keys.

    Not an error: a cohort of the evaluation set itself may be chosen on purpose.
    """
    distinct = np.unique(rows)
    shared = [table.keys[row] for row in distinct if table.keys[row] in cohort.index]
    if shared:
        logger.warning(
            "%d of the %d utterances of the trials of %s are also in the cohort %s (%s): "
            "their own embeddings are cohort members, whose scores of about 1 enter their "
            "top N and bias the normalised scores (and the EER); normalise against a "
            "cohort of other speakers' embeddings", len(shared), len(distinct),
            trial_score_file, cohort_emb_scp, listed_names(shared, most=5))


def score_norm_file(score_norm_method: str, top_n: int, trial_score_file: str,
                    score_norm_file_path: str, cohort_emb_scp: str, eval_emb_scp: str,
                    mean_vec_path: Optional[str] = None, device: str = "auto",
                    max_missing_fraction: float = 0.0,
                    cohort_of_trial_speakers: bool = False) -> None:
    """Normalise a cosine score file against a cohort and write the normalised file.

    Output lines: ``enroll test score [label] enroll_mag test_mag enroll_mean test_mean``.
    Trials naming an utterance without an evaluation embedding are left out and
    counted, up to ``max_missing_fraction`` of them (see :func:`keep_scorable_trials`).
    Scores that are not the cosine of these embeddings minus this mean vector are refused
    (:func:`check_cosine_scores`). A cohort holding the trials' utterances (by key, or
    by a near-identical embedding) is warned about, not refused; with
    ``cohort_of_trial_speakers`` (the trials are of the cohort's own speakers, as QMF's
    calibration trials) a near-identical member is expected and only counted.
    """
    trials = read_score_file(trial_score_file)
    table = load_embeddings(eval_emb_scp, progress=True)
    mean_vec = None
    if mean_vec_path:
        mean_vec = load_mean_vector(mean_vec_path, table.dim)
    else:
        logger.info("no mean vector given: embeddings are not mean-normalised")
    cohort = load_embeddings(cohort_emb_scp, progress=True)
    if cohort.dim != table.dim:
        raise DataFormatError(cohort_emb_scp, None, f"cohort embeddings have dimension "
                                                    f"{cohort.dim}, the evaluation embeddings "
                                                    f"of {eval_emb_scp} have {table.dim}")
    trials, enroll_rows, test_rows, coverage = keep_scorable_trials(
        trials, table.index, table.index, eval_emb_scp, max_missing_fraction)
    check_cosine_scores(trials, cosine_score_trials(table, trials, mean_vec, device),
                        eval_emb_scp, mean_vec_path)
    _warn_cohort_holds_trial_utterances(table, np.concatenate([enroll_rows, test_rows]),
                                        cohort, trial_score_file, cohort_emb_scp)
    logger.info("%s of %d trials of %s against a cohort of %d", score_norm_method,
                len(trials), os.path.basename(trial_score_file), len(cohort))
    if score_norm_method == "asnorm" and top_n > len(cohort):
        # WeSpeaker's slice takes the whole cohort then: AS-Norm becomes S-Norm
        logger.warning("top_n=%d is more than the %d embeddings of the cohort %s: all of "
                       "them are used (S-Norm)", top_n, len(cohort), cohort_emb_scp)
        top_n = len(cohort)
    result = normalize_trial_scores(trials.scores, enroll_rows, test_rows, table.matrix,
                                    cohort.matrix, score_norm_method, top_n, mean_vec,
                                    device, progress=True, row_names=table.keys,
                                    cohort_of_trial_speakers=cohort_of_trial_speakers)
    write_score_file(score_norm_file_path, trials, result.scores, extra=result.qmf_columns())
    coverage.log(score_norm_file_path)
