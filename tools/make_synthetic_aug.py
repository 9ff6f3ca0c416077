#!/usr/bin/env python3
"""Make synthetic MUSAN-style noise and RIRS_NOISES-style impulse responses.

Usage: tools/make_synthetic_aug.py [--sample_rate HZ] [--seed 0] wav.scp out_dir

``wav.scp`` lists the speech that babble is made from; the tool writes
``out_dir/musan/wav.scp`` and ``out_dir/rirs/wav.scp`` in the layout the
VoxCeleb recipe uses for the real corpora. Without ``--sample_rate`` they are
made at the rate of the first utterance of ``wav.scp`` that opens (a
``command |`` entry is run); babble resamples utterances at other rates and
skips unusable ones (see :mod:`wespeaker_py.dataset.synthetic_aug`).
"""
import os
import sys
from typing import List, Optional

from wespeaker_py.cli.common import FlagParser, add_flag, positive_int, run_main
from wespeaker_py.dataset.synthetic_aug import make_synthetic_aug_data, speech_sample_rate
from wespeaker_py.utils.logging_utils import setup_logging
from wespeaker_py.utils.tables import read_wav_scp, resolve_wav


def main(argv: Optional[List[str]] = None) -> None:
    """Write the noise and RIR lists; bad input ends in one line and exit status 2."""
    parser = FlagParser(description=__doc__.splitlines()[0])
    parser.add_argument("wav_scp", help="speech utterances for babble (Kaldi wav.scp)")
    parser.add_argument("out_dir")
    add_flag(parser, "sample_rate", type=positive_int, default=None,
             help="rate of the files written (default: that of the first utterance of "
                  "wav_scp that opens)")
    add_flag(parser, "seed", type=int, default=0)
    add_flag(parser, "num_rirs", type=int, default=20)
    args = parser.parse_args(argv)
    setup_logging()
    base = os.path.dirname(os.path.abspath(args.wav_scp))
    wavs = [resolve_wav(wav, base) for wav in read_wav_scp(args.wav_scp).values()]
    sample_rate = args.sample_rate or speech_sample_rate(wavs)
    lists = make_synthetic_aug_data(args.out_dir, wavs, sample_rate=sample_rate,
                                    num_rirs=args.num_rirs, seed=args.seed)
    print(f"wrote {lists['musan']} and {lists['rirs']} ({sample_rate} Hz)")


if __name__ == "__main__":
    sys.exit(run_main(main))
