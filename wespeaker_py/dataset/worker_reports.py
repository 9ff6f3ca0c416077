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
as the package's temporary files are (:func:`~wespeaker_py.utils.file_utils.temp_name_for`),
so that the folder of a killed process is removed by the next one made on the machine.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
import weakref
from typing import Any, Dict, Tuple

from wespeaker_py.utils.file_utils import atomic_open, remove_stale_temp_files, temp_name_for

_NAME = "wespeaker_py_worker_counts"


def _remove_folder(folder: str, owner: int) -> None:
    if os.getpid() == owner:   # a forked worker's copy of the object must leave it
        shutil.rmtree(folder, ignore_errors=True)


class WorkerReports:
    """One ``{epoch}_{worker}.json`` per worker and epoch in a private temporary folder."""

    def __init__(self) -> None:
        base = tempfile.gettempdir()
        remove_stale_temp_files(base)   # the folders of processes killed before
        self.folder = temp_name_for(os.path.join(base, _NAME))
        os.mkdir(self.folder, 0o700)
        weakref.finalize(self, _remove_folder, self.folder, os.getpid())

    def put(self, epoch: int, worker_id: int, num_workers: int, counts: Dict[str, Any]) -> None:
        """Leave a worker's counts for ``epoch`` (from the worker; written atomically)."""
        path = os.path.join(self.folder, f"{epoch}_{worker_id}.json")
        with atomic_open(path) as handle:
            json.dump({"num_workers": num_workers, "counts": counts}, handle)

    def take(self, epoch: int) -> Tuple[Dict[int, Dict[str, Any]], int]:
        """``({worker id: counts}, number of workers)`` of the reports for ``epoch`` so far
        (number 0: none yet); the files read are removed."""
        reports, num_workers = {}, 0
        for path in glob.glob(os.path.join(self.folder, f"{epoch}_*.json")):
            with open(path) as handle:
                report = json.load(handle)
            os.remove(path)
            worker_id = int(os.path.basename(path)[:-len(".json")].split("_")[1])
            reports[worker_id] = report["counts"]
            num_workers = int(report["num_workers"])
        return reports, num_workers

    def clear(self) -> None:
        """Remove every report not taken (earlier epochs nobody asked about)."""
        for path in glob.glob(os.path.join(self.folder, "*.json")):
            os.remove(path)
