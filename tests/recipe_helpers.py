"""Helpers for the recipe tests: running recipe scripts, small fake corpora, the fbank baseline."""
from __future__ import annotations

import os
import subprocess
import tarfile
import zipfile
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V2_DIR = os.path.join(REPO, "examples", "voxceleb", "v2")
WHISPER_DIR = os.path.join(REPO, "examples", "voxceleb", "v1", "Whisper-PMFA")
MINI_DIR = os.path.join(REPO, "examples", "mini")
CNCELEB_DIR = os.path.join(REPO, "examples", "cnceleb", "v2")


def run_script(recipe_dir: str, script: str, *args: str, env: Optional[Dict[str, str]] = None,
               check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``bash script args`` in a recipe directory; on failure show its output."""
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", "2")   # under pytest-xdist conftest.py set it to 1
    full_env.update(env or {})
    result = subprocess.run(["bash", script, *args], cwd=recipe_dir, env=full_env,
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
    return result


def write_tone(path: str, seconds: float, sample_rate: int, pitch: float,
               seed: int = 0) -> None:
    """A short voiced-like signal (a tone plus noise) as 16-bit audio."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    audio = 0.3 * np.sin(2 * np.pi * pitch * t) + 0.05 * rng.standard_normal(t.size)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, audio.astype(np.float32), sample_rate, subtype="PCM_16")


def make_kaldi_dir(root: str, speakers: Sequence[str], utts_per_speaker: int,
                   sample_rate: int, trial_speakers: Sequence[str]) -> List[str]:
    """A corpus dir (relative wav.scp, utt2spk, trials over ``trial_speakers``); returns its
    utts."""
    utts = []
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "wav.scp"), "w") as scp, \
            open(os.path.join(root, "utt2spk"), "w") as u2s:
        for s_index, spk in enumerate(speakers):
            for i in range(utts_per_speaker):
                utt = f"{spk}-{i:03d}"
                rel = f"wav/{spk}/{utt}.flac"
                write_tone(os.path.join(root, rel), 1.5, sample_rate, 120 + 40 * s_index,
                           seed=s_index * 100 + i)
                scp.write(f"{utt} {rel}\n")
                u2s.write(f"{utt} {spk}\n")
                utts.append(utt)
    with open(os.path.join(root, "trials"), "w") as trials:
        for a_index, spk in enumerate(trial_speakers):
            other = trial_speakers[(a_index + 1) % len(trial_speakers)]
            trials.write(f"{spk}-000 {spk}-001 target\n")
            trials.write(f"{spk}-000 {other}-001 nontarget\n")
    return utts


def _zip(path: str, members: Dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, source in members.items():
            archive.write(source, name)


def make_fake_noise_downloads(download_dir: str, wav: str) -> None:
    """musan.tar.gz (three files) and rirs_noises.zip (a simulated and a real RIR), each
    member a copy of ``wav``; not marked verified."""
    os.makedirs(download_dir, exist_ok=True)
    with tarfile.open(os.path.join(download_dir, "musan.tar.gz"), "w:gz") as archive:
        for name in ("musan/noise/free-sound/noise-free-sound-0000.wav",
                     "musan/music/fma/music-fma-0000.wav",
                     "musan/speech/librivox/speech-librivox-0000.wav"):
            archive.add(wav, name)
    _zip(os.path.join(download_dir, "rirs_noises.zip"),
         {"RIRS_NOISES/simulated_rirs/smallroom/Room001/Room001-00001.wav": wav,
          "RIRS_NOISES/real_rirs_isotropic_noises/air_type1_air_binaural_1_1_1.wav": wav})


def make_fake_voxceleb_downloads(download_dir: str, wav: str) -> None:
    """The five archives of local/prepare_data.sh with a handful of files each, marked verified.

    ``wav`` is copied into every member; the VoxCeleb2 "m4a" files hold wav data
    (the tests convert them with a fake ffmpeg that copies).
    """
    make_fake_noise_downloads(download_dir, wav)
    _zip(os.path.join(download_dir, "vox1_test_wav.zip"),
         {f"wav/id10270/vid{v}/0000{i}.wav": wav for v in "ab" for i in (1, 2)})
    _zip(os.path.join(download_dir, "vox1_dev_wav.zip"),
         {f"wav/id1000{s}/vidc/00001.wav": wav for s in (1, 2)})
    _zip(os.path.join(download_dir, "vox2_aac.zip"),
         {f"dev/aac/id0001{s}/vidd/0000{i}.m4a": wav for s in (2, 3) for i in (1, 2, 3)})
    for name in ("musan.tar.gz", "rirs_noises.zip", "vox1_test_wav.zip", "vox1_dev_wav.zip",
                 "vox2_aac.zip"):
        open(os.path.join(download_dir, name + ".md5_ok"), "w").close()


FAKE_FFMPEG = """#!/usr/bin/env bash
# test stand-in: copies the -i input to the last argument and logs the call; an input
# file named *bad* fails after writing part of the output
while [ $# -gt 1 ]; do
  [ "$1" == "-i" ] && input=$2
  shift
done
echo "$input" >> "{log}"
case "$(basename "$input")" in *bad*) echo partial > "$1"; exit 1 ;; esac
cp "$input" "$1"
"""


def make_fake_voxceleb_data(root: str) -> str:
    """``root/data``, its ``download_data`` holding the fake VoxCeleb archives of
    :func:`make_fake_voxceleb_downloads` (a 0.5 s tone, ``root/tone.wav``, in every member)."""
    wav = os.path.join(str(root), "tone.wav")
    write_tone(wav, 0.5, 16000, 220)
    data = os.path.join(str(root), "data")
    make_fake_voxceleb_downloads(os.path.join(data, "download_data"), wav)
    return data


def install_fake_ffmpeg(bin_dir: str, log: str) -> None:
    """Put a copying ``ffmpeg`` into ``bin_dir`` (prepend it to PATH); it fails on an input
    file named ``*bad*``."""
    os.makedirs(bin_dir, exist_ok=True)
    path = os.path.join(bin_dir, "ffmpeg")
    with open(path, "w") as out:
        out.write(FAKE_FFMPEG.replace("{log}", log))
    os.chmod(path, 0o755)


def read_table(path: str) -> Dict[str, List[str]]:
    """A Kaldi table as key -> remaining fields."""
    with open(path) as handle:
        return {fields[0]: fields[1:] for fields in (line.split() for line in handle) if fields}


def mtimes(paths: Iterable[str]) -> Dict[str, float]:
    """Modification times (ns) of the given files."""
    return {path: os.stat(path).st_mtime_ns for path in paths}


def fbank_stats_baseline(wav_scp: str, trials: str) -> Tuple[float, float]:
    """Untrained baseline: per-utterance mean and std of 80-dim fbank frames,
    minus the set's mean vector, cosine scored. Returns (EER %, minDCF)."""
    from wespeaker_py.frontend import fbank
    from wespeaker_py.scoring.metrics import compute_eer, compute_min_dcf

    vectors = {}
    for key, (path,) in read_table(wav_scp).items():
        audio, rate = sf.read(path, dtype="int16")
        feats = fbank(torch.tensor(audio, dtype=torch.float32)[None], sample_rate=rate)[0]
        vectors[key] = torch.cat([feats.mean(0), feats.std(0)])
    keys = list(vectors)
    matrix = torch.stack([vectors[key] for key in keys])
    matrix = matrix - matrix.mean(0)
    matrix = matrix / matrix.norm(dim=1, keepdim=True)
    row = {key: index for index, key in enumerate(keys)}
    with open(trials) as handle:
        lines = [line.split() for line in handle if line.strip()]
    scores = np.array([float(matrix[row[e]] @ matrix[row[t]]) for e, t, _ in lines])
    labels = np.array([label == "target" for _, _, label in lines])
    return 100 * compute_eer(scores, labels), compute_min_dcf(scores, labels)
