"""Benchmark of the scoring back-ends at VoxCeleb scale on random embeddings.

    python bench/bench_scoring.py [--device cpu|cuda] [--threads 2]

Stages (each timed separately):
  * cosine scoring and AS-Norm (top-N of a cohort) of the VoxCeleb1-E and -H sized
    trial lists over 145k utterances, in memory (the library calls);
  * the same through the command-line entry points on files (``--files``):
    reading xvector.scp, parsing trials, writing score files;
  * PLDA training (EM) on N embeddings of S speakers, plus LLR scoring of the E list;
  * QMF calibration on files (``--stages qmf``): the recipe's stage 7 sub-commands
    (gather the quality factors of a normalised score file, train, infer) on
    ``--trials-qmf`` random trials.

Results are printed as a markdown table (wall and process CPU seconds, and the
load average, since the machine may be shared); record them in
bench/results_scoring.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import tempfile
import time

import numpy as np
import torch

from wespeaker_py.scoring.cosine import cosine_score_trials
from wespeaker_py.io.ark import EmbeddingTable, write_embeddings
from wespeaker_py.scoring.norm import normalize_trial_scores
from wespeaker_py.scoring.plda import TwoCovPLDA
from wespeaker_py.scoring.trials import TrialList, write_score_file

ROWS = []


def timed(name, function, *args, **kwargs):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    ROWS.append((name, seconds, cpu_seconds))
    print(f"{name}: {seconds:.2f} s wall, {cpu_seconds:.2f} s CPU", flush=True)
    return result


def random_trials(rng, num_utts, num_trials, path="mem"):
    enroll = rng.integers(0, num_utts, size=num_trials).astype(np.int32)
    test = rng.integers(0, num_utts, size=num_trials).astype(np.int32)
    keys = [f"u{i:06d}" for i in range(num_utts)]
    first = np.zeros(num_utts, dtype=np.int64)
    return TrialList(path=path, enroll_keys=keys, test_keys=keys, enroll_first_line=first,
                     test_first_line=first, enroll=enroll, test=test,
                     labels=(rng.random(num_trials) < 0.5).astype(np.int8))


def random_embeddings(args, rng):
    keys = [f"u{i:06d}" for i in range(args.num_utts)]
    matrix = rng.standard_normal((args.num_utts, args.dim), dtype=np.float32)
    cohort = rng.standard_normal((args.cohort, args.dim), dtype=np.float32)
    return keys, matrix, cohort


def bench_cosine_asnorm(args, rng, keys, matrix, cohort):
    table = EmbeddingTable(keys=keys, matrix=matrix, source="random")
    mean_vec = matrix.mean(axis=0)
    for name, size in (("E", args.trials_e), ("H", args.trials_h)):
        trials = random_trials(rng, args.num_utts, size)
        scores = timed(f"cosine, vox1-{name} ({size} trials)", cosine_score_trials, table,
                       trials, mean_vec, args.device)
        enroll_rows, test_rows = trials.enroll.astype(np.int64), trials.test.astype(np.int64)
        timed(f"AS-Norm top-{args.top_n}, cohort {args.cohort}, vox1-{name}",
              normalize_trial_scores, scores, enroll_rows, test_rows, matrix, cohort, "asnorm",
              args.top_n, mean_vec, args.device)


def bench_files(args, rng, keys, matrix, cohort):
    from wespeaker_py.bin import score, score_norm
    work = tempfile.mkdtemp(prefix="bench_scoring_", dir=args.work_dir)
    try:
        emb = os.path.join(work, "embeddings")
        timed(f"write xvector.ark/scp ({len(keys)} embeddings)", write_embeddings,
              f"{emb}/vox1/xvector.ark", keys, matrix)
        write_embeddings(f"{emb}/vox2_dev/spk_xvector.ark",
                         [f"c{i}" for i in range(len(cohort))], cohort)
        for name, size in (("E", args.trials_e), ("H", args.trials_h)):
            trials = random_trials(rng, args.num_utts, size)
            path = os.path.join(work, f"vox1_{name}.kaldi")
            with open(path, "w") as out:
                out.write("".join(f"{keys[e]} {keys[t]} {'target' if lab else 'nontarget'}\n"
                                  for e, t, lab in zip(trials.enroll, trials.test,
                                                       trials.labels)))
            timed(f"bin.score (files), vox1-{name}", score.main,
                  ["--exp_dir", work, "--eval_scp_path", f"{emb}/vox1/xvector.scp",
                   "--cal_mean", "True", "--cal_mean_dir", f"{emb}/vox1",
                   "--device", args.device, path])
            timed(f"bin.score_norm asnorm (files), vox1-{name}", score_norm.main,
                  ["--score_norm_method", "asnorm", "--top_n", str(args.top_n),
                   "--trial_score_file", f"{work}/scores/vox1_{name}.kaldi.score",
                   "--score_norm_file", f"{work}/scores/asnorm_vox1_{name}.kaldi.score",
                   "--cohort_emb_scp", f"{emb}/vox2_dev/spk_xvector.scp",
                   "--eval_emb_scp", f"{emb}/vox1/xvector.scp",
                   "--mean_vec_path", f"{emb}/vox1/mean_vec.npy", "--device", args.device])
    finally:
        shutil.rmtree(work)


def bench_plda(args, rng):
    labels = rng.integers(0, args.plda_speakers, size=args.plda_embeddings)
    centres = rng.standard_normal((args.plda_speakers, args.dim), dtype=np.float32)
    data = centres[labels]
    data += 0.7 * rng.standard_normal(data.shape, dtype=np.float32)
    plda = timed(f"PLDA train, {args.plda_embeddings} x {args.dim}, {args.plda_speakers} spk, "
                 f"{args.plda_iters} EM iters", TwoCovPLDA.train, data, labels,
                 args.plda_iters)
    del data
    test = rng.standard_normal((args.num_utts, args.dim), dtype=np.float32)
    trials = random_trials(rng, args.num_utts, args.trials_e)

    def llr_all():
        projected = plda.project(plda.to_plda_space(test))
        scores = np.empty(len(trials))
        for start in range(0, len(trials), 65536):
            e = trials.enroll[start:start + 65536]
            t = trials.test[start:start + 65536]
            scores[start:start + 65536] = plda.log_likelihood_ratio(
                projected[e], projected[t], np.ones(len(e)))
        return scores
    timed(f"PLDA LLR scoring, vox1-E ({args.trials_e} trials)", llr_all)


def bench_qmf(args, rng):
    from wespeaker_py.scoring import qmf
    work = tempfile.mkdtemp(prefix="bench_qmf_", dir=args.work_dir)
    try:
        keys = [f"u{i:06d}" for i in range(args.num_utts)]
        utt2dur = os.path.join(work, "utt2dur")
        with open(utt2dur, "w") as out:
            out.write("".join(f"{key} {duration:.2f}\n" for key, duration in
                              zip(keys, rng.uniform(2.0, 30.0, args.num_utts))))
        trials = random_trials(rng, args.num_utts, args.trials_qmf, os.path.join(work, "norm"))
        scores = 3.0 * trials.labels + rng.standard_normal(len(trials))
        # magnitudes and cohort means as score normalisation writes them
        extra = np.column_stack([rng.uniform(10.0, 20.0, (len(trials), 2)),
                                 rng.uniform(0.05, 0.3, (len(trials), 2))])
        write_score_file(trials.path, trials, scores, extra)
        factors, model = os.path.join(work, "factors"), os.path.join(work, "qmf.pt")
        timed(f"QMF gather_calibration_factors ({len(trials)} trials)",
              qmf.gather_calibration_factors, trials.path, factors, utt2dur, 20.0)
        timed("QMF train_calibration_model", qmf.train_calibration_file, factors, model)
        timed("QMF infer_calibration", qmf.infer_calibration_file, factors, model,
              os.path.join(work, "calibrated"))
    finally:
        shutil.rmtree(work)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=2, help="torch / BLAS threads")
    parser.add_argument("--num-utts", type=int, default=145_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--cohort", type=int, default=6000)
    parser.add_argument("--top-n", type=int, default=300)
    parser.add_argument("--trials-e", type=int, default=580_000)
    parser.add_argument("--trials-h", type=int, default=550_000)
    parser.add_argument("--plda-embeddings", type=int, default=1_000_000)
    parser.add_argument("--plda-speakers", type=int, default=6000)
    parser.add_argument("--plda-iters", type=int, default=5)
    parser.add_argument("--trials-qmf", type=int, default=1_000_000)
    parser.add_argument("--stages", default="memory,files,plda",
                        help="comma-separated subset of memory,files,plda,qmf")
    parser.add_argument("--work-dir", default=None,
                        help="where the files and qmf stages write (temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stages = set(args.stages.split(","))
    rng = np.random.default_rng(0)
    load_before = f"{os.getloadavg()[0]:.1f}"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, threads {args.threads}, device {args.device}")
    if stages & {"memory", "files"}:
        keys, matrix, cohort = random_embeddings(args, rng)
        if "memory" in stages:
            bench_cosine_asnorm(args, rng, keys, matrix, cohort)
        if "files" in stages:
            bench_files(args, rng, keys, matrix, cohort)
    if "plda" in stages:
        bench_plda(args, rng)
    if "qmf" in stages:
        bench_qmf(args, rng)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"\npeak resident memory: {peak_gib:.1f} GiB\n")
    print(f"load average before / after: {load_before} / {os.getloadavg()[0]:.1f}\n")
    print("| stage | wall s | CPU s (all threads) |\n|---|---|---|")
    for name, seconds, cpu_seconds in ROWS:
        print(f"| {name} | {seconds:.2f} | {cpu_seconds:.2f} |")


if __name__ == "__main__":
    main()
