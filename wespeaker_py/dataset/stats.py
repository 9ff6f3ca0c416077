"""Counting what the input pipeline skipped or repaired, with one log line per event.

Each dataloader worker keeps one :class:`PipelineStats` per epoch. A skipped
utterance is logged once (key and reason) and counted; repairs that keep the
utterance (first channel of a multi-channel file, resampling an unexpected
sample rate) are only counted. The summary is logged when the worker's epoch
iteration ends.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, Set, Tuple

from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

# Reasons used across the pipeline (kept in one place so summaries are comparable).
MISSING = "missing_file"
EMPTY = "empty_file"
NOT_AUDIO = "not_audio"
TRUNCATED = "truncated"
TOO_SHORT = "too_short"
UNKNOWN_SPEAKER = "unknown_speaker"
NO_SPEAKER = "no_speaker"
BAD_SHARD = "bad_shard"
BAD_MEMBER = "bad_tar_member"
PIPE_FAILED = "pipe_failed"

# Repairs (the utterance is kept).
MULTI_CHANNEL = "multi_channel_first_kept"
RESAMPLED = "resampled"


class PipelineStats:
    """Skip and repair counters of one worker for one epoch."""

    def __init__(self, rank: int = 0, worker_id: int = 0, epoch: int = 0):
        self.rank = rank
        self.worker_id = worker_id
        self.epoch = epoch
        self.yielded = 0
        self.skipped: Counter = Counter()
        self.repaired: Counter = Counter()
        self._logged: Set[Tuple[str, str]] = set()

    def skip(self, key: str, reason: str, detail: str = "") -> None:
        """Count a skipped utterance (or shard) and log it the first time it happens."""
        self.skipped[reason] += 1
        if (key, reason) not in self._logged:
            self._logged.add((key, reason))
            suffix = f": {detail}" if detail else ""
            logger.warning("skipping %s (%s)%s", key, reason, suffix)

    def repair(self, reason: str) -> None:
        """Count a kept utterance that needed fixing (channel, sample rate)."""
        self.repaired[reason] += 1

    def as_dict(self) -> Dict[str, Dict[str, int]]:
        """Counts as plain dicts (for tests and reports)."""
        return {"skipped": dict(self.skipped), "repaired": dict(self.repaired),
                "yielded": {"samples": self.yielded}}

    def log_summary(self) -> None:
        """Log the epoch summary of this worker (warning when anything was skipped)."""
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        repaired = ", ".join(f"{k}={v}" for k, v in sorted(self.repaired.items())) or "none"
        log = logger.warning if self.skipped else logger.info
        log("data epoch %d rank %d worker %d: %d samples; skipped: %s; repaired: %s",
            self.epoch, self.rank, self.worker_id, self.yielded, skipped, repaired)
