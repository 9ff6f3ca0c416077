#!/usr/bin/env python3
"""Write bench/results_cnceleb_smoke.md from a run of bench/run_cnceleb_smoke.sh.

    python bench/summarise_cnceleb_smoke.py --work_dir bench/out/cnceleb_smoke \\
        --exp_dir bench/out/cnceleb_smoke/exp/ecapa_tdnn \\
        --command "bash bench/run_cnceleb_smoke.sh" --output bench/results_cnceleb_smoke.md \\
        -- RUN.SH OPTIONS

Reads the work folder's passes.tsv (pass, wall seconds, load average before and
after), run<N>.log (lines stamped with seconds), corpus.txt, commit.txt, the recipe's
data lists and the EER/minDCF files ``exp/scores/eval_*_result`` the recipe wrote.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import yaml
from summarise_mini_seeds import machine

from wespeaker_py.utils.atomic_files import atomic_open

TRIALS = ("CNC-Eval-Concat.lst", "CNC-Eval-Avg.lst")
# the line examples/cnceleb/v2/run.sh prints as each stage begins
STAGE_HEADERS = {"Prepare datasets ...": 1, "Convert train and test data to": 2,
                 "Start training ...": 3, "Do model average ...": 4, "Score ...": 5,
                 "Score norm ...": 6, "Score calibration ...": 7,
                 "Export the best model ...": 8}
STAGE_NAMES = {1: "prepare data (unpack, combine, lists)", 2: "raw lists", 3: "train",
               4: "average, extract, enrollment means", 5: "cosine scoring",
               6: "AS-Norm", 7: "QMF calibration", 8: "export"}


@dataclass
class Pass:
    """A line of passes.tsv: one run of the recipe."""

    number: str
    wall_s: int
    load_before: str
    load_after: str


@dataclass
class Metrics:
    """EER (%) and minDCF of one score file."""

    eer: float
    min_dcf: float


def read_passes(work_dir: str) -> List[Pass]:
    """The lines of passes.tsv."""
    with open(os.path.join(work_dir, "passes.tsv")) as handle:
        fields = [line.rstrip("\n").split("\t") for line in handle if line.strip()]
    return [Pass(f[0], int(f[1]), f[2], f[3]) for f in fields]


def stage_times(log: str, wall_s: float) -> Dict[int, float]:
    """Seconds from each stage's header line in a stamped log to the next (or the end)."""
    starts: List[Tuple[float, int]] = []
    with open(log, errors="replace") as handle:
        for line in handle:
            stamp, _, text = line.rstrip("\n").partition("\t")
            stage = next((n for head, n in STAGE_HEADERS.items() if text.startswith(head)),
                         None)
            if stage is not None:
                starts.append((float(stamp), stage))
    ends = [start for start, _ in starts[1:]] + [float(wall_s)]
    return {stage: end - start for (start, stage), end in zip(starts, ends)}


def parse_result(path: str) -> Dict[str, Metrics]:
    """Trial list -> metrics of one ``*_result`` file (compute_metrics' printout, a block
    per score file, named ``[<prefix>_]<trial list>.score``)."""
    results, name, eer, dcf = {}, None, None, None
    with open(path) as handle:
        for line in handle:
            if match := re.match(r"---- (.+)\.score -----", line):
                name = next((t for t in TRIALS if match.group(1).endswith(t)), None)
            elif line.startswith("EER = "):
                eer = float(line.split("=")[1])
            elif line.startswith("minDCF"):
                dcf = float(line.rsplit("=", 1)[1])
            elif line.startswith("trials = ") and name is not None:
                results[name] = Metrics(eer, dcf)
    return results


def scoring_label(path: str) -> str:
    """``eval_cos_result`` -> cosine, ``eval_asnorm10_result`` -> AS-Norm (top 10), ..."""
    tag = os.path.basename(path)[len("eval_"):-len("_result")]
    label = re.sub(r"asnorm(\d+)", r"AS-Norm (top \1)", tag.replace("cali_", ""))
    label = label.replace("cos", "cosine").replace("snorm", "S-Norm")
    return label + (" + QMF" if tag.startswith("cali_") else "")


def result_rows(exp_dir: str) -> List[Tuple[str, Dict[str, Metrics]]]:
    """(label, trial list -> metrics) of every result file: cosine, AS-Norm, QMF."""
    def rank(path: str) -> Tuple[int, str]:
        name = os.path.basename(path)
        return ("cali_" in name) + ("norm" in name), name

    paths = sorted(glob.glob(os.path.join(exp_dir, "scores", "eval_*_result")), key=rank)
    return [(scoring_label(path), parse_result(path)) for path in paths]


def read_text(path: str) -> str:
    """A small text file's content, stripped."""
    with open(path) as handle:
        return handle.read().strip()


def count_lines(path: str, min_fields: int = 1) -> int:
    """Lines of ``path`` with at least ``min_fields`` fields (0 when it is missing)."""
    if not os.path.isfile(path):
        return 0
    with open(path) as handle:
        return sum(len(line.split()) >= min_fields for line in handle)


def corpus_lines(work_dir: str) -> List[str]:
    """The corpus counts as markdown bullet lines."""
    data = os.path.join(work_dir, "data")
    train = os.path.join(data, "cnceleb_train")
    before = count_lines(os.path.join(data, "statistics", "cnceleb_train_flac.scp"))
    made = read_text(os.path.join(work_dir, "corpus.txt"))
    lines = [f"- archives (bench/make_fake_cnceleb.py): {made}",
             f"- cnceleb_train: {before} utterances before combination,"
             f" {count_lines(os.path.join(train, 'wav.scp'))} after"
             f" ({count_lines(os.path.join(train, 'utt2utts'), 3)} of them joined from several),"
             f" {count_lines(os.path.join(train, 'spk2utt'))} speakers",
             f"- eval: {count_lines(os.path.join(data, 'eval', 'wav.scp'))} utterances (enrollment"
             f" files, test files, enrollment utterances),"
             f" {count_lines(os.path.join(data, 'eval', 'enroll.map'))} enrollment ids"]
    for name in TRIALS:
        path = os.path.join(data, "eval", "trials", name)
        with open(path) as handle:
            labels = [line.split()[2] for line in handle if line.strip()]
        lines.append(f"- {name}: {len(labels)} trials ({labels.count('target')} target)")
    return lines


def metrics_table(exp_dir: str) -> List[str]:
    """EER/minDCF of each scoring for both trial lists."""
    lines = ["| Scoring | " + " | ".join(f"{name} EER (%) | {name} minDCF" for name in TRIALS)
             + " |", "|:--|" + "--:|--:|" * len(TRIALS)]
    for label, results in result_rows(exp_dir):
        cells: List[str] = []
        for name in TRIALS:
            metrics: Optional[Metrics] = results.get(name)
            cells += (["-", "-"] if metrics is None
                      else [f"{metrics.eer:.3f}", f"{metrics.min_dcf:.3f}"])
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def timing_table(work_dir: str, passes: List[Pass]) -> List[str]:
    """Seconds per stage in each pass, the total and the load averages."""
    times = {p.number: stage_times(os.path.join(work_dir, f"run{p.number}.log"), p.wall_s)
             for p in passes}
    lines = ["| stage | " + " | ".join(f"pass {p.number} (s)" for p in passes) + " |",
             "|:--|" + "--:|" * len(passes)]
    for stage, name in STAGE_NAMES.items():
        cells = [f"{times[p.number].get(stage, float('nan')):.1f}" for p in passes]
        lines.append(f"| {stage} {name} | " + " | ".join(cells) + " |")
    lines.append("| whole run | " + " | ".join(str(p.wall_s) for p in passes) + " |")
    lines.append("| load average before | " + " | ".join(p.load_before for p in passes) + " |")
    lines.append("| load average after | " + " | ".join(p.load_after for p in passes) + " |")
    return lines


def rerun_log(work_dir: str, number: str) -> List[str]:
    """Pass ``number``'s log without progress bars, metric printouts and plot notes,
    the work folder written ``<work>``."""
    skip = re.compile(r"it/s\]$|emb/s\]$|^(EER|trials) = |^minDCF |^---- |^DET curve saved")
    lines = []
    with open(os.path.join(work_dir, f"run{number}.log"), errors="replace") as handle:
        for line in handle:
            stamp, _, text = line.rstrip("\n").partition("\t")
            if not skip.search(text):
                lines.append(f"{stamp:>5}  {text.replace(work_dir, '<work>')}")
    return lines


def model_line(exp_dir: str) -> str:
    """The model and training length, as the experiment's config.yaml has them."""
    with open(os.path.join(exp_dir, "config.yaml")) as handle:
        config = yaml.safe_load(handle)
    dataset = config.get("dataset_args", {})
    return (f"Model: {config['model']}, {config['num_epochs']} epochs of "
            f"{dataset.get('sample_num_per_epoch', 'all')} training chunks, "
            f"aug_prob {dataset.get('aug_prob')}.")


def render(args: argparse.Namespace) -> str:
    """The whole markdown file."""
    passes = read_passes(args.work_dir)
    recipe_command = shlex.join(["bash", "run.sh", *args.recipe_args]).replace(
        args.work_dir, "<work>")
    return "\n".join([
        "## CN-Celeb v2 recipe: smoke run on LibriSpeech speech",
        "",
        "**This is no CN-Celeb result.** The corpus is CN-Celeb-shaped (the layout and",
        "lists of the CN-Celeb1/2 releases, short utterances of several \"genres\" per",
        "speaker) but made of LibriSpeech read speech (librispeech_tc100: one recording per",
        "speaker, genres are labels), with synthetic MUSAN noise and synthetic decaying",
        "RIRs. The run checks that every stage of `examples/cnceleb/v2/run.sh` (1-8) works",
        "on real audio with real training, extraction and scoring, and that a second",
        "identical run skips the finished work. Target trials pair pieces of one recording,",
        "so the EERs are optimistic, and with this few target trials coarse.",
        "",
        "```bash",
        f"flock -x /tmp/wsp_cpu.lock {args.command}",
        "# which makes the corpus, then runs twice, from examples/cnceleb/v2:",
        f"{recipe_command}",
        "```",
        "",
        f"Code: `{read_text(os.path.join(args.work_dir, 'commit.txt'))}`. Machine: {machine()}.",
        model_line(args.exp_dir),
        "",
        "### Corpus",
        "",
        *corpus_lines(args.work_dir),
        "",
        "### EER / minDCF (p_target 0.01), from `exp/.../scores/eval_*_result`",
        "",
        *metrics_table(args.exp_dir),
        "",
        "### Wall time per stage",
        "",
        "Pass 2 is the same command again on the finished work folder.",
        "",
        *timing_table(args.work_dir, passes),
        "",
        f"### What pass {passes[-1].number} did",
        "",
        "Its log (seconds since it began), less the EER/minDCF printouts and the notes on",
        "the DET and histogram plots that stages 5-7 make again on every run:",
        "",
        "```",
        *rerun_log(args.work_dir, passes[-1].number),
        "```",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--exp_dir", required=True)
    parser.add_argument("--command", required=True, help="the smoke script's command")
    parser.add_argument("--output", required=True, help="markdown file to (re)write")
    parser.add_argument("recipe_args", nargs="*", help="the options of run.sh (after --)")
    args = parser.parse_args()
    text = render(args)
    with atomic_open(args.output, "w", encoding="utf-8") as out:
        out.write(text)


if __name__ == "__main__":
    main()
