"""Tiny generated corpora for the data-list and input-pipeline tests."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from wespeaker_py.dataset.lists import read_utterance_table
from wespeaker_py.dataset.shards import make_shards

# fbank framing at 16 kHz: 200 frames need 32240 samples
RATE = 16000


def random_int16(num_samples: int, seed: int, channels: int = 1) -> np.ndarray:
    """Reproducible int16 noise, shaped [samples] or [samples, channels]."""
    rng = np.random.default_rng(seed)
    shape = (num_samples,) if channels == 1 else (num_samples, channels)
    return rng.integers(-8000, 8000, size=shape, dtype=np.int16)


def write_audio(path: str, samples: np.ndarray, rate: int = RATE,
                subtype: str = "PCM_16") -> str:
    """Write ``samples`` (its folder made if need be) as ``subtype``; the format follows the
    extension (.wav or .flac). Return ``path``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, samples, rate, subtype=subtype)
    return path


def make_corpus(root: str, num_spks: int = 3, utts_per_spk: int = 4,
                lengths: Optional[Sequence[int]] = None,
                extensions: Sequence[str] = ("flac", "wav")) -> Tuple[str, str]:
    """Write ``num_spks * utts_per_spk`` files plus wav.scp and utt2spk; return their paths.

    Utterance ``i`` has ``lengths[i % len(lengths)]`` samples and alternates extensions.
    """
    lengths = list(lengths or [40000, 52000, 36000, 61000])
    wav_scp, utt2spk = os.path.join(root, "wav.scp"), os.path.join(root, "utt2spk")
    index = 0
    with open(wav_scp, "w") as scp, open(utt2spk, "w") as u2s:
        for spk in range(num_spks):
            for utt in range(utts_per_spk):
                key = f"spk{spk}-utt{utt}"
                ext = extensions[index % len(extensions)]
                path = write_audio(os.path.join(root, "audio", f"{key}.{ext}"),
                                   random_int16(lengths[index % len(lengths)], seed=index))
                scp.write(f"{key} {path}\n")
                u2s.write(f"{key} spk{spk}\n")
                index += 1
    return wav_scp, utt2spk


def write_raw_list_file(path: str, rows: List[Dict]) -> str:
    """Write JSON rows as a raw.list."""
    with open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


def make_lists(root: str, num_utts_per_shard: int = 3, **corpus_args) -> Dict[str, str]:
    """A corpus with both a raw.list and a shard.list over it."""
    wav_scp, utt2spk = make_corpus(root, **corpus_args)
    entries = read_utterance_table(wav_scp, utt2spk)
    raw = write_raw_list_file(os.path.join(root, "raw.list"),
                              [{"key": e.key, "wav": e.wav, "spk": e.spk} for e in entries])
    shard_list = os.path.join(root, "shard.list")
    make_shards(entries, os.path.join(root, "shards"), shard_list,
                num_utts_per_shard=num_utts_per_shard)
    return {"wav_scp": wav_scp, "utt2spk": utt2spk, "raw": raw, "shard": shard_list}


def training_args(**overrides) -> Dict:
    """WeSpeaker-style dataset_args for the tests (no shuffle, no speed, no aug by default)."""
    args = {
        "sample_num_per_epoch": 0,
        "shuffle": False,
        "shuffle_args": {"shuffle_size": 4},
        "filter": True,
        "filter_args": {"min_num_frames": 100, "max_num_frames": 800},
        "resample_rate": RATE,
        "speed_perturb": False,
        "num_frms": 200,
        "aug_prob": 0.0,
        "fbank_args": {"num_mel_bins": 80, "frame_shift": 10, "frame_length": 25,
                       "dither": 1.0},
        "spec_aug": False,
        "spec_aug_args": {"num_t_mask": 1, "num_f_mask": 1, "max_t": 10, "max_f": 8,
                          "prob": 0.6},
    }
    args.update(overrides)
    return args
