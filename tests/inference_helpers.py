"""Tiny experiments (config.yaml + checkpoint) and corpora for the extraction and export tests."""
import json
import os

import numpy as np
import soundfile as sf
import torch
import yaml

from wespeaker_py.models import get_model

SAMPLE_RATE = 16000
FEAT_DIM = 16
TINY_XVEC_ARGS = {"feat_dim": FEAT_DIM, "hid_dim": 16, "stats_dim": 24, "embed_dim": 8}


def randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running statistics (and affine weights)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            size = module.running_mean.shape
            module.running_mean.copy_(0.5 * torch.randn(size, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
            if module.affine:
                module.weight.data.copy_(1.0 + 0.2 * torch.randn(size, generator=generator))
                module.bias.data.copy_(0.2 * torch.randn(size, generator=generator))


def make_experiment(root: str, model: str = "XVEC", model_args=None, bare: bool = False,
                    num_classes: int = 5, seed: int = 0, calibrate=None):
    """Write ``root/config.yaml`` and a checkpoint with a head; return (config, ckpt, model).

    ``bare`` saves a plain state_dict (like avg_model.pt), otherwise a training
    checkpoint dict. ``calibrate(model)`` may run the model in train mode to set
    realistic BatchNorm statistics (deep models otherwise blow up).
    """
    model_args = dict(model_args or TINY_XVEC_ARGS)
    config = {
        "exp_dir": root, "model": model, "model_args": model_args,
        "projection_args": {"project_type": "arc_margin", "scale": 32.0},
        "dataset_args": {"resample_rate": SAMPLE_RATE, "shuffle": True, "speed_perturb": True,
                         "aug_prob": 0.6, "num_frms": 200,
                         "fbank_args": {"num_mel_bins": model_args["feat_dim"],
                                        "frame_shift": 10, "frame_length": 25, "dither": 1.0}},
    }
    os.makedirs(os.path.join(root, "models"), exist_ok=True)
    config_path = os.path.join(root, "config.yaml")
    with open(config_path, "w") as handle:
        yaml.safe_dump(config, handle)
    torch.manual_seed(seed)
    network = get_model(model, **model_args)
    if calibrate is not None:
        calibrate(network)
    else:
        randomise_batchnorm(network, seed)
    network.eval()
    state = dict(network.state_dict())
    state["projection.weight"] = torch.randn(num_classes, model_args["embed_dim"])
    checkpoint = state if bare else {"model": state, "optimizer": {}, "epoch": 3}
    checkpoint_path = os.path.join(root, "models", "avg_model.pt" if bare else "model_3.pt")
    torch.save(checkpoint, checkpoint_path)
    return config_path, checkpoint_path, network


def write_wav(path: str, num_samples: int, seed: int) -> None:
    """A noisy tone burst (int16 PCM), different for every seed."""
    rng = np.random.default_rng(seed)
    time = np.arange(num_samples) / SAMPLE_RATE
    signal = 4000 * np.sin(2 * np.pi * (150 + 40 * seed) * time) + 800 * rng.standard_normal(
        num_samples)
    sf.write(path, signal.astype(np.int16), SAMPLE_RATE, subtype="PCM_16")


def make_raw_list_corpus(root: str, lengths, extra_lines=()):
    """Wavs of the given sample counts plus ``raw.list``; return (list path, {key: wav path})."""
    os.makedirs(os.path.join(root, "wav"), exist_ok=True)
    wavs = {}
    lines = []
    for index, num_samples in enumerate(lengths):
        key = f"spk{index % 3}-utt{index:02d}"
        path = os.path.join(root, "wav", key + ".wav")
        write_wav(path, num_samples, seed=index)
        wavs[key] = path
        lines.append(json.dumps({"key": key, "wav": path, "spk": f"spk{index % 3}"}))
    lines.extend(extra_lines)
    list_path = os.path.join(root, "raw.list")
    with open(list_path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return list_path, wavs


def read_int16_scale(path: str) -> torch.Tensor:
    """A wav file as float32 samples on the int16 scale (what the pipeline yields)."""
    samples, _ = sf.read(path, dtype="int16")
    return torch.from_numpy(samples.astype(np.float32))
