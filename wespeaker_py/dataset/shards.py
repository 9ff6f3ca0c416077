"""Tar shards: streaming utterances out of them and writing them.

A shard is a tar file whose members come in groups sharing a prefix: ``KEY.spk``
(the speaker, UTF-8 text) and ``KEY.<audio extension>`` (the file's bytes, any
format soundfile reads). The key is the member name up to its last dot, so keys
may themselves contain dots and slashes (``id10001/1zcIwhmdeo4/00001.wav``).
Shards are read as a stream (``r|*``), so a ``pipe:COMMAND`` location or a URL
works the same as a local path. A shard must end with tar's end-of-archive block
(followed by nothing but zero padding); one that does not was cut off or damaged,
and is counted as a bad shard after its readable utterances.

Beside each shard it writes, :func:`make_shards` notes ``SHARD.digest``: a digest of
the entries the shard holds (key, speaker, audio path or command, VAD segments, and the
:data:`~wespeaker_py.utils.paths.FileStamp` of each audio file) and the shard's size.
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
import subprocess
import tarfile
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import BinaryIO, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from wespeaker_py.audio import (INT16_SCALE, AudioCheckError, apply_vad, is_pipe, open_audio,
                                wav_bytes)
from wespeaker_py.dataset import stats as reasons
from wespeaker_py.dataset.lists import (AUDIO_EXTENSIONS, PIPE_PREFIX, TableEntry, Utterance,
                                        audio_extension, check_decodable, local_shard_file)
from wespeaker_py.dataset.stats import PipelineStats
from wespeaker_py.errors import WespeakerError
from wespeaker_py.utils.atomic_files import atomic_open, atomic_path
from wespeaker_py.utils.logging_utils import get_logger
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
        process = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, stderr=stderr)
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
            elif suffix in AUDIO_EXTENSIONS:
                group["audio"] = payload
        damage = tar.damage()
    if current_key is not None:
        utt = finish(current_key, group)
        if utt is not None:
            yield utt
    if damage is not None:
        raise tarfile.ReadError(damage)


def _audio_suffix(entry: TableEntry) -> str:
    if is_pipe(entry.wav):
        return "wav"
    suffix = audio_extension(entry.wav)
    if suffix not in AUDIO_EXTENSIONS:
        raise ValueError(f"utterance {entry.key}: {entry.wav!r} has no known audio extension "
                         f"({', '.join(sorted(AUDIO_EXTENSIONS))})")
    return suffix


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


def _entry_bytes(entry: TableEntry) -> bytes:
    if entry.vad is not None:
        return _voiced_wav_bytes(entry)
    if is_pipe(entry.wav):
        return _pipe_wav_bytes(entry)
    with open(entry.wav, "rb") as handle:
        return handle.read()


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


class ShardInputError(WespeakerError, OSError):
    """An utterance whose audio cannot go into a shard (unreadable, or VAD segments that do
    not fit it): shards are made from good data, so the job stops naming it."""


def write_shard(entries: Sequence[TableEntry], tar_path: str) -> str:
    """Write one tar shard (``KEY.spk`` then ``KEY.<ext>`` per utterance) atomically; an
    utterance that cannot be read raises :class:`ShardInputError` naming it."""
    with atomic_path(tar_path) as tmp_path:
        with tarfile.open(tmp_path, "w") as tar:
            for entry in entries:
                suffix = "wav" if entry.vad is not None else _audio_suffix(entry)
                try:
                    payload = _entry_bytes(entry)
                except (OSError, AudioCheckError) as err:
                    raise ShardInputError(f"utterance {entry.key}: cannot read {entry.wav!r}: "
                                          f"{err}") from err
                _add_member(tar, f"{entry.key}.spk", entry.spk.encode("utf-8"))
                _add_member(tar, f"{entry.key}.{suffix}", payload)
    return tar_path


def _audio_stamps(entries: Sequence[TableEntry]) -> List[Optional[FileStamp]]:
    """The :data:`FileStamp` of each entry's audio file (None for a pipe command).

    Audio files that are missing (or not files) raise ``FileNotFoundError`` with their
    count and the first few, before any shard is written.
    """
    stamps = [None if is_pipe(entry.wav) else file_stamp(entry.wav) for entry in entries]
    missing = [entry for entry, stamp in zip(entries, stamps)
               if stamp is None and not is_pipe(entry.wav)]
    if missing:
        examples = "; ".join(f"utterance {entry.key}: {entry.wav!r}" for entry in missing[:3])
        raise FileNotFoundError(f"{len(missing)} of {len(entries)} audio files are missing "
                                f"or not files, e.g. {examples}")
    return stamps


def _shard_digest(entries: Sequence[TableEntry], stamps: Sequence[Optional[FileStamp]]) -> str:
    """The digest of what a shard of ``entries`` holds, in order, with the stamp of each
    entry's audio file (so a file rewritten since makes the shard's digest another)."""
    hasher = hashlib.sha256()
    for entry, stamp in zip(entries, stamps):
        row = [entry.key, entry.spk, entry.wav, entry.vad, stamp]
        hasher.update(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    return hasher.hexdigest()


def _digest_note(tar_path: str) -> str:
    return tar_path + DIGEST_SUFFIX


def _shard_is_complete(tar_path: str, digest: str) -> bool:
    """True when ``tar_path`` was written whole from entries of ``digest``: its note names
    that digest and the shard's size now (a shard cut short or replaced differs)."""
    try:
        with open(_digest_note(tar_path), "r", encoding="utf-8") as handle:
            noted = handle.read().split()
        return noted == [digest, str(os.path.getsize(tar_path))]
    except OSError:
        return False


def _write_noted_shard(entries: Sequence[TableEntry], tar_path: str, digest: str) -> str:
    """:func:`write_shard`, then its digest note. The old note goes first, so a shard
    whose rewrite fails is never taken for complete."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(_digest_note(tar_path))
    write_shard(entries, tar_path)
    with atomic_open(_digest_note(tar_path), "w", encoding="utf-8") as handle:
        handle.write(f"{digest} {os.path.getsize(tar_path)}\n")
    return tar_path


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


def _write_shards(jobs: Sequence[ShardJob], num_threads: int) -> None:
    """Write the ``(entries, tar_path, digest)`` shards with parallel writers.

    The first failure is raised as soon as it happens: the shards not started yet are
    cancelled (those being written are finished, and kept by the next run).
    """
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        futures = [pool.submit(_write_noted_shard, *job) for job in jobs]
        try:
            for future in progress_bar(as_completed(futures), total=len(futures),
                                       desc="shards", enabled=len(futures) >= 2):
                future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def make_shards(entries: Sequence[TableEntry], shards_dir: str, shard_list: str,
                num_utts_per_shard: int = 1000, num_threads: int = 1,
                prefix: str = "shards", shuffle: bool = False, seed: int = 42) -> List[str]:
    """Write ``entries`` into tar shards with parallel writers, then the ``shard.list``.

    Shards are named ``{prefix}_{index:09d}.tar``; the list is written (atomically)
    only after every shard is complete. Missing audio files, audio that soundfile
    cannot decode, and audio stored as is (no VAD) without an audio extension are
    refused before anything is written. A ``command |`` entry is stored as a WAV
    re-encoded from the command's output, so that its header matches its data.
    A shard already complete with the same entries (its digest note) is kept; when
    any shard is written, the old list goes first, as it would name a mix of runs. The
    shards of an earlier run beyond this run's count are removed.
    """
    if num_utts_per_shard <= 0:
        raise ValueError(f"num_utts_per_shard must be positive, got {num_utts_per_shard}")
    entries = list(entries)
    if shuffle:
        random.Random(seed).shuffle(entries)
    # fail before writing anything
    check_decodable(entries)
    for entry in entries:
        if entry.vad is None:
            _audio_suffix(entry)
    stamps = _audio_stamps(entries)
    paths, jobs = [], []
    for index, start in enumerate(range(0, len(entries), num_utts_per_shard)):
        group = entries[start:start + num_utts_per_shard]
        path = os.path.join(shards_dir, f"{prefix}_{index:09d}.tar")
        digest = _shard_digest(group, stamps[start:start + num_utts_per_shard])
        paths.append(path)
        if not _shard_is_complete(path, digest):
            jobs.append((group, path, digest))
    if jobs:
        os.makedirs(shards_dir, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(shard_list)
        _write_shards(jobs, num_threads)
    with atomic_open(shard_list, "w", encoding="utf-8") as handle:
        for path in paths:
            handle.write(path + "\n")
    removed = (_remove_outnumbered_shards(shards_dir, prefix, len(paths))
               if os.path.isdir(shards_dir) else 0)
    logger.info("wrote %d utterances into %d shards (%d kept from an earlier run, %d of "
                "its shards beyond these removed), list %s", len(entries), len(paths),
                len(paths) - len(jobs), removed, shard_list)
    return paths
