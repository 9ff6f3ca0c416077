"""Counting what the input pipeline used, skipped or repaired, once per utterance and epoch.

Each dataloader worker keeps one :class:`PipelineStats` per epoch. A skipped
utterance is logged once (key and reason) and counted once, however often a
repeated list (``sample_num_per_epoch``) brings it back; repairs that keep the
utterance (first channel of a multi-channel file, resampling an unexpected
sample rate) are counted once per utterance too, and so are the utterances used.
A bad noise or RIR file is kept by its key: every worker draws from the whole
noise and RIR lists, so the same file may fail in each of them. When a worker's
epoch ends its counts become a :class:`SkipSummary`, which merges with those of
the other workers (and, by the caller, of other ranks) into the one summary line
of the epoch. The skip reasons of the embedding loop and of extraction are named
here too.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Set, Tuple

from wespeaker_py.audio import errors as audio_errors
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.paths import rate_in_name

logger = get_logger(__name__)

# Skip reasons of the input pipeline, the embedding loop and extraction, kept in one place
# so that summaries are comparable. Unusable audio is counted under its error's ``reason``
# (wespeaker_py.audio.errors; wespeaker_py.errors.AudioInputError's for any other).
TOO_SHORT = audio_errors.AudioTooShortError.reason   # also the pipeline's length filter's
# the input pipeline's own
UNKNOWN_SPEAKER = "unknown_speaker"
NO_SPEAKER = "no_speaker"
BAD_SHARD = "bad_shard"
BAD_MEMBER = "bad_tar_member"
BAD_AUGMENT_SOURCE = "bad_augmentation_source"   # a noise or RIR file drawn and unreadable
# the embedding loop's (wespeaker_py.runtime.embedding)
TOO_SHORT_FOR_MODEL = "too_short_for_model"
NON_FINITE_EMBEDDING = "non_finite_embedding"
# extraction's (wespeaker_py.inference.extraction)
BAD_KEY = "key_not_writable"
REPEATED_KEY = "repeated_key"
NOT_DELIVERED = "unreadable_or_too_short"  # dropped by the input pipeline, which logs why
# a shard list's utterances expected but neither embedded nor skipped on their own: lost with
# a missing or damaged shard (which counts once, as BAD_SHARD)
NOT_DELIVERED_FROM_SHARDS = "lost_with_a_bad_shard"

# Repairs (the utterance is kept).
MULTI_CHANNEL = "multi_channel_first_kept"   # other channel policies: multi_channel_<policy>_kept
RESAMPLED = "resampled"
NARROW_BAND = "narrow_band_{}hz"   # also resampled: came at that rate, its top band empty

# Example keys kept per reason, skipped or repaired, in a summary (the per-key
# warnings of skips list them all).
MAX_EXAMPLES = 5


@dataclass
class SkipSummary:
    """What the input pipeline used, skipped and repaired in one epoch, mergeable over
    workers and ranks.

    Each (rank, worker) reads a disjoint part of the list in an epoch and counts
    each of its keys at most once, so merged counts of utterances (and shards) are
    counts of distinct keys. Bad noise and RIR files (:data:`BAD_AUGMENT_SOURCE`) are
    drawn by every worker from the whole lists: they are kept as keys, which a merge
    unites, so each counts once however many workers and ranks drew it (and, in a
    run's total over epochs, once in all).
    :meth:`to_dict` / :meth:`from_dict` give a JSON-able form to send between
    processes (``torch.distributed.all_gather_object``, or a dataloader worker's report file).
    """

    utterances: int = 0   # used (delivered at least once, never skipped)
    shards: int = 0       # opened, bad ones included (a shard list's)
    skipped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    examples: Dict[str, List[str]] = field(default_factory=dict)
    bad_sources: Set[str] = field(default_factory=set)
    workers: int = 0

    @property
    def num_skipped(self) -> int:
        """Distinct utterances (or shards) skipped."""
        return sum(self.skipped.values())

    def merge(self, *others: "SkipSummary") -> "SkipSummary":
        """Add the counts of ``others`` into this summary; return it."""
        for other in others:
            self.utterances += other.utterances
            self.shards += other.shards
            self.skipped.update(other.skipped)
            self.repaired.update(other.repaired)
            self.bad_sources.update(other.bad_sources)
            self.workers += other.workers
            for reason, keys in other.examples.items():
                kept = self.examples.setdefault(reason, [])
                kept.extend(key for key in keys if key not in kept)
                del kept[MAX_EXAMPLES:]
        return self

    def narrow_band(self) -> Dict[int, int]:
        """Kept utterances that came at a narrow-band rate (:data:`NARROW_BAND`), by rate."""
        counts: Dict[int, int] = {}
        for reason, count in self.repaired.items():
            rate = rate_in_name(NARROW_BAND, reason)
            if rate is not None:
                counts[rate] = counts.get(rate, 0) + count
        return counts

    def skipped_beyond(self, max_fraction: float) -> List[str]:
        """What was skipped beyond ``max_fraction`` of what the epoch met: ``"36 of the 40
        utterances read (90%)"`` for utterances, ``"9 of the 10 shards opened (90%)"`` for
        broken shards (:data:`BAD_SHARD`, whose utterances are never met); empty when
        neither is above it. Bad augmentation sources do not count: their chunks are kept;
        nor do the utterances the length filter left out (:data:`TOO_SHORT`): a config's
        ``filter_args`` chose that, and they are neither read nor broken."""
        bad_shards = self.skipped[BAD_SHARD]
        bad_utterances = self.num_skipped - bad_shards - self.skipped[TOO_SHORT]
        beyond = []
        for bad, met, what in ((bad_utterances, self.utterances + bad_utterances,
                                "utterances read"), (bad_shards, self.shards, "shards opened")):
            if bad and bad / met > max_fraction:
                beyond.append(f"{bad} of the {met} {what} ({100 * bad / met:.0f}%)")
        return beyond

    @classmethod
    def merged(cls, summaries: Iterable["SkipSummary"]) -> "SkipSummary":
        """A new summary holding the sum of ``summaries``."""
        return cls().merge(*summaries)

    def to_dict(self) -> Dict[str, object]:
        """Plain JSON-able form (see :meth:`from_dict`)."""
        return {"utterances": self.utterances, "shards": self.shards,
                "skipped": dict(self.skipped), "repaired": dict(self.repaired),
                "examples": {reason: list(keys) for reason, keys in self.examples.items()},
                "bad_sources": sorted(self.bad_sources), "workers": self.workers}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> "SkipSummary":
        """Rebuild a summary from :meth:`to_dict` output."""
        return cls(utterances=int(data.get("utterances", 0)), shards=int(data.get("shards", 0)),
                   skipped=Counter(data.get("skipped", {})),
                   repaired=Counter(data.get("repaired", {})),
                   examples={reason: list(keys)
                             for reason, keys in dict(data.get("examples", {})).items()},
                   bad_sources=set(data.get("bad_sources", ())),
                   workers=int(data.get("workers", 0)))

    def describe(self) -> str:
        """``N utterances used[, from S shards]; skipped: <describe_skipped()>; repaired:
        reason=n``."""
        repaired = ", ".join(f"{reason}={count}" for reason, count in sorted(self.repaired.items()))
        shards = f", from {self.shards} shards" if self.shards else ""
        return (f"{self.utterances} utterances used{shards}; skipped: {self.describe_skipped()}; "
                f"repaired: {repaired or 'none'}")

    def describe_skipped(self) -> str:
        """``reason=n (e.g. key, ...), ...`` by reason, or ``none``; bad augmentation sources
        among them, by their number of distinct files."""
        skipped = Counter(self.skipped)
        examples = dict(self.examples)
        if self.bad_sources:
            skipped[BAD_AUGMENT_SOURCE] = len(self.bad_sources)
            examples[BAD_AUGMENT_SOURCE] = sorted(self.bad_sources)[:MAX_EXAMPLES]
        parts = []
        for reason, count in sorted(skipped.items()):
            shown = examples.get(reason)
            parts.append(f"{reason}={count}" + (f" (e.g. {', '.join(shown)})" if shown else ""))
        return ", ".join(parts) or "none"

    def log(self, what: str) -> None:
        """Log one line ``<what>: <describe()>``; a warning when anything was skipped."""
        (logger.warning if self.skipped or self.bad_sources else logger.info)(
            "%s: %s", what, self.describe())


class PipelineStats:
    """Skip and repair counters of one worker for one epoch (each key counted once)."""

    def __init__(self, rank: int = 0, worker_id: int = 0, epoch: int = 0):
        self.rank = rank
        self.worker_id = worker_id
        self.epoch = epoch
        self.yielded = 0   # samples handed on (a quota and the repeats' progress count them)
        self.skipped: Counter = Counter()
        self.repaired: Counter = Counter()
        self.bad_sources: Set[str] = set()
        self._used_keys: Set[str] = set()
        self._shards: Set[str] = set()
        self._skipped_keys: Set[str] = set()
        self._repaired_keys: Set[Tuple[str, str]] = set()
        self._examples: Dict[str, List[str]] = {}

    def deliver(self, key: str) -> None:
        """Count a sample handed on, a chunk of utterance ``key``."""
        self.yielded += 1
        self._used_keys.add(key)

    def open_shard(self, location: str) -> None:
        """Count a shard opened (each once, however often a repeated list comes back)."""
        self._shards.add(location)

    def skip(self, key: str, reason: str, detail: str = "") -> None:
        """Count and log a skipped utterance (or shard) the first time it happens this epoch."""
        if key in self._skipped_keys:
            return
        self._skipped_keys.add(key)
        self.skipped[reason] += 1
        self._keep_example(reason, key)
        suffix = f": {detail}" if detail else ""
        logger.warning("skipping %s (%s)%s", key, reason, suffix)

    def skip_source(self, key: str, detail: str) -> None:
        """Count and log a noise or RIR file that could not be used (:data:`BAD_AUGMENT_SOURCE`)
        the first time this worker draws it this epoch."""
        if key in self.bad_sources:
            return
        self.bad_sources.add(key)
        logger.warning("skipping %s (%s): %s", key, BAD_AUGMENT_SOURCE, detail)

    def repair(self, reason: str, key: Optional[str] = None) -> None:
        """Count a kept utterance that needed fixing (channel, sample rate), once per key."""
        if key is not None:
            if (key, reason) in self._repaired_keys:
                return
            self._repaired_keys.add((key, reason))
            self._keep_example(reason, key)
        self.repaired[reason] += 1

    def _keep_example(self, reason: str, key: str) -> None:
        examples = self._examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(key)

    def summary(self) -> SkipSummary:
        """This worker's counts as a mergeable :class:`SkipSummary`."""
        # an utterance skipped once (a random chunk of NaNs) counts as skipped only
        return SkipSummary(utterances=len(self._used_keys - self._skipped_keys),
                           shards=len(self._shards), skipped=Counter(self.skipped),
                           repaired=Counter(self.repaired),
                           examples={reason: list(keys) for reason, keys in self._examples.items()},
                           bad_sources=set(self.bad_sources), workers=1)

    def log_summary(self) -> None:
        """Log this worker's counts at debug level (the epoch's line is the merged summary)."""
        logger.debug("data epoch %d rank %d worker %d: %s", self.epoch, self.rank,
                     self.worker_id, self.summary().describe())
