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

The table also says what it cannot vouch for, each with a footnote and a warning
(:func:`table_notes`): a row with a score file older than the embeddings its
experiment was scored from (``stale``: the sets the score files' settings notes
name, else every set under ``embeddings/``), rows of one trial list that cover
different numbers of trials, and an experiment after the first that began from a
``models/model_0.pt`` (``start_from`` of ``tools/recipe_helpers.sh``) other than the
first one's ``models/avg_model.pt`` (``other base``). Times are what the staleness
goes by, as the recipes' own ``up_to_date``: copy an experiment with its times kept.
"""
from __future__ import annotations

import filecmp
import glob
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from wespeaker_py.config import load_model_config, read_yaml
from wespeaker_py.io.layout import CONFIG_NAME, EmbeddingSetLayout, ExperimentLayout
from wespeaker_py.models.complexity import count_params
from wespeaker_py.runtime.builder import build_untrained
from wespeaker_py.scoring.det_plot import plot_det_curves, plot_score_histogram
from wespeaker_py.scoring.metrics import (DetPoints, compute_det_points, eer_from_det,
                                          min_dcf_from_det)
from wespeaker_py.scoring.trials import read_labelled_scores
from wespeaker_py.train.checkpoint import checkpoint_name
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
# The embedding sets a scoring stage notes in its score files' .settings
# (tools/recipe/score*.sh: "train_set=vox2_dev eval_set=vox1").
NOTED_SET = re.compile(r"(?:^|\s)(?:train_set|eval_set)=(\S+)")


@dataclass
class Metrics:
    """EER (percent) and minDCF (p_target 0.01) of one score file, with its DET points
    and the scores and labels they came from."""

    eer_percent: float
    min_dcf: float
    det: DetPoints
    scores_and_labels: Tuple[np.ndarray, np.ndarray]
    score_file: str

    @property
    def num_trials(self) -> int:
        """How many trials the score file scores."""
        return len(self.scores_and_labels[0])


@dataclass
class BackendResult:
    """One row of the table: a scoring back-end and its metrics per trial list;
    ``stale`` maps each of its score files older than the embeddings to the newest of
    those embeddings (``xvector.scp``)."""

    scoring: str
    per_trials: Dict[str, Metrics] = field(default_factory=dict)
    stale: Dict[str, str] = field(default_factory=dict)


@dataclass
class ExperimentResults:
    """The rows of one experiment directory; ``other_base`` says why, when it is a
    fine-tuning that did not start from the base experiment's current model."""

    model: str
    params_millions: Optional[float]
    backends: List[BackendResult]
    other_base: Optional[str] = None


@dataclass
class TableNote:
    """What the table cannot vouch for: ``text`` is its footnote (and warning), ``tags``
    the cells it marks, (experiment index, row index; None for the Model cell) to the
    short tag the cell gets."""

    text: str
    tags: Dict[Tuple[int, Optional[int]], str]


def measure(score_file: str, p_target: float = 0.01) -> Metrics:
    """EER (%) and minDCF of a labelled score file."""
    scores, labels = read_labelled_scores(score_file)
    det = compute_det_points(scores, labels)
    return Metrics(100.0 * eer_from_det(det), min_dcf_from_det(det, p_target), det,
                   (scores, labels), score_file)


def find_score_files(scores_dir: str, trials_name: str) -> List[Tuple[str, str]]:
    """``(back-end label, path)`` of every score file of ``trials_name``, in the order of
    :data:`BACKENDS`, then the score files none of them names (labelled ``*.<name>score``;
    :func:`collect_results` says so when it measures them)."""
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
            rows.append((f"*.{match.group('kind')}", None, name))
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


def count_parameters(config_path: str) -> Optional[float]:
    """Millions of parameters, without its head or front-end, of the speaker model of the
    config at ``config_path``, built as training builds it
    (:func:`~wespeaker_py.runtime.builder.build_untrained`).

    A config a training run wrote holds the model's input size. One that leaves it to an
    SSL front-end (``model_args.feat_dim: -1``) is counted when the front-end's weights are
    where the config says; without them the count is None (``n/a``), with a warning.
    """
    try:
        model = build_untrained(load_model_config(config_path))
    except FileNotFoundError as error:
        logger.warning("%s: Params is n/a: the model's input size is left to its front-end, "
                       "which cannot be built here (%s)", config_path, error)
        return None
    return count_params(model) / 1e6


def scored_embeddings(exp_dir: str) -> List[str]:
    """The embeddings (``embeddings/<set>/xvector.scp``) that exist of the sets the
    settings notes of ``exp_dir/scores`` name (``train_set=``, ``eval_set=``: what the
    scoring stages scored from); of every set under ``embeddings/`` when none names one."""
    layout = ExperimentLayout(exp_dir)
    sets = set()
    for note in glob.glob(os.path.join(glob.escape(layout.scores_dir), "*.settings")):
        with open(note, encoding="utf-8") as handle:
            sets.update(NOTED_SET.findall(handle.read()))
    embeddings_dir = layout.embeddings_dir
    if not sets and os.path.isdir(embeddings_dir):
        sets.update(os.listdir(embeddings_dir))
    scps = (EmbeddingSetLayout(os.path.join(embeddings_dir, name)).embeddings_scp
            for name in sets)
    return sorted(path for path in scps if os.path.isfile(path))


def newer_embeddings(score_file: str, embeddings: Sequence[str]) -> Optional[str]:
    """The newest of ``embeddings`` when it is newer than ``score_file``, else None."""
    newest = max(embeddings, key=lambda path: os.stat(path).st_mtime_ns, default=None)
    if newest is not None and os.stat(newest).st_mtime_ns > os.stat(score_file).st_mtime_ns:
        return newest
    return None


def other_start(exp_dir: str, base_dir: str) -> Optional[str]:
    """Why ``exp_dir``, a fine-tuning of ``base_dir``, is not one of its current model:
    its ``models/model_0.pt`` (the copy ``start_from`` of ``tools/recipe_helpers.sh``
    made of the model it began from) differs from ``base_dir/models/avg_model.pt``.
    None when they are the same, or when either is missing (nothing to compare)."""
    start = os.path.join(ExperimentLayout(exp_dir).model_dir, checkpoint_name(0))
    base = ExperimentLayout(base_dir).avg_model_path
    if not (os.path.isfile(start) and os.path.isfile(base)) or filecmp.cmp(start, base,
                                                                           shallow=False):
        return None
    return (f"`{start}`, the model {exp_dir} was fine-tuned from, is not `{base}`: its rows "
            f"are of another model than {base_dir}'s; remove {exp_dir} and fine-tune again")


def collect_results(exp_dir: str, trials: Sequence[str],
                    base_dir: Optional[str] = None) -> ExperimentResults:
    """Measure every score file of ``trials`` under ``exp_dir/scores``, noting the ones
    older than the embeddings; with ``base_dir`` (``exp_dir`` is its fine-tuning), also
    whether ``exp_dir`` started from ``base_dir``'s current model."""
    layout = ExperimentLayout(exp_dir)
    config_path = layout.config_path
    config = read_yaml(config_path)
    embeddings = scored_embeddings(exp_dir)
    rows: Dict[str, BackendResult] = {}
    for trials_name in trials:
        for label, path in find_score_files(layout.scores_dir, trials_name):
            if label.startswith("*."):
                logger.info("%s: no back-end of BACKENDS (wespeaker_py/scoring/report.py) "
                            "names this score file; its row is labelled %s", path, label)
            row = rows.setdefault(label, BackendResult(label))
            row.per_trials[trials_name] = measure(path)
            newer = newer_embeddings(path, embeddings)
            if newer is not None:
                row.stale[path] = newer
    if not rows:
        raise FileNotFoundError(f"no score files of {', '.join(trials)} in {layout.scores_dir}")
    return ExperimentResults(describe_model(config), count_parameters(config_path),
                             list(rows.values()),
                             other_start(exp_dir, base_dir) if base_dir else None)


def _not_scored_yet(exp_dir: str, trials: Sequence[str]) -> Optional[str]:
    """Why ``exp_dir`` has no rows for ``trials`` yet (None when it has)."""
    layout = ExperimentLayout(exp_dir)
    if not os.path.isfile(layout.config_path):
        return f"it has no {CONFIG_NAME}"
    scores_dir = layout.scores_dir
    if not any(find_score_files(scores_dir, name) for name in trials):
        return f"{scores_dir} holds no score file of {', '.join(trials)}"
    return None


def table_notes(experiments: Sequence[ExperimentResults],
                trials: Sequence[str]) -> List[TableNote]:
    """The footnotes of the table: each stale row, each experiment of another base, and
    each trial list whose rows cover different numbers of trials (every such row is
    tagged with its count: which version of the list is right, the table cannot tell)."""
    notes: List[TableNote] = []
    for index, experiment in enumerate(experiments):
        if experiment.other_base:
            notes.append(TableNote(experiment.other_base, {(index, None): "other base"}))
        for row, backend in enumerate(experiment.backends):
            if backend.stale:
                older = "; ".join(f"`{score}` is older than `{newer}`"
                                  for score, newer in backend.stale.items())
                notes.append(TableNote(
                    f"{experiment.model} {backend.scoring}: {older}: scored from earlier "
                    "embeddings; run its scoring stage again", {(index, row): "stale"}))
    for trials_name in trials:
        counts = {(index, row): backend.per_trials[trials_name]
                  for index, experiment in enumerate(experiments)
                  for row, backend in enumerate(experiment.backends)
                  if trials_name in backend.per_trials}
        if len({metrics.num_trials for metrics in counts.values()}) > 1:
            listed = ", ".join(f"{metrics.num_trials} in `{metrics.score_file}`"
                               for metrics in counts.values())
            notes.append(TableNote(
                f"the rows of {trials_name} cover different numbers of trials ({listed}): "
                "a score file of another version of the list, or trials dropped for "
                "utterances without embeddings; compare rows of one count only",
                {cell: f"{metrics.num_trials} trials" for cell, metrics in counts.items()}))
    return notes


def format_table(experiments: Sequence[ExperimentResults], trials: Sequence[str]) -> str:
    """A markdown table: model, params, scoring, then EER (%) and minDCF per trial list;
    a cell :func:`table_notes` marks gets its tags with footnotes below the table."""
    notes = table_notes(experiments, trials)
    numbers: Dict[int, int] = {}  # index in notes -> footnote number, in table order

    def marked(text: str, cell: Tuple[int, Optional[int]]) -> str:
        tags = []
        for index, note in enumerate(notes):
            if cell in note.tags:
                tags.append(f"{note.tags[cell]}[^{numbers.setdefault(index, len(numbers) + 1)}]")
        return f"{text} ({', '.join(tags)})" if tags else text

    header = list(COLUMNS)
    for trials_name in trials:
        header += [f"{trials_name} EER (%)", f"{trials_name} minDCF"]
    lines = ["| " + " | ".join(header) + " |",
             "|:--|--:|:--|" + "--:|--:|" * len(trials)]
    for position, experiment in enumerate(experiments):
        for index, backend in enumerate(experiment.backends):
            cells = ["", "", marked(backend.scoring, (position, index))]
            if index == 0:
                cells[0] = marked(experiment.model, (position, None))
                cells[1] = ("n/a" if experiment.params_millions is None
                            else f"{experiment.params_millions:.2f}M")
            for trials_name in trials:
                metrics = backend.per_trials.get(trials_name)
                cells += (["-", "-"] if metrics is None else
                          [f"{metrics.eer_percent:.3f}", f"{metrics.min_dcf:.3f}"])
            lines.append("| " + " | ".join(cells) + " |")
    if numbers:
        lines.append("")
        lines += [f"[^{number}]: {notes[index].text}"
                  for index, number in sorted(numbers.items(), key=lambda item: item[1])]
    return "\n".join(lines) + "\n"


def write_report(exp_dirs: Sequence[str], trials: Sequence[str], output: Optional[str],
                 det_dir: Optional[str]) -> str:
    """Build the table for ``exp_dirs`` (written to ``output`` if given; each after the
    first is a fine-tuning of the first, as ``exp/X-LM`` of ``exp/X``) and, with
    ``det_dir``, one DET plot per trial list (``det_dir/det_<trials>.png``) and a
    histogram of the first back-end's scores (``det_dir/hist_<trials>.png``). A
    fine-tuning without a config.yaml or a score file of ``trials`` yet (one still
    training or scoring) is left out with a warning."""
    experiments = [collect_results(exp_dirs[0], trials)]
    for exp_dir in exp_dirs[1:]:
        why = _not_scored_yet(exp_dir, trials)
        if why:
            logger.warning("%s is left out of the table: %s", exp_dir, why)
        else:
            experiments.append(collect_results(exp_dir, trials, exp_dirs[0]))
    for note in table_notes(experiments, trials):
        logger.warning("%s", note.text)
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
