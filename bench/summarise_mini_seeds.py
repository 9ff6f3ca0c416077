#!/usr/bin/env python3
"""Write bench/results_mini.md from the mini recipe runs of bench/run_mini_seeds.sh.

    python bench/summarise_mini_seeds.py --runs /tmp/mini_seeds/runs.tsv \\
        --data /tmp/mini_seeds/data --command "bash bench/run_mini_seeds.sh" \\
        --output bench/results_mini.md

``--runs`` has one line per run: seed, experiment directory, wall seconds and
the 1-minute load average before and after. The file gets the EER/minDCF of
every back-end in every run, their mean, standard deviation and range over the
runs, the untrained baseline the tests use, and the machine and commit.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch

from wespeaker_py.scoring.report import collect_results
from wespeaker_py.utils.atomic_files import atomic_open
from wespeaker_py.utils.tables import iter_table

TRIALS = "trials"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Run:
    seed: str
    exp_dir: str
    wall_s: int
    load_before: str
    load_after: str


def read_runs(path: str) -> List[Run]:
    """The lines of runs.tsv (seed, exp_dir, wall seconds, load before, load after)."""
    runs = [Run(f[0], f[1], int(f[2]), f[3], f[4])
            for _, f in iter_table(path, min_fields=5, max_fields=5)]
    if not runs:
        raise ValueError(f"{path}: no runs")
    return runs


def untrained_baseline(data: str) -> Dict[str, float]:
    """The tests' untrained baseline (mean + std of fbank frames, cosine) on the test trials."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from recipe_helpers import fbank_stats_baseline
    eer, min_dcf = fbank_stats_baseline(os.path.join(data, "test", "wav.scp"),
                                        os.path.join(data, "test", "trials", TRIALS))
    return {"eer": eer, "min_dcf": min_dcf}


def spread(values: Sequence[float], digits: int) -> str:
    """``mean ± std (min-max)``; the std is the sample standard deviation."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return (f"{mean:.{digits}f} ± {std:.{digits}f} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle
                     if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {device}, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def commit() -> str:
    try:
        out = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


DIARIZATION_SYSTEMS = ("spectral-norm", "spectral", "nme-sc", "agglomerative")


def _markdown_rows(path: str) -> List[List[str]]:
    """The cells of each table row of a markdown file (header and rule rows included)."""
    with open(path, encoding="utf-8") as handle:
        return [[cell.strip() for cell in line.strip().strip("|").split("|")]
                for line in handle if line.startswith("|")]


def diarization_lines(runs: List[Run]) -> List[str]:
    """The section on stage 12's demo, from each run's ``diarization/der.md`` and
    ``methods.md`` (none when the runs stopped before stage 12)."""
    rows = []
    for run in runs:
        folder = os.path.join(run.exp_dir, "diarization")
        if not os.path.isfile(os.path.join(folder, "der.md")):
            return []
        # der.md rows: recording, collar, overlap, missed, false alarm, confusion, DER, JER
        totals = {row[1]: row for row in _markdown_rows(os.path.join(folder, "der.md"))
                  if row[0].startswith("all") and row[2] == "scored"}
        counts = {row[0]: row[4].split()[-1].strip("()")
                  for row in _markdown_rows(os.path.join(folder, "methods.md"))}
        with_collar, no_collar = totals["0.25"], totals["0"]
        rows.append(f"| {run.seed} | {with_collar[6]} | {no_collar[6]} | {with_collar[5]} | "
                    f"{no_collar[7]} | "
                    + ", ".join(counts.get(name, "n/a") for name in DIARIZATION_SYSTEMS) + " |")
    return ["### Diarization demo (stage 12) of the same runs", "",
            "Read from each run's `diarization/der.md` and `methods.md`: 4 read-once synthetic",
            "conversations of 2-3 test speakers, overlap scored; the window LDA stage 12 learns",
            "first, then `spectral-norm` (the default) estimating the count; the other methods",
            "on the same projected windows.", "",
            "| seed | DER % (collar 0.25 s) | DER % (no collar) | confusion % (collar 0.25 s) | "
            "JER % | right count (" + " / ".join(DIARIZATION_SYSTEMS) + ") |",
            "|--:|--:|--:|--:|--:|:--|", *rows, ""]


def render(runs: List[Run], command: str, data: str) -> str:
    results = {run.seed: collect_results(run.exp_dir, [TRIALS]) for run in runs}
    first = next(iter(results.values()))
    labels = [backend.scoring for backend in first.backends]
    metric = {(seed, b.scoring): b.per_trials[TRIALS] for seed, result in results.items()
              for b in result.backends}
    labels_of_trials = [f[2] for _, f in iter_table(os.path.join(data, "test", "trials", TRIALS),
                                                    min_fields=3)]
    num_trials = len(labels_of_trials)
    num_target = labels_of_trials.count("target")
    baseline = untrained_baseline(data)
    params = f"{first.params_millions:.2f}M" if first.params_millions else "n/a"
    lines = [
        "## Mini recipe (examples/mini/run.sh), full default run over several seeds",
        "",
        "Regenerated by one command on the code named below (a seed sets the training",
        "seed and the back-end chunk positions; each run starts from scratch):",
        "",
        "```bash",
        f"flock -x /tmp/wsp_cpu.lock {command}",
        "```",
        "",
        f"Code: `{commit()}`. Machine: {machine()}.",
        f"Model: {first.model} ({params}), the mini config's defaults. Trials: {num_trials} "
        f"({num_target} target) of the test speakers; one target trial is "
        f"{100 / num_target:.2f}% of miss rate, so EER differences below about one",
        "percentage point between back-ends are within the noise of this list (the",
        "corpus README explains why it cannot have more target trials).",
        "",
        "### Mean ± standard deviation (min-max) over the seeds",
        "",
        f"| Scoring | {TRIALS} EER (%) | {TRIALS} minDCF |",
        "|:--|--:|--:|",
    ]
    for label in labels:
        eers = [metric[(run.seed, label)].eer_percent for run in runs]
        dcfs = [metric[(run.seed, label)].min_dcf for run in runs]
        lines.append(f"| {label} | {spread(eers, 3)} | {spread(dcfs, 3)} |")
    lines.append(f"| untrained baseline: mean + std of fbank frames, cosine | "
                 f"{baseline['eer']:.3f} | {baseline['min_dcf']:.3f} |")
    lines += ["", "(minDCF at p_target 0.01.)", "", "### Each run", "",
              "| seed | " + " | ".join(f"{label} EER / minDCF" for label in labels)
              + " | wall time | load average before / after |",
              "|--:|" + "--:|" * len(labels) + "--:|:--|"]
    for run in runs:
        cells = [f"{metric[(run.seed, label)].eer_percent:.3f} / "
                 f"{metric[(run.seed, label)].min_dcf:.3f}" for label in labels]
        lines.append(f"| {run.seed} | " + " | ".join(cells)
                     + f" | {run.wall_s // 60} min {run.wall_s % 60} s | "
                     f"{run.load_before} / {run.load_after} |")
    lines += [""] + diarization_lines(runs)
    lines += ["The untrained baseline is what tests/test_recipes.py computes",
              "(`recipe_helpers.fbank_stats_baseline`): per-utterance mean and standard",
              "deviation of the 80-dim fbank frames, minus the mean vector of the test",
              "utterances, cosine scored on the same trials.", "",
              "Earlier hand-written records (the CI setting, other corpora, the choice of",
              "ECAPA-TDNN) are in [results_mini_notes.md](results_mini_notes.md).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="runs.tsv of run_mini_seeds.sh")
    parser.add_argument("--data", required=True, help="the prepared data of the runs")
    parser.add_argument("--command", required=True, help="the command to print")
    parser.add_argument("--output", required=True, help="markdown file to (re)write")
    args = parser.parse_args()
    text = render(read_runs(args.runs), args.command, args.data)
    with atomic_open(args.output, "w", encoding="utf-8") as out:
        out.write(text)


if __name__ == "__main__":
    main()
