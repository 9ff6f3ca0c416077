"""W2V-BERT 2.0 input features: the Hugging Face processor against ours, on the CPU.

Milliseconds per batch of training chunks (3 s, 48240 samples: WeSpeaker's
num_frms 300) for transformers' SeamlessM4TFeatureExtractor (what WeSpeaker calls in
its training step) and for W2VBertFeatures in float64 (the default) and float32:

    python bench/bench_w2vbert.py [--batch 64] [--seconds 3.015] [--threads 2] [--repeats 5]

Prints a markdown table and the largest difference from the processor's output.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

from wespeaker_py.frontend.w2vbert_features import W2VBertFeatures

SAMPLE_RATE = 16000


def best_time(run: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls after one warm-up call, in seconds."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    from transformers import SeamlessM4TFeatureExtractor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.015)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    wavs = 3000.0 * torch.randn(args.batch, int(args.seconds * SAMPLE_RATE),
                                generator=generator)
    processor = SeamlessM4TFeatureExtractor(padding_value=1.0)

    def reference():
        return processor(list((wavs / 32768).numpy()), return_tensors="pt",
                         sampling_rate=SAMPLE_RATE, padding="longest")["input_features"]

    ours64 = W2VBertFeatures(compute_dtype=torch.float64)
    ours32 = W2VBertFeatures(compute_dtype=torch.float32)
    expected = reference()
    rows = []
    for label, run in (("Hugging Face processor (numpy, per utterance)", reference),
                       ("W2VBertFeatures, float64 (default)", lambda: ours64(wavs)),
                       ("W2VBertFeatures, float32", lambda: ours32(wavs))):
        with torch.inference_mode():
            difference = (run() - expected).abs().max().item()
            rows.append((label, 1000.0 * best_time(run, args.repeats), difference))
    print(f"batch {args.batch} x {args.seconds:g} s, {args.threads} threads, "
          f"best of {args.repeats}\n")
    print("| features | ms per batch | max abs difference from the processor |")
    print("|---|---|---|")
    for label, ms, difference in rows:
        print(f"| {label} | {ms:.0f} | {difference:.1e} |")


if __name__ == "__main__":
    main()
