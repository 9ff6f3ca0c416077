"""Whisper-PMFA's input features on the CPU: one batched call against a loop over the batch.

Milliseconds per batch of training chunks (5 s, 80000 samples: WeSpeaker's num_frms 500)
for WhisperLogMel on the whole batch (what the front-end does), Whisper's own arithmetic
(``whisper.log_mel_spectrogram``: STFT, ``abs() ** 2``, mel, log) called once per
utterance as WeSpeaker's training step does, and transformers' WhisperFeatureExtractor
(numpy, per utterance, when transformers is installed); prints a markdown table and the
largest difference from the batched result:

    python bench/bench_whisper.py [--batch 70] [--seconds 5] [--threads 2] [--repeats 5]
"""
from __future__ import annotations

import argparse

import torch

from bench_ssl import best_time
from wespeaker_py.frontend.whisper_features import (DYNAMIC_RANGE, HOP_LENGTH, INT16_SCALE,
                                                    LOG_FLOOR, N_FFT, WhisperLogMel)

SAMPLE_RATE = 16000


def whisper_log_mel(features: WhisperLogMel, wav: torch.Tensor) -> torch.Tensor:
    """One utterance ``[samples]`` as ``whisper.log_mel_spectrogram`` computes it (its
    order of operations; the same window and filterbank) -> ``[frames, n_mels]``."""
    spectrum = torch.stft(wav / INT16_SCALE, N_FFT, HOP_LENGTH, window=features.window,
                          return_complex=True)
    mel = features.filters @ spectrum[..., :-1].abs() ** 2
    log_mel = torch.clamp(mel, min=LOG_FLOOR).log10()
    log_mel = torch.maximum(log_mel, log_mel.max() - DYNAMIC_RANGE)
    return ((log_mel + 4.0) / 4.0).T


def feature_rows(batch: int, seconds: float, repeats: int):
    """(method, ms per batch, max abs difference from the batched features)."""
    generator = torch.Generator().manual_seed(0)
    wavs = (3000.0 * torch.randn(batch, int(seconds * SAMPLE_RATE), generator=generator)
            ).clamp(-32768, 32767)
    features = WhisperLogMel()
    batched = features(wavs)

    def loop():
        return torch.stack([whisper_log_mel(features, row) for row in wavs])

    rows = [("WhisperLogMel, the batch at once (ours)",
             best_time(lambda: features(wavs), repeats, lambda: None), 0.0),
            ("Whisper's log_mel_spectrogram, one utterance at a time (WeSpeaker's loop)",
             best_time(loop, repeats, lambda: None),
             (loop() - batched).abs().max().item())]
    try:
        from transformers import WhisperFeatureExtractor
    except ImportError:
        return rows
    extractor = WhisperFeatureExtractor(feature_size=80)
    audio = [row.numpy() / INT16_SCALE for row in wavs]

    def processor():
        return extractor(audio, sampling_rate=SAMPLE_RATE, padding="longest",
                         return_tensors="pt").input_features

    reference = processor().transpose(1, 2)[:, :batched.shape[1]]
    rows.append(("transformers' WhisperFeatureExtractor (numpy)",
                 best_time(processor, repeats, lambda: None),
                 (reference - batched).abs().max().item()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=70, help="chunks per batch (stage 0's)")
    parser.add_argument("--seconds", type=float, default=5.0, help="chunk length")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls; the best is kept")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = feature_rows(args.batch, args.seconds, args.repeats)
    print(f"batch of {args.batch} x {args.seconds:g} s, {args.threads} threads, best of "
          f"{args.repeats}\n")
    print("| features | ms per batch | max abs difference from ours |\n|---|---|---|")
    for name, seconds, difference in rows:
        print(f"| {name} | {seconds * 1e3:.0f} | {difference:.1e} |")


if __name__ == "__main__":
    main()
