#!/usr/bin/env python3
"""Make a tiny randomly initialised WavLM (2 layers, hidden 32) for tests and the mini recipe.

Usage: tools/make_tiny_wavlm.py --out DIR [--original FILE.pt] [--seed 0] [--base_layout]

Writes a Hugging Face directory (config.json + model.safetensors) to DIR; with
--original also the same weights as an original-format checkpoint (the file
type s3prl's wavlm upstream loads), to exercise the conversion path.
Point dataset_args.s3prl_args.upstream_args.path_or_url (run_wavlm.sh
--ssl_path) at either.
"""
import sys
from typing import List, Optional

from wespeaker_py.cli.common import FlagParser, add_flag, run_main
from wespeaker_py.frontend.wavlm_convert import export_original_checkpoint
from wespeaker_py.frontend.wavlm_random import tiny_wavlm_config, write_random_wavlm


def main(argv: Optional[List[str]] = None) -> None:
    parser = FlagParser(description=__doc__.splitlines()[0])
    add_flag(parser, "out", required=True, help="new (or empty) output directory")
    add_flag(parser, "original", help="also write an original-format checkpoint here")
    add_flag(parser, "seed", type=int, default=0)
    add_flag(parser, "base_layout", action="store_true",
             help="WavLM Base layout (group-norm conv, post-norm) instead of Large's")
    args = parser.parse_args(argv)
    write_random_wavlm(args.out, tiny_wavlm_config(large_layout=not args.base_layout),
                       seed=args.seed)
    print(f"wrote {args.out}")
    if args.original:
        export_original_checkpoint(args.out, args.original)
        print(f"wrote {args.original}")


if __name__ == "__main__":
    sys.exit(run_main(main))
