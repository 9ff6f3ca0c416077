"""Durations of the recordings of a wav.scp: ``python tools/wav2dur.py wav.scp utt2dur``.

With ``--segments FILE`` (a Kaldi folder whose wav.scp lists recordings), those of the
utterances the segments file cuts from them: each span's length, without reading audio,
except a recording with a segment ending in -1 (to its end), measured once.
"""
from __future__ import annotations

import sys
from typing import List, Optional

from wespeaker_py.cli.common import FlagParser, add_flag, run_main
from wespeaker_py.scoring.calibration_set import compute_utt2dur
from wespeaker_py.utils.tables import write_utt2dur


def main(argv: Optional[List[str]] = None) -> None:
    parser = FlagParser(description=__doc__)
    add_flag(parser, "segments", metavar="FILE",
             help="Kaldi segments file 'utt recording start end' (seconds; end -1: the end "
                  "of the recording): utt2dur lists its utterances")
    parser.add_argument("wav_scp", help="Kaldi wav.scp (file paths; 'command |' entries "
                                        "are run)")
    parser.add_argument("utt2dur", help="output: '<utt> <seconds>' lines")
    args = parser.parse_args(argv)
    if args.segments:
        # the wespeaker_py.dataset package loads torch, which a plain wav.scp does without
        from wespeaker_py.dataset.lists import segment_durations
        durations = segment_durations(args.wav_scp, args.segments)
        write_utt2dur(args.utt2dur, durations)
        count, total = len(durations), sum(seconds for _, seconds in durations)
    else:
        count, total = compute_utt2dur(args.wav_scp, args.utt2dur)
    print(f"process {count} utts")
    print(f"total {total:.2f} s")


if __name__ == "__main__":
    sys.exit(run_main(main))
