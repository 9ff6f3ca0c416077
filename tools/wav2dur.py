"""Durations of the recordings of a wav.scp: ``python tools/wav2dur.py wav.scp utt2dur``."""
from __future__ import annotations

import sys
from typing import List, Optional

from wespeaker_py.cli.common import FlagParser, run_main
from wespeaker_py.scoring.calibration_set import compute_utt2dur


def main(argv: Optional[List[str]] = None) -> None:
    parser = FlagParser(description=__doc__)
    parser.add_argument("wav_scp", help="Kaldi wav.scp (file paths; 'command |' entries "
                                        "are run)")
    parser.add_argument("utt2dur", help="output: '<utt> <seconds>' lines")
    args = parser.parse_args(argv)
    count, total = compute_utt2dur(args.wav_scp, args.utt2dur)
    print(f"process {count} utts")
    print(f"total {total:.2f} s")


if __name__ == "__main__":
    sys.exit(run_main(main))
