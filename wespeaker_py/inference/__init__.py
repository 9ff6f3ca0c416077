"""Inference with a trained model: loading it from config + checkpoint, and embedding extraction.

A package of its own because both ``bin/extract.py`` and the exporters in
:mod:`wespeaker_py.export` load trained models the same way, and extraction is
neither training nor scoring.

Public entry points::

    from wespeaker_py.inference import (extract_embeddings, extract_embeddings_parallel,
                                        load_speaker_model, load_embedder,
                                        merge_embedding_arks, open_embedding_writer)
"""
from wespeaker_py.inference.batching import LengthBuckets, min_valid_frames
from wespeaker_py.inference.chunking import RandomChunker
from wespeaker_py.inference.embedding import (ExtractionSummary, embed_utterances,
                                              extract_embeddings, extract_part)
from wespeaker_py.inference.jobs import extract_embeddings_parallel, split_data_list
from wespeaker_py.inference.model_loading import (SpeakerEmbedder, load_embedder,
                                                  load_speaker_model, read_model_config)
from wespeaker_py.inference.parts import merge_embedding_arks
from wespeaker_py.io.ark import open_embedding_writer, scp_path_for

__all__ = ["ExtractionSummary", "LengthBuckets", "RandomChunker", "SpeakerEmbedder",
           "embed_utterances", "extract_embeddings", "extract_embeddings_parallel",
           "extract_part", "load_embedder", "load_speaker_model", "merge_embedding_arks",
           "min_valid_frames",
           "open_embedding_writer", "read_model_config", "scp_path_for", "split_data_list"]
