#!/usr/bin/env python3
"""Write a raw.list (one JSON per line: key, wav, spk[, vad]) from wav.scp and utt2spk.

Audio that soundfile cannot decode here (e.g. m4a, wma) is refused: convert it first.
With --segments, wav.scp lists recordings and each utterance is its segment of one (a
``vad`` span of the recording's ``wav``).

Usage: python tools/make_raw_list.py [--vad_file FILE | --segments FILE]
       wav.scp utt2spk raw.list
"""
import sys
from typing import List, Optional

from wespeaker_py.cli.common import FlagParser, add_flag, run_main
from wespeaker_py.dataset.lists import (NO_VAD_FILE, read_segment_table,
                                        read_utterance_table, vad_file_argument,
                                        write_raw_list)
from wespeaker_py.utils.logging_utils import get_logger, setup_logging


def main(argv: Optional[List[str]] = None) -> None:
    parser = FlagParser(description=__doc__.splitlines()[0])
    spans = parser.add_mutually_exclusive_group()
    add_flag(spans, "vad_file", default=NO_VAD_FILE, type=vad_file_argument,
             help="segments-style file 'utt start end' (seconds); utterances "
             "without segments are left out")
    add_flag(spans, "segments", metavar="FILE",
             help="Kaldi segments file 'utt recording start end' (seconds; end -1: to the "
             "end of the recording) of a folder whose wav.scp lists recordings: each "
             "utterance is its span of its recording")
    parser.add_argument("wav_file", help="Kaldi wav.scp")
    parser.add_argument("utt2spk_file", help="Kaldi utt2spk")
    parser.add_argument("raw_list", help="output raw.list")
    args = parser.parse_args(argv)
    setup_logging()
    if args.segments:
        entries = read_segment_table(args.wav_file, args.utt2spk_file, args.segments)
    else:
        entries = read_utterance_table(args.wav_file, args.utt2spk_file, args.vad_file,
                                       drop_without_vad=True)
    write_raw_list(entries, args.raw_list)
    get_logger("make_raw_list").info("wrote %d utterances to %s", len(entries), args.raw_list)


if __name__ == "__main__":
    sys.exit(run_main(main))
