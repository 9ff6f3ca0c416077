#!/usr/bin/env python3
"""Make synthetic MUSAN-style noise and RIRS_NOISES-style impulse responses.

Usage: tools/make_synthetic_aug.py [--sample_rate 16000] [--seed 0] wav.scp out_dir

``wav.scp`` lists the speech that babble is made from; the tool writes
``out_dir/musan/wav.scp`` and ``out_dir/rirs/wav.scp`` in the layout the
VoxCeleb recipe uses for the real corpora.
"""
import os
import sys
from typing import List, Optional

from wespeaker_py.cli.common import FlagParser, add_flag, run_main
from wespeaker_py.dataset.synthetic_aug import make_synthetic_aug_data
from wespeaker_py.utils.tables import read_wav_scp, resolve_wav


def main(argv: Optional[List[str]] = None) -> None:
    """Write the noise and RIR lists; bad input ends in one line and exit status 2."""
    parser = FlagParser(description=__doc__.splitlines()[0])
    parser.add_argument("wav_scp", help="speech utterances for babble (Kaldi wav.scp)")
    parser.add_argument("out_dir")
    add_flag(parser, "sample_rate", type=int, default=16000)
    add_flag(parser, "seed", type=int, default=0)
    add_flag(parser, "num_rirs", type=int, default=20)
    args = parser.parse_args(argv)
    base = os.path.dirname(os.path.abspath(args.wav_scp))
    wavs = [resolve_wav(wav, base) for wav in read_wav_scp(args.wav_scp).values()]
    lists = make_synthetic_aug_data(args.out_dir, wavs, sample_rate=args.sample_rate,
                                    num_rirs=args.num_rirs, seed=args.seed)
    print(f"wrote {lists['musan']} and {lists['rirs']}")


if __name__ == "__main__":
    sys.exit(run_main(main))
