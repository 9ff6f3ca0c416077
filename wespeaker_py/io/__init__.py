"""Kaldi-format files: embeddings as ark/scp (:mod:`.ark`), read and written in one place;
the names of an experiment folder's, a model folder's and an embedding set's files
(:mod:`.layout`).

Used by extraction (:mod:`wespeaker_py.inference`), scoring
(:mod:`wespeaker_py.scoring`) and the ``wespeaker-py embed`` command. The names below
load :mod:`.ark` on first use, so importing this package, or only :mod:`.layout` (as the
command line does to build its flags), imports neither torch nor numpy.
"""
import importlib
from typing import Any

_ARK_NAMES = ("EmbeddingTable", "EmbeddingWriter", "load_embeddings", "open_embedding_writer",
              "read_scp_offsets", "scp_path_for", "write_embeddings")

__all__ = list(_ARK_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _ARK_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.ark"), name)
