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
file); see :mod:`wespeaker_py.diarization.plot`.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from wespeaker_py.cli.common import UsageError, add_flag, bin_parser, bin_prog, run_main
from wespeaker_py.utils.logging_utils import get_logger, listed_names, setup_logging

if TYPE_CHECKING:
    from wespeaker_py.diarization.metrics import RecordingScore

Condition = Tuple[float, bool]
logger = get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__)
    add_flag(parser, "ref_rttm", required=True, help="reference RTTM")
    add_flag(parser, "sys_rttm", default=None, help="system (hypothesis) RTTM")
    add_flag(parser, "systems", nargs="+", default=None, metavar="NAME=RTTM",
             help="instead of --sys_rttm: compare these systems, one row each")
    add_flag(parser, "collars", type=float, nargs="+", default=[0.0, 0.25],
             help="collars in seconds around reference boundaries (default 0 0.25)")
    add_flag(parser, "uem", default=None, help="scoring regions (NIST UEM file)")
    add_flag(parser, "per_file", action="store_true", help="also one row per recording")
    add_flag(parser, "output", default=None, help="also write the table here (Markdown)")
    add_flag(parser, "plot_dir", default=None,
             help="also draw each recording's time line and errors as <dir>/<recording>.png")
    return parser


def table_row(name: str, score: "RecordingScore", collar: float, overlap: bool) -> str:
    """One Markdown row: the condition, the error shares (``n/a`` without scored speech),
    DER and JER."""
    missed, false_alarm, confusion = score.times.parts_percent(2)
    return (f"| {name} | {collar:g} | {'scored' if overlap else 'excluded'} | "
            f"{missed} | {false_alarm} | {confusion} | {score.der:.2f} | {score.jer:.2f} |")


def score_table(ref_rttm: str, sys_rttm: str, collars: List[float], per_file: bool = False,
                uem: Optional[str] = None) -> Tuple[str, Dict[Condition, "RecordingScore"]]:
    """The Markdown table and the pooled score of each (collar, overlap scored) condition."""
    from wespeaker_py.diarization.metrics import score_recordings
    ref, sys, regions = _read_scored(ref_rttm, sys_rttm, uem)
    lines = ["| recording | collar (s) | overlap | missed % | false alarm % | confusion % "
             "| DER % | JER % |", "|---|---|---|---|---|---|---|---|"]
    overall: Dict[Condition, "RecordingScore"] = {}
    for collar in collars:
        for overlap in (True, False):
            files, pooled = score_recordings(ref, sys, collar=collar,
                                             ignore_overlaps=not overlap,
                                             evaluation_maps=regions)
            overall[(collar, overlap)] = pooled
            if per_file:
                lines += [table_row(name, score, collar, overlap)
                          for name, score in files.items()]
            lines.append(table_row(f"all ({len(files)})", pooled, collar, overlap))
    return "\n".join(lines) + "\n", overall


def _read_scored(ref_rttm: str, sys_rttm: str, uem: Optional[str]):
    """Reference turns, the system turns of the recordings scored (others left out, the log
    names them), and the UEM's regions (the log names reference recordings it lacks)."""
    from wespeaker_py.diarization.metrics import scored_recordings
    from wespeaker_py.diarization.rttm import read_rttm, read_uem
    from wespeaker_py.utils.tables import DataFormatError
    ref, sys = read_rttm(ref_rttm), read_rttm(sys_rttm)
    if not ref:   # DER would read 0.00: nothing to miss, and every false alarm uncounted
        raise DataFormatError(ref_rttm, None, "the reference holds no SPEAKER lines: there is "
                                              "no speech to score against")
    regions = read_uem(uem) if uem else None
    names, left_out = scored_recordings(ref, sys, regions)
    if left_out:
        logger.warning("%s: %d recordings are not in %s%s, left out of the scores: %s",
                       sys_rttm, len(left_out), ref_rttm, f" or {uem}" if uem else "",
                       listed_names(left_out))
        sys = {key: turns for key, turns in sys.items() if key not in left_out}
    if regions is not None:
        unnamed = [key for key in names if key not in regions]
        if unnamed:
            logger.warning("%s does not name %d recordings of %s, scored from their first to "
                           "last turn: %s", uem, len(unnamed), ref_rttm, listed_names(unnamed))
    return ref, sys, regions


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


def comparison_table(ref_rttm: str, systems: Dict[str, str], collars: List[float],
                     uem: Optional[str] = None) -> str:
    """One Markdown row per system: DER per collar (overlap scored), JER, speaker counts."""
    from wespeaker_py.diarization.metrics import count_speakers, score_recordings
    head = ("| system | " + " | ".join(f"DER % (collar {c:g})" for c in collars)
            + " | JER % | right count | too few | too many |")
    lines = [head, "|" + "---|" * (len(collars) + 5)]
    for name, path in systems.items():
        ref, sys, regions = _read_scored(ref_rttm, path, uem)
        ders = []
        for collar in collars:
            _, pooled = score_recordings(ref, sys, collar=collar, evaluation_maps=regions)
            ders.append(f"{pooled.der:.2f}")
        counts = count_speakers(ref, sys, regions)
        lines.append(f"| {name} | {' | '.join(ders)} | {pooled.jer:.2f} | "
                     f"{counts.accuracy:.0f}% ({counts.right}/{counts.total}) | "
                     f"{counts.too_few} | {counts.too_many} |")
    return "\n".join(lines) + "\n"


def plot_recordings(ref_rttm: str, sys_rttm: str, plot_dir: str,
                    uem: Optional[str] = None) -> int:
    """Draw every recording of the reference or the system into ``plot_dir``; the count.

    Each is ``<recording>.png``, the id as :func:`~wespeaker_py.diarization.plot.file_name`
    writes it."""
    from wespeaker_py.diarization.plot import file_name, plot_timeline
    from wespeaker_py.utils.progress import progress_bar
    ref, sys, regions = _read_scored(ref_rttm, sys_rttm, uem)
    os.makedirs(plot_dir, exist_ok=True)
    names = sorted(set(ref) | set(sys))
    for name in progress_bar(names, desc="plots", unit="rec", enabled=len(names) >= 20):
        plot_timeline(ref.get(name, []), sys.get(name, []),
                      os.path.join(plot_dir, f"{file_name(name)}.png"), name,
                      regions.get(name) if regions else None)
    return len(names)


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
    bad = [collar for collar in args.collars if not (math.isfinite(collar) and collar >= 0)]
    if bad:
        raise UsageError(f"--collars: each collar is seconds, at least 0; got "
                         f"{' '.join(f'{collar:g}' for collar in bad)}")
    systems = parse_systems(args.systems) if args.systems is not None else {}
    _refuse_over_inputs(args, systems)
    if args.systems is not None:
        table = comparison_table(args.ref_rttm, systems, args.collars, args.uem)
        about = f"Reference {args.ref_rttm}; overlap scored"
    else:
        table, _ = score_table(args.ref_rttm, args.sys_rttm, args.collars, args.per_file,
                               args.uem)
        about = f"Reference {args.ref_rttm}, system {args.sys_rttm}"
    print(table, end="")
    if args.plot_dir:
        drawn = {"": args.sys_rttm} if args.systems is None else systems
        from wespeaker_py.diarization.plot import file_name
        for name, path in drawn.items():
            folder = os.path.join(args.plot_dir, file_name(name)) if name else args.plot_dir
            count = plot_recordings(args.ref_rttm, path, folder, args.uem)
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
