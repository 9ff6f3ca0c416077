"""Extraction split over N local jobs (one per GPU, or CPU cores shared), then merged.

The data list is cut into N contiguous blocks (like ``split -l``); each block
is extracted by its own process into a part ark/scp in a hidden folder beside
the output, and the parts are concatenated into the final ark/scp, which
appear atomically. The folder is removed afterwards, whether the jobs
succeeded or not.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import shutil
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from wespeaker_py.dataset.lists import read_list_file
from wespeaker_py.inference.embedding import (DEFAULT_BUFFER_MB, ExtractionSummary,
                                              extract_embeddings)
from wespeaker_py.inference.writer import merge_embedding_arks
from wespeaker_py.utils.file_utils import atomic_open
from wespeaker_py.utils.logging_utils import get_logger, setup_logging

logger = get_logger(__name__)


def split_data_list(data_list: str, num_jobs: int, out_dir: str) -> List[str]:
    """Write ``data_list`` as at most ``num_jobs`` contiguous, near-equal, non-empty parts."""
    lines = [text for _, text in read_list_file(data_list)]
    if not lines:
        raise ValueError(f"data list {data_list} is empty")
    num_jobs = max(1, min(num_jobs, len(lines)))
    base, extra = divmod(len(lines), num_jobs)
    paths, start = [], 0
    for job in range(num_jobs):
        stop = start + base + (1 if job < extra else 0)
        path = os.path.join(out_dir, f"split_{job:03d}.list")
        with atomic_open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines[start:stop]) + "\n")
        paths.append(path)
        start = stop
    return paths


def job_devices(num_jobs: int, gpus: Optional[Sequence[int]]) -> List[str]:
    """Device of each job: GPUs round-robin (all visible ones when ``gpus`` is None), else CPU."""
    if gpus is None:
        gpus = list(range(torch.cuda.device_count()))
    if not gpus:
        return ["cpu"] * num_jobs
    return [f"cuda:{gpus[job % len(gpus)]}" for job in range(num_jobs)]


def _run_job(job: int, device: str, threads: int, log_level: int,
             kwargs: Dict[str, Any]) -> ExtractionSummary:
    """Body of one spawned job process."""
    # A spawned process inherits "spawn" as its default start method; let its
    # DataLoader workers fork, as in a plain run (fast start, logging set up).
    multiprocessing.set_start_method("fork", force=True)
    setup_logging(log_level, rank=0)
    torch.set_num_threads(threads)
    try:
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        return extract_embeddings(device=device, progress_position=job,
                                  progress_desc=f"job {job}", **kwargs)
    except Exception as error:
        # The error travels back pickled, and not every exception type can be
        # rebuilt from its message (DataFormatError cannot): send plain text.
        raise RuntimeError(f"{type(error).__name__}: {error}") from None


def extract_embeddings_parallel(config: Mapping[str, Any], model_path: str, data_type: str,
                                data_list: str, embed_ark: str, num_jobs: int,
                                gpus: Optional[Sequence[int]] = None, batch_size: int = 1,
                                num_workers: int = 1,
                                buffer_mb: int = DEFAULT_BUFFER_MB,
                                chunk_frames: Optional[int] = None,
                                chunk_seed: int = 42) -> ExtractionSummary:
    """Run :func:`extract_embeddings` on ``num_jobs`` parts of the list in parallel; merge.

    Jobs take the GPUs in ``gpus`` round-robin (default: every visible GPU;
    none: CPU, with the cores shared among the jobs). A failed job fails the
    whole run and leaves no output. A chunk depends only on ``chunk_seed`` and the
    utterance, so the jobs give the chunks one job would.
    """
    out_dir = os.path.dirname(os.path.abspath(embed_ark))
    os.makedirs(out_dir, exist_ok=True)
    work_dir = tempfile.mkdtemp(prefix=".extract_jobs.", dir=out_dir)
    try:
        parts = split_data_list(data_list, num_jobs, work_dir)
        devices = job_devices(len(parts), gpus)
        threads = max(1, (os.cpu_count() or 1) // len(parts))
        summary = ExtractionSummary()
        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        with concurrent.futures.ProcessPoolExecutor(len(parts), mp_context=context) as pool:
            futures = []
            for job, (part, device) in enumerate(zip(parts, devices)):
                kwargs = dict(config=config, model_path=model_path, data_type=data_type,
                              data_list=part, embed_ark=part[:-len(".list")] + ".ark",
                              batch_size=batch_size, num_workers=num_workers,
                              buffer_mb=buffer_mb, chunk_frames=chunk_frames,
                              chunk_seed=chunk_seed)
                futures.append(pool.submit(_run_job, job, device, threads,
                                           logger.getEffectiveLevel(), kwargs))
            for job, future in enumerate(futures):
                try:
                    summary.add(future.result())
                except Exception as error:
                    raise RuntimeError(f"extraction job {job} ({parts[job]}) failed: "
                                       f"{error}") from error
        count = merge_embedding_arks([part[:-len(".list")] + ".ark" for part in parts],
                                     embed_ark)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    logger.info("merged %d jobs into %s: %s", len(parts), embed_ark, summary.describe())
    if count != summary.extracted:
        raise RuntimeError(f"merged {count} embeddings but the jobs reported "
                           f"{summary.extracted}")
    return summary
