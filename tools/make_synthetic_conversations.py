#!/usr/bin/env python3
"""Write synthetic conversations (wav/*.wav, wav.scp, ref.rttm) from a speaker corpus.

    python tools/make_synthetic_conversations.py --corpus_dir \\
        examples/mini/data/librispeech_tc100 --speakers test_spk --count 10 \\
        --min_speakers 2 --max_speakers 4 --duration 120 --seed 0 data/synthetic

Speakers come from the corpus (a Kaldi-style directory with wav.scp and
utt2spk; --speakers names a list file inside it, e.g. its test_spk). Turns of
1-6 s, pauses, a few overlaps; the true RTTM marks speech only (see
wespeaker_py.diarization.synthetic). --read_once: each speaker's utterances are
heard once (a short corpus is otherwise repeated, and repeated audio makes
near-duplicate windows); a conversation then ends when its speakers run out.
"""
import argparse
import os
import sys
from typing import List, Optional

from wespeaker_py.cli.common import FlagParser, add_flag, run_main
from wespeaker_py.diarization.synthetic import (ConversationStyle, SpeakerCorpus,
                                                write_conversations)
from wespeaker_py.utils.logging_utils import get_logger, setup_logging


def main(argv: Optional[List[str]] = None) -> None:
    parser = FlagParser(description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flag(parser, "corpus_dir", required=True, help="wav.scp + utt2spk directory")
    add_flag(parser, "speakers", default=None,
             help="file of speaker ids, inside corpus_dir or a path (default: all)")
    add_flag(parser, "count", type=int, default=10, help="number of conversations")
    add_flag(parser, "min_speakers", type=int, default=2)
    add_flag(parser, "max_speakers", type=int, default=4)
    add_flag(parser, "duration", type=float, default=120.0,
             help="seconds per conversation (about)")
    add_flag(parser, "seed", type=int, default=0)
    add_flag(parser, "read_once", action="store_true",
             help="no stretch of an utterance is used twice (conversations may be "
             "shorter than --duration)")
    parser.add_argument("out_dir", help="where wav/, wav.scp and ref.rttm go")
    args = parser.parse_args(argv)
    setup_logging()
    speakers = args.speakers
    if speakers and not os.path.exists(speakers):
        speakers = os.path.join(args.corpus_dir, speakers)
    corpus = SpeakerCorpus(args.corpus_dir, speakers)
    keys = write_conversations(corpus, args.out_dir, args.count,
                               (args.min_speakers, args.max_speakers), args.duration, args.seed,
                               ConversationStyle(reuse=not args.read_once))
    get_logger("make_synthetic_conversations").info(
        "%d conversations of about %.0f s from %d speakers in %s", len(keys), args.duration,
        len(corpus.speakers), args.out_dir)


if __name__ == "__main__":
    sys.exit(run_main(main))
