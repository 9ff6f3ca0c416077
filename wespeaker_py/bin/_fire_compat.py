"""argparse helpers that accept flags the way WeSpeaker's python-fire scripts do.

python-fire takes ``--exp_dir`` and ``--exp-dir`` alike, reads ``True``/``False``
as booleans and treats a bare ``--flag`` as true; recipes rely on all three.
"""
from __future__ import annotations

import argparse


def str2bool(value) -> bool:
    """Parse ``True/False/1/0/yes/no`` (any case) as python-fire does for booleans."""
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("true", "1", "yes", "y"):
        return True
    if lowered in ("false", "0", "no", "n", "none", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def add_flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """Add ``--name`` together with its hyphenated spelling ``--na-me``."""
    spellings = [f"--{name}"]
    if "_" in name:
        spellings.append(f"--{name.replace('_', '-')}")
    parser.add_argument(*spellings, dest=name, **kwargs)


def add_bool_flag(parser: argparse.ArgumentParser, name: str, default: bool = False,
                  help: str = "") -> None:
    """A boolean flag given as ``--name``, ``--name True`` or ``--name False``."""
    add_flag(parser, name, type=str2bool, nargs="?", const=True, default=default, help=help)
