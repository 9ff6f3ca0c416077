"""Measure the energy floor of the audio checks: loudest-frame levels of real speech vs silence.

For each condition, every file's level is what :func:`wespeaker_py.audio.check_samples`
compares with :data:`~wespeaker_py.audio.SILENCE_FLOOR_DBFS`: the loudest
400-sample frame's RMS (frame mean removed) in dBFS, on the samples a 16 kHz model
gets (read through the audio module, resampled to 16 kHz). Conditions: real speech
as recorded; the same speech 50 dB and 60 dB quieter, stored as int16 (rounded, as
a file at that level would be); digital silence; dither-level noise (±1 LSB: integers
-1/0/+1, and rounded Gaussian noise of 1 LSB deviation); faint noise of 1e-4 full
scale (the diarization tests' "no speech" recording, which must stay accepted).

    python bench/bench_audio_energy.py [--corpus examples/mini/data/librispeech_tc100]
        [--corpus /work/shared/data/fsdd] [--limit 0]

Prints a Markdown table (min / 1st percentile / median / max level per condition,
and how many files each of a few floors would reject); the figures are copied into
docs/troubleshooting.md. Loudness figures, not timings: no CPU lock needed.
"""
from __future__ import annotations

import argparse
import os
from typing import Callable, Dict, List

import numpy as np

from wespeaker_py.audio import (INT16_SCALE, SILENCE_FLOOR_DBFS, loudest_frame_dbfs,
                                open_audio, read_whole)

RATE = 16000
DEFAULT_CORPORA = ["examples/mini/data/librispeech_tc100", "/work/shared/data/fsdd"]


def corpus_files(folder: str, limit: int) -> List[str]:
    """Paths of a Kaldi data folder's wav.scp (relative paths are under the folder)."""
    paths = []
    with open(os.path.join(folder, "wav.scp"), encoding="utf-8") as handle:
        for line in handle:
            path = line.split(maxsplit=1)[1].strip()
            paths.append(path if os.path.isabs(path) else os.path.join(folder, path))
    return paths[:limit] if limit > 0 else paths


def quieter(db: float) -> Callable[[np.ndarray], np.ndarray]:
    """Speech ``db`` dB quieter, stored as int16 (rounded)."""
    gain = 10.0 ** (-db / 20.0)
    return lambda speech: np.round(speech * gain).astype(np.float32)


def synthetic(seconds: float, seed: int) -> Dict[str, np.ndarray]:
    """The non-speech conditions, ``seconds`` long at 16 kHz, int16 scale."""
    rng = np.random.default_rng(seed)
    size = int(seconds * RATE)
    return {
        "digital silence": np.zeros(size, np.float32),
        "dither ±1 LSB (-1/0/+1)": rng.integers(-1, 2, size).astype(np.float32),
        "dither: Gaussian, 1 LSB deviation, rounded": np.round(rng.standard_normal(size)
                                                               ).astype(np.float32),
        "faint noise, 1e-4 full scale (float)": (1e-4 * INT16_SCALE
                                                 * rng.standard_normal(size)).astype(np.float32),
    }


# floors compared (the chosen one, SILENCE_FLOOR_DBFS, among them)
FLOORS = (-80.0, -85.0, -88.0, -90.0)


def summarise(levels: List[float]) -> str:
    """Table cells: count, min / 1st percentile / median / max, files below each floor."""
    values = np.maximum(np.array(levels), -999.0)   # all-zero files: -inf, shown as such
    rejected = " | ".join(str(int(np.sum(values < floor))) for floor in FLOORS)
    cells = [np.min(values), np.percentile(values, 1), np.median(values), np.max(values)]
    shown = " | ".join("-inf" if cell <= -999.0 else f"{cell:.1f}" for cell in cells)
    return f"| {len(levels)} | {shown} | {rejected} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", action="append", default=None,
                        help="Kaldi data folder with a wav.scp (repeatable)")
    parser.add_argument("--limit", type=int, default=0, help="files per corpus (0: all)")
    args = parser.parse_args()
    corpora = args.corpus or DEFAULT_CORPORA
    print(f"chosen floor {SILENCE_FLOOR_DBFS:g} dBFS; level = loudest 400-sample frame, dBFS\n")
    print("| condition | files | min | 1% | median | max | "
          + " | ".join(f"< {floor:g}" for floor in FLOORS) + " |")
    print("|---" * (6 + len(FLOORS)) + "|")
    for folder in corpora:
        if not os.path.exists(os.path.join(folder, "wav.scp")):
            print(f"| {folder}: no wav.scp, skipped |")
            continue
        speech = []
        for path in corpus_files(folder, args.limit):
            with open_audio(path) as handle:
                speech.append(read_whole(handle, RATE))
        name = os.path.basename(os.path.normpath(folder))
        for label, change in (("as recorded", lambda s: s), ("50 dB quieter, int16", quieter(50)),
                              ("60 dB quieter, int16", quieter(60))):
            levels = [loudest_frame_dbfs(change(samples)) for samples in speech]
            print(f"| {name}: speech {label} {summarise(levels)}")
    for seconds in (5.0, 600.0):
        for label, samples in synthetic(seconds, seed=0).items():
            level = [loudest_frame_dbfs(samples)]
            print(f"| {label}, {seconds:g} s {summarise(level)}")


if __name__ == "__main__":
    main()
