#!/usr/bin/env python3
"""Make a tiny random Whisper checkpoint in OpenAI's format for tests and dry runs.

Usage: tools/make_tiny_whisper.py --out FILE [--layers 3] [--width 16] [--heads 2]
       [--n_mels 80] [--seed 0]

Writes ``{"dims", "model_state_dict"}`` (float16, encoder and a few decoder tensors)
to FILE, as OpenAI's large-v2.pt is laid out; point
dataset_args.whisper_encoder_args.model_path (run.sh --whisper_path) at it, with
num_blocks <= --layers, output_size --width, n_head --heads, n_mels --n_mels and
layer_st <= layer_ed < num_blocks.
"""
import sys
from typing import List, Optional

from wespeaker_py.cli.common import FlagParser, add_flag, run_main
from wespeaker_py.frontend.whisper_random import tiny_whisper_dims, write_random_whisper


def main(argv: Optional[List[str]] = None) -> None:
    parser = FlagParser(description=__doc__.splitlines()[0])
    add_flag(parser, "out", required=True, help="checkpoint file to write")
    add_flag(parser, "layers", type=int, default=3, help="encoder blocks")
    add_flag(parser, "width", type=int, default=16, help="encoder width (output_size)")
    add_flag(parser, "heads", type=int, default=2, help="attention heads (n_head)")
    add_flag(parser, "n_mels", type=int, default=80, choices=(80, 128))
    add_flag(parser, "seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_random_whisper(args.out, tiny_whisper_dims(args.layers, args.n_mels, args.width,
                                                     args.heads), seed=args.seed)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(run_main(main))
