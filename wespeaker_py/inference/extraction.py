"""Speaker embeddings of whole utterances (or one random chunk of each) into a Kaldi ark/scp pair.

Data flows: data list -> :class:`~wespeaker_py.dataset.Dataset` (whole
utterances, read by DataLoader workers) -> the runtime layer's embedding loop
(:func:`~wespeaker_py.runtime.embedding.embed_stream`: front-end on the device,
batches of identical frame count, speaker model) -> ark/scp.

Nothing is given a wrong embedding: an utterance shorter than the model's
minimum input or whose embedding is not finite is reported and skipped, as the
dataset does for unreadable files. With ``chunk_frames`` each utterance is
first cut to one random chunk of that many frames
(:mod:`~wespeaker_py.inference.chunking`), as WeSpeaker extracts its back-end set.
"""
from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import torch
from torch.utils.data import DataLoader

from wespeaker_py.audio import DEFAULT_CHANNEL, ChannelChoice, parse_channel
from wespeaker_py.config import ModelConfig, as_dataset_args
from wespeaker_py.dataset import Dataset
from wespeaker_py.dataset.stats import BAD_KEY, NOT_DELIVERED, REPEATED_KEY
from wespeaker_py.defaults import DEFAULT_BUFFER_MB
from wespeaker_py.errors import RunFailedError
from wespeaker_py.frontend.band_fill import BandFill
from wespeaker_py.inference.chunking import RandomChunker, chunk_samples
from wespeaker_py.inference.workdir import ExtractionWork
from wespeaker_py.inference.parts import open_part_writer, recover_part
from wespeaker_py.io.ark import EmbeddingWriter, key_problem
from wespeaker_py.runtime import TorchBackend, embed_stream, load_embedder
from wespeaker_py.utils.atomic_files import DiskFullError, raise_if_disk_full
from wespeaker_py.utils.device import resolve_device
from wespeaker_py.utils.list_jobs import DEFAULT_MAX_FAIL_FRACTION, JobTally, is_fail_fraction
from wespeaker_py.utils.logging_utils import WorkerLogging, get_logger
from wespeaker_py.utils.processes import (SHARED_MEMORY, check_temp_folder_for_workers,
                                          free_shared_memory_text, shared_memory_advice,
                                          tie_worker_to, warn_if_shared_memory_below)
from wespeaker_py.utils.tables import DataFormatError

logger = get_logger(__name__)

__all__ = ["ExtractionOptions", "ExtractionSummary", "embed_utterances", "extract_embeddings",
           "extract_part"]

# Longest wait for the reader workers' next utterance. A worker that cannot put a waveform
# into shared memory (/dev/shm full) drops it and lives on: without a limit the run waits
# forever. Generous: one file read from a slow disk or a pipe takes seconds.
READER_TIMEOUT_S = 600
# what a failed extraction leaves for its rerun, one wording for one job and for several
KEPT_FOR_RERUN = "the finished embeddings are kept, rerun the command to continue"
SHARED_MEMORY_ADVICE = shared_memory_advice("--num_workers 0")
# waveforms each reader worker keeps ready (the DataLoader's prefetch_factor): they wait in
# /dev/shm, whole utterances of float32 samples (the loader hands over single utterances;
# batches are made after the front-end, so the batch size does not enter)
READER_PREFETCH = 4
# the length those waveforms are sized at for the start's /dev/shm check: a long utterance
# of a speaker corpus (VoxCeleb's average is about 8 s); /dev/shm with less room than they
# take would make readers drop utterances once a few long ones come together
LONG_UTTERANCE_S = 30


@dataclass(frozen=True)
class ExtractionOptions:
    """How every utterance of an extraction is read and embedded: the settings that
    :func:`extract_embeddings`, :func:`~wespeaker_py.inference.jobs.extract_embeddings_parallel`
    and :func:`extract_part` pass down unchanged.

    ``batch_size``: most utterances (all of equal length) in one forward pass;
    ``num_workers``: DataLoader reader workers per job; ``buffer_mb``: memory for features
    waiting for a batch of their length. With ``chunk_frames`` every utterance is embedded
    from one random chunk of that many frames, drawn from ``chunk_seed`` and its key.
    ``channel``: the channel policy for multi-channel audio (:mod:`wespeaker_py.audio`;
    default: the first). ``band_fills`` fill the empty top bins of files that come at their
    rates (:mod:`wespeaker_py.frontend.band_fill`). More than ``max_fail_fraction`` of the
    list skipped fails the run.
    """

    batch_size: int = 1
    num_workers: int = 1
    buffer_mb: int = DEFAULT_BUFFER_MB
    chunk_frames: Optional[int] = None
    chunk_seed: int = 42
    channel: ChannelChoice = DEFAULT_CHANNEL
    band_fills: Tuple[BandFill, ...] = ()
    max_fail_fraction: float = DEFAULT_MAX_FAIL_FRACTION

    def __post_init__(self) -> None:
        # one spelling of the channel policy ("Mean" is "mean"): a resumed run compares it
        object.__setattr__(self, "channel", parse_channel(self.channel))
        # the others are checked where they are used, before the model loads
        if self.buffer_mb < 0:
            raise ValueError(f"buffer_mb must be >= 0, got {self.buffer_mb}")
        if not is_fail_fraction(self.max_fail_fraction):
            raise ValueError(f"max_fail_fraction must be a number in [0, 1], got "
                             f"{self.max_fail_fraction!r}")

    def chunk_identity(self) -> Optional[List[int]]:
        """What a resumed extraction must share with the first run: chunk frames and seed."""
        return None if self.chunk_frames is None else [self.chunk_frames, self.chunk_seed]


@dataclass
class ExtractionSummary:
    """How many utterances got an embedding, and how many were skipped for which reason."""

    extracted: int = 0
    skipped: Counter = field(default_factory=Counter)
    resumed: int = 0
    cut: int = 0   # embedded from their start only: longer than the front-end takes

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def add(self, other: "ExtractionSummary") -> None:
        """Accumulate another job's counts."""
        self.extracted += other.extracted
        self.skipped.update(other.skipped)
        self.resumed += other.resumed
        self.cut += other.cut

    def describe(self) -> str:
        """The list job's line (:class:`~wespeaker_py.utils.list_jobs.JobTally`):
        ``N done (R from an earlier run), M skipped (n reason, ...)``, and how many of the
        done were embedded from their start only."""
        resumed = f" ({self.resumed} from an earlier run)" if self.resumed else ""
        line = JobTally.of(self.extracted, self.skipped).describe(resumed)
        if self.cut:
            line += (f"; {self.cut} of the done longer than the front-end takes, embedded "
                     f"from their start only")
        return line


def embed_utterances(backend: TorchBackend, samples: Iterable[Mapping[str, Any]],
                     writer: EmbeddingWriter, batch_size: int,
                     max_buffer_bytes: int = DEFAULT_BUFFER_MB << 20,
                     seen_keys: Optional[Set[str]] = None,
                     chunker: Optional[RandomChunker] = None, progress: bool = False,
                     total: Optional[int] = None, desc: str = "extracting",
                     position: int = 0) -> ExtractionSummary:
    """Embed ``{"key", "wav"}`` samples into ``writer``; batches never mix frame counts.

    ``seen_keys``, when given, collects every key that arrived (embedded or
    skipped), so that the caller can tell which list entries never arrived.
    ``chunker``, when given, cuts each waveform to its chunk first. A sample's
    ``rate`` (the rate its file came at) selects the backend's band fill for it.
    Skips are logged and counted by reason; the embedded utterances the front-end cut
    (:meth:`TorchBackend.cuts_input`) are counted too.
    """
    cut_keys: Set[str] = set()
    arrived: Set[str] = set()
    summary = ExtractionSummary()

    def pairs() -> Iterator[Tuple[str, Tuple[torch.Tensor, int]]]:
        for sample in samples:
            key = sample["key"]
            if seen_keys is not None:
                seen_keys.add(key)
            # shard members' names; a raw list's keys were checked up front
            problem = key_problem(key)
            if problem:
                logger.warning("skipping %r: it cannot be an embedding's key: %s", key, problem)
                summary.skipped[BAD_KEY] += 1
                continue
            if key in arrived:
                logger.warning("skipping %s: a second utterance of that key (its first is "
                               "embedded)", key)
                summary.skipped[REPEATED_KEY] += 1
                continue
            arrived.add(key)
            wav = sample["wav"] if chunker is None else chunker(key, sample["wav"])
            if backend.cuts_input(int(wav.shape[-1])):
                cut_keys.add(key)
            yield key, (wav, sample.get("rate", backend.sample_rate))

    # the pipeline has read each file: "reading" hands over its waveform and rate
    for outcome in embed_stream(backend, pairs(), batch_size, read=lambda item: item,
                                buffer_bytes=max_buffer_bytes, progress=progress, desc=desc,
                                total=total, position=position):
        if outcome.embedding is None:
            logger.warning("skipping %s (%s): %s", outcome.key, outcome.skip, outcome.detail)
            summary.skipped[outcome.skip] += 1
            continue
        writer.write(outcome.key, outcome.embedding)
        summary.extracted += 1
        if outcome.key in cut_keys:
            summary.cut += 1
    return summary


def _quiet_on_hangup(hook):
    """``hook`` (a ``sys.excepthook``) less lost connections: multiprocessing's resource
    sharer, which hands a reader worker's tensors over, passes it the
    ``ConnectionResetError`` of a loader process killed mid-transfer (a stopped run, which
    says so itself)."""
    def quiet(exc_type, value, traceback):
        if not issubclass(exc_type, (ConnectionError, EOFError)):
            hook(exc_type, value, traceback)
    return quiet


class ReaderWorker(WorkerLogging):
    """``worker_init_fn`` of the extraction's DataLoader: the loader's logging
    (:class:`~wespeaker_py.utils.logging_utils.WorkerLogging`), an end with the process
    that made the loader (:func:`~wespeaker_py.utils.processes.tie_worker_to`), and no
    traceback from a worker when the run is stopped (:func:`_quiet_on_hangup`)."""

    def __init__(self) -> None:
        super().__init__()
        self.parent_pid = os.getpid()

    def __call__(self, worker_id: int) -> None:
        tie_worker_to(self.parent_pid)   # a reader has nothing to finish
        super().__call__(worker_id)
        sys.excepthook = _quiet_on_hangup(sys.excepthook)


def check_workers_can_start(config: ModelConfig, num_workers: int, num_jobs: int = 1) -> None:
    """Before the ``num_workers`` reader workers of each of ``num_jobs`` jobs start: refuse a
    temporary folder their tensors cannot pass through, warn of a small /dev/shm."""
    check_temp_folder_for_workers(num_workers)
    warn_if_shared_memory_short(config, num_workers, num_jobs)


def warn_if_shared_memory_short(config: ModelConfig, num_workers: int,
                                num_jobs: int = 1) -> None:
    """Warn once, at the start, when /dev/shm has less free space than the waveforms the
    ``num_workers`` reader workers of each of ``num_jobs`` jobs keep ready
    (``READER_PREFETCH`` each, sized at ``LONG_UTTERANCE_S`` at the config's rate): a run
    on a smaller one may stop after ``READER_TIMEOUT_S`` (:func:`_delivered`)."""
    waveforms = num_jobs * num_workers * READER_PREFETCH
    rate = as_dataset_args(config.dataset_args).resample_rate
    needed = waveforms * LONG_UTTERANCE_S * rate * 4   # float32 samples
    warn_if_shared_memory_below(
        needed, f"the {waveforms} waveforms the reader workers keep ready may take "
        f"({READER_PREFETCH} per worker, of up to {LONG_UTTERANCE_S} s)",
        f"a worker that cannot put one there drops it, and the run stops after "
        f"{READER_TIMEOUT_S} s without one", SHARED_MEMORY_ADVICE)


def _delivered(loader: DataLoader, num_workers: int) -> Iterator[Mapping[str, Any]]:
    """The loader's samples; a :class:`RunFailedError` naming /dev/shm when its workers
    deliver nothing for ``READER_TIMEOUT_S`` seconds (the loader's ``timeout``)."""
    samples = iter(loader)
    while True:
        try:
            sample = next(samples)
        except StopIteration:
            return
        except RuntimeError as error:
            if not str(error).startswith("DataLoader timed out"):
                raise
            raise RunFailedError(
                f"the {num_workers} reader workers delivered no utterance for {loader.timeout} "
                f"s: a worker that cannot hand a waveform over through {SHARED_MEMORY} "
                f"(the log then shows 'unable to allocate shared memory') drops it and "
                f"waits; {SHARED_MEMORY} has {free_shared_memory_text()}. "
                f"{SHARED_MEMORY_ADVICE}; the finished embeddings are kept for the "
                f"rerun") from None
        yield sample


def _check_chunk_fits(backend: TorchBackend, chunker: RandomChunker) -> None:
    """Refuse a chunk too short for the model now, rather than skip every utterance."""
    frames = backend.prepare(torch.zeros(chunker.chunk_len)).shape[0]
    if frames < backend.min_frames:
        raise ValueError(f"a chunk of {chunker.chunk_len} samples gives {frames} frames, "
                         f"fewer than the {backend.min_frames} the model needs: raise num_frms")


def _check_not_distributed() -> None:
    # Under torchrun every rank would read a stride of the list and all would
    # write the same ark; jobs are run by extract_embeddings_parallel instead.
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        raise RuntimeError(f"WORLD_SIZE={world_size}: run extraction as one process and "
                           f"use --nj to split it into jobs, not torchrun")


def extract_part(config: ModelConfig, model_path: str, data_type: str,
                 data_list: str, part_ark: str, *,
                 options: ExtractionOptions = ExtractionOptions(),
                 device: Optional[str] = None, progress_position: int = 0,
                 progress_desc: str = "extracting", finished_elsewhere: Sequence[str] = (),
                 shard_utterances: Optional[int] = None) -> ExtractionSummary:
    """Embed the utterances of ``data_list`` not yet in ``part_ark`` (nor among the keys
    ``finished_elsewhere``: a carried ark's, see :mod:`~wespeaker_py.inference.workdir`),
    appending to it, as ``options`` say (its ``max_fail_fraction`` is the whole run's).

    The part (ark + scp) is resumable: each entry reaches the OS as it is written, and a
    later call with the same arguments continues after the last complete one (see
    :func:`~wespeaker_py.inference.parts.open_part_writer`). The summary counts
    this call's embeddings and skips; ``resumed`` the embeddings found in the part.
    ``shard_utterances``: about how many utterances a shard list holds besides
    ``finished_elsewhere``, the progress bar's total (a raw list's is its own).
    """
    _check_not_distributed()
    done = set(recover_part(part_ark))
    skip = done.union(finished_elsewhere)
    # the list and dataset_args are checked before the (possibly large) model loads
    dataset = Dataset(data_type, data_list, config.dataset_args, whole_utt=True,
                      exclude_keys=skip, channel=options.channel)
    if not dataset.items:
        raise DataFormatError(data_list, None, "the data list is empty")
    chunker = None
    if options.chunk_frames is not None:
        settings = dataset.config
        chunker = RandomChunker(chunk_samples(options.chunk_frames, settings.resample_rate,
                                              settings.frame_length_ms,
                                              settings.frame_shift_ms), options.chunk_seed)
    target = resolve_device(device)
    backend = TorchBackend(load_embedder(config, model_path), target, config.model)
    backend.set_band_fills(options.band_fills)
    logger.info("%s on %s: batches of up to %d utterances of equal length; inputs need at "
                "least %d frames", config.model, target, options.batch_size,
                backend.min_frames)
    if chunker is not None:
        _check_chunk_fits(backend, chunker)
        logger.info("embedding one random chunk of %d frames (%d samples) per utterance, "
                    "seed %d", options.chunk_frames, chunker.chunk_len, options.chunk_seed)
    if done:
        logger.info("%s: continuing after the %d embeddings already written", part_ark,
                    len(done))
    # a timeout needs workers: without them the reading happens here
    num_workers = options.num_workers
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers,
                        pin_memory=target.type == "cuda",
                        prefetch_factor=READER_PREFETCH if num_workers > 0 else None,
                        timeout=READER_TIMEOUT_S if num_workers > 0 else 0,
                        worker_init_fn=ReaderWorker())
    # a raw list names every utterance; a shard list only its tar files
    expected = None
    bar_total = None
    if data_type == "raw":
        expected = bar_total = sum(1 for utt in dataset.items if utt.key not in skip)
    elif shard_utterances is not None:
        bar_total = max(0, shard_utterances - len(done))
    seen: Set[str] = set()
    try:
        with open_part_writer(part_ark) as writer:
            summary = embed_utterances(backend, _delivered(loader, num_workers), writer,
                                       options.batch_size, options.buffer_mb << 20, seen,
                                       chunker, progress=True, total=bar_total,
                                       desc=progress_desc, position=progress_position)
    except OSError as error:
        raise_if_disk_full(error, part_ark)
        raise
    summary.resumed = len(done)
    pipeline = dataset.epoch_summary()
    summary.skipped.update(pipeline.skipped)
    if expected is not None and len(seen) + pipeline.num_skipped < expected:
        summary.skipped[NOT_DELIVERED] += expected - len(seen) - pipeline.num_skipped
    return summary


def extract_embeddings(config: ModelConfig, model_path: str, data_type: str,
                       data_list: str, embed_ark: str, *,
                       options: ExtractionOptions = ExtractionOptions(),
                       device: Optional[str] = None, progress_position: int = 0,
                       progress_desc: str = "extracting",
                       expected_utterances: Optional[int] = None) -> ExtractionSummary:
    """Embed every utterance of ``data_list`` into ``embed_ark`` and its ``.scp``.

    ``config`` is the experiment's config (``model``, ``model_args``,
    ``dataset_args``); ``model_path`` a checkpoint (bare state_dict or training
    checkpoint). The output appears atomically when everything is done; until
    then the embeddings wait in a resumable part in a hidden folder beside it
    (:class:`~wespeaker_py.inference.workdir.ExtractionWork`), so that running
    the same command again after a kill continues where it stopped. Skips are
    counted by reason; an empty list is a :class:`DataFormatError`, a run that
    extracts nothing, or skips more than ``options.max_fail_fraction`` of the list, a
    :class:`RunFailedError` (and no ark/scp is written). ``options``: how each
    utterance is read and embedded (:class:`ExtractionOptions`).
    ``expected_utterances``: how many utterances a shard list holds; those never
    delivered (a lost or truncated shard) count as skipped
    (:meth:`~wespeaker_py.inference.workdir.ExtractionWork.finish`).
    """
    _check_not_distributed()
    with ExtractionWork(embed_ark, data_list, data_type, model_path, config, num_jobs=1,
                        options=options, expected_utterances=expected_utterances) as work:
        check_workers_can_start(config, options.num_workers)
        carried = work.carried_keys()
        try:
            summary = extract_part(config, model_path, data_type, data_list,
                                   work.part_ark(0), options=options, device=device,
                                   progress_position=progress_position,
                                   progress_desc=progress_desc, finished_elsewhere=carried,
                                   shard_utterances=work.shard_utterances_of(data_list))
        except DiskFullError as error:
            raise DiskFullError(error.path, error.cause, KEPT_FOR_RERUN) from error
        summary.resumed += len(carried)
        summary.extracted = work.finish(1, summary.skipped, made=summary.extracted)
    log = logger.warning if summary.num_skipped or summary.cut else logger.info
    log("%s: %s", embed_ark, summary.describe())
    return summary
