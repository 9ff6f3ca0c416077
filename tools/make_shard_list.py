#!/usr/bin/env python3
"""Pack the utterances of wav.scp/utt2spk into tar shards and write the shard.list.

Audio that soundfile cannot decode here (e.g. m4a, wma) is refused: convert it first.
An utterance whose audio cannot be read (a failed or silent pipe; a missing, empty or
unreadable file) is left out of the shards, logged, and counted in the last line
(``N done, M skipped (reasons)``); more than --max_fail_fraction of them left out fails
the job (exit 1, no shard.list). A rerun keeps the shards whose entries and audio files
are unchanged. With --segments, wav.scp lists recordings and each utterance is its
segment of one (stored cut, as 16-bit WAV).

Usage: python tools/make_shard_list.py [--num_utts_per_shard N] [--num_threads T]
       [--prefix shards] [--shuffle] [--seed 42]
       [--vad_file FILE | --segments FILE] [--max_fail_fraction 0.5]
       wav.scp utt2spk shards_dir shard.list
"""
import sys
from typing import List, Optional

from wespeaker_py.cli.common import (FlagParser, add_fail_fraction_flag, add_flag, positive_int,
                                     run_main)
from wespeaker_py.dataset.lists import (NO_VAD_FILE, read_segment_table, read_utterance_table,
                                        vad_file_argument)
from wespeaker_py.dataset.shards import make_shards
from wespeaker_py.utils.logging_utils import setup_logging


def main(argv: Optional[List[str]] = None) -> None:
    parser = FlagParser(description=__doc__.splitlines()[0])
    add_flag(parser, "num_utts_per_shard", type=positive_int, default=1000,
             help="utterances per tar shard")
    add_flag(parser, "num_threads", type=positive_int, default=1, help="parallel shard writers")
    add_flag(parser, "prefix", default="shards", help="shard file name prefix")
    add_flag(parser, "seed", type=int, default=42, help="seed of --shuffle")
    add_flag(parser, "shuffle", action="store_true",
             help="shuffle utterances before packing")
    spans = parser.add_mutually_exclusive_group()
    add_flag(spans, "vad_file", default=NO_VAD_FILE, type=vad_file_argument,
             help="segments-style file 'utt start end' (seconds): voiced parts are "
             "stored as 16-bit WAV")
    add_flag(spans, "segments", metavar="FILE",
             help="Kaldi segments file 'utt recording start end' (seconds; end -1: to the "
             "end of the recording) of a folder whose wav.scp lists recordings: each "
             "utterance is its span of its recording")
    add_fail_fraction_flag(parser)
    parser.add_argument("wav_file", help="Kaldi wav.scp")
    parser.add_argument("utt2spk_file", help="Kaldi utt2spk")
    parser.add_argument("shards_dir", help="output directory of the tar shards")
    parser.add_argument("shards_list", help="output shard.list")
    args = parser.parse_args(argv)
    setup_logging()
    if args.segments:
        entries = read_segment_table(args.wav_file, args.utt2spk_file, args.segments)
    else:
        entries = read_utterance_table(args.wav_file, args.utt2spk_file, args.vad_file)
    make_shards(entries, args.shards_dir, args.shards_list,
                num_utts_per_shard=args.num_utts_per_shard, num_threads=args.num_threads,
                prefix=args.prefix, shuffle=args.shuffle, seed=args.seed,
                source=args.wav_file, max_fail_fraction=args.max_fail_fraction)


if __name__ == "__main__":
    sys.exit(run_main(main))
