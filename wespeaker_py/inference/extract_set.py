"""Extract an embedding set: a data list into its ark/scp, and the set's side files beside it.

:func:`extract_set` is stage 4 of the recipe (``python -m wespeaker_py.bin.extract``): it
takes the model's config and checkpoint, finds the band fills beside the config, resolves
the random chunk's length, runs the extraction (one job or ``num_jobs``) and then writes
the per-speaker means (``spk_xvector.ark``/``.scp``) and the set's mean (``mean_vec.npy``)
when asked, beside the ark (:class:`~wespeaker_py.io.layout.EmbeddingSetLayout`).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

from wespeaker_py.api.companion_files import companions_at
from wespeaker_py.audio import DEFAULT_CHANNEL, ChannelChoice
from wespeaker_py.config import ModelConfig, load_model_config
from wespeaker_py.frontend.band_fill import BandFill, load_band_fills
from wespeaker_py.inference.extraction import (DEFAULT_BUFFER_MB, ExtractionOptions,
                                               ExtractionSummary, extract_embeddings)
from wespeaker_py.inference.jobs import extract_embeddings_parallel, job_devices
from wespeaker_py.io.ark import scp_path_for
from wespeaker_py.io.layout import BAND_FILL_NAME, EmbeddingSetLayout
from wespeaker_py.scoring.embeddings import (mean_of_embeddings, save_mean_vector,
                                             write_speaker_means)
from wespeaker_py.utils.list_jobs import DEFAULT_MAX_FAIL_FRACTION, FAIL_FRACTION_FLAG
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)


def side_files(embed_ark: str, speaker_means: bool, set_mean: bool) -> Dict[str, str]:
    """``{what it is: path}`` of the side files an extraction into ``embed_ark`` writes
    beside it: the speaker means' ark and scp (``speaker_means``), the set's mean vector
    (``set_mean``)."""
    side = EmbeddingSetLayout.beside(embed_ark)
    paths = []
    if speaker_means:
        paths += [("the speaker means", side.speaker_means_ark),
                  ("the speaker means'", side.speaker_means_scp)]
    if set_mean:
        paths.append(("the set's", side.mean_path))
    return {f"{what} {os.path.basename(path)}": path for what, path in paths}


def band_fills_beside(config_path: str) -> List[BandFill]:
    """The band fills (``band_fill_<HZ>hz.npz``) in the folder of ``config_path``, each
    logged with the rate whose files it fills."""
    folder = os.path.join(os.path.dirname(os.path.abspath(config_path)), "")
    fills = load_band_fills(companions_at(folder, [BAND_FILL_NAME]))
    for fill in fills:
        logger.info("files at %d Hz go through the band fill beside %s: %s", fill.heard_rate,
                    config_path, fill.describe())
    return fills


def chunk_frames_of(config: ModelConfig, random_chunk: bool,
                    num_frms: Optional[int]) -> Optional[int]:
    """Frames of the random chunk each utterance is embedded from: ``num_frms``, else the
    config's ``dataset_args.num_frms``; None (whole utterances) without ``random_chunk``."""
    if not random_chunk:
        return None
    return num_frms or config.dataset_args.num_frms


def extract_set(config_path: str, model_path: str, data_type: str, data_list: str,
                embed_ark: str, num_jobs: int = 1, gpus: Optional[Sequence[int]] = None,
                device: Optional[str] = None, batch_size: int = 1, num_workers: int = 1,
                buffer_mb: int = DEFAULT_BUFFER_MB, random_chunk: bool = False,
                num_frms: Optional[int] = None, chunk_seed: int = 42,
                channel: ChannelChoice = DEFAULT_CHANNEL,
                max_fail_fraction: float = DEFAULT_MAX_FAIL_FRACTION,
                expected_utterances: Optional[int] = None, spk2utt: Optional[str] = None,
                mean_vec: bool = False) -> ExtractionSummary:
    """Embed ``data_list`` into ``embed_ark`` (+ its scp) with the model of ``config_path``
    and ``model_path``, then write the set's side files beside the ark: the per-speaker
    means of ``spk2utt`` and, with ``mean_vec``, the set's mean vector.

    ``num_jobs`` > 1 splits the list over jobs on ``gpus`` (or the CPU); one job runs on
    ``device`` (default: the first of ``gpus``). ``random_chunk``: one chunk of
    ``num_frms`` frames (default: the config's) of each utterance, placed by
    ``chunk_seed``. The side files of an earlier run are removed once the new ark is
    written, before the new ones are computed: a failure leaves none beside it.
    """
    config = load_model_config(config_path)
    options = ExtractionOptions(batch_size=batch_size, num_workers=num_workers,
                                buffer_mb=buffer_mb,
                                chunk_frames=chunk_frames_of(config, random_chunk, num_frms),
                                chunk_seed=chunk_seed, channel=channel,
                                band_fills=tuple(band_fills_beside(config_path)),
                                max_fail_fraction=max_fail_fraction)
    common = dict(config=config, model_path=model_path, data_type=data_type,
                  data_list=data_list, embed_ark=embed_ark, options=options,
                  expected_utterances=expected_utterances)
    if num_jobs > 1:
        summary = extract_embeddings_parallel(num_jobs=num_jobs, gpus=gpus, **common)
    else:
        summary = extract_embeddings(device=device or job_devices(1, gpus)[0], **common)
    for path in side_files(embed_ark, bool(spk2utt), mean_vec).values():
        if os.path.exists(path):
            os.remove(path)
    side = EmbeddingSetLayout.beside(embed_ark)
    embeddings_scp = scp_path_for(embed_ark)
    if spk2utt:
        # the utterances extraction was allowed to skip may be missing from the means
        speaker_scp = write_speaker_means(spk2utt, embeddings_scp, side.speaker_means_ark,
                                          max_fail_fraction, FAIL_FRACTION_FLAG)
        logger.info("per-speaker mean embeddings: %s", speaker_scp)
    if mean_vec:
        save_mean_vector(side.mean_path, mean_of_embeddings(embeddings_scp))
        logger.info("mean embedding of the set: %s", side.mean_path)
    return summary
