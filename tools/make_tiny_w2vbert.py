#!/usr/bin/env python3
"""Make a tiny randomly initialised W2V-BERT (hidden 32) for tests and dry runs of run_w2v.sh.

Usage: tools/make_tiny_w2vbert.py --out DIR [--layers 2] [--seed 0]

Writes a Hugging Face directory (config.json + model.safetensors) to DIR; point
dataset_args.w2vbert_args.model_name (run_w2v.sh --w2vbert_path) at it, with
model_args.feat_dim 32 (or -1) and num_frontend_hidden_layers set to --layers.
"""
import sys
from typing import List, Optional

from wespeaker_py.cli.common import FlagParser, add_flag, run_main
from wespeaker_py.frontend.w2vbert_random import tiny_w2vbert_config, write_random_w2vbert


def main(argv: Optional[List[str]] = None) -> None:
    parser = FlagParser(description=__doc__.splitlines()[0])
    add_flag(parser, "out", required=True, help="new (or empty) output directory")
    add_flag(parser, "layers", type=int, default=2, help="conformer layers")
    add_flag(parser, "seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_random_w2vbert(args.out, tiny_w2vbert_config(args.layers), seed=args.seed)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(run_main(main))
