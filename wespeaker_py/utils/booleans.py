"""The one parser of boolean words typed on a command line: bin flags
(:func:`wespeaker_py.cli.common.str2bool`) and config overrides
(:func:`wespeaker_py.config.loading.apply_override`) take the same words.

Kept apart from :mod:`wespeaker_py.config` so that every command's ``--help`` can use it
without importing the config schema and YAML.
"""
from __future__ import annotations

# the words a boolean flag or override takes (any case), each pair as (true, false)
BOOL_WORDS = (("true", "false"), ("yes", "no"), ("y", "n"), ("on", "off"), ("t", "f"),
              ("1", "0"))
# false too: WeSpeaker's bins read flags with python-fire, where ``--flag None`` (and an empty
# word, a recipe variable left unset) are falsy; its users' scripts keep working here
FALSE_TOO = ("none", "")
_BOOL_OF_WORD = {word: value for pair in BOOL_WORDS for word, value in zip(pair, (True, False))}
_BOOL_OF_WORD.update({word: False for word in FALSE_TOO})
# the words as refusals list them
BOOL_WORDS_TEXT = (", ".join("/".join(pair) for pair in BOOL_WORDS)
                   + "; none or nothing for false")


def parse_bool(text: str) -> bool:
    """The boolean of command-line ``text`` (one of :data:`BOOL_WORDS` or
    :data:`FALSE_TOO`, any case, spaces around ignored): the one parser of bin flags and
    config overrides. Any other text is a
    :class:`ValueError` listing the words."""
    value = _BOOL_OF_WORD.get(str(text).strip().lower())
    if value is None:
        raise ValueError(f"expected a boolean ({BOOL_WORDS_TEXT}), got {text!r}")
    return value
