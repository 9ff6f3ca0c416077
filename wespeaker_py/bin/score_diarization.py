"""DER and JER of a system RTTM against a reference RTTM (dscore's definitions).

    python -m wespeaker_py.bin.score_diarization --ref_rttm data/ref.rttm \\
        --sys_rttm exp/diar/sys.rttm [--per_file] [--output exp/diar/der.md]

Prints DER (with missed, false-alarm and confusion parts) and JER for the four
usual conditions: no collar and a 0.25 s collar, overlapped speech scored and
excluded (``--collars`` changes the collars). The scoring region of each
recording runs from the first to the last turn of either file (dscore's
default) or is read from ``--uem`` (NIST UEM, e.g. AMI-diarization-setup's;
a reference recording it does not name is scored over the default region, and
the log names it). The reference's recordings (and the UEM's) are scored, as
md-eval does: one missing from the system RTTM counts as all missed; one only
the system RTTM has is left out, and the log names it. Where no reference
speech is scored, the missed, false-alarm and confusion shares read ``n/a``; a
reference RTTM with no ``SPEAKER`` line at all is an error (an empty system RTTM
is not: all speech is missed), and so is a line of either file that is no RTTM line
(a wav.scp given for an RTTM); the error names file and line.

    python -m wespeaker_py.bin.score_diarization --ref_rttm data/ref.rttm \\
        --systems spectral=exp/spectral/sys.rttm nme-sc=exp/nme-sc/sys.rttm

compares systems instead: one row each, with DER for each collar (overlap
scored), JER, and how often the number of speakers was right (too few / too
many).

``--plot_dir DIR`` also draws each recording's time line (reference and system
speakers, and where DER counts missed speech, false alarm and confusion) as
``DIR/<recording>.png`` (with ``--systems``: ``DIR/<system>/<recording>.png``; a
``/`` in a name is written ``%2F`` and a ``%`` ``%25``, so no two names share a
file); see :mod:`wespeaker_py.diarization.plot`. The tables and plots are
:mod:`wespeaker_py.diarization.report`'s.
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional

from wespeaker_py.cli.common import (UsageError, add_flag, bin_parser, bin_prog,
                                     non_negative, run_main)
from wespeaker_py.utils.logging_utils import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__)
    add_flag(parser, "ref_rttm", required=True, help="reference RTTM")
    add_flag(parser, "sys_rttm", default=None, help="system (hypothesis) RTTM")
    add_flag(parser, "systems", nargs="+", default=None, metavar="NAME=RTTM",
             help="instead of --sys_rttm: compare these systems, one row each")
    add_flag(parser, "collars", type=non_negative, nargs="+", default=[0.0, 0.25],
             help="collars in seconds around reference boundaries (default 0 0.25)")
    add_flag(parser, "uem", default=None, help="scoring regions (NIST UEM file)")
    add_flag(parser, "per_file", action="store_true", help="also one row per recording")
    add_flag(parser, "output", default=None, help="also write the table here (Markdown)")
    add_flag(parser, "plot_dir", default=None,
             help="also draw each recording's time line and errors as <dir>/<recording>.png")
    return parser


def parse_systems(specs: List[str]) -> Dict[str, str]:
    """``NAME=RTTM`` arguments as an ordered name -> path map."""
    systems: Dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--systems: expected NAME=RTTM, got {spec!r}")
        if name in systems:
            raise UsageError(f"--systems: {name!r} is given twice")
        systems[name] = path
    return systems


def _refuse_over_inputs(args: argparse.Namespace, systems: Dict[str, str]) -> None:
    """--output must not be one of the RTTM or UEM files read."""
    from wespeaker_py.utils.paths import refuse_output_over_input
    refuse_output_over_input({"--output": args.output},
                             {"--ref_rttm": args.ref_rttm, "--sys_rttm": args.sys_rttm,
                              "--uem": args.uem,
                              **{f"--systems {name}": path for name, path in systems.items()}})


def _main(argv: List[str]) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    if (args.sys_rttm is None) == (args.systems is None):
        raise UsageError("score_diarization: give --sys_rttm or --systems")
    systems = parse_systems(args.systems) if args.systems is not None else {}
    _refuse_over_inputs(args, systems)
    from wespeaker_py.diarization.report import (plot_scored, plot_scored_systems, read_scored,
                                                 scored_comparison, scored_table)
    # each RTTM is read once, for the table and the plots (and its warnings said once)
    if args.systems is not None:
        read = {name: read_scored(args.ref_rttm, path, args.uem)
                for name, path in systems.items()}
        table = scored_comparison(read, args.collars)
        about = f"Reference {args.ref_rttm}; overlap scored"
    else:
        scored = read_scored(args.ref_rttm, args.sys_rttm, args.uem)
        table, _ = scored_table(scored, args.collars, args.per_file)
        about = f"Reference {args.ref_rttm}, system {args.sys_rttm}"
    print(table, end="")
    if args.plot_dir:
        if args.systems is not None:
            drawn = plot_scored_systems(read, args.plot_dir)
        else:
            drawn = {args.plot_dir: plot_scored(scored, args.plot_dir)}
        for folder, count in drawn.items():
            print(f"{count} time lines in {folder}")
    if args.output:
        from wespeaker_py.utils.atomic_files import atomic_open
        with atomic_open(args.output, "w", encoding="utf-8") as handle:
            handle.write(f"{about} (JER ignores collar and overlap settings, as dscore's)"
                         f"\n\n{table}")
    return 0


def main(argv: Optional[List[str]] = None) -> None:
    sys.exit(run_main(_main, argv, prog=bin_prog(__file__)))


if __name__ == "__main__":
    main()
