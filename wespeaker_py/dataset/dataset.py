"""The training / extraction dataset over a raw.list or a shard.list.

Pipeline per (rank, worker) and epoch::

    list items (seeded epoch order, my stride) -> utterances (raw lines or tar groups)
    -> shuffle buffer -> speaker id -> [filter, random chunk, speed, resample]
    -> [second shuffle when speeds are expanded] -> noise/reverb -> tensors

In whole-utterance mode (extraction) there is no shuffle, chunking, speed or
augmentation, and the list order is kept within each worker.
"""
from __future__ import annotations

import os
import time
from typing import AbstractSet, Any, Dict, Iterator, Mapping, Optional, Union

import numpy as np
import torch
from torch.utils.data import IterableDataset

from wespeaker_py.audio import DEFAULT_CHANNEL, ChannelChoice, parse_channel
from wespeaker_py.config import DatasetArgs, as_dataset_args
from wespeaker_py.dataset.augment import Augmenter
from wespeaker_py.dataset.lists import Utterance, read_data_list
from wespeaker_py.dataset.partition import (WorkerPlace, current_place, my_items, my_quota,
                                            process_rank, worker_rng)
from wespeaker_py.dataset.processors import (ChunkSettings, augmented, shuffle_buffer,
                                             training_chunks, whole_utterances, with_labels)
from wespeaker_py.dataset.shards import iter_shard
from wespeaker_py.dataset.stats import PipelineStats, SkipSummary
from wespeaker_py.dataset.worker_reports import WorkerReports
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

DATA_TYPES = ("raw", "shard")
_SUMMARY_POLL_S = 0.01   # how often epoch_summary looks for workers' counts still to come


class Dataset(IterableDataset):
    """WeSpeaker's ``Dataset`` for ``data_type`` "raw" or "shard", yielding waveforms.

    Training mode yields ``{"key", "wav": FloatTensor[chunk samples] (int16 scale),
    "label"}``; with ``dataset_args.augment_on: device`` the speed change and the
    noise/reverb are left to :func:`~wespeaker_py.dataset.device_augment.augment_batch`
    (the sample then also holds ``"speed"``, ``"chunk_len"`` and ``"aug"``);
    ``whole_utt=True`` yields whole utterances at ``resample_rate`` with ``label``
    -1 when the speaker is absent or unknown, mono by the ``channel`` policy (see
    :mod:`wespeaker_py.audio`; training always keeps the first channel, as
    WeSpeaker does). Utterances whose key is in
    ``exclude_keys`` are passed over unread. Call :meth:`set_epoch` before
    creating each epoch's DataLoader iterator (not with ``persistent_workers``).

    ``repeat=True`` (training mode) cycles over the list without end, as
    WeSpeaker's training data set does: the consumer takes what an epoch needs
    (the trainer: ``epoch_iter`` batches on every rank), so a rank whose share
    runs short repeats it instead of ending the epoch early.

    The DDP rank is read where the dataset is made, and again by :meth:`set_epoch`,
    not in the workers: a worker started by spawn or forkserver (Python 3.14's
    default on Linux) has no torch.distributed state of its own, and would read
    every rank's share as rank 0's.

    Skips and repairs are counted once per key and epoch in each worker; after
    the epoch's iterator is closed, :meth:`epoch_summary` merges the counts of
    all this process's DataLoader workers, whatever ``multiprocessing_context``
    the DataLoader is given (they leave them as files:
    :mod:`~wespeaker_py.dataset.worker_reports`).
    """

    def __init__(self, data_type: str, data_list_file: str,
                 dataset_args: Union[DatasetArgs, Mapping[str, Any], None],
                 spk2id: Optional[Dict[str, int]] = None, whole_utt: bool = False,
                 reverb_data: Optional[str] = None, noise_data: Optional[str] = None,
                 seed: int = 42, repeat: bool = False,
                 exclude_keys: Optional[AbstractSet[str]] = None,
                 channel: ChannelChoice = DEFAULT_CHANNEL):
        super().__init__()
        if data_type not in DATA_TYPES:
            raise ValueError(f"data_type must be one of {DATA_TYPES}, got {data_type!r}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if not whole_utt and not spk2id:
            raise ValueError("training mode needs a non-empty spk2id (see spk2id_from_utt2spk)")
        channel = parse_channel(channel)
        if not whole_utt and channel != DEFAULT_CHANNEL:
            raise ValueError(f"training keeps the first channel; channel={channel!r} is for "
                             f"whole utterances (extraction)")
        self.channel = channel
        self.data_type = data_type
        self.config = as_dataset_args(dataset_args)
        self.spk2id = spk2id
        self.whole_utt = whole_utt
        self.repeat = repeat and not whole_utt
        self.seed = seed
        # keys to pass over unread (what a resumed extraction already has)
        self.exclude_keys = frozenset(exclude_keys or ())
        self.epoch = 0
        self.rank, self.world_size = process_rank()
        self.items = read_data_list(data_list_file, data_type, require_spk=not whole_utt)
        config = self.config
        self.settings = ChunkSettings(
            sample_rate=config.resample_rate, num_frms=config.num_frms,
            frame_length_ms=config.frame_length_ms, frame_shift_ms=config.frame_shift_ms,
            min_num_frames=config.filter_args.min_num_frames if config.filter else None,
            max_num_frames=config.filter_args.max_num_frames if config.filter else None,
            speed_perturb=config.speed_perturb,
            expand_speeds=config.speed_perturb and config.speed_perturb_mode == "expanded",
            num_spks=len(spk2id) if spk2id else 0,
            speed_on_device=config.augment_on == "device")
        # computed here so that bad frame settings fail now, not inside a worker
        self.chunk_len = self.settings.chunk_len
        self.augmenter = None
        if not whole_utt and config.aug_prob > 0 and (reverb_data or noise_data):
            self.augmenter = Augmenter(reverb_data, noise_data, config.resample_rate)
        self.stats: Optional[PipelineStats] = None
        self._reports = WorkerReports()
        self._local_summary: Optional[SkipSummary] = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: it seeds the list order and every random choice."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch
        self.rank, self.world_size = process_rank()
        self._local_summary = None
        if self._reports.owner != os.getpid() and torch.utils.data.get_worker_info() is None:
            # a copy of the dataset in another main process (a rank given it by fork or
            # spawn) gets a folder of its own, or the ranks would take each other's counts
            self._reports = WorkerReports()
        self._reports.clear()   # counts of epochs nobody asked about

    def _report(self, stats: PipelineStats, place: WorkerPlace) -> None:
        """Hand this iteration's counts to :meth:`epoch_summary` (from a worker: as a file)."""
        stats.log_summary()
        summary = stats.summary()
        if torch.utils.data.get_worker_info() is None:
            self._local_summary = summary
        else:
            self._reports.put(stats.epoch, place.worker_id, place.num_workers,
                              summary.to_dict())

    def epoch_summary(self, timeout: float = 10.0) -> SkipSummary:
        """The current epoch's skips and repairs, merged over this process's workers.

        Call it after the epoch's DataLoader iterator is closed (``del`` it, or
        let it run out); it waits up to ``timeout`` seconds for workers that have
        not reported yet, so do not call it for an epoch that was not read. Merge
        ranks with :meth:`SkipSummary.merge` after sending
        :meth:`SkipSummary.to_dict` between them.
        """
        received: Dict[int, SkipSummary] = {}
        expected = 0
        deadline = time.monotonic() + timeout
        while True:
            reports, num_workers = self._reports.take(self.epoch)
            received.update((worker, SkipSummary.from_dict(counts))
                            for worker, counts in reports.items())
            expected = num_workers or expected
            # no waiting for workers when the iteration ran in this process
            ran_here = not expected and self._local_summary is not None
            all_in = bool(expected) and len(received) >= expected
            if all_in or ran_here or time.monotonic() >= deadline:
                break
            time.sleep(_SUMMARY_POLL_S)
        if expected and len(received) < expected:
            logger.warning("epoch %d: %d of %d dataloader workers reported their skip counts",
                           self.epoch, len(received), expected)
        elif not expected and self._local_summary is None:
            other = self._reports.waiting_epochs()
            logger.warning("epoch %d: no dataloader worker reported its skip counts within "
                           "%g s%s", self.epoch, timeout,
                           f" (counts of epoch(s) {other} wait: workers kept from an earlier "
                           f"epoch, as with persistent_workers, do not see set_epoch)"
                           if other else "")
        summaries = list(received.values())
        if not summaries and self._local_summary is not None:
            summaries = [self._local_summary]
        self._local_summary = None
        return SkipSummary.merged(summaries)

    def _utterances(self, indices, stats: PipelineStats) -> Iterator[Utterance]:
        for index in indices:
            if self.data_type == "raw":
                utts = [self.items[index]]
            else:
                stats.open_shard(self.items[index])
                utts = iter_shard(self.items[index], stats)
            for utt in utts:
                if utt.key not in self.exclude_keys:
                    yield utt

    def _repeated_utterances(self, indices, stats: PipelineStats) -> Iterator[Utterance]:
        """Cycle over this worker's items until the consumer stops (``repeat``, or a quota).

        Stops, with a warning, once a full pass plus the shuffle lag yields nothing.
        """
        lag = 2 * self.config.shuffle_args.shuffle_size + 1
        pass_len = None
        since_progress, last_yielded = 0, stats.yielded
        while True:
            count = 0
            for utt in self._utterances(indices, stats):
                count += 1
                if stats.yielded != last_yielded:
                    since_progress, last_yielded = 0, stats.yielded
                since_progress += 1
                if pass_len is not None and since_progress > pass_len + lag:
                    logger.warning("rank %d worker %d: no usable utterance in a whole pass; "
                                   "stopping the epoch early", stats.rank, stats.worker_id)
                    return
                yield utt
            if count == 0:
                return
            pass_len = count if pass_len is None else max(pass_len, count)

    def _samples(self, place: WorkerPlace, rng: np.random.Generator,
                 stats: PipelineStats) -> Iterator[dict]:
        config = self.config
        shuffle = config.shuffle and not self.whole_utt
        indices = my_items(len(self.items), place, self.seed, self.epoch, shuffle)
        if not indices:
            logger.warning("rank %d worker %d: no list items for this worker (%d items for "
                           "%d consumers)", place.rank, place.worker_id, len(self.items),
                           place.num_consumers)
        if self.whole_utt:
            labelled = with_labels(self._utterances(indices, stats), self.spk2id, stats, False)
            yield from whole_utterances(labelled, self.settings, stats, self.channel)
            return
        if self.repeat or config.sample_num_per_epoch > 0:
            utts = self._repeated_utterances(indices, stats)
        else:
            utts = self._utterances(indices, stats)
        if shuffle:
            utts = shuffle_buffer(utts, config.shuffle_args.shuffle_size, rng)
        samples = training_chunks(with_labels(utts, self.spk2id, stats, True),
                                  self.settings, rng, stats)
        if self.settings.expand_speeds and shuffle:
            samples = shuffle_buffer(samples, config.shuffle_args.shuffle_size, rng)
        if self.augmenter is not None:
            samples = augmented(samples, self.augmenter, config.aug_prob, rng, stats,
                                on_device=self.settings.speed_on_device)
        yield from samples

    def __iter__(self) -> Iterator[dict]:
        place = current_place(self.rank, self.world_size)
        stats = PipelineStats(place.rank, place.worker_id, self.epoch)
        self.stats = stats  # the latest iteration's counts, for callers in this process
        rng = worker_rng(self.seed, self.epoch, place)
        quota = 0
        if not self.whole_utt and not self.repeat and self.config.sample_num_per_epoch > 0:
            quota = my_quota(self.config.sample_num_per_epoch, place)
            if quota == 0:
                self._report(stats, place)
                return
        try:
            for sample in self._samples(place, rng, stats):
                sample["wav"] = torch.from_numpy(np.ascontiguousarray(sample["wav"],
                                                                      dtype=np.float32))
                stats.deliver(sample["key"])
                yield sample
                if quota and stats.yielded >= quota:
                    break
        finally:
            self._report(stats, place)
