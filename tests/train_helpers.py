"""A small generated speaker corpus and tiny training configs for the trainer tests.

Each synthetic "speaker" is a harmonic source with its own fundamental and a
formant-like resonance, so speakers differ in spectrum the way fbank sees it.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import socket
from typing import Any, Dict, List

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn as nn
import yaml

from wespeaker_py.config import TrainConfig
from wespeaker_py.models.projections import ProjectionHead
from wespeaker_py.train import trainer
from wespeaker_py.train.distributed import DistContext
from wespeaker_py.train.loop import EpochResult
from wespeaker_py.train.plan import TrainingPlan, resolve
from wespeaker_py.train.step import TrainingStep

RATE = 16000
CPU_WORLD = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def _speaker_signal(spk: int, utt: int, num_samples: int) -> np.ndarray:
    """Syllable-like bursts of the speaker's voice over faint noise.

    The bursts matter: CMN removes a spectrum that never changes, so the
    speaker's spectral shape must come and go to survive in the features.
    """
    rng = np.random.default_rng([spk, utt])
    t = np.arange(num_samples) / RATE
    f0 = (110.0 + 55.0 * spk) * (1.0 + 0.03 * rng.standard_normal())
    formant = 600.0 + 450.0 * spk
    voice = np.zeros(num_samples)
    for harmonic in range(1, 30):
        freq = f0 * harmonic
        if freq >= RATE / 2:
            break
        gain = np.exp(-((freq - formant) / 400.0) ** 2) + 0.1 / harmonic
        voice += gain * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    voice /= np.abs(voice).max()
    envelope = np.zeros(num_samples)
    start = int(rng.integers(0, RATE // 10))
    while start < num_samples:
        length = int(rng.integers(RATE // 10, RATE // 4))
        envelope[start:start + length] = np.hanning(len(envelope[start:start + length]))
        start += length + int(rng.integers(RATE // 20, RATE // 6))
    signal = voice * envelope + 0.02 * rng.standard_normal(num_samples)
    return (signal * 8000 * rng.uniform(0.5, 1.0)).astype(np.int16)


def make_speaker_corpus(root: str, num_spks: int = 4, utts_per_spk: int = 8,
                        seconds: float = 1.5, wav_scp: bool = False) -> Dict[str, str]:
    """Write wavs, utt2spk and raw.list under ``root`` (with ``wav_scp``, a wav.scp too,
    making ``root`` a Kaldi data folder); return their paths."""
    os.makedirs(os.path.join(root, "wav"), exist_ok=True)
    utt2spk = os.path.join(root, "utt2spk")
    raw_list = os.path.join(root, "raw.list")
    scp_path = os.path.join(root, "wav.scp")
    with open(utt2spk, "w") as u2s, open(raw_list, "w") as raw, \
            open(scp_path if wav_scp else os.devnull, "w") as scp:
        for spk in range(num_spks):
            for utt in range(utts_per_spk):
                key = f"spk{spk}-utt{utt}"
                length = int(RATE * seconds * (1.0 + 0.2 * (utt % 3)))
                path = os.path.join(root, "wav", key + ".wav")
                sf.write(path, _speaker_signal(spk, utt, length), RATE, subtype="PCM_16")
                u2s.write(f"{key} spk{spk}\n")
                raw.write(json.dumps({"key": key, "wav": path, "spk": f"spk{spk}"}) + "\n")
                scp.write(f"{key} {path}\n")
    paths = {"utt2spk": utt2spk, "raw_list": raw_list}
    return dict(paths, wav_scp=scp_path) if wav_scp else paths


TINY_CONFIG: Dict[str, Any] = {
    "exp_dir": "exp/tiny",
    "gpus": None,
    "num_avg": 2,
    "seed": 3,
    "num_epochs": 4,
    "save_epoch_interval": 1,
    "log_batch_interval": 2,
    "data_type": "raw",
    "dataloader_args": {"batch_size": 8, "num_workers": 0, "pin_memory": False,
                        "drop_last": True},
    "dataset_args": {
        "sample_num_per_epoch": 0,
        "shuffle": True,
        "shuffle_args": {"shuffle_size": 16},
        "filter": True,
        "filter_args": {"min_num_frames": 50, "max_num_frames": 800},
        "resample_rate": 16000,
        "speed_perturb": False,
        "num_frms": 80,
        "aug_prob": 0.0,
        "fbank_args": {"num_mel_bins": 24, "frame_shift": 10, "frame_length": 25,
                       "dither": 1.0},
        "spec_aug": False,
    },
    "model": "XVEC",
    "model_init": None,
    "model_args": {"feat_dim": 24, "hid_dim": 32, "stats_dim": 64, "embed_dim": 16,
                   "pooling_func": "TSTP"},
    "projection_args": {"project_type": "arc_margin", "scale": 16.0, "easy_margin": False},
    "margin_scheduler": "MarginScheduler",
    "margin_update": {"initial_margin": 0.0, "final_margin": 0.1, "increase_start_epoch": 2,
                      "fix_start_epoch": 3, "update_margin": True, "increase_type": "exp"},
    "loss": "CrossEntropyLoss",
    "loss_args": {},
    "optimizer": "SGD",
    "optimizer_args": {"momentum": 0.9, "nesterov": True, "weight_decay": 0.0001},
    "scheduler": "ExponentialDecrease",
    "scheduler_args": {"initial_lr": 0.8, "final_lr": 0.2, "warm_up_epoch": 1,
                       "warm_from_zero": True},
}


def tiny_config(exp_dir: str, corpus: Dict[str, str], **overrides) -> Dict[str, Any]:
    """TINY_CONFIG pointed at ``corpus`` and ``exp_dir``; ``overrides`` replace top-level keys."""
    config = copy.deepcopy(TINY_CONFIG)
    config.update(exp_dir=exp_dir, train_data=corpus["raw_list"], train_label=corpus["utt2spk"])
    config.update(copy.deepcopy(overrides))
    return config


def run_training(config: Dict[str, Any]) -> List[EpochResult]:
    """Train on a config mapping (checked here), as the command line does."""
    return trainer.run_training(TrainConfig.from_dict(config))


def plan_of(config: Dict[str, Any], world: DistContext = CPU_WORLD, **changes) -> TrainingPlan:
    """The plan of a config mapping; ``changes`` replace plan fields (e.g. ``epoch_iter``)."""
    plan = resolve(TrainConfig.from_dict(config), world)
    return dataclasses.replace(plan, **changes) if changes else plan


def write_source_model(folder: str) -> str:
    """``folder`` as a 16 kHz fbank model folder to fine-tune: TINY_CONFIG's config.yaml and
    its model's random weights (seed 0) with a 5-speaker head as avg_model.pt."""
    from wespeaker_py.models.projections import get_projection
    from wespeaker_py.runtime.builder import build_speaker_model
    config = dict(TINY_CONFIG, exp_dir=folder)
    write_config(os.path.join(folder, "config.yaml"), config)
    torch.manual_seed(0)
    model = build_speaker_model(TrainConfig.from_dict(config))
    model.add_module("projection", get_projection(config["projection_args"], embed_dim=16,
                                                  num_class=5))
    torch.save(model.state_dict(), os.path.join(folder, "avg_model.pt"))
    return folder


def write_config(path: str, config: Dict[str, Any]) -> str:
    """Write ``config`` as YAML at ``path``."""
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    return path


def load_checkpoint(path: str) -> Dict[str, Any]:
    """A saved checkpoint or model file, read onto the CPU (a full pickle, not weights only)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def named_optimizer_state(checkpoint: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """A checkpoint's optimizer state by parameter name (its groups' ``param_names``)."""
    optimizer = checkpoint["optimizer"]
    return {name: optimizer["state"].get(index, {})
            for group in optimizer["param_groups"]
            for index, name in zip(group["params"], group["param_names"])}


def capture_first_step(monkeypatch: pytest.MonkeyPatch) -> Dict[str, Any]:
    """Record, as the first training step starts: each group's lr, the head's margin and
    the optimizer state by parameter name (copies)."""
    original, seen = TrainingStep.__call__, {}

    def step(self, batch):
        if not seen:
            names = {id(param): name for name, param in self.model.named_parameters()}
            seen["lrs"] = [group["lr"] for group in self.optimizer.param_groups]
            seen["margin"] = float(self.model.projection.margin)
            seen["state"] = {names[id(param)]: {key: value.clone() for key, value in state.items()}
                             for param, state in self.optimizer.state.items()}
        return original(self, batch)

    monkeypatch.setattr(TrainingStep, "__call__", step)
    return seen


def exponential_lr(scale_ratio: float, initial_lr: float, final_lr: float,
                   fraction: float) -> float:
    """WeSpeaker's ExponentialDecrease after its warm-up, at ``fraction`` of the run."""
    return scale_ratio * initial_lr * math.exp(fraction * math.log(final_lr / initial_lr))


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Train with one intra-op thread (restored afterwards).

    The tiny models gain nothing from a second thread, and on a shared 2-core
    machine spinning OpenMP threads make each step many times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago, for a gloo group's MASTER_PORT."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PhaseReached(Exception):
    """Raised in place of training: a fine-tuning run got as far as its first phase."""


class ToyHead(ProjectionHead):
    """A linear margin-less head with one key of its own, ``bias_init``, that tests add to
    the table of heads (as :data:`TOY_HEAD`)."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        nn.init.constant_(self.linear.bias, bias_init)

    def forward(self, embeddings, labels):
        return self.linear(embeddings)


# what a table entry names it by
TOY_HEAD = f"{__name__}:ToyHead"
