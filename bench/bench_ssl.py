"""SSL (WavLM) front-end cost: CPU per-chunk time (tiny model) or GPU training throughput.

CPU (tiny random WavLM, 2 layers, hidden 32): milliseconds per 3-second chunk
for the frozen forward (no_grad) and the joint forward + backward of the
front-end alone:
    python bench/bench_ssl.py [--batch 8] [--seconds 3] [--threads 2] [--repeats 5]

GPU (random WavLM-Large-sized network + ECAPA_TDNN_GLOB_c512 ASTP emb 192 +
arc_margin_intertopk_subcenter head, SGD, bf16 autocast): training samples per
second and peak GPU memory, frozen (bf16 no_grad front-end) vs joint:
    python bench/bench_ssl.py --device cuda [--batch 64] [--steps 10] [--gradient_checkpointing]

Prints a markdown table.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, Dict

import torch
import torch.nn as nn

from wespeaker_py.frontend.ssl import SSLFrontend, frontend_param_groups

SAMPLE_RATE = 16000


def best_time(run: Callable[[], None], repeats: int, sync: Callable[[], None]) -> float:
    """Fastest of ``repeats`` timed calls after one warm-up call."""
    run()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def make_frontend(config, frozen: bool, gradient_checkpointing: bool = False) -> SSLFrontend:
    from transformers import WavLMModel

    torch.manual_seed(0)
    return SSLFrontend(WavLMModel(config), multilayer_feature=True, frozen=frozen,
                       gradient_checkpointing=gradient_checkpointing)


def bench_cpu(args: argparse.Namespace) -> None:
    from wespeaker_py.frontend.wavlm_random import tiny_wavlm_config

    torch.set_num_threads(args.threads)
    wavs = 3000.0 * torch.randn(args.batch, int(args.seconds * SAMPLE_RATE))
    rows = []
    for mode in ("frozen", "joint"):
        frontend = make_frontend(tiny_wavlm_config(), frozen=mode == "frozen").train()

        def step() -> None:
            feats = frontend(wavs)
            if mode == "joint":
                feats.mean().backward()

        seconds = best_time(step, args.repeats, lambda: None)
        rows.append((mode, 1000.0 * seconds / args.batch))
    print(f"tiny WavLM, batch {args.batch} x {args.seconds:g} s chunks, {args.threads} threads\n")
    print("| mode | ms per chunk |")
    print("|---|---|")
    for mode, ms in rows:
        label = "frozen (forward, no_grad)" if mode == "frozen" else "joint (forward + backward)"
        print(f"| {label} | {ms:.2f} |")


class TrainStep:
    """One SGD step of front-end + ECAPA_TDNN_GLOB_c512 + margin head under bf16 autocast."""

    def __init__(self, frontend: SSLFrontend, num_class: int, batch: int, samples: int,
                 device: str = "cuda"):
        from wespeaker_py.models import get_model
        from wespeaker_py.models.projections import get_projection

        model = get_model("ECAPA_TDNN_GLOB_c512", feat_dim=frontend.output_size(), embed_dim=192,
                          pooling_func="ASTP")
        model.add_module("frontend", frontend)
        model.add_module("projection", get_projection(
            {"project_type": "arc_margin_intertopk_subcenter", "scale": 32.0, "margin": 0.2},
            192, num_class))
        self.device = device
        self.model = model.to(device).train()
        self.optimizer = torch.optim.SGD(
            [{"params": group["params"], "lr": 0.01 * group["lr_scale"]}
             for group in frontend_param_groups(self.model)], momentum=0.9, nesterov=True)
        self.wavs = 3000.0 * torch.randn(batch, samples, device=device)
        self.labels = torch.randint(0, num_class, (batch,), device=device)
        self.criterion = nn.CrossEntropyLoss()

    def __call__(self) -> None:
        with torch.autocast(self.device, dtype=torch.bfloat16):
            feats = self.model.frontend(self.wavs)
            embeds = self.model(feats)
            embeds = embeds[-1] if isinstance(embeds, tuple) else embeds
            loss = self.criterion(self.model.projection(embeds, self.labels), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def bench_cuda(args: argparse.Namespace) -> None:
    from wespeaker_py.frontend.wavlm_random import large_wavlm_config

    samples = int(args.seconds * SAMPLE_RATE)
    results: Dict[str, tuple] = {}
    for mode in ("frozen", "joint"):
        frontend = make_frontend(large_wavlm_config(), frozen=mode == "frozen",
                                 gradient_checkpointing=args.gradient_checkpointing)
        step = TrainStep(frontend, args.num_class, args.batch, samples)
        for _ in range(args.warmup):
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        results[mode] = (args.batch * args.steps / elapsed,
                         torch.cuda.max_memory_allocated() / 2**30)
        del step, frontend
        torch.cuda.empty_cache()
    print(f"{torch.cuda.get_device_name()}: WavLM-Large-sized random network + "
          f"ECAPA_TDNN_GLOB_c512, batch {args.batch} x {args.seconds:g} s, bf16 autocast, "
          f"gradient checkpointing {args.gradient_checkpointing}\n")
    print("| mode | samples/s | peak GPU memory (GiB) |")
    print("|---|---|---|")
    for mode, (rate, memory) in results.items():
        print(f"| {mode} | {rate:.1f} | {memory:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, help="default 8 on CPU, 64 on CUDA")
    parser.add_argument("--seconds", type=float, default=3.0, help="chunk length")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--repeats", type=int, default=5, help="CPU timing repeats")
    parser.add_argument("--steps", type=int, default=10, help="timed CUDA training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed CUDA training steps")
    parser.add_argument("--num_class", type=int, default=17982,
                        help="head classes (VoxCeleb2 dev speakers x 3 speeds)")
    parser.add_argument("--gradient_checkpointing", action="store_true")
    args = parser.parse_args()
    if args.device == "cuda":
        args.batch = args.batch or 64
        bench_cuda(args)
    else:
        args.batch = args.batch or 8
        bench_cpu(args)


if __name__ == "__main__":
    main()
