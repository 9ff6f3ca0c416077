"""Training throughput: samples per second of the training step, next to the input pipeline's.

The step is the trainer's own (``wespeaker_py.train.loop.train_epoch``):
waveforms copied to the device, fbank + CMN there, the speaker model, the
ArcMargin head over 5994 x 3 classes (VoxCeleb2 dev with speed perturbation),
cross-entropy, backward and an SGD step, with the lr and margin schedules. The
batches are random 200-frame waveforms (32240 samples), so only the step is
timed; the input pipeline is measured separately (one DataLoader worker with
speed perturbation and noise/reverb augmentation, ``bench_pipeline.py``'s
corpus and lists), which tells how many workers it takes to keep the device busy.

    python bench/bench_train.py 2>/dev/null                # CPU: small batch, fp32
    python bench/bench_train.py --device cuda 2>/dev/null  # batch 128: fp32/bf16,
                                                           # channels_last, compile
    python bench/bench_train.py --sync_compare --models ecapa_tdnn_c512 2>/dev/null

``--sync_compare`` times the step three ways, alternating in rounds: as the
trainer runs it (no device-to-host read between log points), with the loss and
the step's finite flag read back after every step (what the loop did before),
and without the device-side rollback of non-finite steps (to show its cost).
"""
from __future__ import annotations

import argparse
import atexit
import dataclasses
import functools
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))

from wespeaker_py.config import load_config  # noqa: E402
from wespeaker_py.train.distributed import DistContext  # noqa: E402
from wespeaker_py.train.loop import train_epoch  # noqa: E402
from wespeaker_py.train.plan import resolve  # noqa: E402
from wespeaker_py.train.trainer import Trainer  # noqa: E402

VOX2_DEV_SPEAKERS = 5994
CHUNK_SAMPLES = 32240  # 200 frames of 25 ms every 10 ms at 16 kHz
MODELS = {"resnet34": "ResNet34", "ecapa_tdnn_c512": "ECAPA_TDNN_GLOB_c512"}


@functools.lru_cache(maxsize=1)
def vox2_dev_labels() -> str:
    """An utt2spk of VoxCeleb2 dev's speaker count (one utterance each), in a temp folder
    removed when the process exits."""
    folder = tempfile.mkdtemp(prefix="bench_train_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = os.path.join(folder, "utt2spk")
    with open(path, "w") as handle:
        handle.writelines(f"utt{index} spk{index}\n" for index in range(VOX2_DEV_SPEAKERS))
    return path


def make_trainer(conf_name: str, device: torch.device, batch_size: int, iterations: int,
                 bf16: bool, channels_last: bool, compile_model: bool) -> Trainer:
    overrides = [("enable_amp", str(bf16)), ("amp_dtype", "bfloat16"),
                 ("channels_last", str(channels_last)), ("compile", str(compile_model)),
                 ("dataloader_args.batch_size", str(batch_size)),
                 ("log_batch_interval", str(10 ** 9)), ("exp_dir", tempfile.gettempdir()),
                 ("data_type", "raw"), ("train_data", "unused"),
                 ("train_label", vox2_dev_labels())]
    config = load_config(os.path.join(REPO, "conf", conf_name + ".yaml"), overrides)
    world = DistContext(rank=0, local_rank=0, world_size=1, device=device)
    return Trainer(dataclasses.replace(resolve(config, world), epoch_iter=max(iterations, 1)))


def synthetic_batches(batch_size: int, count: int, pin: bool) -> List[Dict[str, torch.Tensor]]:
    wavs = torch.randn(batch_size, CHUNK_SAMPLES) * 3000.0
    labels = torch.randint(0, VOX2_DEV_SPEAKERS * 3, (batch_size,))
    if pin:
        wavs, labels = wavs.pin_memory(), labels.pin_memory()
    keys = [f"utt{index}" for index in range(batch_size)]
    return [{"wavs": wavs, "labels": labels, "keys": keys}] * count


class _NoRollback:
    def snapshot(self) -> None:
        pass

    def keep_if(self, good: torch.Tensor) -> None:
        pass


def _with_step_variant(trainer: Trainer, variant: str) -> Trainer:
    """``sync-free`` (as trained), ``per-step sync`` or ``no rollback``."""
    if variant == "no rollback":
        trainer.step.rollback = _NoRollback()
    elif variant == "per-step sync":
        runner = trainer.step

        class Synced:
            def __getattr__(self, name):
                return getattr(runner, name)

            def __call__(self, batch):
                outcome = runner(batch)
                outcome.loss_sum.item()
                outcome.good.item()
                return outcome

        trainer.step = Synced()
    return trainer


def step_rate(conf_name: str, device: torch.device, batch_size: int, warmup: int,
              iterations: int, bf16: bool = False, channels_last: bool = False,
              compile_model: bool = False, variant: str = "sync-free") -> float:
    """Training samples per second of the trainer's step (warm-up batches excluded)."""
    trainer = _with_step_variant(make_trainer(conf_name, device, batch_size, iterations, bf16,
                                              channels_last, compile_model), variant)
    pin = device.type == "cuda"
    trainer.plan = dataclasses.replace(trainer.plan, epoch_iter=warmup)
    train_epoch(trainer, 10, synthetic_batches(batch_size, warmup, pin))
    trainer.plan = dataclasses.replace(trainer.plan, epoch_iter=iterations)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    train_epoch(trainer, 20, synthetic_batches(batch_size, iterations, pin))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch_size * iterations / (time.perf_counter() - start)


def pipeline_rate(num_samples: int) -> float:
    """Samples per second of one DataLoader worker (speed perturb, aug_prob 0.6, raw list)."""
    from bench_pipeline import build_augmentation_lists, build_corpus, samples_per_second

    from wespeaker_py.dataset import spk2id_from_utt2spk
    from wespeaker_py.dataset.lists import read_utterance_table, write_raw_list
    with tempfile.TemporaryDirectory() as root:
        wav_scp, utt2spk, _ = build_corpus(root)
        rir_scp, noise_scp = build_augmentation_lists(root)
        lists = {"raw": os.path.join(root, "raw.list"), "rir": rir_scp, "noise": noise_scp}
        write_raw_list(read_utterance_table(wav_scp, utt2spk), lists["raw"])
        return samples_per_second("raw", lists, spk2id_from_utt2spk(utt2spk), num_samples)


def variants(device: torch.device, conf_name: str):
    """(label, bf16, channels_last, compile) combinations worth timing on ``device``."""
    if device.type == "cpu":
        return [("fp32", False, False, False)]
    rows = [("fp32", False, False, False), ("bf16", True, False, False)]
    if conf_name.startswith("resnet"):  # 2-D convolutions: memory format matters
        rows += [("bf16 + channels_last", True, True, False)]
    rows += [("fp32 + compile", False, False, True), ("bf16 + compile", True, False, True)]
    if conf_name.startswith("resnet"):
        rows += [("bf16 + channels_last + compile", True, True, True)]
    return rows


STEP_VARIANTS = ("sync-free", "per-step sync", "no rollback")


def sync_compare(models: List[str], device: torch.device, batch: int, warmup: int,
                 iterations: int, rounds: int) -> None:
    """Print ms per step of each step variant, measured alternately ``rounds`` times."""
    print("| model | round | " + " | ".join(f"{v} (ms/step)" for v in STEP_VARIANTS) + " |")
    print("|---|---|" + "---|" * len(STEP_VARIANTS))
    for conf_name in models:
        for round_index in range(rounds):
            cells = []
            for variant in STEP_VARIANTS:
                rate = step_rate(conf_name, device, batch, warmup, iterations, variant=variant)
                cells.append(f"{1000.0 * batch / rate:.1f}")
            print(f"| {MODELS[conf_name]} | {round_index + 1} | " + " | ".join(cells) + " |",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, help="batch size (default 8 on CPU, 128 on CUDA)")
    parser.add_argument("--warmup", type=int, help="untimed batches (default 1 CPU, 10 CUDA)")
    parser.add_argument("--iters", type=int, help="timed batches (default 3 CPU, 30 CUDA)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--pipeline_samples", type=int, default=600,
                        help="samples for the input-pipeline rate (0 skips it)")
    parser.add_argument("--sync_compare", action="store_true",
                        help="time the step with and without per-step syncs and rollback")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of --sync_compare")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = device.type == "cuda"
    batch = args.batch or (128 if on_gpu else 8)
    warmup = args.warmup if args.warmup is not None else (10 if on_gpu else 1)
    iterations = args.iters or (30 if on_gpu else 3)
    name = torch.cuda.get_device_name(device) if on_gpu else f"{os.cpu_count()}-core CPU"
    print(f"device: {name}; torch {torch.__version__}; {torch.get_num_threads()} threads; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"batch {batch}, 200 frames, {warmup} warm-up + {iterations} timed batches\n")
    if args.sync_compare:
        sync_compare(args.models, device, batch, warmup, iterations, args.rounds)
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
        return
    print("| model | variant | training samples/s |")
    print("|---|---|---|")
    for conf_name in args.models:
        for label, bf16, channels_last, compile_model in variants(device, conf_name):
            rate = step_rate(conf_name, device, batch, warmup, iterations, bf16,
                             channels_last, compile_model)
            print(f"| {MODELS[conf_name]} | {label} | {rate:.1f} |", flush=True)
    if args.pipeline_samples:
        torch.set_num_threads(1)
        rate = pipeline_rate(args.pipeline_samples)
        print(f"\ninput pipeline: {rate:.0f} samples/s per DataLoader worker "
              f"(speed perturb, aug_prob 0.6, 2.015 s chunks)")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
