#!/usr/bin/env python3
"""Build the four archives of the CN-Celeb v2 recipe from LibriSpeech read speech.

    python bench/make_fake_cnceleb.py --out DATA/download_data [--source DIR] [--seed 0]

A smoke test of examples/cnceleb/v2 on real speech (bench/run_cnceleb_smoke.sh): the
speech of librispeech_tc100 (123 LibriSpeech speakers, 505 utterances; the mini
recipe's copy, else ../shared/data) laid out as the releases local/prepare_data.sh
unpacks. It is CN-Celeb-shaped, not CN-Celeb: one read-speech recording per speaker,
the "genres" are labels. Into --out it writes

  cn-celeb_v2.tar.gz   CN-Celeb_flac/data/<id>/<genre>-01-NNN.flac: the mini recipe's
                       first two thirds of its training speakers as CN-Celeb1 dev
                       (id00000..., listed in dev/dev.lst) and the enrollment
                       utterances of its test speakers (id00800...); eval/enroll/
                       <id>-enroll.flac (those utterances joined), eval/test/
                       <id>-<genre>-01-NNN.flac (the rest of the speaker's speech) and
                       eval/lists/{enroll.lst, enroll.map, trials.lst} naming files .wav,
                       as the release does; trials.lst pairs every enrollment id with
                       every test file
  cn-celeb2_v2.tar.gz  CN-Celeb2_flac/data/<id>/... and spk.lst: the other training
                       speakers (id10000...)
  musan.tar.gz         synthetic noise, music and babble (musan/{noise,music,speech}/...)
  rirs_noises.zip      synthetic RIRs (a direct path, then exponentially decaying noise)
                       under RIRS_NOISES/simulated_rirs/

A speaker's speech (its utterances in order: pieces of one recording) is cut into
genre segments of 2.05, 6.05 and 2.05 s and the rest, each of its own genre, and each
segment into pieces of 1-3 s (drawn from --seed): stage 3 of prepare_data.sh then has
short utterances of several genres per speaker to join, and a speaker with over
16.2 s of speech ends with two training utterances of 2-6 s and two of over 6 s, which
stage 7 needs (QMF's calibration trials pair such utterances of a speaker; a few
speakers of librispeech_tc100 have that much, none much more).

The archives cannot match the md5 sums hard-coded in prepare_data.sh, so each is
marked verified by an empty NAME.md5_ok beside it (what stage 1 writes once a sum
matched): stage 1 then reports it "present and verified" and downloads nothing.
"""
from __future__ import annotations

import argparse
import gzip
import io
import itertools
import os
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np
import soundfile as sf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from wespeaker_py.dataset.synthetic_aug import (babble, coloured_noise,  # noqa: E402
                                                harmonic_music, synthetic_rir)

SOURCES = (os.path.join(REPO, "examples", "mini", "data", "librispeech_tc100"),
           os.path.join(os.path.dirname(REPO), "shared", "data", "librispeech_tc100"))
RATE = 16000
GENRES = ("interview", "singing", "speech", "vlog", "drama", "entertainment",
          "live_broadcast", "movie", "play", "recitation", "advertisement")
ARCHIVES = ("cn-celeb_v2.tar.gz", "cn-celeb2_v2.tar.gz", "musan.tar.gz", "rirs_noises.zip")
# seconds of a speaker's first genre segments (the rest of its speech is the last one)
GENRE_SECONDS = (2.05, 6.05, 2.05)
MAX_ENROLL = 3       # enrollment pieces per eval speaker (at least one piece is left to test)
FIXED_MTIME = 1577836800  # archive members' time stamp (2020-01-01), for reproducible files


@dataclass
class Piece:
    """A 1-3 s piece of a speaker's speech, named ``<genre>-01-NNN``."""

    name: str
    audio: np.ndarray


@dataclass
class Tree:
    """Files (relative path -> int16 audio or text) of one release before archiving."""

    audio: Dict[str, np.ndarray] = field(default_factory=dict)
    text: Dict[str, str] = field(default_factory=dict)


def default_source() -> str:
    """The mini recipe's committed copy of librispeech_tc100, else ../shared/data's."""
    for path in SOURCES:
        if os.path.isfile(os.path.join(path, "wav.scp")):
            return path
    raise FileNotFoundError(f"no librispeech_tc100 in {' or '.join(SOURCES)}: pass --source")


def read_column(path: str) -> List[str]:
    """The first field of each non-empty line."""
    with open(path, encoding="utf-8") as handle:
        return [line.split()[0] for line in handle if line.strip()]


def speaker_utterances(source: str) -> Dict[str, List[str]]:
    """Speaker -> the audio files of its utterances, in key order."""
    with open(os.path.join(source, "wav.scp"), encoding="utf-8") as handle:
        wavs = dict(line.split(maxsplit=1) for line in handle if line.strip())
    with open(os.path.join(source, "utt2spk"), encoding="utf-8") as handle:
        utt2spk = dict(line.split() for line in handle if line.strip())
    utts: Dict[str, List[str]] = {}
    for key in sorted(utt2spk):
        utts.setdefault(utt2spk[key], []).append(os.path.join(source, wavs[key].strip()))
    return utts


def cut_lengths(num_samples: int, rng: np.random.Generator) -> List[int]:
    """Lengths (samples) of consecutive pieces of 1-3 s covering ``num_samples`` (>= 1 s)."""
    lengths, left = [], num_samples
    while left > 3 * RATE:
        length = int(rng.uniform(RATE, min(3 * RATE, left - RATE)))
        lengths.append(length)
        left -= length
    return lengths + [left]


def read_int16(path: str) -> np.ndarray:
    """A 16 kHz mono file as int16 samples."""
    audio, rate = sf.read(path, dtype="int16")
    if rate != RATE or audio.ndim != 1:
        raise ValueError(f"{path}: expected 16 kHz mono, got {rate} Hz, shape {audio.shape}")
    return audio


def genre_segments(audio: np.ndarray) -> List[np.ndarray]:
    """A speaker's speech cut into segments of :data:`GENRE_SECONDS`, then the rest (a
    segment that would leave less than 1 s is not cut: the rest is the last segment)."""
    segments, start = [], 0
    for seconds in GENRE_SECONDS:
        length = int(seconds * RATE)
        if len(audio) - start - length < RATE:
            break
        segments.append(audio[start:start + length])
        start += length
    return segments + [audio[start:]]


def speaker_pieces(files: Sequence[str], first_genre: int,
                   rng: np.random.Generator) -> List[Piece]:
    """The 1-3 s pieces of a speaker's speech (its utterances in order), each genre
    segment (:func:`genre_segments`) of its own genre, from ``first_genre`` on."""
    pieces = []
    audio = np.concatenate([read_int16(path) for path in files])
    for index, segment in enumerate(genre_segments(audio)):
        genre = GENRES[(first_genre + index) % len(GENRES)]
        start = 0
        for number, length in enumerate(cut_lengths(len(segment), rng), 1):
            pieces.append(Piece(f"{genre}-01-{number:03d}", segment[start:start + length]))
            start += length
    return pieces


def add_training_speaker(tree: Tree, root: str, spk: str, pieces: Sequence[Piece]) -> None:
    """``<root>/data/<spk>/<name>.flac`` for each piece."""
    for piece in pieces:
        tree.audio[f"{root}/data/{spk}/{piece.name}.flac"] = piece.audio


def add_eval_speaker(tree: Tree, spk: str, pieces: Sequence[Piece]) -> Tuple[str, List[str]]:
    """The enrollment utterances, enrollment file and test files of one eval speaker;
    returns its enroll.map line and its test keys (``test/<spk>-<name>.wav``)."""
    count = min(MAX_ENROLL, len(pieces) - 1)
    enroll, test = pieces[:count], pieces[count:]
    root = "CN-Celeb_flac"
    add_training_speaker(tree, root, spk, enroll)
    tree.audio[f"{root}/eval/enroll/{spk}-enroll.flac"] = np.concatenate(
        [piece.audio for piece in enroll])
    for piece in test:
        tree.audio[f"{root}/eval/test/{spk}-{piece.name}.flac"] = piece.audio
    utts = " ".join(f"{spk}/{piece.name}.wav" for piece in enroll)
    return f"{spk}-enroll {utts}", [f"test/{spk}-{piece.name}.wav" for piece in test]


def eval_speaker(name: str) -> str:
    """The speaker of an enrollment id or test key: ``id00800-enroll``,
    ``test/id00800-movie-01-004.wav`` -> ``id00800``."""
    return name.rsplit("/", 1)[-1].split("-", 1)[0]


def eval_lists(tree: Tree, map_lines: List[str], tests: List[str]) -> int:
    """enroll.map, enroll.lst and trials.lst (every enrollment id against every test
    file, 1 for the same speaker); returns the number of trials."""
    models = [line.split()[0] for line in map_lines]
    trials = [f"{model} {test} {int(eval_speaker(test) == eval_speaker(model))}"
              for model in models for test in tests]
    lists = "CN-Celeb_flac/eval/lists"
    tree.text[f"{lists}/enroll.map"] = "".join(line + "\n" for line in map_lines)
    tree.text[f"{lists}/enroll.lst"] = "".join(f"{m} enroll/{m}.wav\n" for m in models)
    tree.text[f"{lists}/trials.lst"] = "".join(line + "\n" for line in trials)
    return len(trials)


def noise_tree(speech: Sequence[np.ndarray], rng: np.random.Generator) -> Tuple[Tree, Tree]:
    """Synthetic MUSAN (noise, music, babble of ``speech``) and RIRS_NOISES trees."""
    musan, rirs = Tree(), Tree()
    seconds = 8 * RATE

    def int16(signal: np.ndarray) -> np.ndarray:
        return np.round(signal * 0.5 * 32767).astype(np.int16)

    for index, exponent in enumerate((0.0, 1.0, 2.0, 0.0, 1.0, 2.0)):
        musan.audio[f"musan/noise/free-sound/noise-free-sound-{index:04d}.wav"] = int16(
            coloured_noise(seconds, exponent, rng))
    for index in range(3):
        musan.audio[f"musan/music/fma/music-fma-{index:04d}.wav"] = int16(
            harmonic_music(seconds, RATE, rng))
    for index in range(3):
        chosen = rng.choice(len(speech), size=4, replace=False)
        musan.audio[f"musan/speech/librivox/speech-librivox-{index:04d}.wav"] = int16(
            babble([speech[i].astype(np.float64) for i in chosen], seconds, rng))
    for index in range(10):
        room = "smallroom" if index < 5 else "mediumroom"
        rir = synthetic_rir(RATE, float(rng.uniform(0.2, 0.8)), rng)
        rirs.audio[f"RIRS_NOISES/simulated_rirs/{room}/Room{index + 1:03d}/"
                   f"Room{index + 1:03d}-00001.wav"] = np.round(rir * 0.9 * 32767).astype(np.int16)
    return musan, rirs


def encode(path: str, audio: np.ndarray) -> bytes:
    """The bytes of ``audio`` as a 16-bit FLAC or WAV file (by ``path``'s extension)."""
    buffer = io.BytesIO()
    audio_format = "FLAC" if path.endswith(".flac") else "WAV"
    sf.write(buffer, audio, RATE, format=audio_format, subtype="PCM_16")
    return buffer.getvalue()


def tree_files(tree: Tree) -> List[Tuple[str, bytes]]:
    """Every file of ``tree`` as (path, bytes), sorted by path."""
    files = [(path, encode(path, audio)) for path, audio in tree.audio.items()]
    files += [(path, text.encode()) for path, text in tree.text.items()]
    return sorted(files)


def write_tar_gz(path: str, tree: Tree) -> None:
    """``tree`` as a gzip-compressed tar (fixed time stamps: the same input, the same bytes)."""
    with open(path + ".tmp", "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=FIXED_MTIME) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in tree_files(tree):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), FIXED_MTIME, 0o644
            archive.addfile(info, io.BytesIO(data))
    os.replace(path + ".tmp", path)


def write_zip(path: str, tree: Tree) -> None:
    """``tree`` as a zip (stored, fixed time stamps)."""
    with zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_STORED) as archive:
        for name, data in tree_files(tree):
            archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    os.replace(path + ".tmp", path)


Speakers = List[Tuple[str, str]]  # (LibriSpeech speaker, CN-Celeb id)


def speaker_ids(source: str) -> Tuple[Speakers, Speakers, Speakers]:
    """CN-Celeb1 dev, CN-Celeb2 and eval speakers: the first two thirds of train_spk
    (numeric order) as id00000..., the rest as id10000..., test_spk as id00800..."""
    train = sorted(read_column(os.path.join(source, "train_spk")), key=int)
    test = sorted(read_column(os.path.join(source, "test_spk")), key=int)
    cn1 = (2 * len(train)) // 3
    return ([(spk, f"id{index:05d}") for index, spk in enumerate(train[:cn1])],
            [(spk, f"id{10000 + index:05d}") for index, spk in enumerate(train[cn1:])],
            [(spk, f"id{800 + index:05d}") for index, spk in enumerate(test)])


def build(source: str, out: str, seed: int) -> Dict[str, int]:
    """Write the four archives and their ``.md5_ok`` marks into ``out``; return counts."""
    rng = np.random.default_rng(seed)
    utts = speaker_utterances(source)
    dev, cn2_speakers, eval_speakers = speaker_ids(source)
    genres = itertools.count()  # each speaker's first genre is the next one

    def pieces_of(spk: str) -> List[Piece]:
        return speaker_pieces(utts[spk], next(genres) % len(GENRES), rng)

    cn1, cn2 = Tree(), Tree()
    training = []  # the pieces of each training speaker
    for tree, root, speakers, listed in ((cn1, "CN-Celeb_flac", dev, "dev/dev.lst"),
                                         (cn2, "CN-Celeb2_flac", cn2_speakers, "spk.lst")):
        for spk, cnid in speakers:
            pieces = pieces_of(spk)
            add_training_speaker(tree, root, cnid, pieces)
            training.append(pieces)
        tree.text[f"{root}/{listed}"] = "".join(f"{cnid}\n" for _, cnid in speakers)
    map_lines, tests = [], []
    for spk, cnid in eval_speakers:
        line, keys = add_eval_speaker(cn1, cnid, pieces_of(spk))
        map_lines.append(line)
        tests += keys
    num_trials = eval_lists(cn1, map_lines, tests)
    musan, rirs = noise_tree([np.concatenate([p.audio for p in pieces]) for pieces in training],
                             rng)
    os.makedirs(out, exist_ok=True)
    for name, tree in (("cn-celeb_v2.tar.gz", cn1), ("cn-celeb2_v2.tar.gz", cn2),
                       ("musan.tar.gz", musan)):
        write_tar_gz(os.path.join(out, name), tree)
    write_zip(os.path.join(out, "rirs_noises.zip"), rirs)
    for name in ARCHIVES:
        open(os.path.join(out, name + ".md5_ok"), "w").close()
    return {"cn1_dev_speakers": len(dev), "cn2_speakers": len(cn2_speakers),
            "training_pieces": sum(map(len, training)), "eval_speakers": len(eval_speakers),
            "test_files": len(tests), "trials": num_trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the recipe's download_data folder")
    parser.add_argument("--source", default=None,
                        help="librispeech_tc100 (default: examples/mini/data's, else "
                             "../shared/data's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cuts and the noise")
    args = parser.parse_args()
    counts = build(args.source or default_source(), args.out, args.seed)
    print(", ".join(f"{key} {value}" for key, value in counts.items()))


if __name__ == "__main__":
    main()
