"""Quality-measure-function (QMF) calibration of normalised scores.

Each trial gets quality features from both sides: the utterance durations
(capped at ``max_dur`` seconds), the embedding magnitudes and the cohort means
written by score normalisation; every pair enters as min, max, max - min and
max / min. A linear logistic-regression model over ``[score, features...]`` is
trained to minimise Cllr on a calibration trial list and then maps evaluation
trials to calibrated log-likelihood ratios.

Calibration factor files hold one trial a line:
``enroll test [label] score f1 ... fk`` (label present when the trials had it).
The model is stored as a torch state dict ``{"linear.weight": [1, k+1],
"linear.bias": [1]}`` (float64), the layout WeSpeaker's calibration model uses.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from scipy.special import expit, log_expit

from wespeaker_py.errors import WespeakerError, first_line
from wespeaker_py.scoring.trials import (LABEL_NAMES, TrialList, TrialListBuilder,
                                         parse_label, read_score_file, write_score_file)
from wespeaker_py.utils.atomic_files import atomic_open, save_torch
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.tables import DataFormatError, iter_table, open_table, read_utt2dur
from wespeaker_py.utils.torch_files import read_checkpoint

logger = get_logger(__name__)

# the columns score normalisation writes after a trial's score and label
QMF_NORM_COLUMNS = ("enroll_mag", "test_mag", "enroll_mean", "test_mean")
_CHUNK = 100_000
# (key pairs, their line numbers, [m, k] features incl. the score, labels or None)
_FactorChunk = Tuple[List[List[str]], List[int], np.ndarray, Optional[np.ndarray]]


RATIO_FLOOR = 1e-4
# Ridge penalty on the standardised QMF weights: bounds the weights along the
# collinear min/max/difference features at a cost below 0.1% of the Cllr.
QMF_L2 = 1e-4


def pair_feature_columns(first: np.ndarray, second: np.ndarray) -> List[np.ndarray]:
    """min, max, max - min and max / min of one quality measure of the two sides of each
    trial. The ratio's denominator keeps its sign but is at least ``RATIO_FLOOR`` in size:
    S-Norm cohort means lie near 0 and are written with 4 decimals. A tie takes ``first``'s
    value, as Python's ``min`` and ``max`` do (it matters for -0.0 against 0.0)."""
    low = np.where(second < first, second, first)
    high = np.where(second > first, second, first)
    magnitude = np.abs(low)
    floor = np.where(RATIO_FLOOR > magnitude, RATIO_FLOOR, magnitude)
    return [low, high, high - low, high / np.copysign(floor, low)]


def gather_calibration_factors(score_norm_file: str, calibration_factor_file: str,
                               wav_dur_scp: Optional[str] = None, max_dur: float = 20.0,
                               drop_duration: bool = False) -> int:
    """Turn a normalised score file into a calibration factor file; return the trial count.

    Without ``drop_duration`` every utterance must have a duration in
    ``wav_dur_scp`` (an error names the score file line otherwise).
    """
    durations = None
    if not drop_duration:
        if not wav_dur_scp:
            raise WespeakerError(f"the durations of the trials of {score_norm_file} are "
                                 "needed: give --wav_dur_scp, or --drop_duration to leave "
                                 "them out")
        durations = read_utt2dur(wav_dur_scp, max_dur)
    trials = read_score_file(score_norm_file, QMF_NORM_COLUMNS)
    if durations is not None:
        _require_durations(trials, durations, wav_dur_scp)
    # one column per side of each quality measure: durations (looked up once per key),
    # magnitudes, cohort means
    columns = [] if durations is None else [
        np.array([durations[key] for key in keys], dtype=np.float64)[side]
        for keys, side in ((trials.enroll_keys, trials.enroll), (trials.test_keys, trials.test))]
    columns += [trials.extra[:, index] for index in range(len(QMF_NORM_COLUMNS))]
    line_format = ("%s %s" + ("" if trials.labels is None else " %s") + " %.5f "
                   + " ".join(["%.4f"] * (2 * len(columns))) + "\n")
    with atomic_open(calibration_factor_file, "w", encoding="utf-8") as out:
        for start in range(0, len(trials), _CHUNK):
            stop = start + _CHUNK
            values = [[trials.enroll_keys[i] for i in trials.enroll[start:stop].tolist()],
                      [trials.test_keys[i] for i in trials.test[start:stop].tolist()]]
            if trials.labels is not None:
                values.append([LABEL_NAMES[i] for i in trials.labels[start:stop].tolist()])
            values.append(trials.scores[start:stop].tolist())
            for first, second in zip(columns[::2], columns[1::2]):
                values += [feature.tolist() for feature in
                           pair_feature_columns(first[start:stop], second[start:stop])]
            out.write("".join([line_format % line for line in zip(*values)]))
    return len(trials)


def _require_durations(trials: TrialList, durations: Dict[str, float],
                       wav_dur_scp: str) -> None:
    """Every utterance of ``trials`` has a (non-zero) duration; else a
    :class:`DataFormatError` naming the first line of the score file that lacks one."""
    lacking = [(int(first_line), key)
               for keys, first_lines in ((trials.enroll_keys, trials.enroll_first_line),
                                         (trials.test_keys, trials.test_first_line))
               for key, first_line in zip(keys, first_lines) if not durations.get(key)]
    if lacking:
        line_no, key = min(lacking)
        raise DataFormatError(trials.path, line_no, f"utterance {key!r} has no (or a zero) "
                                                    f"duration in {wav_dur_scp}")


class _IrregularFactorFile(WespeakerError):
    """A factor file that :func:`_factor_chunks` cannot read as numpy parses it."""


def _factor_chunks(path: str) -> Iterator[_FactorChunk]:
    """Yield (key pairs, their line numbers, [m, k] features incl. the score, labels or
    None) chunk by chunk, parsed by numpy. Every non-blank line must have the columns and
    the label form of the first one and finite numbers as numpy reads them; the first line
    that has not is a :class:`DataFormatError` naming it (:func:`_raise_first_bad_line`).
    """
    try:
        with open_table(path) as handle:
            line_no = 0
            columns = None
            while True:
                lines = list(itertools.islice(handle, _CHUNK))
                if not lines:
                    break
                line_nos = list(range(line_no + 1, line_no + len(lines) + 1))
                line_no += len(lines)
                if any(map(str.isspace, lines)):   # blank lines are skipped, as in any table
                    line_nos = [n for n, line in zip(line_nos, lines) if not line.isspace()]
                    lines = [line for line in lines if not line.isspace()]
                    if not lines:
                        continue
                if columns is None:
                    first = lines[0].split()
                    if len(first) < 4:
                        raise _IrregularFactorFile("a short first line")
                    has_label = parse_label(first[2]) is not None
                    key_columns = 3 if has_label else 2
                    columns = np.dtype([("heads", object, (key_columns,)),
                                        ("numbers", np.float64, (len(first) - key_columns,))])
                table = np.loadtxt(lines, dtype=columns, comments=None, ndmin=1)
                numbers = np.ascontiguousarray(table["numbers"])
                if len(table) != len(lines) or not np.isfinite(numbers).all():
                    raise _IrregularFactorFile("rows other than the lines, or a number that "
                                               "is not finite")
                labels = None
                if has_label:
                    tokens = table["heads"][:, 2].tolist()
                    codes = {token: parse_label(token) for token in set(tokens)}
                    if None in codes.values():
                        raise _IrregularFactorFile("label column present on some lines only")
                    labels = np.array([codes[token] for token in tokens])
                yield table["heads"][:, :2].tolist(), line_nos, numbers, labels
            if columns is None:
                raise _IrregularFactorFile("no lines")
    except DataFormatError:
        raise   # open_table's: text that is not UTF-8, named at its line
    except Exception as error:   # numpy's, or the give-ups above: find the line to name
        _raise_first_bad_line(path)
        raise DataFormatError(path, None, f"not read as a calibration factor file "
                                          f"({first_line(error)})") from None


def _is_number(token: str) -> bool:
    """Whether numpy's loadtxt reads ``token`` as a float: as ``float`` does, but without
    its underscores between digits and its non-ASCII digits and spaces."""
    if not token.isascii() or "_" in token:
        return False
    try:
        float(token)
    except ValueError:
        return False
    return True


def _raise_first_bad_line(path: str) -> None:
    """Raise a :class:`DataFormatError` naming the first line of factor file ``path`` that
    :func:`_factor_chunks` cannot take (too few fields, a label column on some lines only,
    another count of numbers than the first line's, a number that is not one or not
    finite), or saying that it holds no trials; return if there is none."""
    width = None
    has_label = None
    for line_no, fields in iter_table(path, min_fields=4):
        line_has_label = parse_label(fields[2]) is not None
        if has_label is None:
            has_label = line_has_label
        if has_label != line_has_label:
            raise DataFormatError(path, line_no, "label column present on some lines only")
        numbers = fields[3:] if has_label else fields[2:]
        if width is None:
            width = len(numbers)
        if len(numbers) != width:
            raise DataFormatError(path, line_no, f"expected {width} numbers after the keys, "
                                                 f"got {len(numbers)}")
        if not all(_is_number(token) for token in numbers):
            raise DataFormatError(path, line_no, "a score or feature is not a number")
        if not all(math.isfinite(float(token)) for token in numbers):
            raise DataFormatError(path, line_no, "a score or feature is NaN or inf")
    if width is None:
        raise DataFormatError(path, None, "holds no trials")


def read_calibration_factors(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """All ``(features [n, k], labels [n])`` of a labelled calibration factor file, which
    must hold both target and nontarget trials."""
    features, labels = [], []
    for _, _, chunk, chunk_labels in _factor_chunks(path):
        if chunk_labels is None:
            raise DataFormatError(path, 1, "training calibration needs labelled trials")
        features.append(chunk)
        labels.append(chunk_labels)
    features_all, labels_all = np.concatenate(features), np.concatenate(labels)
    targets = int(labels_all.sum())
    if targets in (0, len(labels_all)):
        raise DataFormatError(path, None, f"training calibration needs target and nontarget "
                                          f"trials, got {targets} targets of {len(labels_all)}")
    return features_all, labels_all


def cllr(target_llrs: np.ndarray, nontarget_llrs: np.ndarray) -> float:
    """Log-likelihood-ratio cost in bits (1.0 for an uninformative system)."""
    target_cost = -log_expit(np.asarray(target_llrs, dtype=np.float64)).mean()
    nontarget_cost = -log_expit(-np.asarray(nontarget_llrs, dtype=np.float64)).mean()
    return float(0.5 * (target_cost + nontarget_cost) / np.log(2))


@dataclass
class LinearCalibration:
    """Calibrated LLR = ``features @ weight + bias``."""

    weight: np.ndarray
    bias: float

    def __call__(self, features: np.ndarray) -> np.ndarray:
        if features.shape[1] != self.weight.shape[0]:
            raise ValueError(f"calibration model takes {self.weight.shape[0]} features, "
                             f"got {features.shape[1]}")
        return features @ self.weight + self.bias


def train_calibration(features: np.ndarray, labels: np.ndarray,
                      l2: float = QMF_L2) -> LinearCalibration:
    """Fit a linear model minimising Cllr (targets and nontargets weighted equally).

    Features are standardised for a well-conditioned L-BFGS problem and the
    standardised weights (not the bias) carry a ridge penalty ``l2 / 2 * |w|^2``
    added to the Cllr in bits. Three of the four features of a quality measure
    (min, max, max - min) are collinear up to their 4-decimal rounding; without
    the penalty (``l2 = 0``) a fully converged solver puts weights of several
    hundred of opposite signs on them, fitted to rounding noise. The solution
    is folded back so that the model applies to raw features.
    """
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("calibration training needs target and nontarget trials")
    if l2 < 0:
        raise ValueError(f"l2 penalty must be >= 0, got {l2}")
    centre = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale == 0] = 1.0
    standard = (features - centre) / scale
    # sign +1 for targets, -1 for nontargets; weights make both classes count half
    sign = np.where(labels, 1.0, -1.0)
    weights = np.where(labels, 0.5 / labels.sum(), 0.5 / (~labels).sum()) / np.log(2)

    def objective(params: np.ndarray) -> Tuple[float, np.ndarray]:
        llr = standard @ params[:-1] + params[-1]
        margin = sign * llr
        cost = float(np.sum(weights * -log_expit(margin)) + 0.5 * l2 * params[:-1] @ params[:-1])
        d_llr = -weights * sign * expit(-margin)
        return cost, np.append(standard.T @ d_llr + l2 * params[:-1], d_llr.sum())

    from scipy.optimize import minimize  # on first use: it costs load_model about 0.5 s
    start = np.zeros(features.shape[1] + 1)
    result = minimize(objective, start, jac=True, method="L-BFGS-B",
                      options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-9})
    if not result.success:
        # a line search that stalls at the optimum also ends here: keep the model, say so
        logger.warning("the calibration fit stopped before converging after %d iterations "
                       "(%s); the model is kept as it stands", result.nit, result.message)
    weight = result.x[:-1] / scale
    bias = float(result.x[-1] - np.sum(result.x[:-1] * centre / scale))
    return LinearCalibration(weight=weight, bias=bias)


def save_calibration(path: str, model: LinearCalibration) -> None:
    """Save as a torch state dict in the layout of WeSpeaker's calibration model."""
    state = {"linear.weight": torch.tensor(model.weight, dtype=torch.float64)[None, :],
             "linear.bias": torch.tensor([model.bias], dtype=torch.float64)}
    save_torch(state, path)


def load_calibration(path: str) -> LinearCalibration:
    """Load a calibration model written by :func:`save_calibration` (or WeSpeaker); a
    file that is none raises a one-line error naming it."""
    state = read_checkpoint(path, weights_only=True, what="a calibration model")
    if set(state) != {"linear.weight", "linear.bias"}:
        raise DataFormatError(path, None, f"not a calibration model: keys {sorted(state)}")
    weight = state["linear.weight"].double().numpy().reshape(-1)
    return LinearCalibration(weight=weight, bias=float(state["linear.bias"].double()[0]))


def train_calibration_file(calibration_factor_file: str, save_model_path: str) -> float:
    """Train on a labelled factor file, save the model, return the trained Cllr."""
    features, labels = read_calibration_factors(calibration_factor_file)
    model = train_calibration(features, labels)
    save_calibration(save_model_path, model)
    llrs = model(features)
    return cllr(llrs[labels == 1], llrs[labels == 0])


def infer_calibration_file(calibration_factor_file: str, save_model_path: str,
                           calibration_score_file: str) -> int:
    """Write ``enroll test llr [label]`` for every trial of a factor file (a score file,
    :func:`~wespeaker_py.scoring.trials.write_score_file`); return the count."""
    model = load_calibration(save_model_path)

    trials = TrialListBuilder(calibration_factor_file)
    llrs: List[np.ndarray] = []
    labels: List[np.ndarray] = []
    for keys, line_nos, features, chunk_labels in _factor_chunks(calibration_factor_file):
        if features.shape[1] != model.weight.shape[0]:
            raise DataFormatError(
                calibration_factor_file, None,
                f"has {features.shape[1]} numbers a trial, the calibration model "
                f"{save_model_path} takes {model.weight.shape[0]}: were the two gathered "
                "with different --drop_duration?")
        llrs.append(model(features))
        for (enroll, test), line_no in zip(keys, line_nos):
            trials.add(enroll, test, line_no)
        if chunk_labels is not None:
            labels.append(chunk_labels)
    scored = trials.build(np.concatenate(labels) if labels else None)
    write_score_file(calibration_score_file, scored, np.concatenate(llrs))
    return len(scored)
