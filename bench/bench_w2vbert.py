"""W2V-BERT 2.0: input features (HF processor against ours) and training throughput.

Features, on the CPU: milliseconds per batch of training chunks (3 s, 48240 samples:
WeSpeaker's num_frms 300) for transformers' SeamlessM4TFeatureExtractor (what WeSpeaker
calls in its training step) and for W2VBertFeatures in float64 (the default) and float32;
prints a markdown table and the largest difference from the processor's output:

    python bench/bench_w2vbert.py [--batch 64] [--seconds 3.015] [--threads 2] [--repeats 5]

Training, on a GPU: a random W2V-BERT-2.0-sized encoder (transformers' default
Wav2Vec2BertConfig: 24 layers of 1024) + W2VBert_Adapter_MFA + ArcMargin head, AdamW,
bf16 autocast; samples per second and peak GPU memory for the LoRA step (frozen encoder,
rank 64 on query and value) and the joint step (everything trains):

    python bench/bench_w2vbert.py --train --device cuda [--batch 32] [--steps 10]
"""
from __future__ import annotations

import argparse
import time
from typing import List, Tuple

import torch

from bench_ssl import best_time
from wespeaker_py.frontend.w2vbert_features import W2VBertFeatures

SAMPLE_RATE = 16000


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, wavs: torch.Tensor,
                labels: torch.Tensor) -> None:
    """One AdamW step of front-end + model + head (bf16 autocast on CUDA)."""
    device = wavs.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        embeds = model(model.frontend(wavs))
        loss = torch.nn.functional.cross_entropy(model.projection(embeds, labels), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def training_rates(config, batch: int, seconds: float, steps: int, warmup: int,
                   device: torch.device, num_class: int = 17982) -> List[Tuple[str, float, float]]:
    """(step, samples per second, peak memory in GiB) of the LoRA and the joint step.

    ``config``: the ``Wav2Vec2BertConfig`` of a random encoder; peak memory is the GPU's
    on CUDA, 0 elsewhere.
    """
    from transformers import Wav2Vec2BertModel

    from wespeaker_py.config.schema import LoraArgs
    from wespeaker_py.frontend.w2vbert import W2VBertFrontend
    from wespeaker_py.models import get_model
    from wespeaker_py.models.projections import get_projection

    cuda = device.type == "cuda"
    generator = torch.Generator().manual_seed(0)
    wavs = (3000.0 * torch.randn(batch, int(seconds * SAMPLE_RATE), generator=generator)
            ).to(device)
    labels = torch.randint(0, num_class, (batch,), generator=generator).to(device)
    rows = []
    lora_step = LoraArgs(r=64, lora_alpha=128, lora_dropout=0.0)
    for step_name, lora in (("LoRA, frozen encoder", lora_step), ("joint", None)):
        torch.manual_seed(0)
        frontend = W2VBertFrontend(Wav2Vec2BertModel(config), frozen=lora is not None,
                                   lora=lora)
        model = get_model("W2VBert_Adapter_MFA", feat_dim=frontend.output_size(),
                          num_frontend_hidden_layers=frontend.num_hidden_states - 1)
        model.add_module("frontend", frontend)
        model.add_module("projection", get_projection(
            {"project_type": "arc_margin", "scale": 32.0, "margin": 0.2}, 256, num_class))
        model = model.to(device).train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                      lr=1e-5, weight_decay=1e-4)
        for _ in range(warmup):
            _train_step(model, optimizer, wavs, labels)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(steps):
            _train_step(model, optimizer, wavs, labels)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        memory = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
        rows.append((step_name, batch * steps / elapsed, memory))
        del model, optimizer, frontend
        if cuda:
            torch.cuda.empty_cache()
    return rows


def training_table(rows: List[Tuple[str, float, float]]) -> str:
    """Markdown table of :func:`training_rates`' rows."""
    lines = ["| step | samples/s | peak GPU memory (GiB) |", "|---|---|---|"]
    lines += [f"| {name} | {rate:.1f} | {memory:.1f} |" for name, rate, memory in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="training throughput instead")
    parser.add_argument("--device", default="cpu", help="for --train: cuda, or cpu")
    parser.add_argument("--batch", type=int, help="default 64 (features), 32 (--train)")
    parser.add_argument("--seconds", type=float, default=3.015)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.train:
        from transformers import Wav2Vec2BertConfig
        device = torch.device(args.device)
        batch = args.batch or 32
        rows = training_rates(Wav2Vec2BertConfig(), batch, args.seconds, args.steps,
                              args.warmup, device)
        name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
        print(f"{name}: random W2V-BERT-2.0-sized encoder + W2VBert_Adapter_MFA + ArcMargin, "
              f"batch {batch} x {args.seconds:g} s, AdamW, bf16 autocast on CUDA\n")
        print(training_table(rows))
        return
    args.batch = args.batch or 64
    features(args)


def features(args: argparse.Namespace) -> None:
    """The features table (see the module docstring)."""
    from transformers import SeamlessM4TFeatureExtractor

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
            rows.append((label, 1000.0 * best_time(run, args.repeats, lambda: None),
                         difference))
    print(f"batch {args.batch} x {args.seconds:g} s, {args.threads} threads, "
          f"best of {args.repeats}\n")
    print("| features | ms per batch | max abs difference from the processor |")
    print("|---|---|---|")
    for label, ms, difference in rows:
        print(f"| {label} | {ms:.0f} | {difference:.1e} |")


if __name__ == "__main__":
    main()
