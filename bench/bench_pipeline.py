"""Input-pipeline benchmark: chunk reads + chunk-level speed perturbation vs full reads.

Measures, on this machine:

1. the resampler choice: soxr vs scipy.signal.resample_poly on the pipeline's
   ratios, fidelity (error vs the exact band-limited signal, alias/image
   rejection) and time per 2-second chunk;
2. 2-second training samples per second with ONE DataLoader worker, speed
   perturbation and noise/reverb augmentation on (aug_prob 0.6), for
   (a) the library pipeline (read only the chunk, perturb the chunk) and
   (b) a baseline defined here: read the whole file, speed-perturb the whole
   utterance, then cut the chunk (what WeSpeaker does), same augmentation;
3. where the time goes (cProfile of each variant in-process).

Audio: ../shared/data/librispeech_tc100 when present, else generated noise
utterances. Noise and RIRs are generated here (MUSAN/RIR-like keys).

    python bench/bench_pipeline.py [--samples 1500] [--rounds 3]
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from fractions import Fraction

import numpy as np
import soundfile as sf
import soxr
import torch
from scipy.signal import firwin, resample_poly
from torch.utils.data import DataLoader

import wespeaker_py.dataset.dataset as dataset_module
from wespeaker_py.dataset import Dataset, collate_train, spk2id_from_utt2spk
from wespeaker_py.dataset import stats as reasons
from wespeaker_py.dataset.lists import read_utterance_table, write_raw_list
from wespeaker_py.dataset.processors import note_repairs
from wespeaker_py.audio import AudioCheckError, resample
from wespeaker_py.dataset.chunk import open_utterance, tile_to_length
from wespeaker_py.dataset.shards import make_shards
from wespeaker_py.dataset.speed import SPEEDS, choose_speed_index, shifted_label

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared", "data", "librispeech_tc100")
RATE = 16000
DATASET_ARGS = {
    "sample_num_per_epoch": 0, "shuffle": True, "shuffle_args": {"shuffle_size": 2500},
    "filter": True, "filter_args": {"min_num_frames": 100, "max_num_frames": 800},
    "resample_rate": RATE, "speed_perturb": True, "num_frms": 200, "aug_prob": 0.6,
    "fbank_args": {"num_mel_bins": 80, "frame_shift": 10, "frame_length": 25, "dither": 1.0},
    "spec_aug": False,
}


# ---------------------------------------------------------------- resampler choice

def _tones(times, freqs, phases):
    return np.sum(np.sin(2 * np.pi * freqs[:, None] * times[None, :] + phases[:, None]),
                  axis=0) / len(freqs)


def resampler_fidelity(in_rate, out_rate, method, seconds=2.0, seed=0):
    """(passband SNR dB, alias/image leak dB, ms per call) of one resampler on one ratio."""
    rng = np.random.default_rng(seed)
    band = 0.45 * min(in_rate, out_rate)
    freqs = rng.uniform(50, band, 40)
    phases = rng.uniform(0, 2 * np.pi, 40)
    t_in = np.arange(int(seconds * in_rate)) / in_rate
    x = _tones(t_in, freqs, phases).astype(np.float32)
    y = method(x, in_rate, out_rate)
    n = min(y.size, int(seconds * out_rate))
    t_out = np.arange(n) / out_rate
    ref = _tones(t_out, freqs, phases)
    edge = int(0.05 * out_rate)  # filter start-up at both ends
    err = y[edge:n - edge] - ref[edge:n - edge]
    snr = 10 * np.log10(np.mean(ref[edge:n - edge] ** 2) / np.mean(err ** 2))
    # a tone that must be removed: above the output Nyquist when downsampling, the image
    # band when upsampling
    if out_rate < in_rate:
        bad_freq = 0.5 * out_rate + 0.3 * (0.5 * in_rate - 0.5 * out_rate)
        probe = np.sin(2 * np.pi * bad_freq * t_in).astype(np.float32)
        leak = method(probe, in_rate, out_rate)[edge:-edge]
        leak_db = 10 * np.log10(np.mean(leak ** 2) / 0.5 + 1e-20)
    else:
        probe = np.sin(2 * np.pi * 0.4 * in_rate * t_in).astype(np.float32)
        out = method(probe, in_rate, out_rate)[edge:-edge]
        spectrum = np.abs(np.fft.rfft(out)) ** 2
        f = np.fft.rfftfreq(out.size, 1 / out_rate)
        leak_db = 10 * np.log10(spectrum[f > 0.5 * in_rate + 100].sum() / spectrum.sum() + 1e-20)
    chunk = x[:int(2.015 * in_rate)]
    reps = 30
    start = time.perf_counter()
    for _ in range(reps):
        method(chunk, in_rate, out_rate)
    ms = (time.perf_counter() - start) / reps * 1e3
    return snr, leak_db, ms


def _soxr(quality):
    return lambda x, a, b: soxr.resample(x, a, b, quality=quality)


def _poly(x, a, b):
    ratio = Fraction(int(b), int(a))
    return resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)


def _poly_long(x, a, b):
    """resample_poly with a 4x longer, steeper Kaiser filter (closer to soxr HQ's rejection)."""
    ratio = Fraction(int(b), int(a))
    up, down = ratio.numerator, ratio.denominator
    widest = max(up, down)
    taps = firwin(2 * 40 * widest + 1, 0.95 / widest, window=("kaiser", 10.0))
    return resample_poly(x, up, down, window=taps).astype(np.float32)


def bench_resamplers():
    ratios = [(14400, 16000, "speed 0.9"), (17600, 16000, "speed 1.1"),
              (8000, 16000, "8k->16k"), (44100, 16000, "44.1k->16k")]
    methods = [("soxr HQ", _soxr("HQ")), ("soxr MQ", _soxr("MQ")),
               ("resample_poly (default: kaiser 5, 10 lobes)", _poly),
               ("resample_poly (kaiser 10, 40 lobes, cutoff 0.95)", _poly_long)]
    print("\n## Resampler: fidelity and time per 2 s chunk\n")
    print("| ratio | method | passband SNR (dB) | alias/image leak (dB) | ms/chunk |")
    print("|---|---|---|---|---|")
    for in_rate, out_rate, label in ratios:
        for name, method in methods:
            snr, leak, ms = resampler_fidelity(in_rate, out_rate, method)
            print(f"| {label} | {name} | {snr:.1f} | {leak:.1f} | {ms:.3f} |")


# ---------------------------------------------------------------- corpus, noise, RIRs

def build_corpus(root):
    """wav.scp/utt2spk over librispeech_tc100 (absolute paths) or generated audio."""
    wav_scp, utt2spk = os.path.join(root, "wav.scp"), os.path.join(root, "utt2spk")
    if os.path.isdir(SHARED):
        source = os.path.abspath(SHARED)
        with open(os.path.join(source, "wav.scp")) as fin, open(wav_scp, "w") as fout:
            for line in fin:
                key, path = line.split()
                fout.write(f"{key} {os.path.join(source, path)}\n")
        with open(os.path.join(source, "utt2spk")) as fin, open(utt2spk, "w") as fout:
            fout.write(fin.read())
        return wav_scp, utt2spk, "librispeech_tc100 (505 FLAC, 2.4-6 s, median 3.4 s)"
    rng = np.random.default_rng(0)
    with open(wav_scp, "w") as scp, open(utt2spk, "w") as u2s:
        for index in range(300):
            path = os.path.join(root, "audio", f"u{index}.flac")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            length = int(rng.uniform(2.4, 6.0) * RATE)
            sf.write(path, rng.integers(-8000, 8000, length, dtype=np.int16), RATE)
            scp.write(f"u{index} {path}\n")
            u2s.write(f"u{index} s{index % 30}\n")
    return wav_scp, utt2spk, "generated (300 FLAC, 2.4-6 s)"


def build_augmentation_lists(root):
    """MUSAN-like noise (noise/music/speech keys, 10-60 s) and 0.5 s RIRs, as wav.scp."""
    rng = np.random.default_rng(1)
    noise_scp, rir_scp = os.path.join(root, "noise.scp"), os.path.join(root, "rir.scp")
    os.makedirs(os.path.join(root, "noise"), exist_ok=True)
    with open(noise_scp, "w") as out:
        for kind, count in (("noise", 10), ("music", 10), ("speech", 10)):
            for index in range(count):
                seconds = rng.uniform(10, 60)
                t = np.arange(int(seconds * RATE)) / RATE
                if kind == "music":
                    signal = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(100, 2000, 4))
                else:
                    signal = rng.standard_normal(t.size)
                path = os.path.join(root, "noise", f"{kind}-{index}.wav")
                sf.write(path, (3000 * signal / np.max(np.abs(signal))).astype(np.int16), RATE)
                out.write(f"{kind}/synthetic/{kind}-{index}.wav {path}\n")
    with open(rir_scp, "w") as out:
        for index in range(20):
            t = np.arange(int(0.5 * RATE)) / RATE
            rir = rng.standard_normal(t.size) * np.exp(-t / rng.uniform(0.05, 0.2))
            rir[: int(rng.uniform(0.001, 0.01) * RATE)] = 0.0
            path = os.path.join(root, "noise", f"rir-{index}.wav")
            sf.write(path, (20000 * rir / np.max(np.abs(rir))).astype(np.int16), RATE)
            out.write(f"simulated_rirs/room/rir-{index}.wav {path}\n")
    return rir_scp, noise_scp


def build_long_corpus(root, wav_scp, utt2spk, min_seconds=7.0):
    """VoxCeleb-length utterances (~8 s): consecutive pieces of one speaker joined into FLACs."""
    wavs = dict(line.split() for line in open(wav_scp))
    by_speaker = {}
    for line in open(utt2spk):
        key, spk = line.split()
        by_speaker.setdefault(spk, []).append(key)
    long_scp, long_u2s = os.path.join(root, "long_wav.scp"), os.path.join(root, "long_utt2spk")
    os.makedirs(os.path.join(root, "long"), exist_ok=True)
    seconds = []
    with open(long_scp, "w") as scp, open(long_u2s, "w") as u2s:
        for spk, keys in sorted(by_speaker.items()):
            pieces = []
            for key in keys + [None]:
                if key is not None:
                    pieces.append(sf.read(wavs[key], dtype="int16")[0])
                total = sum(p.size for p in pieces)
                if pieces and (total >= min_seconds * RATE or key is None):
                    name = f"{spk}-long{len(seconds)}"
                    path = os.path.join(root, "long", f"{name}.flac")
                    sf.write(path, np.concatenate(pieces), RATE)
                    scp.write(f"{name} {path}\n")
                    u2s.write(f"{name} {spk}\n")
                    seconds.append(total / RATE)
                    pieces = []
    label = (f"joined pieces of one speaker ({len(seconds)} FLAC, median "
             f"{statistics.median(seconds):.1f} s, VoxCeleb-like length)")
    return long_scp, long_u2s, label


# ---------------------------------------------------------------- the full-read baseline

def full_read_training_chunks(utts, settings, rng, stats):
    """Baseline stage: decode the whole file, speed-perturb the whole utterance, then chunk."""
    chunk_len = settings.chunk_len
    for utt, label in utts:
        try:
            with open_utterance(utt) as handle:
                frames_at_target = handle.frames * settings.sample_rate // handle.samplerate
                if settings.frames_of(frames_at_target) < settings.min_num_frames:
                    stats.skip(utt.key, reasons.TOO_SHORT)
                    continue
                note_repairs(handle, settings.sample_rate, stats, utt.key)
                wav = handle.read_all()
                rate = handle.samplerate
        except AudioCheckError as err:
            stats.skip(utt.key, err.reason, str(err))
            continue
        max_len = settings.max_source_frames(rate)
        if wav.size > max_len:
            start = int(rng.integers(0, wav.size - max_len + 1))
            wav = wav[start:start + max_len]
        wav = resample(wav, float(rate), float(settings.sample_rate))
        index = choose_speed_index(rng)
        if index:
            wav = resample(wav, float(settings.sample_rate * SPEEDS[index]),
                           float(settings.sample_rate))
        if wav.size >= chunk_len:
            start = int(rng.integers(0, wav.size - chunk_len + 1))
            wav = wav[start:start + chunk_len]
        else:
            wav = tile_to_length(wav, chunk_len)
        yield {"key": utt.key, "wav": wav,
               "label": shifted_label(label, index, settings.num_spks)}


class use_baseline:
    """Swap the chunk stage of the library pipeline for the full-read baseline."""

    def __enter__(self):
        self.saved = dataset_module.training_chunks
        dataset_module.training_chunks = full_read_training_chunks

    def __exit__(self, *exc):
        dataset_module.training_chunks = self.saved


# ---------------------------------------------------------------- throughput and profile

def make_dataset(data_type, lists, spk2id, num_samples):
    args = dict(DATASET_ARGS, sample_num_per_epoch=num_samples)
    return Dataset(data_type, lists[data_type], args, spk2id,
                   reverb_data=lists["rir"], noise_data=lists["noise"])


def samples_per_second(data_type, lists, spk2id, num_samples):
    """Throughput of one DataLoader worker (batches of 32), first batch excluded."""
    loader = DataLoader(make_dataset(data_type, lists, spk2id, num_samples), batch_size=32,
                        num_workers=1, collate_fn=collate_train, prefetch_factor=4)
    iterator = iter(loader)
    first = next(iterator)
    count, start = 0, time.perf_counter()
    for batch in iterator:
        count += batch["wavs"].shape[0]
    elapsed = time.perf_counter() - start
    assert first["wavs"].shape[1] == 32240
    return count / elapsed


PROFILE_GROUPS = [   # (label, file, functions whose cumulative times add up to it)
    ("decode audio (soundfile reads: speech, noise, RIR)", "files.py", ("read_frames",)),
    ("open files (header parse)", "files.py", ("__init__",)),
    ("resample (soxr: speed, noise/RIR rate)", "resample.py", ("resample",)),
    ("augment: noise segment read+resample", "augment.py", ("_noise_segment",)),
    ("augment: RIR read", "load.py", ("read_whole",)),
    ("augment: reverb convolution", "augment.py", ("reverberate",)),
    ("augment total", "augment.py", ("plan", "apply_plan")),   # draw and read, then mix
]


def profile(data_type, lists, spk2id, num_samples):
    """cProfile one pass in-process; cumulative seconds of the main cost centres."""
    dataset = make_dataset(data_type, lists, spk2id, num_samples)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    count = sum(1 for _ in dataset)
    profiler.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    found = {}
    for (filename, _, name), (_, _, _, cumtime, _) in stats.stats.items():
        for label, file_part, functions in PROFILE_GROUPS:
            if os.path.basename(filename) == file_part and name in functions:
                found[label] = found.get(label, 0.0) + cumtime
    return total, count, found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1500, help="samples per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurement rounds")
    parser.add_argument("--skip_resampler", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at start;"
          f" python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"soxr {soxr.__version__}, soundfile {sf.__version__}")
    if not args.skip_resampler:
        bench_resamplers()
    with tempfile.TemporaryDirectory() as root:
        wav_scp, utt2spk, corpus = build_corpus(root)
        rir_scp, noise_scp = build_augmentation_lists(root)
        long_scp, long_u2s, long_corpus = build_long_corpus(root, wav_scp, utt2spk)
        corpora = []
        for name, (scp, u2s, label) in (("short", (wav_scp, utt2spk, corpus)),
                                        ("long", (long_scp, long_u2s, long_corpus))):
            entries = read_utterance_table(scp, u2s)
            lists = {"raw": os.path.join(root, f"{name}_raw.list"),
                     "shard": os.path.join(root, f"{name}_shard.list"),
                     "rir": rir_scp, "noise": noise_scp}
            write_raw_list(entries, lists["raw"])
            make_shards(entries, os.path.join(root, f"{name}_shards"), lists["shard"],
                        num_utts_per_shard=100, num_threads=2)
            corpora.append((label, lists, spk2id_from_utt2spk(u2s)))
        print(f"\n## Training samples per second, one worker (2.015 s chunks, speed perturb, "
              f"aug_prob 0.6)\n\n{args.samples} samples per measurement, {args.rounds} "
              f"alternating rounds, median (min-max)\n")
        print("| corpus | list | chunk read + chunk speed (library) | full read + whole-utt "
              "speed (baseline) | ratio |")
        print("|---|---|---|---|---|")
        for label, lists, spk2id in corpora:
            for data_type in ("raw", "shard"):
                ours, base = [], []
                for _ in range(args.rounds):
                    ours.append(samples_per_second(data_type, lists, spk2id, args.samples))
                    with use_baseline():
                        base.append(samples_per_second(data_type, lists, spk2id, args.samples))
                o, b = statistics.median(ours), statistics.median(base)
                print(f"| {label} | {data_type} | {o:.0f} /s ({min(ours):.0f}-{max(ours):.0f}) "
                      f"| {b:.0f} /s ({min(base):.0f}-{max(base):.0f}) | {o / b:.2f}x |")
        for label, lists, spk2id in corpora:
            print(f"\n## Where the time goes: {label}\n\ncProfile, in-process, raw list; "
                  "cumulative seconds; rows overlap: decode/open/resample include the "
                  "augmentation's own reads\n")
            print("| part | library: s (share) | baseline: s (share) |")
            print("|---|---|---|")
            total_o, count_o, ours = profile("raw", lists, spk2id, args.samples)
            with use_baseline():
                total_b, _, base = profile("raw", lists, spk2id, args.samples)
            for part, _, _ in PROFILE_GROUPS:
                o, b = ours.get(part, 0.0), base.get(part, 0.0)
                print(f"| {part} | {o:.2f} ({o / total_o:.0%}) | {b:.2f} ({b / total_b:.0%}) |")
            print(f"| total ({count_o} samples) | {total_o:.2f} | {total_b:.2f} |")
        print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
