"""Convert checkpoints from other formats into the ones this toolkit reads.

Usage:
    python -m wespeaker_py.bin.convert_checkpoint wavlm --src WavLM-Large.pt --dst DIR
        original WavLM checkpoint (the file s3prl's wavlm_large loads) ->
        Hugging Face WavLM directory (config.json + model.safetensors), the form
        dataset_args.s3prl_args.upstream_args.path_or_url points at
    python -m wespeaker_py.bin.convert_checkpoint wavlm-export --src DIR --dst FILE.pt
        the reverse: a Hugging Face WavLM directory -> an original-format file

Each conversion is a subcommand; a new one adds a subparser and a library call.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from wespeaker_py.cli.common import UsageError, bin_parser, run_main
from wespeaker_py.errors import exit_status, one_line
from wespeaker_py.utils.atomic_files import raise_if_disk_full
from wespeaker_py.utils.logging_utils import setup_logging
from wespeaker_py.utils.paths import refuse_output_over_input


def _wavlm(args: argparse.Namespace) -> None:
    from wespeaker_py.frontend.wavlm_convert import convert_original_checkpoint
    convert_original_checkpoint(args.src, args.dst)


def _wavlm_export(args: argparse.Namespace) -> None:
    from wespeaker_py.frontend.wavlm_convert import export_original_checkpoint
    export_original_checkpoint(args.src, args.dst)


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__.splitlines()[0],
                        epilog="\n".join(__doc__.splitlines()[2:]))
    commands = parser.add_subparsers(dest="command", required=True)
    wavlm = commands.add_parser("wavlm", help="original WavLM checkpoint -> Hugging Face directory")
    wavlm.add_argument("--src", required=True, help="original checkpoint file (WavLM-Large.pt)")
    wavlm.add_argument("--dst", required=True, help="new (or empty) output directory")
    wavlm.set_defaults(run=_wavlm)
    export = commands.add_parser("wavlm-export",
                                 help="Hugging Face WavLM directory -> original checkpoint file")
    export.add_argument("--src", required=True, help="Hugging Face WavLM directory")
    export.add_argument("--dst", required=True, help="output .pt file")
    export.set_defaults(run=_wavlm_export)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    refuse_output_over_input({"--dst": args.dst}, {"--src": args.src})
    setup_logging()
    # a missing --src or a file that is no such checkpoint exits 2 through run_main
    try:
        args.run(args)
    except FileExistsError as error:   # --dst is taken: the user's to fix, as a bad --src is
        raise UsageError(f"--dst: {error}") from None
    except (OSError, ValueError) as error:
        raise_if_disk_full(error, args.dst)
        if exit_status(error) is not None or getattr(error, "filename", None):
            raise   # a user error already, or the system's on the file it names
        # what the readers of --src raise (transformers: a config.json that is no JSON)
        raise UsageError(f"--src {args.src}: {one_line(error)}") from None


if __name__ == "__main__":
    sys.exit(run_main(main))
