"""Where dataloader workers leave their epoch's skip counts for the process that made the dataset.

Each worker writes one small JSON file per epoch into a private temporary folder, and
:meth:`WorkerReports.take` reads and removes them. Files rather than a pipe or queue:

* a worker never blocks: a pipe that nobody empties (a loop that never asks for the
  counts) fills up and would stop the worker, and with it the training, for good;
* a worker starts no thread: a queue's feeder thread started in a forked worker can
  hang for good when the parent had threads of its own at the fork;
* workers started by fork, spawn or forkserver all reach the folder by its path.

The folder belongs to the process that made it, which removes it when the object is
garbage-collected or the process exits; copies in workers never remove it. It is named
as the package's temporary files are (:func:`~wespeaker_py.utils.atomic_files.temp_name_for`),
so that the folder of a killed process is removed by the next one this user makes on
the machine.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import weakref
from typing import Any, Dict, List, Optional, Tuple

from wespeaker_py.utils.atomic_files import (remove_stale_temp_files, temp_name_for,
                                             write_json_atomically)
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

_NAME = "wespeaker_py_worker_counts"


def _remove_folder(folder: str, owner: int) -> None:
    if os.getpid() == owner:   # a forked worker's copy of the object must leave it
        shutil.rmtree(folder, ignore_errors=True)


def _report_name(epoch: int, worker_id: int) -> str:
    return f"{epoch}_{worker_id}.json"


class WorkerReports:
    """One ``{epoch}_{worker}.json`` per worker and epoch in a private temporary folder.

    ``owner`` is the process that made it. Where no folder can be made (an unwritable
    temporary directory) it says so once and holds nothing: the counts of that
    process's workers are then missing, which :meth:`Dataset.epoch_summary
    <wespeaker_py.dataset.Dataset.epoch_summary>` reports.
    """

    def __init__(self) -> None:
        self.owner = os.getpid()
        base = tempfile.gettempdir()
        try:
            remove_stale_temp_files(base)   # the folders of processes killed before
            self.folder: Optional[str] = temp_name_for(os.path.join(base, _NAME))
            os.mkdir(self.folder, 0o700)
        except OSError as error:
            logger.warning("dataloader workers cannot report their skip counts: no folder "
                           "in %s (%s)", base, error)
            self.folder = None
            return
        weakref.finalize(self, _remove_folder, self.folder, self.owner)

    def put(self, epoch: int, worker_id: int, num_workers: int, counts: Dict[str, Any]) -> None:
        """Leave a worker's counts for ``epoch`` (from the worker; written atomically). A
        write that fails is warned about, not raised: counts never stop the data."""
        if self.folder is None:
            return
        try:
            write_json_atomically(os.path.join(self.folder, _report_name(epoch, worker_id)),
                                  {"num_workers": num_workers, "counts": counts})
        except OSError as error:
            logger.warning("worker %d could not report its skip counts of epoch %d: %s",
                           worker_id, epoch, error)

    def _names(self) -> List[str]:
        """The reports waiting (the temporary files of writers start with a dot)."""
        if self.folder is None:
            return []
        try:
            return [name for name in os.listdir(self.folder)
                    if name.endswith(".json") and not name.startswith(".")]
        except FileNotFoundError:   # removed under us (a cleaned /tmp): nothing waits
            return []

    def take(self, epoch: int) -> Tuple[Dict[int, Dict[str, Any]], int]:
        """``({worker id: counts}, number of workers)`` of the reports for ``epoch`` so far
        (number 0: none yet); the files read are removed."""
        reports, num_workers = {}, 0
        for name in self._names():
            report_epoch, _, worker = name[:-len(".json")].partition("_")
            if report_epoch != str(epoch):
                continue
            path = os.path.join(self.folder, name)
            with open(path) as handle:
                report = json.load(handle)
            os.remove(path)
            reports[int(worker)] = report["counts"]
            num_workers = int(report["num_workers"])
        return reports, num_workers

    def waiting_epochs(self) -> List[int]:
        """The epochs whose reports wait untaken."""
        return sorted({int(name.partition("_")[0]) for name in self._names()})

    def clear(self) -> None:
        """Remove every report not taken (earlier epochs nobody asked about)."""
        for name in self._names():
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.folder, name))
