"""Per-speaker mean embeddings (the score-normalisation cohort).

    python tools/vector_mean.py --spk2utt data/vox2_dev/spk2utt \
        --xvector_scp EXP/embeddings/vox2_dev/xvector.scp \
        --spk_xvector_ark EXP/embeddings/vox2_dev/spk_xvector.ark

Writes spk_xvector.ark and spk_xvector.scp beside it.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from wespeaker_py.cli.common import FlagParser, add_flag, run_main
from wespeaker_py.scoring.embeddings import write_speaker_means


def main(argv: Optional[List[str]] = None) -> None:
    parser = FlagParser(description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flag(parser, "spk2utt", required=True, help="speaker -> utterances")
    add_flag(parser, "xvector_scp", required=True, help="utterance embeddings")
    add_flag(parser, "spk_xvector_ark", required=True, help="output ark (scp beside it)")
    add_flag(parser, "max_missing_fraction", type=float, default=0.0,
             help="largest fraction of the utterances that may lack an embedding "
             "(extraction skipped them); they are left out of the means "
             "(default 0: any is an error)")
    args = parser.parse_args(argv)
    write_speaker_means(args.spk2utt, args.xvector_scp, args.spk_xvector_ark,
                        args.max_missing_fraction)


if __name__ == "__main__":
    sys.exit(run_main(main))
