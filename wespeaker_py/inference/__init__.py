"""Embedding extraction jobs: a data list into a Kaldi ark/scp, resumable, split over --nj jobs.

The model and the embedding loop come from the runtime layer
(:mod:`wespeaker_py.runtime`); this package adds the data pipeline, the job
split, the resumable parts and the ark/scp output.

    from wespeaker_py.inference import (ExtractionOptions, extract_embeddings,
                                        extract_embeddings_parallel, merge_embedding_arks,
                                        open_embedding_writer)
"""
from wespeaker_py.inference.chunking import RandomChunker
from wespeaker_py.inference.extraction import (ExtractionOptions, ExtractionSummary,
                                               embed_utterances, extract_embeddings,
                                               extract_part)
from wespeaker_py.inference.jobs import extract_embeddings_parallel, split_data_list
from wespeaker_py.inference.parts import merge_embedding_arks
from wespeaker_py.io.ark import open_embedding_writer, scp_path_for

__all__ = ["ExtractionOptions", "ExtractionSummary", "RandomChunker", "embed_utterances",
           "extract_embeddings", "extract_embeddings_parallel", "extract_part",
           "merge_embedding_arks", "open_embedding_writer", "scp_path_for", "split_data_list"]
