"""The one reading of a GPU list: the config's ``gpus`` and the recipes' ``--gpus`` flags.

WeSpeaker's recipes write ``"[0,1]"``; its trainer (through ``fire``) also takes
``0,1``, and the recipes count GPUs from either form. All of these are accepted:
``"[0,1]"``, ``"0,1"``, ``"0"``, ``0``, ``[0, 1]``; ``""``, ``"[]"``, ``-1`` and
``[-1]`` mean the CPU; None (no ``gpus``) means any visible GPU by local rank.
"""
from __future__ import annotations

from typing import Any, List, Optional

from wespeaker_py.config.fields import ConfigError

# a lone -1 stands for "no GPU", as in Kaldi-style recipes
CPU_ID = -1


def _ids_of_text(text: str, what: str) -> List[int]:
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    parts = [part.strip() for part in body.split(",")]
    if parts == [""]:
        return []
    try:
        return [int(part) for part in parts]
    except ValueError:
        raise ConfigError(f"{what} must list device ids, e.g. \"[0,1]\" or \"0,1\"; "
                          f"got {text!r}") from None


def parse_gpus(value: Any, what: str = "config key 'gpus'") -> Optional[List[int]]:
    """``value`` as a list of device ids (``[]``: the CPU; None: any visible GPU).

    ``what`` names the setting in the :class:`ConfigError` raised for anything else
    (a word, a float, a negative id other than a lone -1, a repeated id).
    """
    if value is None:
        return None
    if isinstance(value, str):
        ids = _ids_of_text(value, what)
    elif isinstance(value, int) and not isinstance(value, bool):
        ids = [value]
    elif isinstance(value, (list, tuple)) and all(
            isinstance(item, int) and not isinstance(item, bool) for item in value):
        ids = list(value)
    else:
        raise ConfigError(f"{what} must list device ids, e.g. \"[0,1]\" or \"0,1\"; "
                          f"got {value!r}")
    if ids == [CPU_ID]:
        return []
    if any(device < 0 for device in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"{what} must list distinct device ids >= 0 (or -1 alone for the "
                          f"CPU); got {value!r}")
    return ids
