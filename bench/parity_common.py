"""What the side-by-side scripts (``whisper_parity.py``, ``w2vbert_parity.py``) share.

WeSpeaker's files exported from a clone and loaded by path under their module names,
the model our trainer builds, test waveforms, our extraction path, the report that
fails past a tolerance, and strict loading of each side's weights into the other.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import io
import logging
import os
import subprocess
import sys
import types
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from wespeaker_py.config import TrainConfig, load_config  # noqa: E402
from wespeaker_py.runtime import load_embedder  # noqa: E402
from wespeaker_py.runtime.checkpoint import load_weights  # noqa: E402
from wespeaker_py.runtime.engine import TorchBackend  # noqa: E402
from wespeaker_py.train.builder import build_model  # noqa: E402
from wespeaker_py.train.distributed import DistContext  # noqa: E402
from wespeaker_py.train.plan import resolve  # noqa: E402

CPU = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


# -- WeSpeaker's modules, exported and loaded by path ---------------------------------------
def export(git_dir: str, files: Tuple[str, ...], out: str) -> None:
    """``git archive HEAD files`` of the clone at ``git_dir``, unpacked into ``out``."""
    archive = subprocess.run(["git", "-C", git_dir, "archive", "HEAD", *files],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", out], input=archive, check=True)


def package_module(name: str, path: Optional[str] = None) -> types.ModuleType:
    """The package ``name`` (an empty one, searched under ``path``, unless already
    imported), its parents made the same way."""
    if name not in sys.modules:
        module = types.ModuleType(name)
        module.__path__ = [path] if path else []
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(package_module(parent), child, module)
    return sys.modules[name]


def load_module(root: str, relative: str, name: str = "") -> types.ModuleType:
    """The file ``root/relative`` imported as module ``name`` (default: ``relative`` as a
    dotted name, ``wespeaker/models/projections.py`` -> ``wespeaker.models.projections``),
    its packages made as needed."""
    path = os.path.join(root, relative)
    name = name or relative[:-len(".py")].replace("/", ".")
    if not os.path.isfile(path):
        script = os.path.relpath(sys.modules["__main__"].__file__, REPO)
        raise SystemExit(f"{path} is missing: export WeSpeaker's files first (see the "
                         f"docstring of {script})")
    parent, _, child = name.rpartition(".")
    if parent:
        package_module(parent)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """WeSpeaker's classes print as they build and switch modes, and log warnings (its
    Whisper front-end one per unused tensor): both silenced."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


# -- configs and models ---------------------------------------------------------------------
def write_speaker_list(work: str) -> None:
    """``work/utt2spk`` (10 utterances of 5 speakers) and an empty ``work/raw.list``."""
    with open(os.path.join(work, "utt2spk"), "w") as handle:
        handle.writelines(f"utt{i} spk{i % 5}\n" for i in range(10))
    with open(os.path.join(work, "raw.list"), "w") as handle:
        handle.write("")


def on_speaker_list(config: Dict[str, Any], work: str, exp_name: str) -> Dict[str, Any]:
    """``config`` set to train on :func:`write_speaker_list`'s files: batches of 2, no
    augmentation, raw data, experiment folder ``work/exp_name``."""
    config["dataset_args"]["aug_prob"] = 0.0
    config["dataloader_args"]["batch_size"] = 2
    config.update(exp_dir=os.path.join(work, exp_name), data_type="raw",
                  train_data=os.path.join(work, "raw.list"),
                  train_label=os.path.join(work, "utt2spk"))
    return config


def build_ours(config: Dict[str, Any]) -> Tuple[torch.nn.Module, int]:
    """The model our trainer trains (speaker model + ``frontend`` + ``projection``)."""
    plan = resolve(TrainConfig.from_dict(config), CPU)
    return build_model(plan), plan.num_classes


def perturb(model: torch.nn.Module, seed: int,
            noise_scale: Callable[[str], Optional[float]]) -> None:
    """Gaussian noise times ``noise_scale(name)`` on each parameter (None: left as it is),
    random BatchNorm statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            scale = noise_scale(name)
            if scale is not None:
                param.add_(scale * torch.randn(param.shape, generator=generator))
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.1 * torch.randn(buffer.shape, generator=generator))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))


def key_report(ws_state: Dict[str, torch.Tensor], our_state: Dict[str, torch.Tensor],
               ordered: bool = False) -> str:
    """Whether two state dicts hold the same keys with the same shapes (and, when
    ``ordered``, in the same order)."""
    ws_keys, our_keys = set(ws_state), set(our_state)
    shapes = sorted(key for key in ws_keys & our_keys
                    if ws_state[key].shape != our_state[key].shape)
    same_order = list(ws_state) == list(our_state)
    if ws_keys == our_keys and not shapes and (same_order or not ordered):
        order = ", same order" if ordered else ""
        return f"identical{order} ({len(ws_keys)} tensors, same shapes)"
    return (f"DIFFER: only WeSpeaker {sorted(ws_keys - our_keys)[:5]}, only ours "
            f"{sorted(our_keys - ws_keys)[:5]}, shapes differ {shapes[:5]}"
            + (f", same order: {same_order}" if ordered else ""))


# -- running them ---------------------------------------------------------------------------
def waves(length: int, seed: int, silent_quarter: bool = False) -> torch.Tensor:
    """Two rows in [-1, 1]: white noise at speech level; with ``silent_quarter`` the second
    quarter is silent (so that a per-utterance floor of the features acts)."""
    generator = torch.Generator().manual_seed(seed)
    wavs = (0.1 * torch.randn(2, length, generator=generator)).clamp(-1.0, 1.0)
    if silent_quarter:
        wavs[:, length // 4:length // 2] = 0.0
    return wavs


@torch.no_grad()
def extraction_path(config_path: str, checkpoint: str, wavs: torch.Tensor) -> torch.Tensor:
    """Our extraction: load_embedder + TorchBackend (one waveform prepared at a time)."""
    backend = TorchBackend(load_embedder(load_config(config_path), checkpoint),
                           torch.device("cpu"))
    prepared = torch.stack([backend.prepare(row * 32768.0) for row in wavs])
    return torch.from_numpy(backend.embed(prepared))


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference, in float64."""
    return (a.double() - b.double()).abs().max().item()


class Report:
    """Printed lines; embeddings further apart than ``tolerance`` mark it failed."""

    def __init__(self, tolerance: float):
        self.tolerance = tolerance
        self.lines: List[str] = []
        self.failed = False

    def line(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)

    def embedding(self, what: str, a: torch.Tensor, b: torch.Tensor) -> None:
        value = diff(a, b)
        bad = not value <= self.tolerance
        self.failed |= bad
        self.line(f"  {what}: max abs diff {value:.2e} (max |emb| {a.abs().max().item():.2f})"
                  + ("  <-- beyond tolerance" if bad else ""))

    def finish(self) -> int:
        """The closing line; the exit status (1 when an embedding was beyond tolerance)."""
        self.line("FAILED: a difference beyond tolerance" if self.failed else
                  f"all embeddings within {self.tolerance:g}")
        return 1 if self.failed else 0


@dataclasses.dataclass
class Sides:
    """What a script supplies to :func:`cross_load`.

    build_wespeaker: ``(config, num_class)`` -> WeSpeaker's training model.
    noise_scale: a parameter's name -> its noise for :func:`perturb`.
    compare: ``(report, wespeaker_model, our_model, label, seed)`` reports both outputs.
    checks: ``(config, wespeaker_model, our_model)`` -> more lines on the fresh models.
    ordered_keys: the state_dict keys must also come in the same order.
    """

    build_wespeaker: Callable[[Dict[str, Any], int], torch.nn.Module]
    noise_scale: Callable[[str], Optional[float]]
    compare: Callable[[Report, torch.nn.Module, torch.nn.Module, str, int], None]
    checks: Callable[[Dict[str, Any], torch.nn.Module, torch.nn.Module], List[str]] = (
        lambda config, ws_model, ours: [])
    ordered_keys: bool = False


def cross_load(report: Report, sides: Sides, config: Dict[str, Any], num_class: int,
               seed: int, what: str) -> Tuple[torch.nn.Module, torch.nn.Module]:
    """Both directions of strict loading; returns (WeSpeaker's, ours) with equal weights."""
    ws_model = sides.build_wespeaker(config, num_class)
    ours, our_classes = build_ours(config)
    assert our_classes == num_class
    keys = key_report(ws_model.state_dict(), ours.state_dict(), sides.ordered_keys)
    report.line(f"  {what}: state_dict keys {keys}")
    for line in sides.checks(config, ws_model, ours):
        report.line(f"  {what}: {line}")
    perturb(ws_model, seed, sides.noise_scale)
    load_weights(ours, ws_model.state_dict(), "WeSpeaker's model", allow_head_truncation=False)
    report.line(f"  {what}: WeSpeaker -> ours strict load: ok")
    with quiet():
        ws_model.eval()
    ours.eval()
    sides.compare(report, ws_model, ours, f"{what} (WeSpeaker's weights)", seed)
    # the reverse: our (differently perturbed) weights into a fresh WeSpeaker model
    ours_b, _ = build_ours(config)
    perturb(ours_b, seed + 1, sides.noise_scale)
    ws_b = sides.build_wespeaker(config, num_class)
    ws_b.load_state_dict(ours_b.state_dict(), strict=True)
    report.line(f"  {what}: ours -> WeSpeaker strict load: ok")
    with quiet():
        ws_b.eval()
    ours_b.eval()
    sides.compare(report, ws_b, ours_b, f"{what} (our weights)", seed + 7)
    return ws_model, ours


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """The options every parity script takes: --work_dir, --tolerance, --threads."""
    parser.add_argument("--work_dir", default=None, help="scratch directory (default: a new "
                        "temporary one)")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=1)
