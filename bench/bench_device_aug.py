"""Worker CPU per training sample: augmentation on the device vs on the CPU (issue 14).

Measures, with the VoxCeleb settings of conf/resnet34.yaml (2.015 s chunks, speed
perturbation, aug_prob 0.6, shuffle) on generated 16 kHz PCM WAV files of 7-9 s:

1. CPU seconds per training sample of what a DataLoader worker does (read list,
   shuffle, chunk reads, noise/RIR reads, the CPU path's arithmetic, collation
   into batches of 128 and the hand-over to the main process: moving the batch
   to shared memory and pickling it), in-process on one thread, for
   ``augment_on: cpu`` and ``augment_on: device`` alternately;
2. that cost split by stage of the generator chain, and the reads' share;
0. the device resampler against soxr HQ (difference SNR, fidelity, time);
3. the device-side cost of :func:`augment_batch` per sample, on this CPU
   (and on CUDA with ``--device cuda``), split into its parts;
4. the same for the mini recipe's settings (no speed perturbation, aug_prob 0.2).

    python bench/bench_device_aug.py [--samples 2560] [--rounds 3] [--device cpu]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from multiprocessing.reduction import ForkingPickler

import numpy as np
import soundfile as sf
import soxr
import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pipeline import build_augmentation_lists, resampler_fidelity  # noqa: E402

from wespeaker_py.dataset import Dataset, collate_train  # noqa: E402
from wespeaker_py.audio import files as audio_module  # noqa: E402
from wespeaker_py.dataset import device_augment  # noqa: E402
from wespeaker_py.dataset.device_resample import speed_resample  # noqa: E402
from wespeaker_py.dataset.lists import write_raw_list, read_utterance_table  # noqa: E402
from wespeaker_py.dataset.partition import current_place, my_items, worker_rng  # noqa: E402
from wespeaker_py.dataset.processors import (augmented, shuffle_buffer,  # noqa: E402
                                             training_chunks, with_labels)
from wespeaker_py.dataset.stats import PipelineStats  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = 16000
BATCH = 128


def voxceleb_args(**overrides):
    with open(os.path.join(REPO, "conf", "resnet34.yaml")) as handle:
        args = yaml.safe_load(handle)["dataset_args"]
    args.update(overrides)
    return args


def mini_args(**overrides):
    with open(os.path.join(REPO, "examples", "mini", "conf", "ecapa_tdnn.yaml")) as handle:
        args = yaml.safe_load(handle)["dataset_args"]
    args.pop("augment_on", None)
    args.update(overrides)
    return args


def build_corpus(root, count=200, speakers=40):
    """``count`` 16 kHz PCM WAVs of 7-9 s (VoxCeleb 2's mean length is about 8 s)."""
    rng = np.random.default_rng(0)
    wav_scp, utt2spk = os.path.join(root, "wav.scp"), os.path.join(root, "utt2spk")
    os.makedirs(os.path.join(root, "audio"), exist_ok=True)
    with open(wav_scp, "w") as scp, open(utt2spk, "w") as u2s:
        for index in range(count):
            path = os.path.join(root, "audio", f"u{index}.wav")
            length = int(rng.uniform(7.0, 9.0) * RATE)
            sf.write(path, rng.integers(-8000, 8000, length, dtype=np.int16), RATE,
                     subtype="PCM_16")
            scp.write(f"u{index} {path}\n")
            u2s.write(f"u{index} s{index % speakers}\n")
    raw = os.path.join(root, "raw.list")
    write_raw_list(read_utterance_table(wav_scp, utt2spk), raw)
    spk2id = {f"s{i}": i for i in range(speakers)}
    return raw, spk2id


def hand_over(batch):
    """What a worker does to send a batch: tensors to shared memory, then pickle."""
    return ForkingPickler.dumps(batch)


def make_dataset(lists, spk2id, args, mode, num_samples):
    args = dict(args, augment_on=mode, sample_num_per_epoch=num_samples)
    return Dataset("raw", lists["raw"], args, spk2id, reverb_data=lists["rir"],
                   noise_data=lists["noise"])


def worker_cpu(lists, spk2id, args, mode, num_samples):
    """CPU seconds per sample of the worker's whole job, batches collated and handed over."""
    dataset = make_dataset(lists, spk2id, args, mode, num_samples)
    batch, count = [], 0
    start = time.process_time()
    for sample in dataset:
        batch.append(sample)
        if len(batch) == BATCH:
            hand_over(collate_train(batch))
            count += len(batch)
            batch = []
    return (time.process_time() - start) / count


class ReadTimer:
    """Adds up the CPU time spent opening (header parse) and decoding audio (every read,
    chunk or whole file, goes through ``read_frames``)."""

    def __init__(self):
        self.open = self.decode = 0.0

    def __enter__(self):
        handle = audio_module.AudioHandle
        self.saved = (handle.__init__, handle.read_frames)
        timer, (init, read) = self, self.saved

        def timed_init(obj, *args, **kwargs):
            start = time.process_time()
            try:
                init(obj, *args, **kwargs)
            finally:
                timer.open += time.process_time() - start

        def timed_read(obj, *args, **kwargs):
            start = time.process_time()
            try:
                return read(obj, *args, **kwargs)
            finally:
                timer.decode += time.process_time() - start

        handle.__init__, handle.read_frames = timed_init, timed_read
        return self

    def __exit__(self, *exc):
        audio_module.AudioHandle.__init__, audio_module.AudioHandle.read_frames = self.saved


def stage_costs(lists, spk2id, args, mode, num_samples):
    """CPU microseconds per sample of each stage, by cutting the chain after it."""
    dataset = make_dataset(lists, spk2id, args, mode, num_samples)
    config = dataset.config

    def chain(depth, stats):
        place = current_place(dataset.rank, dataset.world_size)
        rng = worker_rng(dataset.seed, 0, place)
        indices = my_items(len(dataset.items), place, dataset.seed, 0, True)
        utts = dataset._repeated_utterances(indices, stats)
        utts = shuffle_buffer(utts, config.shuffle_args.shuffle_size, rng)
        items = with_labels(utts, spk2id, stats, True)
        if depth >= 1:
            items = training_chunks(items, dataset.settings, rng, stats)
        if depth >= 2:
            items = augmented(items, dataset.augmenter, config.aug_prob, rng, stats,
                              on_device=mode == "device")
        return items

    def run(depth):
        stats = PipelineStats()
        items = chain(depth, stats)
        batch, count = [], 0
        with ReadTimer() as reads:
            start = time.process_time()
            for item in items:
                if depth >= 3:
                    item["wav"] = torch.from_numpy(np.ascontiguousarray(item["wav"],
                                                                        dtype=np.float32))
                    batch.append(item)
                    if len(batch) == BATCH:
                        collated = collate_train(batch)
                        if depth >= 4:
                            hand_over(collated)
                        batch = []
                count += 1
                stats.yielded += 1
                if count == num_samples:
                    break
            total = time.process_time() - start
        return total / count * 1e6, reads.open / count * 1e6, reads.decode / count * 1e6

    return [run(depth) for depth in range(5)]


STAGES = ["list, shuffle buffer, speaker ids", "chunk read (+ soxr speed on cpu)",
          "noise/RIR draw + read (+ arithmetic on cpu)", "to tensors + collate (batch 128)",
          "hand-over (shared memory + pickle)"]


def device_cost(lists, spk2id, args, device, num_batches=4):
    """Milliseconds per sample of augment_batch and of its parts, on ``device``."""
    dataset = make_dataset(lists, spk2id, args, "device", num_batches * BATCH)
    samples = list(dataset)
    batches = [collate_train(samples[i:i + BATCH]) for i in range(0, len(samples), BATCH)]
    variants = {
        "speed only": lambda b: {**b, "aug": torch.zeros_like(b["aug"]),
                                 "rir_owner": b["rir_owner"][:0],
                                 "noise_owner": b["noise_owner"][:0]},
        "noise/reverb only": lambda b: {**b, "speeds": torch.zeros_like(b["speeds"])},
        "all (speed + noise/reverb)": lambda b: b,
    }

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    results = {}
    for name, variant in variants.items():
        prepared = [variant(b) for b in batches]
        device_augment.augment_batch(prepared[0], device)  # warm-up (filters, FFT plans)
        sync()
        start = time.perf_counter()
        for batch in prepared:
            device_augment.augment_batch(batch, device)
        sync()
        results[name] = (time.perf_counter() - start) / (len(prepared) * BATCH) * 1e3
    kinds = torch.cat([b["aug"] for b in batches])
    speeds = torch.cat([b["speeds"] for b in batches])
    share = (f"{float((speeds != 0).float().mean()):.0%} resampled, "
             f"{float((kinds == 1).float().mean()):.0%} reverb, "
             f"{float((kinds == 2).float().mean()):.0%} noise")
    return results, share


def _torch_speed(x, in_rate, out_rate):
    speed = Fraction(int(in_rate), int(out_rate))
    out_len = int(x.size / speed)
    return speed_resample(torch.from_numpy(x)[None], speed, out_len)[0].numpy()


def _soxr_hq(x, in_rate, out_rate):
    return soxr.resample(x, in_rate, out_rate, quality="HQ")


def _speech_band(num_samples, rng):
    t = np.arange(num_samples) / RATE
    freqs, phases = rng.uniform(80, 4000, 30), rng.uniform(0, 2 * np.pi, 30)
    return (300 * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None]).sum(0)).astype(
        np.float32)


def bench_resampler(chunk_len=32240, trials=5):
    """The device resampler against soxr HQ (the CPU path) and against the exact signal."""
    print("\n## Device resampler (torch polyphase) vs soxr HQ (the CPU path)\n")
    print("SNR of the difference between the two on the same span (as the pipeline reads "
          f"it: ceil({chunk_len} x speed) + 1 samples -> {chunk_len}), median of {trials} "
          "signals; whole chunk and without 400 samples at each edge. Then, as in "
          "bench_pipeline.py, each against the exact band-limited signal (passband SNR), "
          "alias/image leak and ms per 2 s chunk (one thread).\n")
    print("| speed | signal | SNR vs soxr, whole chunk (dB) | away from the edges (dB) |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    for speed in (Fraction(9, 10), Fraction(11, 10)):
        span = math.ceil(chunk_len * speed) + 1
        for name, make in (("white noise (full band)",
                            lambda: rng.standard_normal(span).astype(np.float32) * 3000),
                           ("30 tones below 4 kHz", lambda: _speech_band(span, rng))):
            whole, inner = [], []
            for _ in range(trials):
                x = make()
                ref = soxr.resample(x, RATE * float(speed), RATE, quality="HQ")[:chunk_len]
                out = speed_resample(torch.from_numpy(x)[None], speed, chunk_len)[0].numpy()
                for values, cut in ((whole, slice(None)), (inner, slice(400, -400))):
                    r, o = ref[cut].astype(np.float64), out[cut].astype(np.float64)
                    values.append(10 * np.log10(np.sum(r ** 2) / np.sum((r - o) ** 2)))
            print(f"| {float(speed)} | {name} | {statistics.median(whole):.1f} | "
                  f"{statistics.median(inner):.1f} |")
    print("\n| speed | method | passband SNR (dB) | alias/image leak (dB) | ms/chunk |")
    print("|---|---|---|---|---|")
    for in_rate, label in ((14400, "0.9"), (17600, "1.1")):
        for name, method in (("soxr HQ (cpu path)", _soxr_hq),
                             ("torch polyphase (device path)", _torch_speed)):
            snr, leak, ms = resampler_fidelity(in_rate, RATE, method)
            print(f"| {label} | {name} | {snr:.1f} | {leak:.1f} | {ms:.3f} |")


def alternate(lists, spk2id, args, samples, rounds):
    rates = {"cpu": [], "device": []}
    for _ in range(rounds):
        for mode in ("cpu", "device"):
            rates[mode].append(1.0 / worker_cpu(lists, spk2id, args, mode, samples))
    return rates


def print_rates(title, rates):
    print(f"\n## {title}\n")
    print("| augment_on | samples per CPU-second (median) | min-max | ms of CPU per sample |")
    print("|---|---|---|---|")
    for mode, values in rates.items():
        median = statistics.median(values)
        print(f"| {mode} | {median:.0f} | {min(values):.0f}-{max(values):.0f} | "
              f"{1e3 / median:.3f} |")
    ratio = statistics.median(rates["device"]) / statistics.median(rates["cpu"])
    print(f"\ndevice / cpu: **{ratio:.2f}x**")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2560, help="samples per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--device", default="cpu", help="device for augment_batch")
    parser.add_argument("--resampler_only", action="store_true",
                        help="only compare the device resampler with soxr")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} at "
          f"start; python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"soundfile {sf.__version__}; one thread")
    bench_resampler()
    if args.resampler_only:
        return
    with tempfile.TemporaryDirectory() as root:
        raw, spk2id = build_corpus(root)
        rir, noise = build_augmentation_lists(root)
        lists = {"raw": raw, "rir": rir, "noise": noise}
        vox = voxceleb_args()
        print_rates("Worker CPU per training sample, VoxCeleb settings (conf/resnet34.yaml)",
                    alternate(lists, spk2id, vox, args.samples, args.rounds))
        print("\n## Where the worker's time goes, by stage (VoxCeleb settings)\n")
        print("CPU µs per sample. The chain is cut after each stage and timed; a stage's "
              "cost is the difference to the cut before it, split into opening files "
              "(soundfile header parse), decoding (soundfile reads) and the rest (our "
              "Python, numpy, soxr, torch, pickling).\n")
        print("| stage | cpu: total | open | decode | rest | device: total | open | decode "
              "| rest |")
        print("|---|---|---|---|---|---|---|---|---|")
        costs = {mode: stage_costs(lists, spk2id, vox, mode, args.samples)
                 for mode in ("cpu", "device")}
        for index, name in enumerate(STAGES + ["whole chain"]):
            cells = []
            for mode in ("cpu", "device"):
                if index == len(STAGES):
                    parts = costs[mode][-1]
                else:
                    previous = costs[mode][index - 1] if index else (0.0, 0.0, 0.0)
                    parts = [a - b for a, b in zip(costs[mode][index], previous)]
                total, opened, decoded = parts
                cells += [f"{total:.0f}", f"{opened:.0f}", f"{decoded:.0f}",
                          f"{total - opened - decoded:.0f}"]
            print(f"| {name} | " + " | ".join(cells) + " |")
        print(f"\n## Device-side cost of augment_batch on {device} (VoxCeleb settings, "
              f"batches of {BATCH})\n")
        results, share = device_cost(lists, spk2id, vox, device)
        print(f"Rows: {share}.\n\n| part | ms per sample |\n|---|---|")
        for name, value in results.items():
            print(f"| {name} | {value:.3f} |")
        mini = mini_args()
        print_rates("Mini recipe settings (examples/mini/conf/ecapa_tdnn.yaml: no speed "
                    "perturbation, aug_prob 0.2)",
                    alternate(lists, spk2id, mini, args.samples, args.rounds))
        results, share = device_cost(lists, spk2id, mini, device)
        print(f"\nDevice-side cost on {device}, mini settings (rows: {share}):\n")
        print("| part | ms per sample |\n|---|---|")
        for name, value in results.items():
            print(f"| {name} | {value:.3f} |")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
