"""Extraction split over N local jobs (one per GPU, or CPU cores shared), then merged.

The data list is cut into N contiguous blocks (like ``split -l``); each block is
extracted by its own process into a resumable part in the hidden work folder
beside the output (:mod:`wespeaker_py.inference.workdir`), and the parts are
concatenated into the final ark/scp, which appear atomically. The folder stays
when a job fails or the run is interrupted, so that the same command continues
the parts; it is removed after a successful merge.

The parent forwards SIGTERM and SIGINT to its jobs and stops them when it stops;
each job also asks the kernel to end it if the parent dies (``kill -9``).
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import threading
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch

from wespeaker_py.config import ModelConfig
from wespeaker_py.inference.extraction import (KEPT_FOR_RERUN, ExtractionOptions,
                                               ExtractionSummary, check_workers_can_start,
                                               extract_part)
from wespeaker_py.utils.threads import threads_per_job
from wespeaker_py.inference.workdir import ExtractionWork, split_data_list
from wespeaker_py.errors import RunFailedError
from wespeaker_py.utils.logging_utils import get_logger, setup_logging
from wespeaker_py.utils.processes import die_with_parent

logger = get_logger(__name__)

__all__ = ["extract_embeddings_parallel", "job_devices", "split_data_list"]

_STOP_GRACE_S = 10.0


def job_devices(num_jobs: int, gpus: Optional[Sequence[int]]) -> List[str]:
    """Device of each job: GPUs round-robin (all visible ones when ``gpus`` is None), else CPU."""
    if gpus is None:
        gpus = list(range(torch.cuda.device_count()))
    if not gpus:
        return ["cpu"] * num_jobs
    return [f"cuda:{gpus[job % len(gpus)]}" for job in range(num_jobs)]


def _run_job(job: int, device: str, threads: int, log_level: int, parent_pid: int,
             kwargs: Dict[str, Any], results) -> None:
    """Body of one spawned job process: report ``(job, summary or error text)``."""
    die_with_parent(parent_pid)
    # A spawned process inherits "spawn" as its default start method; let its
    # DataLoader workers fork, as in a plain run (fast start, logging set up).
    multiprocessing.set_start_method("fork", force=True)
    setup_logging(log_level, rank=0)
    torch.set_num_threads(threads)
    try:
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        summary = extract_part(device=device, progress_position=job,
                               progress_desc=f"job {job}", **kwargs)
        results.put((job, summary, None))
    except KeyboardInterrupt:
        # Ctrl-C at a terminal reaches the parent too, which stops the run; a SIGINT to
        # this job alone must not look like success: the parent waits for a report then
        raise SystemExit(130) from None
    except Exception as error:  # noqa: BLE001 -- reported to the parent as text
        # not every exception type can be rebuilt from its message: send plain text
        results.put((job, None, f"{type(error).__name__}: {error}"))


@contextlib.contextmanager
def _forwarding_signals(processes: Sequence[multiprocessing.Process]) -> Iterator[None]:
    """Pass SIGTERM/SIGINT on to the jobs, then stop here with the usual exit status."""
    def forward(signum, _frame):
        for process in processes:
            if process.pid is not None and process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(processes: Sequence[multiprocessing.Process]) -> None:
    """End the jobs still running: SIGTERM, a grace period, then SIGKILL."""
    started = [process for process in processes if process.pid is not None]
    for process in started:
        if process.is_alive():
            process.terminate()
    for process in started:
        process.join(_STOP_GRACE_S)
        if process.is_alive():
            process.kill()
            process.join()


def _ending(exitcode: int) -> str:
    """How a job process that sent no report ended, from its exit code (minus a signal's
    number when a signal killed it)."""
    if exitcode >= 0:
        return f"the process ended with exit code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        return f"the process was killed by signal {-exitcode}"
    # the kernel's out-of-memory killer ends a process with SIGKILL
    hint = " (out of memory? try a smaller --batch_size or fewer --nj)" \
        if exitcode == -signal.SIGKILL else ""
    return f"the process was killed by {name}{hint}"


def _collect(processes: Sequence[multiprocessing.Process], results,
             job_lists: Sequence[str]) -> ExtractionSummary:
    """Wait for every job; a job that failed or died fails the run, naming its list."""
    summary = ExtractionSummary()
    reported: Dict[int, Optional[str]] = {}
    while len(reported) < len(processes):
        try:
            job, job_summary, error = results.get(timeout=0.5)
        except queue.Empty:
            for job, process in enumerate(processes):
                if job not in reported and not process.is_alive() and process.exitcode != 0:
                    reported[job] = _ending(process.exitcode)
            continue
        reported[job] = error
        if job_summary is not None:
            summary.add(job_summary)
    failed = {job: error for job, error in reported.items() if error}
    if failed:
        job, error = min(failed.items())
        raise RunFailedError(f"extraction job {job} ({job_lists[job]}) failed: {error}; "
                             f"{KEPT_FOR_RERUN}")
    return summary


def extract_embeddings_parallel(config: ModelConfig, model_path: str, data_type: str,
                                data_list: str, embed_ark: str, *, num_jobs: int,
                                options: ExtractionOptions = ExtractionOptions(),
                                gpus: Optional[Sequence[int]] = None,
                                num_threads: Optional[int] = None,
                                expected_utterances: Optional[int] = None
                                ) -> ExtractionSummary:
    """Run :func:`extract_part` on ``num_jobs`` parts of the list in parallel, each as
    ``options`` say; merge.

    Jobs take the GPUs in ``gpus`` round-robin (default: every visible GPU;
    none: CPU, with the cores shared among the jobs). A failed job fails the
    whole run and leaves no output, but its finished embeddings stay for the
    next run of the same command. A chunk depends only on ``options.chunk_seed`` and the
    utterance, so the jobs give the chunks one job would. More than
    ``options.max_fail_fraction`` of the list skipped fails the run as in
    :func:`~wespeaker_py.inference.extraction.extract_embeddings`. Each job
    computes with ``num_threads`` threads (default:
    :func:`~wespeaker_py.utils.threads.threads_per_job`); ``expected_utterances`` as for
    :func:`~wespeaker_py.inference.extraction.extract_embeddings`.
    """
    work = ExtractionWork(embed_ark, data_list, data_type, model_path, config, num_jobs,
                          options=options, expected_utterances=expected_utterances)
    with work:
        job_lists = work.job_lists()
        check_workers_can_start(config, options.num_workers, len(job_lists))
        carried = work.carried_keys()
        devices = job_devices(len(job_lists), gpus)
        threads = num_threads or threads_per_job(len(job_lists))
        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        results = context.Queue()
        processes = []
        for job, (job_list, device) in enumerate(zip(job_lists, devices)):
            kwargs = dict(config=config, model_path=model_path, data_type=data_type,
                          data_list=job_list, part_ark=work.part_ark(job), options=options,
                          finished_elsewhere=carried,
                          shard_utterances=work.shard_utterances_of(job_list))
            processes.append(context.Process(
                target=_run_job, name=f"extract-job-{job}",
                args=(job, device, threads, logger.getEffectiveLevel(), os.getpid(), kwargs,
                      results)))
        try:
            with _forwarding_signals(processes):
                for process in processes:
                    process.start()
                summary = _collect(processes, results, job_lists)
        except BaseException:
            logger.warning("extraction stopped; the finished embeddings stay in %s for the next "
                           "run of the same command", work.path)
            raise
        finally:
            _stop(processes)
        summary.resumed += len(carried)
        summary.extracted = work.finish(len(job_lists), summary.skipped,
                                        made=summary.extracted)
    log = logger.warning if summary.num_skipped or summary.cut else logger.info
    log("merged %d jobs into %s: %s", len(job_lists), embed_ark, summary.describe())
    return summary
