"""The hidden folder where an extraction keeps its resumable parts until they are merged.

``<output dir>/.extract_jobs.<ark name>/`` holds ``manifest.json`` (what is being
extracted: list, model, number of jobs, chunk frames and seed), the job lists ``split_NNN.list``
when there are several jobs, and one part ark/scp per job, appended to as embeddings
are made. A run that finds the folder with the same manifest continues each part
where it stopped. One that differs only in the number of jobs (``--nj`` lowered after
a job ran out of memory, say) keeps what was finished: the parts are merged into a
``carried_NNN.ark`` that every job skips and the final merge takes in. Any other
difference means different work, and the folder is emptied first. Only a successful
merge into the output removes it, writing a raw list's embeddings in the list's order and
a shard list's sorted by key (whatever the jobs of the runs that made them). While a run
works on it, it holds a lock on ``<folder>.lock`` beside it: a second run into the same
output stops at once instead of appending to the same parts. The lock is the process's own
(:func:`~wespeaker_py.utils.locks.hold_lock`), not its children's, so it goes when the run is
killed even while a reader worker it forked lives on.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
from typing import IO, TYPE_CHECKING, Any, Dict, List, MutableMapping, Optional

from wespeaker_py.audio import DEFAULT_CHANNEL, ChannelChoice, is_pipe
from wespeaker_py.config import ModelConfig, config_to_dict
from wespeaker_py.errors import RunFailedError
from wespeaker_py.dataset.lists import read_data_list, read_list_file, unreadable_shards
from wespeaker_py.dataset.stats import NOT_DELIVERED_FROM_SHARDS
from wespeaker_py.inference.parts import merge_embedding_arks, recover_part
from wespeaker_py.io.ark import key_problem, scp_path_for
from wespeaker_py.utils.atomic_files import (DiskFullError, atomic_open, read_json_or_none,
                                             require_writable, size_text,
                                             write_json_atomically)
from wespeaker_py.utils.list_jobs import JobTally, check_missing_inputs
from wespeaker_py.utils.locks import drop_lock, hold_lock
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.paths import file_digest, require_input_file
from wespeaker_py.utils.tables import DataFormatError, read_key_value

if TYPE_CHECKING:
    from wespeaker_py.inference.extraction import ExtractionOptions

logger = get_logger(__name__)

WORK_PREFIX = ".extract_jobs."


def _model_identity(model_path: str) -> Dict[str, Any]:
    info = os.stat(model_path)
    return {"path": os.path.abspath(model_path), "size": info.st_size,
            "mtime_ns": info.st_mtime_ns}


def work_dir_for(embed_ark: str) -> str:
    """The resumable work folder of ``embed_ark``."""
    embed_ark = os.path.abspath(embed_ark)
    return os.path.join(os.path.dirname(embed_ark), WORK_PREFIX + os.path.basename(embed_ark))


def split_data_list(data_list: str, num_jobs: int, out_dir: str) -> List[str]:
    """Write ``data_list`` as at most ``num_jobs`` contiguous, near-equal, non-empty parts."""
    lines = [text for _, text in read_list_file(data_list)]
    if not lines:
        raise DataFormatError(data_list, None, "the data list is empty")
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


class ExtractionWork:
    """The work folder of one output ark: manifest, job lists and part arks; a context
    manager, holding the folder's lock (see the module) until its block ends.

    Made before any model loads; it checks what can be checked then: the model
    file exists and is not empty, the output folder is writable, and the list is
    read whole (:meth:`_check_list`). ``expected_utterances``, for a shard list (whose
    utterances only its tar files name), is how many it holds: :meth:`finish` counts those
    never delivered as skipped. ``options`` (default: ``ExtractionOptions()``): what the
    embeddings are made with, which a resumed run must share, and the run's
    ``max_fail_fraction``.
    """

    def __init__(self, embed_ark: str, data_list: str, data_type: str, model_path: str,
                 config: ModelConfig, num_jobs: int,
                 options: Optional["ExtractionOptions"] = None,
                 expected_utterances: Optional[int] = None):
        from wespeaker_py.inference.extraction import ExtractionOptions   # it imports this
        options = options or ExtractionOptions()
        require_input_file(model_path, "model")
        scp_path_for(embed_ark)
        require_writable(embed_ark)
        self.embed_ark = os.path.abspath(embed_ark)
        self.data_list = data_list
        self.data_type = data_type
        self.max_fail_fraction = options.max_fail_fraction
        self.expected_utterances = expected_utterances
        self._check_list()
        self.num_jobs = num_jobs
        self.path = work_dir_for(embed_ark)
        self._lock = self._take_lock()
        try:
            self._prepare(model_path, config, options.chunk_identity(), options.channel,
                          [fill.digest for fill in options.band_fills])
        except BaseException:
            self._release_lock()
            raise

    def _prepare(self, model_path: str, config: ModelConfig, chunk: Optional[List[int]],
                 channel: ChannelChoice, band_fills: Optional[List[str]]) -> None:
        """Continue, carry or empty the work folder as its manifest says; write the new one."""
        num_jobs = self.num_jobs
        manifest = {"data_list": os.path.abspath(self.data_list),
                    "list_sha1": file_digest(self.data_list, "sha1"),
                    "data_type": self.data_type, "model": _model_identity(model_path),
                    "config": json.dumps(config_to_dict(config), sort_keys=True, default=str),
                    "num_jobs": num_jobs, "chunk": chunk}
        if channel != DEFAULT_CHANNEL:   # absent for the default: earlier work still resumes
            manifest["channel"] = channel
        if band_fills:                   # digests of the band fills in use; absent: none
            manifest["band_fills"] = sorted(band_fills)
        manifest_path = os.path.join(self.path, "manifest.json")
        previous = read_json_or_none(manifest_path)
        other_jobs = (previous is not None and previous != manifest
                      and dict(previous, num_jobs=num_jobs) == manifest)
        if other_jobs:
            self._carry_parts(previous["num_jobs"])
        elif previous is not None and previous != manifest:
            logger.info("%s belongs to other work (list, model or chunks changed); "
                        "starting over", self.path)
        if previous != manifest and not other_jobs and os.path.isdir(self.path):
            shutil.rmtree(self.path)
        os.makedirs(self.path, exist_ok=True)
        self.resumed = previous == manifest
        if not self.resumed:
            write_json_atomically(manifest_path, manifest, indent=1)

    def _carry_parts(self, old_jobs: int) -> None:
        """Merge the parts of a run with ``old_jobs`` jobs into a new carried ark and remove
        them and their job lists. A part whose keys are all carried already (a run cut
        short after the merge, before the removal) is not merged twice."""
        carried = set(self.carried_keys())
        fresh = []
        for part in sorted(glob.glob(os.path.join(self.path, "part_*.ark"))):
            keys = recover_part(part)
            if keys and not carried.issuperset(keys):
                fresh.append(part)
        if fresh:
            out = os.path.join(self.path, f"carried_{len(self.carried_arks()):03d}.ark")
            count = merge_embedding_arks(fresh, out)
            logger.info("%s: the %d embeddings finished by %d jobs are kept; %d jobs go on "
                        "from there", self.path, count, old_jobs, self.num_jobs)
        for name in os.listdir(self.path):
            if name.startswith(("part_", "split_")):
                os.remove(os.path.join(self.path, name))

    def carried_arks(self) -> List[str]:
        """The carried arks of earlier runs with another number of jobs, in order."""
        return sorted(glob.glob(os.path.join(self.path, "carried_*.ark")))

    def carried_keys(self) -> List[str]:
        """The keys of the carried arks: finished, skipped by every job."""
        return [key for ark in self.carried_arks() for key in read_key_value(scp_path_for(ark))]

    def _take_lock(self) -> IO[str]:
        """Hold ``<work folder>.lock`` (:func:`~wespeaker_py.utils.locks.hold_lock`; released,
        and removed, when the ``with`` block of the work ends; by the system when the process
        does); a :class:`RunFailedError` when another run holds it."""
        lock_path = self.path + ".lock"
        os.makedirs(os.path.dirname(lock_path), exist_ok=True)
        handle = hold_lock(lock_path)
        if handle is None:
            raise RunFailedError(f"another extraction into {self.embed_ark} is running "
                                 f"(it holds {lock_path}); let it finish or stop it, then "
                                 "run this again")
        return handle

    def __enter__(self) -> "ExtractionWork":
        return self

    def __exit__(self, *exc) -> None:
        self._release_lock()

    def _release_lock(self) -> None:
        if not self._lock.closed:
            drop_lock(self._lock)

    def _check_list(self) -> None:
        """Read the whole list before any work: a bad line, or a key given twice, names its
        lines (no job meets it after the model loaded, nor the merge after every embedding
        was made); the files of a raw list that do not exist, or the tar files of a shard
        list that are missing or unreadable, must not fail the run by themselves
        (:func:`~wespeaker_py.utils.list_jobs.check_missing_inputs`)."""
        entries = read_data_list(self.data_list, self.data_type, require_spk=False)
        if not entries:
            raise DataFormatError(self.data_list, None, "the data list is empty")
        if self.data_type != "raw":
            missing = unreadable_shards(entries)
        else:
            for (line_no, _), utt in zip(read_list_file(self.data_list), entries):
                problem = key_problem(utt.key)
                if problem:
                    raise DataFormatError(self.data_list, line_no,
                                          f"key {utt.key!r} cannot be an embedding's: {problem}")
            missing = [utt.wav for utt in entries
                       if not is_pipe(utt.wav) and not os.path.exists(utt.wav)]
        check_missing_inputs(self.data_list, len(entries), missing, self.max_fail_fraction)

    def job_lists(self) -> List[str]:
        """The list of each job: the data list itself for one job, else its splits, written
        anew on every run (the manifest fixes the list and the number of jobs, so a resumed
        run's splits are the same; splits left by a run cut short while writing them are
        never taken for all of them)."""
        if self.num_jobs == 1:
            return [self.data_list]
        return split_data_list(self.data_list, self.num_jobs, self.path)

    def shard_utterances_of(self, job_list: str) -> Optional[int]:
        """About how many utterances not yet carried the shards of ``job_list`` (the data
        list or one of its splits) hold: the work's ``expected_utterances`` shared by shard
        count, for a progress bar; None for a raw list or without the count."""
        if self.expected_utterances is None or self.data_type == "raw":
            return None
        remaining = max(0, self.expected_utterances - len(self.carried_keys()))
        shards = len(read_list_file(self.data_list))
        return round(remaining * len(read_list_file(job_list)) / shards)

    def part_ark(self, job: int) -> str:
        """Where job ``job`` appends its embeddings."""
        return os.path.join(self.path, f"part_{job:03d}.ark")

    def done_keys(self, job: int) -> List[str]:
        """Keys job ``job`` already wrote (its part is cut back to its last whole entry)."""
        part = self.part_ark(job)
        if not os.path.exists(part) and not os.path.exists(scp_path_for(part)):
            return []
        return recover_part(part)

    def finish(self, num_parts: int, skipped: MutableMapping[str, int], made: int = 0) -> int:
        """Merge the parts into the output (atomically, in :meth:`_output_order`), remove the
        folder; return the count. ``made``: how many embeddings this run wrote into the
        parts (a folder removed under the run loses them: an error saying so).

        ``skipped`` counts this run's skips by reason; the utterances of a shard list's
        ``expected_utterances`` neither finished nor skipped are added to it
        (``NOT_DELIVERED_FROM_SHARDS``). When the list job failed
        (:meth:`~wespeaker_py.utils.list_jobs.JobTally.check`: nothing embedded, or
        more than the work's ``max_fail_fraction`` skipped) nothing is written and
        :class:`~wespeaker_py.errors.RunFailedError` says why; the finished
        embeddings stay for a rerun (with a larger ``max_fail_fraction``).
        """
        parts = [self.part_ark(job) for job in range(num_parts)
                 if os.path.exists(scp_path_for(self.part_ark(job)))] + self.carried_arks()
        finished = ([key for job in range(num_parts) for key in self.done_keys(job)]
                    + self.carried_keys())
        if self.expected_utterances is not None and self.data_type != "raw":
            lost = self.expected_utterances - len(finished) - sum(skipped.values())
            if lost > 0:
                skipped[NOT_DELIVERED_FROM_SHARDS] = skipped.get(NOT_DELIVERED_FROM_SHARDS,
                                                                 0) + lost
        if not finished:
            if made and not os.path.isdir(self.path):
                raise RunFailedError(
                    f"the work folder {self.path} was removed while this run wrote into it: "
                    f"the {made} embeddings made are lost; run the same command again")
            shutil.rmtree(self.path, ignore_errors=True)
        JobTally.of(len(finished), skipped).check(self.data_list, self.max_fail_fraction,
                                                  f"{self.embed_ark} was not written",
                                                  unit="utterances")
        try:
            count = merge_embedding_arks(parts, self.embed_ark, self._output_order(finished))
        except DiskFullError as error:
            held = size_text(sum(os.path.getsize(part) for part in parts))
            raise RunFailedError(
                f"{error}: the {len(finished)} finished embeddings stay in {self.path} for a "
                f"rerun of the same command, which only merges them; the merge needs as much "
                f"free space again as they take ({held})") from error
        shutil.rmtree(self.path, ignore_errors=True)
        return count

    def _output_order(self, finished: List[str]) -> List[str]:
        """The order of the output's keys, whatever jobs and runs made them: a raw list's
        own; the ``finished`` keys sorted (as ``LC_ALL=C sort`` sorts a Kaldi table) for a
        shard list, whose keys are only in its tar files and reach the jobs' parts in the
        order their embeddings were made."""
        if self.data_type != "raw":
            return sorted(finished)
        return [utt.key for utt in read_data_list(self.data_list, "raw", require_spk=False)]
