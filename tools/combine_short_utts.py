"""Join short utterances of each speaker and genre into pieces of at least --min_duration s.

    python tools/combine_short_utts.py --min_duration 5 --nj 8 [--key_suffix .wav] \\
        IN_WAV_SCP OUT_AUDIO_DIR OUT_DATA_DIR

IN_WAV_SCP keys are CN-Celeb's ``<spk>/<genre>-<nn>-<nnn>`` (no extension); utterances
are joined in list order, only within a speaker and genre (the key up to its first
``-``), by Kaldi's combine_short_segments rule as WeSpeaker's CN-Celeb recipe applies it.
A piece of n > 1 utterances is written to OUT_AUDIO_DIR/<first key>-comb<n>.wav (16-bit;
one already there with the same utterances read from the same unchanged files, by
OUT_AUDIO_DIR/pieces.txt, is kept, so an interrupted run resumes); a piece of one
utterance keeps its key and its file.
OUT_DATA_DIR gets wav.scp, utt2spk (speaker: the key up to its first ``/``), utt2dur and
utt2utts (piece -> its utterances), keys ending in --key_suffix. Unreadable files are
left out (the others are grouped without them) and reported; --min_duration 0 lists
every readable utterance as it is.
"""
import sys
from typing import List

from wespeaker_py.cli.common import FlagParser, add_flag, non_negative, positive_int, run_main
from wespeaker_py.dataset.combine import combine_short_utterances


def main(argv: List[str]) -> None:
    parser = FlagParser(description=__doc__.splitlines()[0])
    add_flag(parser, "min_duration", type=non_negative, default=5.0,
             help="seconds each piece lasts at least (default 5)")
    add_flag(parser, "nj", type=positive_int, default=8, help="parallel processes")
    add_flag(parser, "key_suffix", default="",
             help="appended to every output key (the CN-Celeb recipe: .wav)")
    parser.add_argument("wav_scp", help="input: '<key> <audio file>' lines")
    parser.add_argument("out_audio_dir", help="output: the combined audio")
    parser.add_argument("out_data_dir", help="output: wav.scp, utt2spk, utt2dur, utt2utts")
    args = parser.parse_args(argv)
    result = combine_short_utterances(args.wav_scp, args.out_audio_dir, args.out_data_dir,
                                      args.min_duration, args.nj, args.key_suffix)
    print(result.describe())


if __name__ == "__main__":
    sys.exit(run_main(main))
