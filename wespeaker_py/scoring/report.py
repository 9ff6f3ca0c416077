"""Results table of an experiment: EER and minDCF of every scoring back-end.

The recipes leave their score files in ``<exp_dir>/scores`` under fixed names
(see ``tools/recipe/score*.sh``); :data:`BACKENDS` names them, for a trial list ``T``:

================  ======================================
back-end          score file
================  ======================================
cosine            ``T.score``
AS-Norm / S-Norm  ``<cohort>_asnorm<N>_T.score`` / ``<cohort>_snorm_T.score``
QMF               ``cali_<cohort>_asnorm<N>_T.score`` (``cali_<cohort>_snorm_T.score``)
PLDA              ``T.pldascore``
================  ======================================

Any other ``T.<name>score`` there (a back-end :data:`BACKENDS` does not list yet)
is a row of its own, labelled ``*.<name>score``.

:func:`collect_results` finds them and measures each; :func:`format_table`
prints the table in the form of the README (model, params, scoring, then EER %
and minDCF for each trial list); :func:`write_report` also draws every back-end
of one trial list into a single DET plot and the first back-end's target and
nontarget scores as a histogram.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from wespeaker_py.models import get_model
from wespeaker_py.scoring.det_plot import plot_det_curves, plot_score_histogram
from wespeaker_py.scoring.metrics import (DetPoints, compute_det_points, eer_from_det,
                                          min_dcf_from_det)
from wespeaker_py.scoring.trials import read_labelled_scores
from wespeaker_py.config import read_yaml
from wespeaker_py.utils.atomic_files import atomic_open
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

COLUMNS = ("Model", "Params", "Scoring")

# The scoring back-ends in table order: (row label, score file name). The name is a
# regular expression of the whole file name, {trials} standing for the trial list;
# its named groups fill the label's fields, and a "cohort" group names the cohort
# when rows of several cohorts would share a label.
BACKENDS: Tuple[Tuple[str, str], ...] = (
    ("cosine", r"{trials}\.score"),
    ("AS-Norm (top {top_n})", r"(?!cali_)(?P<cohort>.+)_asnorm(?P<top_n>\d+)_{trials}\.score"),
    ("S-Norm", r"(?!cali_)(?P<cohort>.+)_snorm_{trials}\.score"),
    ("AS-Norm (top {top_n}) + QMF", r"cali_(?P<cohort>.+)_asnorm(?P<top_n>\d+)_{trials}\.score"),
    ("S-Norm + QMF", r"cali_(?P<cohort>.+)_snorm_{trials}\.score"),
    ("PLDA", r"{trials}\.pldascore"),
)
# Any score file of a trial list: the list's name, a dot and one word ending in
# "score" (not its .settings, .det.png or temporary files).
SCORE_FILE = r"{trials}\.(?P<kind>\w*score)"


@dataclass
class Metrics:
    """EER (percent) and minDCF (p_target 0.01) of one score file, with its DET points
    and the scores and labels they came from."""

    eer_percent: float
    min_dcf: float
    det: DetPoints
    scores_and_labels: Tuple[np.ndarray, np.ndarray]


@dataclass
class BackendResult:
    """One row of the table: a scoring back-end and its metrics per trial list."""

    scoring: str
    per_trials: Dict[str, Metrics] = field(default_factory=dict)


@dataclass
class ExperimentResults:
    """The rows of one experiment directory."""

    model: str
    params_millions: Optional[float]
    backends: List[BackendResult]


def measure(score_file: str, p_target: float = 0.01) -> Metrics:
    """EER (%) and minDCF of a labelled score file."""
    scores, labels = read_labelled_scores(score_file)
    det = compute_det_points(scores, labels)
    return Metrics(100.0 * eer_from_det(det), min_dcf_from_det(det, p_target), det,
                   (scores, labels))


def find_score_files(scores_dir: str, trials_name: str) -> List[Tuple[str, str]]:
    """``(back-end label, path)`` of every score file of ``trials_name``, in the order of
    :data:`BACKENDS`, then the score files none of them names (labelled ``*.<name>score``)."""
    names = sorted(os.listdir(scores_dir)) if os.path.isdir(scores_dir) else []
    rows: List[Tuple[str, Optional[str], str]] = []
    for label, pattern in BACKENDS:
        for name in names:
            match = _match_name(pattern, trials_name, name)
            if match is not None:
                fields = match.groupdict()
                rows.append((label.format(**fields), fields.get("cohort"), name))
    named = {name for _, _, name in rows}
    for name in names:
        match = _match_name(SCORE_FILE, trials_name, name)
        if match is not None and name not in named:
            label = f"*.{match.group('kind')}"
            logger.info("%s: no back-end of BACKENDS (wespeaker_py/scoring/report.py) names "
                        "this score file; its row is labelled %s",
                        os.path.join(scores_dir, name), label)
            rows.append((label, None, name))
    return [(label, os.path.join(scores_dir, name))
            for label, name in _with_cohorts_told_apart(rows)]


def _match_name(pattern: str, trials_name: str, name: str) -> Optional[re.Match]:
    """``pattern`` (with ``{trials}``) matched against the whole file ``name``."""
    return re.fullmatch(pattern.replace("{trials}", re.escape(trials_name)), name)


def _with_cohorts_told_apart(rows: List[Tuple[str, Optional[str], str]]
                             ) -> List[Tuple[str, str]]:
    """``(label, name)`` of ``(label, cohort, name)`` rows; a label that several cohorts
    share names its cohort (``AS-Norm (top 300), cohort vox2_dev``), so no row hides
    another in the table."""
    shared = Counter(label for label, _, _ in rows)
    return [(f"{label}, cohort {cohort}" if shared[label] > 1 and cohort else label, name)
            for label, cohort, name in rows]


def describe_model(config: Mapping) -> str:
    """WeSpeaker-style model name, e.g. ``ResNet34-TSTP-emb256`` (``-LM`` for LM fine-tuning)."""
    args = config.get("model_args", {})
    parts = [str(config["model"])]
    if "m_channels" in args:
        parts.append(f"m{args['m_channels']}")
    if "pooling_func" in args:
        parts.append(str(args["pooling_func"]))
    if "embed_dim" in args:
        parts.append(f"emb{args['embed_dim']}")
    if config.get("do_lm"):
        parts.append("LM")
    return "-".join(parts)


def count_parameters(config: Mapping) -> Optional[float]:
    """Millions of parameters of the speaker model without its head.

    None for a model whose input size comes from an SSL front-end
    (``model_args.feat_dim: -1``), which the config alone does not fix.
    """
    args = dict(config.get("model_args", {}))
    feat_dim = args.get("feat_dim")
    if isinstance(feat_dim, int) and feat_dim < 0:
        return None
    model = get_model(config["model"], **args)
    return sum(p.numel() for p in model.parameters()) / 1e6


def collect_results(exp_dir: str, trials: Sequence[str]) -> ExperimentResults:
    """Measure every score file of ``trials`` under ``exp_dir/scores``."""
    config = read_yaml(os.path.join(exp_dir, "config.yaml"))
    rows: Dict[str, BackendResult] = {}
    for trials_name in trials:
        for label, path in find_score_files(os.path.join(exp_dir, "scores"), trials_name):
            rows.setdefault(label, BackendResult(label)).per_trials[trials_name] = measure(path)
    if not rows:
        raise FileNotFoundError(f"no score files of {', '.join(trials)} in {exp_dir}/scores")
    return ExperimentResults(describe_model(config), count_parameters(config), list(rows.values()))


def format_table(experiments: Sequence[ExperimentResults], trials: Sequence[str]) -> str:
    """A markdown table: model, params, scoring, then EER (%) and minDCF per trial list."""
    header = list(COLUMNS)
    for trials_name in trials:
        header += [f"{trials_name} EER (%)", f"{trials_name} minDCF"]
    lines = ["| " + " | ".join(header) + " |",
             "|:--|--:|:--|" + "--:|--:|" * len(trials)]
    for experiment in experiments:
        for index, backend in enumerate(experiment.backends):
            cells = ["", "", backend.scoring]
            if index == 0:
                cells[0] = experiment.model
                cells[1] = ("n/a" if experiment.params_millions is None
                            else f"{experiment.params_millions:.2f}M")
            for trials_name in trials:
                metrics = backend.per_trials.get(trials_name)
                cells += (["-", "-"] if metrics is None else
                          [f"{metrics.eer_percent:.3f}", f"{metrics.min_dcf:.3f}"])
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_table(text: str) -> List[Dict[str, str]]:
    """The rows of a table written by :func:`format_table` as dicts keyed by the header.

    Empty Model/Params cells repeat the row above, as a reader of the table would.
    """
    rows = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    if len(rows) < 2:
        raise ValueError("no markdown table found")

    def cells(line: str) -> List[str]:
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    header = cells(rows[0])
    parsed: List[Dict[str, str]] = []
    for line in rows[2:]:
        values = cells(line)
        if len(values) != len(header):
            raise ValueError(f"row has {len(values)} cells, the header {len(header)}: {line}")
        row = dict(zip(header, values))
        for column in COLUMNS[:2]:
            if not row[column] and parsed:
                row[column] = parsed[-1][column]
        parsed.append(row)
    return parsed


def write_report(exp_dirs: Sequence[str], trials: Sequence[str], output: Optional[str],
                 det_dir: Optional[str]) -> str:
    """Build the table for ``exp_dirs`` (written to ``output`` if given) and, with
    ``det_dir``, one DET plot per trial list (``det_dir/det_<trials>.png``) and a
    histogram of the first back-end's scores (``det_dir/hist_<trials>.png``)."""
    experiments = [collect_results(exp_dir, trials) for exp_dir in exp_dirs]
    table = format_table(experiments, trials)
    if output:
        with atomic_open(output, "w", encoding="utf-8") as out:
            out.write(table)
    if det_dir:
        os.makedirs(det_dir, exist_ok=True)
        for trials_name in trials:
            curves = [(f"{experiment.model} {backend.scoring}" if len(experiments) > 1
                       else backend.scoring, backend.per_trials[trials_name].det)
                      for experiment in experiments for backend in experiment.backends
                      if trials_name in backend.per_trials]
            plot_det_curves(curves, os.path.join(det_dir, f"det_{trials_name}.png"),
                            title=f"DET: {trials_name}")
            first = next((backend for experiment in experiments
                          for backend in experiment.backends
                          if trials_name in backend.per_trials), None)
            if first is not None:
                plot_score_histogram(*first.per_trials[trials_name].scores_and_labels,
                                     os.path.join(det_dir, f"hist_{trials_name}.png"),
                                     title=f"{first.scoring} scores: {trials_name}")
    return table
