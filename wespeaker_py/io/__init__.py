"""Kaldi-format files: embeddings as ark/scp (:mod:`.ark`), read and written in one place;
the names of an experiment folder's and an embedding set's files (:mod:`.layout`).

Used by extraction (:mod:`wespeaker_py.inference`), scoring
(:mod:`wespeaker_py.scoring`) and the ``wespeaker-py embed`` command. Importing
it does not import torch.
"""
from wespeaker_py.io.ark import (EmbeddingTable, EmbeddingWriter, load_embeddings,
                                 open_embedding_writer, read_scp_offsets, scp_path_for,
                                 write_embeddings)

__all__ = ["EmbeddingTable", "EmbeddingWriter", "load_embeddings", "open_embedding_writer",
           "read_scp_offsets", "scp_path_for", "write_embeddings"]
