"""Time forward and forward+backward of the speaker models, per 200-frame sample.

    python bench/bench_models.py                      # CPU, batch 8, 2 threads
    python bench/bench_models.py --device cuda --batch 128 --bf16 --channels_last

Models are built with the VoxCeleb v2 recipe's model_args in their training
form (RepVGG with its multi-branch blocks). Forward runs in eval mode without
gradients; forward+backward runs in train mode with a scalar loss on the
embeddings. Each model gets its recipe's input size (80 mel bins, 72 for ReDimNet,
W2V-BERT's or Whisper's hidden states) unless ``--feat_dim`` is given. Each figure is
the median over ``--iters`` timed runs after ``--warmup`` untimed ones, divided by the
batch size.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Callable, List, Optional

import torch

from wespeaker_py.models import get_model, list_models
from wespeaker_py.models.complexity import recipe_feat_dim, recipe_input_dim, recipe_model_args
from wespeaker_py.utils.progress import progress_bar


def _median_seconds(step: Callable[[], None], device: torch.device, warmup: int,
                    iters: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_model(name: str, device: torch.device, batch: int, frames: int,
                feat_dim: Optional[int], bf16: bool, channels_last: bool, warmup: int,
                iters: int) -> dict:
    """Seconds per sample of forward and of forward+backward for model ``name``
    (``feat_dim`` None: its recipe's)."""
    dim = recipe_feat_dim(name) if feat_dim is None else feat_dim
    # a model over every W2V-BERT hidden state reads them side by side
    width = recipe_input_dim(name) // recipe_feat_dim(name) * dim
    model = get_model(name, **recipe_model_args(name, dim)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # only 4-D weights change
    features = torch.randn(batch, frames, width, device=device)

    def autocast():
        if bf16:
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward():
        with torch.no_grad(), autocast():
            model(features)

    def forward_backward():
        with autocast():
            loss = model(features).float().pow(2).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    model.eval()
    forward_s = _median_seconds(forward, device, warmup, iters)
    model.train()
    train_s = _median_seconds(forward_backward, device, warmup, iters)
    return {"name": name, "forward": forward_s / batch, "train": train_s / batch}


def format_results(rows: List[dict]) -> str:
    lines = ["| model | forward (ms/sample) | forward+backward (ms/sample) |",
             "|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['name']} | {row['forward'] * 1e3:.1f} | {row['train'] * 1e3:.1f} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None,
                        help="model names (default: every registered model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--feat_dim", type=int, default=None,
                        help="input size of every model (default: each model's recipe's)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = args.models or list_models()
    rows = [bench_model(name, device, args.batch, args.frames, args.feat_dim, args.bf16,
                        args.channels_last, args.warmup, args.iters)
            for name in progress_bar(names, desc="models", unit="model")]
    print(format_results(rows))


if __name__ == "__main__":
    main()
