"""Tar shards: streaming utterances out of them and writing them.

A shard is a tar file whose members come in groups sharing a prefix: ``KEY.spk``
(the speaker, UTF-8 text) and ``KEY.<audio suffix>`` (the file's bytes, any format
soundfile reads; the suffixes of :data:`~wespeaker_py.dataset.lists.SHARD_AUDIO_SUFFIXES`
are taken for audio). The key is the member name up to its last dot, so keys
may themselves contain dots and slashes (``id10001/1zcIwhmdeo4/00001.wav``).
Shards are read as a stream (``r|*``), so a ``pipe:COMMAND`` location or a URL
works the same as a local path. A shard must end with tar's end-of-archive block
(followed by nothing but zero padding); one that does not was cut off or damaged,
and is counted as a bad shard after its readable utterances.

Beside each shard it writes, :func:`make_shards` notes ``SHARD.digest`` (JSON): a digest
of the entries the shard was made from (key, speaker, audio path or command, VAD segments,
and the :data:`~wespeaker_py.utils.paths.FileStamp` of each audio file, or of the files a
command names), the shard's size, and the utterances left out of it as unreadable.
A second run keeps the shards whose note matches.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import re
import shlex
import subprocess
import tarfile
import tempfile
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import BinaryIO, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile as sf

from wespeaker_py.audio import (INT16_SCALE, AudioCheckError, apply_vad, is_pipe, open_audio,
                                wav_bytes)
from wespeaker_py.audio.errors import AudioMissingError
from wespeaker_py.dataset import stats as reasons
from wespeaker_py.dataset.lists import (AUDIO_EXTENSIONS, PIPE_PREFIX, SHARD_AUDIO_SUFFIXES,
                                        TableEntry, Utterance, audio_extension, check_decodable,
                                        format_suffix, local_shard_file)
from wespeaker_py.dataset.stats import PipelineStats
from wespeaker_py.errors import RunFailedError, first_line
from wespeaker_py.utils.atomic_files import atomic_open, atomic_path
from wespeaker_py.utils.list_jobs import DEFAULT_MAX_FAIL_FRACTION, JobTally
from wespeaker_py.utils.logging_utils import get_logger, listed_names
from wespeaker_py.utils.paths import FileStamp, file_stamp
from wespeaker_py.utils.progress import progress_bar

logger = get_logger(__name__)

# seconds an http(s)/ftp shard may send nothing before it counts as a bad shard
URL_TIMEOUT_S = 60.0
DIGEST_SUFFIX = ".digest"


@contextlib.contextmanager
def open_shard_stream(location: str) -> Iterator[BinaryIO]:
    """Open a shard location for reading: a path, ``file://``/``http(s)://`` URL, or ``pipe:CMD``.

    A pipe command that exits with a non-zero status raises ``OSError`` when the
    stream is closed, so a failed download is not mistaken for a short shard. A URL
    whose server sends nothing for ``URL_TIMEOUT_S`` seconds raises ``TimeoutError``.
    """
    path = local_shard_file(location)
    if path is not None:
        with open(path, "rb") as handle:
            yield handle
    elif location.startswith(PIPE_PREFIX):
        with _pipe_stream(location[len(PIPE_PREFIX):]) as stream:
            yield stream
    else:   # a remote URL
        with urllib.request.urlopen(location, timeout=URL_TIMEOUT_S) as response:
            try:
                yield response
            except TimeoutError as err:
                raise TimeoutError(f"the server sent nothing for {URL_TIMEOUT_S:g} s") from err


@contextlib.contextmanager
def _pipe_stream(command: str) -> Iterator[BinaryIO]:
    with tempfile.TemporaryFile() as stderr:
        # stdin from /dev/null, as for wav.scp commands (audio.read_pipe)
        process = subprocess.Popen(command, shell=True, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=stderr)
        try:
            yield process.stdout
        except BaseException:
            # the reader stopped early (or failed): the command's status means nothing now
            process.kill()
            process.stdout.close()
            process.wait()
            raise
        # drain the tar's end padding so the writer never sees a broken pipe
        while process.stdout.read(1 << 16):
            pass
        process.stdout.close()
        status = process.wait()
        if status != 0:
            stderr.seek(0)
            message = stderr.read().decode("utf-8", "replace").strip()[-200:]
            raise OSError(f"'{command}' exited with {status}: {message}")


def _split_member_name(name: str):
    base = os.path.basename(name)
    dot = name.rfind(".")
    if dot <= len(name) - len(base):
        return None, None
    return name[:dot], name[dot + 1:]


class _EndMarkerTarInfo(tarfile.TarInfo):
    """Notes on the archive being read when a header read meets the end-of-archive block."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:
            tar.end_marker_seen = True
            raise


class _CheckedTarFile(tarfile.TarFile):
    """A tar reader that tells an archive's end from a stream that broke off.

    tarfile stops without an error at a missing, cut or invalid header, which
    would make a damaged shard look like a whole, shorter one.
    """

    tarinfo = _EndMarkerTarInfo
    end_marker_seen = False

    def damage(self) -> Optional[str]:
        """Once every member is read: why the archive is not whole, or None if it is."""
        if not self.end_marker_seen:
            return "no end-of-archive marker: truncated or corrupt"
        while True:
            block = self.fileobj.read(1 << 16)
            if not block:
                return None
            if block.strip(b"\0"):
                return ("data after an all-zero header block: a zeroed header (corrupt) "
                        "or archives concatenated")


def iter_shard(location: str, stats: PipelineStats) -> Iterator[Utterance]:
    """Yield the utterances of one shard, audio kept as bytes (decoded later, partially).

    A shard that cannot be opened, breaks off mid-way, stalls (a URL) or lacks its
    end-of-archive marker is counted and logged; the utterances read before the
    break are still yielded. A group without audio is skipped and counted; one
    without ``.spk`` yields ``spk=None``.
    """
    try:
        with open_shard_stream(location) as stream:
            yield from _iter_tar_groups(stream, location, stats)
    except (OSError, tarfile.TarError, EOFError) as err:
        stats.skip(location, reasons.BAD_SHARD, str(err))


def _iter_tar_groups(stream: BinaryIO, location: str,
                     stats: PipelineStats) -> Iterator[Utterance]:
    current_key: Optional[str] = None
    group: dict = {}

    def finish(key: str, members: dict) -> Optional[Utterance]:
        if "audio" not in members:
            stats.skip(key, reasons.BAD_MEMBER, f"no audio member in {location}")
            return None
        return Utterance(key=key, spk=members.get("spk"), data=members["audio"])

    with _CheckedTarFile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, suffix = _split_member_name(member.name)
            if key is None:
                stats.skip(member.name, reasons.BAD_MEMBER, f"no extension, in {location}")
                continue
            if current_key is not None and key != current_key:
                utt = finish(current_key, group)
                if utt is not None:
                    yield utt
                group = {}
            current_key = key
            payload = tar.extractfile(member).read()
            if suffix == "spk":
                group["spk"] = payload.decode("utf-8", "replace").strip()
            elif suffix in SHARD_AUDIO_SUFFIXES:
                group["audio"] = payload
        damage = tar.damage()
    if current_key is not None:
        utt = finish(current_key, group)
        if utt is not None:
            yield utt
    if damage is not None:
        raise tarfile.ReadError(damage)


def _file_member(path: str) -> Tuple[str, bytes]:
    """A plain audio file as a shard stores it: ``(suffix, the file's bytes)``.

    Its header is checked as the readers check it (:func:`open_audio`: missing, empty, not
    audio, no frames, a WAV cut short), without decoding the audio. The suffix is the
    file's own when :data:`AUDIO_EXTENSIONS` has it, else named from the format soundfile
    finds in it (:func:`format_suffix`: NIST SPHERE, AIFF, AU, a file without extension),
    so that the shard's reader takes the member for audio.
    """
    with open_audio(path):
        pass
    suffix = audio_extension(path)
    if suffix not in AUDIO_EXTENSIONS:
        suffix = format_suffix(sf.info(path).format)
    with open(path, "rb") as handle:
        return suffix, handle.read()


def _voiced_wav_bytes(entry: TableEntry) -> bytes:
    """Decode, keep the VAD segments and re-encode as 16-bit WAV (WeSpeaker's shard VAD)."""
    with open_audio(entry.wav, name=entry.key) as handle:
        voiced = apply_vad(handle, entry.vad)
        samples = voiced.read_all() / INT16_SCALE
        return wav_bytes(samples.astype(np.float32), handle.samplerate, "PCM_16")


def _pipe_wav_bytes(entry: TableEntry) -> bytes:
    """A ``command |`` entry's output, read as the raw-list path reads it, as a WAV whose
    header matches its data: every channel, in the output's sample format where WAV has
    it (else 32-bit float, exact for decoded audio).

    Streaming writers (sox) put an estimated length in the header; such output is
    accepted with a warning when read from the command, but the same bytes stored
    verbatim would be refused as truncated each time the shard is read.
    """
    with open_audio(entry.wav, name=entry.key) as handle:
        frames = handle.read_frames(0, handle.frames, dtype="float64")
        subtype = handle.subtype if sf.check_format("WAV", handle.subtype) else "FLOAT"
        return wav_bytes(frames, handle.samplerate, subtype)


def _entry_member(entry: TableEntry) -> Tuple[str, bytes]:
    """``(suffix, bytes)`` of an entry's audio member; audio that cannot be read raises the
    :class:`AudioCheckError` the readers would."""
    if entry.vad is not None:
        return "wav", _voiced_wav_bytes(entry)
    if is_pipe(entry.wav):
        return "wav", _pipe_wav_bytes(entry)
    return _file_member(entry.wav)


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


@dataclass(frozen=True)
class LeftOut:
    """An utterance left out of its shard: its key, the skip reason (an
    :class:`AudioCheckError`'s ``reason``) and the error's message."""

    key: str
    reason: str
    message: str


def write_shard(entries: Sequence[TableEntry], tar_path: str) -> List[LeftOut]:
    """Write one tar shard (``KEY.spk`` then ``KEY.<suffix>`` per utterance) atomically.

    An utterance whose audio cannot be read (a failed or silent pipe; a missing, empty or
    unreadable file; VAD segments that do not fit it) is left out, logged, and returned.
    """
    left_out = []
    with atomic_path(tar_path) as tmp_path:
        with tarfile.open(tmp_path, "w") as tar:
            for entry in entries:
                try:
                    suffix, payload = _entry_member(entry)
                except AudioCheckError as err:
                    left_out.append(LeftOut(entry.key, err.reason, first_line(err)))
                    logger.warning("utterance %s is left out of %s (%s): %s", entry.key,
                                   os.path.basename(tar_path), err.reason, first_line(err))
                    continue
                _add_member(tar, f"{entry.key}.spk", entry.spk.encode("utf-8"))
                _add_member(tar, f"{entry.key}.{suffix}", payload)
    return left_out


# What a shard's digest notes of an entry's audio: the FileStamp of its file (None when
# there is none), or for a pipe the [path, FileStamp] of each file its command names.
AudioStamp = Union[Optional[FileStamp], List[Tuple[str, FileStamp]]]


def _command_files(command: str) -> List[str]:
    """The words of a ``wav.scp`` command that are paths of existing files, once each."""
    try:
        words = shlex.split(command)
    except ValueError:   # unbalanced quotes: the shell will say so when it runs
        words = command.split()
    return [word for word in dict.fromkeys(words) if os.path.isfile(word)]


def _audio_stamp(wav: str) -> AudioStamp:
    if is_pipe(wav):
        return [(path, file_stamp(path)) for path in _command_files(wav.rstrip()[:-1])]
    return file_stamp(wav)


def _shard_digest(entries: Sequence[TableEntry], stamps: Sequence[AudioStamp]) -> str:
    """The digest of what a shard of ``entries`` holds, in order, with the stamp of each
    entry's audio (so a file rewritten since, or one a pipe command reads, makes the
    shard's digest another)."""
    hasher = hashlib.sha256()
    for entry, stamp in zip(entries, stamps):
        row = [entry.key, entry.spk, entry.wav, entry.vad, stamp]
        hasher.update(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    return hasher.hexdigest()


def _digest_note(tar_path: str) -> str:
    return tar_path + DIGEST_SUFFIX


def _noted_left_out(tar_path: str, digest: str) -> Optional[List[LeftOut]]:
    """The utterances left out of ``tar_path`` when it was written whole from entries of
    ``digest`` (its note names that digest and the shard's size now); None when it was
    not (a shard cut short, replaced, of other entries, or without a note)."""
    try:
        with open(_digest_note(tar_path), "r", encoding="utf-8") as handle:
            note = json.load(handle)
        size = os.path.getsize(tar_path)
    except (OSError, ValueError):   # ValueError: a note of another form
        return None
    if not isinstance(note, dict) or [note.get("digest"), note.get("size")] != [digest, size]:
        return None
    try:
        return [LeftOut(*row) for row in note.get("left_out", [])]
    except TypeError:   # rows of another form
        return None


def _write_noted_shard(entries: Sequence[TableEntry], tar_path: str,
                       digest: str) -> List[LeftOut]:
    """:func:`write_shard`, then its digest note (with the utterances left out). The old
    note goes first, so a shard whose rewrite fails is never taken for complete."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(_digest_note(tar_path))
    left_out = write_shard(entries, tar_path)
    note = {"digest": digest, "size": os.path.getsize(tar_path),
            "left_out": [[item.key, item.reason, item.message] for item in left_out]}
    with atomic_open(_digest_note(tar_path), "w", encoding="utf-8") as handle:
        handle.write(json.dumps(note, ensure_ascii=False) + "\n")
    return left_out


ShardJob = Tuple[Sequence[TableEntry], str, str]


def _remove_outnumbered_shards(shards_dir: str, prefix: str, count: int) -> int:
    """Remove the shards ``{prefix}_N.tar`` with N >= ``count`` that an earlier run of
    more shards wrote here (only those with a digest note: files of our own making), so
    the folder holds what the new list names. Returns how many went."""
    pattern = re.compile(re.escape(prefix) + r"_(\d{9})\.tar")
    removed = 0
    for name in sorted(os.listdir(shards_dir)):
        match = pattern.fullmatch(name)
        path = os.path.join(shards_dir, name)
        if match and int(match.group(1)) >= count and os.path.isfile(_digest_note(path)):
            os.remove(path)
            os.remove(_digest_note(path))
            removed += 1
    return removed


def _write_shards(jobs: Sequence[ShardJob], num_threads: int) -> List[LeftOut]:
    """Write the ``(entries, tar_path, digest)`` shards with parallel writers; return the
    utterances left out of them.

    The first failure (not a bad utterance: those are left out) is raised as soon as it
    happens: the shards not started yet are cancelled (those being written are finished,
    and kept by the next run).
    """
    left_out: List[LeftOut] = []
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        futures = [pool.submit(_write_noted_shard, *job) for job in jobs]
        try:
            for future in progress_bar(as_completed(futures), total=len(futures),
                                       desc="shards", enabled=len(futures) >= 2):
                left_out += future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return left_out


def _check_missing_files(entries: Sequence[TableEntry], stamps: Sequence[AudioStamp],
                         source: str, max_fail_fraction: float) -> None:
    """Before any shard is written: fail when the audio files that are missing (or not
    files) would alone fail the job (:meth:`JobTally.check`); log their count and the
    first few. The others are left out of their shards, as any unreadable utterance."""
    missing = [entry.wav for entry, stamp in zip(entries, stamps)
               if stamp is None and not is_pipe(entry.wav)]
    if not missing:
        return
    logger.warning("%d of the %d audio files of %s are missing or not files: %s",
                   len(missing), len(entries), source, listed_names(missing, most=3))
    JobTally.of(len(entries) - len(missing), {AudioMissingError.reason: len(missing)}).check(
        source, max_fail_fraction, "no shard was written", unit="utterances")


def _write_list(shard_list: str, paths: Sequence[str]) -> bool:
    """Write ``shard_list`` (atomically) unless it names ``paths`` already; True if written.
    A list kept as it is keeps its time, so the stages made from it stay up to date."""
    text = "".join(path + "\n" for path in paths)
    with contextlib.suppress(OSError):
        with open(shard_list, "r", encoding="utf-8") as handle:
            if handle.read() == text:
                return False
    with atomic_open(shard_list, "w", encoding="utf-8") as handle:
        handle.write(text)
    return True


def make_shards(entries: Sequence[TableEntry], shards_dir: str, shard_list: str,
                num_utts_per_shard: int = 1000, num_threads: int = 1,
                prefix: str = "shards", shuffle: bool = False, seed: int = 42,
                source: str = "wav.scp",
                max_fail_fraction: float = DEFAULT_MAX_FAIL_FRACTION) -> List[str]:
    """Write ``entries`` into tar shards with parallel writers, then the ``shard.list``.

    Shards are named ``{prefix}_{index:09d}.tar``; the list is written (atomically)
    only after every shard is complete. Audio of a format soundfile cannot decode here
    (m4a, wma) is refused before anything is written. An utterance whose audio cannot be
    read (:func:`write_shard`) is left out of its shard, logged and counted, as in the
    other list jobs (:mod:`wespeaker_py.utils.list_jobs`): the job ends with ``N done,
    M skipped (reasons)`` and fails (:class:`RunFailedError`, no list) when nothing was
    done or more than ``max_fail_fraction`` of the utterances of ``source`` (the table
    they came from, as messages name it) were left out; missing files that alone are too
    many fail it before any shard is written. A ``command |`` entry is stored as a WAV
    re-encoded from the command's output, so that its header matches its data.

    A shard already complete with the same entries (its digest note: keys, speakers,
    audio paths or commands, VAD, and the stamps of the audio files, a command's included)
    is kept, with the utterances its note says were left out. When any shard is written,
    the old list goes first, as it would name a mix of runs; a list that names the same
    shards is kept as it is. The shards of an earlier run beyond this run's count are
    removed.
    """
    if num_utts_per_shard <= 0:
        raise ValueError(f"num_utts_per_shard must be positive, got {num_utts_per_shard}")
    entries = list(entries)
    if shuffle:
        random.Random(seed).shuffle(entries)
    check_decodable(entries)
    stamps = [_audio_stamp(entry.wav) for entry in entries]
    _check_missing_files(entries, stamps, source, max_fail_fraction)
    paths, jobs, left_out = _plan_shards(entries, stamps, shards_dir, prefix,
                                         num_utts_per_shard)
    if jobs:
        os.makedirs(shards_dir, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(shard_list)
        left_out += _write_shards(jobs, num_threads)
    tally = JobTally.of(len(entries) - len(left_out),
                        Counter(item.reason for item in left_out))
    try:
        tally.check(source, max_fail_fraction, f"{shard_list} was not written",
                    unit="utterances")
    except RunFailedError:
        with contextlib.suppress(FileNotFoundError):
            os.remove(shard_list)
        raise
    listed = _write_list(shard_list, paths)
    removed = (_remove_outnumbered_shards(shards_dir, prefix, len(paths))
               if os.path.isdir(shards_dir) else 0)
    log = logger.warning if left_out else logger.info
    if jobs or listed or removed:
        log("wrote %s: %d shards (%d written, %d kept from an earlier run, %d of its shards "
            "beyond these removed); utterances: %s", shard_list, len(paths), len(jobs),
            len(paths) - len(jobs), removed, tally.describe())
    else:
        log("%s is up to date: its %d shards hold the utterances of %s as they are now "
            "(their digest notes match); utterances: %s", shard_list, len(paths), source,
            tally.describe())
    return paths


def _plan_shards(entries: Sequence[TableEntry], stamps: Sequence[AudioStamp], shards_dir: str,
                 prefix: str, num_utts_per_shard: int
                 ) -> Tuple[List[str], List[ShardJob], List[LeftOut]]:
    """The shards of ``entries``: ``(paths, the jobs of those to write, the utterances left
    out of those kept)``; a shard whose digest note matches is kept (its left-out
    utterances logged again, so that each run names them)."""
    paths: List[str] = []
    jobs: List[ShardJob] = []
    left_out: List[LeftOut] = []
    for index, start in enumerate(range(0, len(entries), num_utts_per_shard)):
        group = entries[start:start + num_utts_per_shard]
        path = os.path.join(shards_dir, f"{prefix}_{index:09d}.tar")
        digest = _shard_digest(group, stamps[start:start + num_utts_per_shard])
        paths.append(path)
        noted = _noted_left_out(path, digest)
        if noted is None:
            jobs.append((group, path, digest))
            continue
        for item in noted:
            logger.warning("utterance %s stays left out of %s, kept from an earlier run "
                           "(%s): %s", item.key, os.path.basename(path), item.reason,
                           item.message)
        left_out += noted
    return paths, jobs, left_out
