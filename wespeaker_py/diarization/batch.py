"""Diarizing many recordings (a ``wav.scp``, or ``{recording: audio path}``) into one RTTM
file or one RTTM per recording, each recording kept as soon as it is done.

A run works in a work folder: ``<output dir>/.diarize_jobs.<rttm name>/`` beside one
RTTM file, or ``DIR/.diarize_jobs/`` in a folder of RTTMs (an output ``DIR/`` that ends
in ``/`` or is an existing folder: ``DIR/<recording>.rttm`` each, an empty one for a
recording without speech). The work folder holds ``manifest.json`` (what the work is: the
model, every diarization setting, whether each recording has its own speaker count) and a
part per finished recording, ``parts/<recording>.json`` (what it was made from: the audio
entry as listed and, for a file, its :func:`~wespeaker_py.utils.paths.file_stamp`, and its
own speaker count; its turns, and whether it had no speech and why, was capped at
``max_speakers``, or had fewer speakers than a ``num_speakers`` given), written atomically
as soon as the recording is done (in a folder of RTTMs, before its RTTM, which a run writes
again from the part when it is missing).

Run again with the same manifest, a run skips the recordings of its list whose part was made
from the same audio entry, file and count; a recording added to the list, or whose entry,
file or count changed, is diarized (again); one that could not be read has no part, so it is
tried again. Parts of recordings not in the list are left as they are (in a folder of RTTMs
they back the RTTMs of an earlier list). The work folder of other work (another model or
settings) is emptied beside one RTTM file, and refused in a folder of RTTMs unless
``overwrite`` (its RTTMs may be someone's results); so is, in a folder of RTTMs, an RTTM of
a listed recording that no part backs. Only the final merge into one RTTM file (atomic, in
the order of the recordings) removes its work folder; a folder of RTTMs keeps its own, the
record of what its RTTMs are. A run holds ``<work folder>.lock``
(:mod:`wespeaker_py.utils.locks`): a second run into the same output stops at once.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from wespeaker_py.audio.files import is_pipe
from wespeaker_py.diarization.options import ClusteringOptionError, check_cluster_options
from wespeaker_py.diarization.pipeline import DiarizationResult, Diarizer
from wespeaker_py.diarization.recordings import RecordingInputError
from wespeaker_py.diarization.rttm import rttm_channel, write_rttm
from wespeaker_py.diarization.turns import Turn
from wespeaker_py.errors import AudioInputError, RunFailedError, WespeakerError
from wespeaker_py.utils.atomic_files import (read_json_or_none, require_writable,
                                             write_json_atomically)
from wespeaker_py.utils.list_jobs import DEFAULT_MAX_FAIL_FRACTION, JobTally
from wespeaker_py.utils.locks import drop_lock, hold_lock
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.paths import OutputNotWritableError, file_stamp, refuse_output_over_input
from wespeaker_py.utils.progress import progress_bar
from wespeaker_py.utils.tables import read_wav_scp

logger = get_logger(__name__)

WORK_PREFIX = ".diarize_jobs."   # + the RTTM file's name, beside it
FOLDER_WORK = ".diarize_jobs"    # in a folder of RTTMs
MANIFEST = "manifest.json"
PARTS = "parts"
# recordings named per kind in a summary; the log names every one as it happens
LISTED = 5

# a wav.scp path, or {recording: audio path or ``command |``}
Recordings = Union[str, "os.PathLike[str]", Mapping[str, str]]


def writes_folder(output: str) -> bool:
    """Whether ``output`` is a folder of one RTTM per recording: it ends in ``/`` or is an
    existing folder."""
    return str(output).endswith(os.sep) or os.path.isdir(output)


def check_output(output: str) -> None:
    """Fail now, before any work, when ``output`` (an RTTM file, or a folder of them: see
    :func:`writes_folder`) cannot be written."""
    folder = writes_folder(output)
    if folder and os.path.exists(os.path.abspath(output)) and not os.path.isdir(output):
        raise OutputNotWritableError(f"{output} is a file; give a folder for one RTTM per "
                                     f"recording, or a file name without the trailing /")
    require_writable(output, folder_ok=folder)


def recording_source(audio: str, num_speakers: Optional[int] = None) -> Dict[str, Any]:
    """What a recording's part is made from, as JSON reads it back: its audio entry as
    listed; for a file, its stamp (mtime, size, inode; None for a command or a missing
    file); and its own speaker count when the run gives each recording one."""
    stamp = None if is_pipe(audio) else file_stamp(audio)
    return {"audio": audio, "stamp": None if stamp is None else list(stamp),
            "num_speakers": None if num_speakers is None else int(num_speakers)}


def _first(items: Sequence[str], separator: str = ", ") -> str:
    """The first :data:`LISTED` of ``items`` joined, and how many more there are."""
    more = len(items) - LISTED
    return separator.join(items[:LISTED]) + (f" ({more} more)" if more > 0 else "")


@dataclass
class FinishedRecording:
    """What a run keeps of a diarized recording: its turns, and what its summary says of it
    (see :class:`~wespeaker_py.diarization.pipeline.DiarizationResult`)."""

    turns: List[Turn]
    silence: str = ""
    capped: bool = False
    unmet_num_speakers: Optional[int] = None

    @classmethod
    def of(cls, result: DiarizationResult) -> "FinishedRecording":
        return cls(result.turns, result.silence, result.capped, result.unmet_num_speakers)

    def to_json(self) -> Dict[str, Any]:
        """As a part file holds it."""
        return dict(dataclasses.asdict(self),
                    turns=[[turn.start, turn.end, turn.speaker] for turn in self.turns])

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FinishedRecording":
        """From a part file's content (:meth:`to_json`); ``ValueError``/``TypeError``/
        ``KeyError`` when it is not one."""
        turns = [Turn(float(start), float(end), str(speaker))
                 for start, end, speaker in data["turns"]]
        return cls(turns, str(data["silence"]), bool(data["capped"]),
                   data["unmet_num_speakers"])


@dataclass
class BatchSummary:
    """What a run over many recordings did: recordings diarized (``resumed`` of them by an
    earlier run of the same work), without speech (``silent``), capped at ``max_speakers``
    (they may have more speakers), with fewer speakers than the ``num_speakers`` given
    (``unmet``), and failed (with why)."""

    diarized: int = 0
    silent: List[str] = field(default_factory=list)
    capped: List[str] = field(default_factory=list)
    unmet: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)
    reasons: Counter = field(default_factory=Counter)  # the failures counted by reason
    resumed: int = 0

    def count(self, key: str, finished: FinishedRecording) -> None:
        """Count the diarized recording ``key``."""
        self.diarized += 1
        if not finished.turns:
            self.silent.append(key)
        if finished.capped:
            self.capped.append(key)
        if finished.unmet_num_speakers is not None:
            self.unmet.append(key)

    def tally(self) -> JobTally:
        """The run as a list job: recordings diarized, and the failed ones by reason."""
        return JobTally.of(self.diarized, self.reasons)

    def describe(self) -> str:
        """The run in one line, naming the first :data:`LISTED` recordings of each kind."""
        earlier = f" ({self.resumed} from an earlier run)" if self.resumed else ""
        text = f"{self.tally().describe(earlier)}: {self.diarized} recordings diarized"
        if self.silent:
            text += f", {len(self.silent)} without speech (no turns): {_first(self.silent)}"
        if self.capped:
            text += (f", {len(self.capped)} with more speakers than max_speakers (capped): "
                     f"{_first(self.capped)}")
        if self.unmet:
            text += (f", {len(self.unmet)} with fewer speakers than num_speakers (too little "
                     f"speech): {_first(self.unmet)}")
        if self.failed:
            text += f", {len(self.failed)} failed: " + _first(
                [f"{key}: {why}" for key, why in self.failed.items()], "; ")
        return text


class BatchWork:
    """The work folder of one batch output (see the module): the manifest, a part per
    finished recording and, for a folder of RTTMs, the RTTMs; a context manager holding
    the work's lock.

    ``manifest``: what the work is (JSON data); ``channel``: the RTTM channel field
    (:func:`~wespeaker_py.diarization.rttm.rttm_channel`).
    """

    def __init__(self, output: str, manifest: Mapping[str, Any], channel: int = 1,
                 overwrite: bool = False):
        self.per_recording = writes_folder(output)
        self.output = os.path.abspath(output)
        self.path = (os.path.join(self.output, FOLDER_WORK) if self.per_recording else
                     os.path.join(os.path.dirname(self.output),
                                  WORK_PREFIX + os.path.basename(self.output)))
        # as it reads back from manifest.json (tuples as lists, keys as strings)
        self.manifest = json.loads(json.dumps(manifest, sort_keys=True, default=str))
        self.channel = channel
        self.overwrite = overwrite
        self._lock: Optional[IO[str]] = None

    def __enter__(self) -> "BatchWork":
        lock_path = self.path + ".lock"
        os.makedirs(os.path.dirname(lock_path), exist_ok=True)
        self._lock = hold_lock(lock_path)
        if self._lock is None:
            raise RunFailedError(f"another diarization into {self.output} is running (it "
                                 f"holds {lock_path}); let it finish or stop it, then run "
                                 f"this again")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._lock is not None and not self._lock.closed:
            drop_lock(self._lock)

    def rttm_path(self, key: str) -> str:
        """The RTTM of recording ``key`` in a folder of RTTMs."""
        return os.path.join(self.output, key + ".rttm")

    def _part_path(self, key: str) -> str:
        return os.path.join(self.path, PARTS, urllib.parse.quote(key, safe="") + ".json")

    def start(self, sources: Mapping[str, Mapping[str, Any]]
              ) -> Tuple[Dict[str, FinishedRecording], int]:
        """Continue the work of the same manifest, or start it (see the module). Return the
        recordings of ``sources`` (each recording's :func:`recording_source` now) that an
        earlier run finished from the same source (in a folder of RTTMs, an RTTM removed
        since is written again from its part), and how many others it finished from
        another source, whose parts (and RTTMs) are removed so that they are redone."""
        manifest_path = os.path.join(self.path, MANIFEST)
        previous = read_json_or_none(manifest_path)
        if previous != self.manifest:
            if self.per_recording:
                self._clear_folder(previous is not None, list(sources))
            elif os.path.isdir(self.path):
                logger.warning("%s belongs to other work (model or settings changed); "
                               "starting over", self.path)
            if os.path.isdir(self.path):
                shutil.rmtree(self.path)
            os.makedirs(os.path.join(self.path, PARTS))
            write_json_atomically(manifest_path, self.manifest, indent=1, sort_keys=True)
            return {}, 0
        os.makedirs(os.path.join(self.path, PARTS), exist_ok=True)
        finished, changed = {}, []
        for key, source in sources.items():
            part = read_json_or_none(self._part_path(key))
            try:
                done = FinishedRecording.from_json(part)
            except (TypeError, ValueError, KeyError):   # no part (or not one): not done
                continue
            if part.get("source") == source:
                finished[key] = done
            else:
                changed.append(key)
        if self.per_recording:
            # an RTTM that this work's part backs is its own, even when it is redone
            self._clear_folder(False, [key for key in sources
                                       if key not in finished and key not in changed])
        for key in changed:
            if self.per_recording and os.path.exists(self.rttm_path(key)):
                os.remove(self.rttm_path(key))
            os.remove(self._part_path(key))
        for key, done in finished.items():
            if self.per_recording and not os.path.isfile(self.rttm_path(key)):
                self._write_rttm(key, done)
        return finished, len(changed)

    def _clear_folder(self, other_work: bool, keys: Sequence[str]) -> None:
        """A folder of RTTMs of other work, or holding RTTMs of the recordings ``keys`` that
        no run of this work wrote, is refused; unless ``overwrite``, which removes those."""
        present = [key for key in keys if os.path.exists(self.rttm_path(key))]
        if not other_work and not present:
            return
        what = ("the RTTMs of other work (another model or settings)" if other_work
                else f"{len(present)} RTTM file(s) of these recordings that this work did not "
                     f"write (e.g. {self.rttm_path(present[0])})")
        if not self.overwrite:
            raise OutputNotWritableError(f"{self.output} holds {what}; write into another "
                                         f"folder, or start over in this one with --force "
                                         f"(overwrite=True)")
        logger.warning("%s holds %s: starting over (--force); the RTTMs of these recordings "
                       "are written again", self.output, what)
        for key in present:
            os.remove(self.rttm_path(key))

    def _write_rttm(self, key: str, finished: FinishedRecording) -> None:
        write_rttm(self.rttm_path(key), {key: finished.turns}, self.channel)

    def store(self, key: str, finished: FinishedRecording, source: Mapping[str, Any]) -> None:
        """Keep the finished recording ``key``, made from ``source``
        (:func:`recording_source`): its part, then its RTTM in a folder of RTTMs."""
        write_json_atomically(self._part_path(key), dict(finished.to_json(), source=source))
        if self.per_recording:
            self._write_rttm(key, finished)

    def finish(self, finished: Mapping[str, FinishedRecording]) -> None:
        """One RTTM file: write the turns of ``finished`` into it (atomically, in its order),
        then remove the work folder. A folder of RTTMs is complete already."""
        if self.per_recording:
            return
        write_rttm(self.output, {key: item.turns for key, item in finished.items()},
                   self.channel)
        shutil.rmtree(self.path)

    def kept_in(self) -> str:
        """Where the recordings finished so far are, for a message."""
        return self.output if self.per_recording else self.path


def _recordings_of(recordings: Recordings) -> Dict[str, str]:
    """``{recording: audio}`` of a wav.scp path or of a mapping, each key checked."""
    if isinstance(recordings, (str, os.PathLike)):
        table = read_wav_scp(os.fspath(recordings))
    elif isinstance(recordings, Mapping):
        table = dict(recordings)
        bad = [key for key in table if not isinstance(key, str) or not key
               or any(char.isspace() for char in key)]
        if bad:
            raise RecordingInputError(f"recording {bad[0]!r}: a recording name must be text "
                                      f"without whitespace (an RTTM field)")
        if not table:
            raise RecordingInputError("no recordings to diarize")
    else:
        raise WespeakerError(f"recordings must be the path of a wav.scp file or a "
                             f"{{recording: audio path}} mapping, got a "
                             f"{type(recordings).__name__}; diarize files one by one with "
                             f"diarize()")
    return table


def _check_file_names(keys: Sequence[str], folder: str) -> None:
    """Every recording of a folder of RTTMs must name a file in it: ``<key>.rttm``."""
    for key in keys:
        if key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
            raise OutputNotWritableError(f"recording {key!r} cannot name its RTTM in {folder} "
                                         f"(<recording>.rttm); write one RTTM file instead")


def _check_speaker_counts(diarizer: Diarizer, recordings: Mapping[str, str], source: str,
                          speaker_counts: Mapping[str, int], settings: Mapping[str, Any]
                          ) -> None:
    """A count for every recording, each one the clustering can take, and no setting that
    only shapes an estimated count."""
    if settings.get("num_speakers") is not None:
        raise ClusteringOptionError("give num_speakers (every recording) or "
                                    "speaker_counts (each its own), not both")
    diarizer.options.check_count_given("each recording's, speaker_counts / --reco2num_spk",
                                       settings.get("min_speakers"),
                                       settings.get("max_speakers"))
    missing = [key for key in recordings if key not in speaker_counts]
    if missing:
        raise ClusteringOptionError(f"no speaker count for {len(missing)} recording(s) of "
                                    f"{source}: {', '.join(missing[:LISTED])}")
    for key in recordings:
        try:
            check_cluster_options(diarizer.options.cluster_method, speaker_counts[key])
        except ClusteringOptionError as error:
            raise ClusteringOptionError(f"the speaker count of {key}: {error}") from None


def diarize_wav_scp(diarizer: Diarizer, recordings: Recordings, output: str,
                    show_progress: bool = True,
                    max_fail_fraction: float = DEFAULT_MAX_FAIL_FRACTION,
                    speaker_counts: Optional[Mapping[str, int]] = None,
                    model_identity: Any = None, overwrite: bool = False,
                    **kwargs: Any) -> BatchSummary:
    """Diarize every recording of a ``wav.scp`` (its path) or of ``{recording: audio path}``
    into ``output``: one RTTM file, or a folder of one ``<recording>.rttm`` per recording
    (:func:`writes_folder`). Each recording is kept as soon as it is done, and a run cut
    short continues where it stopped when run again (see the module).

    ``speaker_counts`` (recording -> number of speakers, e.g. from
    :func:`~wespeaker_py.diarization.rttm.read_speaker_counts`) fixes each
    recording's count; it must name every recording, and comes without
    ``num_speakers`` and the settings that shape an estimated count
    (``min_cluster_size``, ``merge_threshold``, ``ahc_threshold``). ``kwargs`` go to
    :meth:`Diarizer.diarize` for every recording (``channel`` also sets the RTTM's
    channel field). ``model_identity`` (JSON data: the embedding model and the files beside
    it that diarization reads) goes into the manifest, so that work of another model is
    not continued; a run of the same work diarizes only the recordings added to the list
    or changed since (see the module). ``overwrite``: start over in a folder of RTTMs of other work.

    A malformed ``wav.scp`` line, a key given twice, a recording missing from
    ``speaker_counts``, or a setting that cannot apply is an error naming it, raised
    before any work; so is another run into the same output. A recording
    that cannot be read is logged, counted and skipped; one without speech gets
    no turns; both are listed in the returned summary, as are those with more
    speakers than ``max_speakers`` (capped) and fewer than a ``num_speakers`` given.
    Any other error stops the run, raised
    again with the recording's key and path in its message (of the same type where
    that type takes one message; the original as its cause). Nothing diarized, or more
    than ``max_fail_fraction`` of the recordings failed, is a
    :class:`~wespeaker_py.errors.RunFailedError` (:mod:`wespeaker_py.utils.list_jobs`)
    and no RTTM file is written (a folder keeps those of the recordings diarized).
    """
    wav_scp = os.fspath(recordings) if isinstance(recordings, (str, os.PathLike)) else None
    table = _recordings_of(recordings)
    source = wav_scp or "the recordings given"
    _check_before_work(diarizer, table, source, wav_scp, output, speaker_counts, kwargs)
    # not the list of recordings: a recording added to it, or changed, is diarized and the
    # others kept (each part says what audio it was made from)
    # nor each recording's own speaker count: its part keeps that
    manifest = {"model": model_identity, "options": dataclasses.asdict(diarizer.options),
                "settings": kwargs, "speaker_counts": speaker_counts is not None}
    work = BatchWork(output, manifest, rttm_channel(kwargs.get("channel", "first")), overwrite)
    with work:
        counts = speaker_counts or {}
        # taken once, before any recording is read: a file that changes later (even while
        # it is read) has another stamp next time, and is redone
        sources = {key: recording_source(audio, counts.get(key)) for key, audio in table.items()}
        finished, changed = work.start(sources)
        if finished or changed:
            _say_resumed(len(finished), len(table), changed, work.kept_in())
        summary = BatchSummary(resumed=len(finished))
        todo = [(key, path) for key, path in table.items() if key not in finished]
        finished.update(_diarize_and_keep(diarizer, todo, sources, work, summary,
                                          show_progress, speaker_counts, kwargs))
        in_order = {key: finished[key] for key in table if key in finished}
        for key, item in in_order.items():
            summary.count(key, item)
        if work.per_recording:
            outcome = f"the RTTMs of the {summary.diarized} recording(s) diarized are in {output}"
        else:
            outcome = (f"{output} was not written (the {summary.diarized} recording(s) "
                       f"diarized are kept in {work.path})")
        summary.tally().check(source, max_fail_fraction, outcome, unit="recordings")
        work.finish(in_order)
    logger.info("%s -> %s", summary.describe(), output)
    return summary


def _say_resumed(kept: int, listed: int, changed: int, where: str) -> None:
    """Warn (the CLI shows warnings) that ``kept`` of the ``listed`` recordings were done
    by an earlier run, and that ``changed`` of the others are diarized again."""
    todo = listed - kept
    counted = ((changed, "changed since"), (todo - changed, "new or not finished"))
    kinds = [f"{count} {kind}" for count, kind in counted if count]
    rest = f"with the other {todo} ({', '.join(kinds)})" if todo else "(nothing left to do)"
    logger.warning("%d of %d recordings already diarized in %s; continuing %s", kept, listed,
                   where, rest)


def _check_before_work(diarizer: Diarizer, table: Mapping[str, str], source: str,
                       wav_scp: Optional[str], output: str,
                       speaker_counts: Optional[Mapping[str, int]],
                       settings: Mapping[str, Any]) -> None:
    """Refuse, before any work, an output that cannot be written (over the ``wav_scp``,
    or a folder of RTTMs some recording cannot name a file in) and speaker counts that
    cannot apply to the recordings of ``table`` (from ``source``)."""
    refuse_output_over_input({"the output RTTM": output}, {"the wav.scp": wav_scp})
    check_output(output)
    if writes_folder(output):
        _check_file_names(list(table), output)
    if speaker_counts is not None:
        _check_speaker_counts(diarizer, table, source, speaker_counts, settings)


def _diarize_and_keep(diarizer: Diarizer, todo: Sequence[Tuple[str, str]],
                      sources: Mapping[str, Mapping[str, Any]], work: BatchWork,
                      summary: BatchSummary, show_progress: bool,
                      speaker_counts: Optional[Mapping[str, int]],
                      settings: Mapping[str, Any]) -> Dict[str, FinishedRecording]:
    """The recordings of ``todo`` (``(key, audio)`` pairs) diarized, each kept in ``work`` as
    soon as it is done with its ``sources[key]`` (:func:`recording_source`, taken before it
    was read); those that cannot be read are counted in ``summary``. Stopped by an error, it
    says that what it diarized is kept, and raises it again."""
    done: Dict[str, FinishedRecording] = {}
    try:
        for key, path in progress_bar(todo, desc="diarize", unit="rec",
                                      enabled=show_progress and bool(todo)):
            count = None if speaker_counts is None else speaker_counts[key]
            given = {} if count is None else {"num_speakers": count}
            result = _diarize_one(diarizer, key, path, summary, {**settings, **given})
            if result is not None:
                finished = FinishedRecording.of(result)
                work.store(key, finished, sources[key])
                done[key] = finished   # only once kept: a stop counts what is kept
    except BaseException:
        if done:
            logger.warning("stopped: the %d recording(s) diarized so far are kept in %s; "
                           "the same run again continues from there",
                           summary.resumed + len(done), work.kept_in())
        raise
    return done


def _diarize_one(diarizer: Diarizer, key: str, path: str, summary: BatchSummary,
                 settings: Mapping[str, Any]) -> Optional[DiarizationResult]:
    """The result of recording ``key``; None when it cannot be read (logged and counted in
    ``summary``). Any other error is raised again naming the recording."""
    try:
        result = diarizer.diarize(path, recording=key, **settings)
    except AudioInputError as err:
        logger.warning("skipping %s: %s", key, err)
        summary.failed[key] = str(err)
        summary.reasons[err.reason] += 1
        return None
    except Exception as err:  # noqa: BLE001 -- raised again, naming the recording
        named = naming_recording(err, key, path)
        if named is err:
            raise
        raise named from err
    if not result.turns:
        logger.warning("%s: no speech found%s, no turns written", key,
                       f" ({result.silence})" if result.silence else "")
    return result


def naming_recording(error: Exception, key: str, path: str) -> Exception:
    """An error of ``error``'s type whose message leads with the recording's key and path;
    ``error`` itself (the log names the recording) when its type is not built from one
    message."""
    message = f"recording {key} ({path}): {error}"
    try:
        named = type(error)(message)
    except Exception:  # noqa: BLE001 -- a type that needs other arguments
        named = None
    if named is None or str(named) != message:
        logger.error("recording %s (%s) failed", key, path)
        return error
    return named
