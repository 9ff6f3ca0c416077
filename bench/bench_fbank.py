"""Fbank throughput: our batched fbank vs kaldi-native-fbank on the same audio.

Prints a markdown table of frames per second. Usage:
    python bench/bench_fbank.py [--batch 64] [--seconds 2] [--threads 2] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import time

import kaldi_native_fbank as knf
import numpy as np
import torch

from wespeaker_py.frontend import fbank, num_frames


def best_times(runs: dict, repeats: int) -> dict:
    """Fastest of ``repeats`` timed calls of each run, after one warm-up call each.

    The runs take turns within every repeat, so a burst of load from other
    processes on this shared machine hits all of them alike.
    """
    times = {name: [] for name in runs}
    for name, (threads, run) in runs.items():
        torch.set_num_threads(threads)
        run()
    for _ in range(repeats):
        for name, (threads, run) in runs.items():
            torch.set_num_threads(threads)
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def knf_options(sample_rate: int, num_mel_bins: int) -> knf.FbankOptions:
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = sample_rate
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hamming"
    opts.mel_opts.num_bins = num_mel_bins
    return opts


def knf_compute(waves: np.ndarray, opts: knf.FbankOptions, read_frames: bool) -> None:
    """knf works one utterance at a time; optionally also copy every frame out to Python."""
    for wave in waves:
        extractor = knf.OnlineFbank(opts)
        extractor.accept_waveform(opts.frame_opts.samp_freq, wave)
        extractor.input_finished()
        if read_frames:
            np.stack([extractor.get_frame(i) for i in range(extractor.num_frames_ready)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--num-mel-bins", type=int, default=80)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    samples = int(args.seconds * args.sample_rate)
    waves = (torch.randn(args.batch, samples, generator=generator) * 3000).clamp(-32768, 32767)
    waves_np = waves.numpy()
    frames = args.batch * num_frames(samples, args.sample_rate)
    opts = knf_options(args.sample_rate, args.num_mel_bins)

    ours = lambda: fbank(waves, args.sample_rate, args.num_mel_bins)  # noqa: E731
    runs = {
        f"wespeaker_py fbank (batched, {args.threads} threads)": (args.threads, ours),
        "wespeaker_py fbank (batched, 1 thread)": (1, ours),
        f"wespeaker_py fbank (batched, {args.threads} threads, dither 1.0)":
            (args.threads, lambda: fbank(waves, args.sample_rate, args.num_mel_bins,
                                         dither=1.0, generator=generator)),
        "kaldi-native-fbank, compute only (per utterance)":
            (1, lambda: knf_compute(waves_np, opts, False)),
        "kaldi-native-fbank, compute + get_frame (per utterance)":
            (1, lambda: knf_compute(waves_np, opts, True)),
    }
    load_before = os.getloadavg()[0]
    times = best_times(runs, args.repeats)
    load_after = os.getloadavg()[0]
    reference = times[next(iter(runs))]

    print(f"batch {args.batch} x {args.seconds:g} s at {args.sample_rate} Hz, "
          f"{args.num_mel_bins} mels, {frames} frames, best of {args.repeats}; "
          f"1-min load average {load_before:.2f} before, {load_after:.2f} after\n")
    print(f"| implementation | time (ms) | frames/s | time / ours ({args.threads} threads) |")
    print("|---|---:|---:|---:|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {frames / seconds:,.0f} | "
              f"{seconds / reference:.2f}x |")


if __name__ == "__main__":
    main()
