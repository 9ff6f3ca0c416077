"""Side by side: WeSpeaker's Whisper-PMFA code and ours on one tiny random Whisper.

WeSpeaker's own ``whisper_encoder`` front-end and ``whisper_PMFA_large_v2`` model (with
its pooling, head and ``apply_cmvn``) run from a copy of its sources that this script
exports at run time, with ``git archive``, from a WeSpeaker clone into a temporary
directory; nothing of WeSpeaker's is in this project. Its ``import whisper`` gets
OpenAI's own ``whisper/audio.py`` (the ``log_mel_spectrogram`` WeSpeaker calls, with
its ``mel_filters.npz``), exported the same way from a clone of openai/whisper when
``--whisper_git`` is given; without one, a stub whose ``log_mel_spectrogram`` is ours
(then the feature rows compare ours with ours). About 10 s on one CPU thread:

    flock -x /tmp/wsp_cpu.lock python bench/whisper_parity.py \\
        --wespeaker_git /work/.mirror/wenet-e2e+wespeaker/repo \\
        --whisper_git /work/.mirror/openai+whisper/repo

The tiny Whisper is what ``tools/make_tiny_whisper.py`` writes (OpenAI's checkpoint
layout, float16): 4 encoder blocks, width 16, 2 heads, 80 mel bands; the configs are
conf/whisper_PMFA_stage{0,1}.yaml with 3 blocks built and blocks 1-2 concatenated
(the real recipe: 24 of 32, blocks 16-23).

(a) stage 0 (frozen, ``model_path`` the tiny checkpoint): WeSpeaker's loading and ours
    from the same file (every front-end tensor compared), state_dict keys and shapes of
    the whole training model (WeSpeaker: speaker model + ``frontend`` + ``projection``
    as its train.py builds them; ours: the trainer's ``build_model``), which parameters
    train, strict loading both ways, then features, front-end output and embeddings of
    WeSpeaker's extraction (``frontend(wavs, wavs_len)`` -> ``apply_cmvn`` -> model) and
    ours, for 2 s, 2.01 s (an odd number of mel frames) and 31 s (past Whisper's 30 s);
(b) stage 1 (everything trains, no ``model_path``): keys, trainable parameters, strict
    loading both ways, embeddings, and our extraction path (``load_embedder`` +
    ``TorchBackend``) on a saved checkpoint of WeSpeaker's weights.

WeSpeaker gets waveforms in [-1, 1], ours the same x 32768. Exits 1 when an embedding
differs by more than ``--tolerance``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import logging
import os
import subprocess
import sys
import tempfile
import types
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from wespeaker_py.config import TrainConfig, load_config  # noqa: E402
from wespeaker_py.frontend.whisper_features import WhisperLogMel, mel_filters  # noqa: E402
from wespeaker_py.frontend.whisper_random import (tiny_whisper_dims,  # noqa: E402
                                                  write_random_whisper)
from wespeaker_py.runtime import load_embedder  # noqa: E402
from wespeaker_py.runtime.checkpoint import load_weights  # noqa: E402
from wespeaker_py.runtime.engine import TorchBackend  # noqa: E402
from wespeaker_py.train.builder import build_model  # noqa: E402
from wespeaker_py.train.distributed import DistContext  # noqa: E402
from wespeaker_py.train.plan import resolve  # noqa: E402

CHECKPOINT_LAYERS, WIDTH, HEADS, EMBED = 4, 16, 2, 16
WHISPER_ARGS = {"num_blocks": 3, "output_size": WIDTH, "n_head": HEADS, "layer_st": 1,
                "layer_ed": 2}
LENGTHS = (32000, 32160, 31 * 16000)   # 200 mel frames, 201 (odd), 31 s (past 30 s)
CPU = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
WESPEAKER_FILES = ("wespeaker/frontend/whisper_encoder.py", "wespeaker/models/whisper_PMFA.py",
                   "wespeaker/models/pooling_layers.py", "wespeaker/models/projections.py",
                   "wespeaker/dataset/dataset_utils.py")
WHISPER_FILES = ("whisper/audio.py", "whisper/utils.py", "whisper/assets/mel_filters.npz")


# -- WeSpeaker's and OpenAI's modules, exported and loaded by path ------------------------
def export(git_dir: str, files: Tuple[str, ...], out: str) -> None:
    """``git archive HEAD files`` of the clone at ``git_dir``, unpacked into ``out``."""
    archive = subprocess.run(["git", "-C", git_dir, "archive", "HEAD", *files],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", out], input=archive, check=True)


def _package(name: str, path: Optional[str] = None) -> types.ModuleType:
    if name not in sys.modules:
        module = types.ModuleType(name)
        module.__path__ = [path] if path else []
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(_package(parent), child, module)
    return sys.modules[name]


def _load(name: str, path: str) -> types.ModuleType:
    parent, _, child = name.rpartition(".")
    if parent:
        _package(parent)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def install_whisper(root: Optional[str]) -> str:
    """Make ``import whisper`` give a ``log_mel_spectrogram``: OpenAI's (exported under
    ``root``) or, without ``root``, ours; says which."""
    if root is not None:
        package = _package("whisper", os.path.join(root, "whisper"))
        _load("whisper.utils", os.path.join(root, "whisper/utils.py"))
        audio = _load("whisper.audio", os.path.join(root, "whisper/audio.py"))
        package.log_mel_spectrogram = audio.log_mel_spectrogram
        return "OpenAI's whisper/audio.py (openai/whisper, exported)"
    package = _package("whisper")
    features = {}

    def log_mel_spectrogram(audio: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
        module = features.setdefault(n_mels, WhisperLogMel(n_mels))
        return module(audio.reshape(1, -1) * 32768.0)[0].T

    package.log_mel_spectrogram = log_mel_spectrogram
    return "a stub whose log_mel_spectrogram is ours (no --whisper_git)"


def load_wespeaker(root: str) -> types.SimpleNamespace:
    """WeSpeaker's Whisper front-end, PMFA model, pooling, head and apply_cmvn."""
    _load("wespeaker.models.pooling_layers",
          os.path.join(root, "wespeaker/models/pooling_layers.py"))
    projections = _load("wespeaker.models.projections",
                        os.path.join(root, "wespeaker/models/projections.py"))
    pmfa = _load("wespeaker.models.whisper_PMFA",
                 os.path.join(root, "wespeaker/models/whisper_PMFA.py"))
    frontend = _load("wespeaker.frontend.whisper_encoder",
                     os.path.join(root, "wespeaker/frontend/whisper_encoder.py"))
    utils = _load("wespeaker.dataset.dataset_utils",
                  os.path.join(root, "wespeaker/dataset/dataset_utils.py"))
    return types.SimpleNamespace(Frontend=frontend.whisper_encoder, model=pmfa,
                                 get_projection=projections.get_projection,
                                 apply_cmvn=utils.apply_cmvn)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """WeSpeaker's front-end prints as it loads, and logs a warning per unused tensor."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


# -- configs --------------------------------------------------------------------------------
def recipe_config(work: str, stage: int, model_path: Optional[str]) -> Dict[str, Any]:
    """conf/whisper_PMFA_stage{0,1}.yaml at the tiny size, on a tiny speaker list."""
    with open(os.path.join(REPO, "conf", f"whisper_PMFA_stage{stage}.yaml")) as handle:
        config = yaml.safe_load(handle)
    whisper = config["dataset_args"]["whisper_encoder_args"]
    whisper.update(WHISPER_ARGS)
    whisper.pop("model_path", None)
    if model_path:
        whisper["model_path"] = model_path
    config["dataset_args"]["aug_prob"] = 0.0
    config["dataloader_args"]["batch_size"] = 2
    config["model"] = "whisper_PMFA_large_v2"   # as WeSpeaker's run.sh --model
    config["model_args"]["embed_dim"] = EMBED
    config.update(exp_dir=os.path.join(work, f"exp_{stage}"), data_type="raw",
                  train_data=os.path.join(work, "raw.list"),
                  train_label=os.path.join(work, "utt2spk"))
    return config


# -- the two models -------------------------------------------------------------------------
def build_wespeaker(ws: types.SimpleNamespace, config: Dict[str, Any], num_class: int
                    ) -> torch.nn.Module:
    """Speaker model + ``frontend`` + ``projection`` as WeSpeaker's train.py builds them."""
    dataset_args = config["dataset_args"]
    with quiet():
        frontend = ws.Frontend(**dataset_args["whisper_encoder_args"],
                               sample_rate=dataset_args["resample_rate"])
        model = getattr(ws.model, config["model"])(feat_dim=frontend.output_size(),
                                                   embed_dim=EMBED)
        model.add_module("frontend", frontend)
        model.add_module("projection", ws.get_projection(dict(
            config["projection_args"], embed_dim=EMBED, num_class=num_class, do_lm=False)))
    return model


def build_ours(config: Dict[str, Any]) -> Tuple[torch.nn.Module, int]:
    """The model our trainer trains (speaker model + ``frontend`` + ``projection``)."""
    plan = resolve(TrainConfig.from_dict(config), CPU)
    return build_model(plan), plan.num_classes


def perturb(model: torch.nn.Module, seed: int) -> None:
    """Noise on every weight outside the pretrained encoder blocks (ln_post2 starts as ones
    and zeros, the head at random), random BatchNorm statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".blocks." not in name:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.1 * torch.randn(buffer.shape, generator=generator))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))


def key_report(ws_state: Dict[str, torch.Tensor], our_state: Dict[str, torch.Tensor]) -> str:
    ws_keys, our_keys = list(ws_state), list(our_state)
    shapes = [key for key in set(ws_keys) & set(our_keys)
              if ws_state[key].shape != our_state[key].shape]
    if ws_keys == our_keys and not shapes:
        return f"identical, same order ({len(ws_keys)} tensors, same shapes)"
    return (f"DIFFER: only WeSpeaker {sorted(set(ws_keys) - set(our_keys))[:5]}, only ours "
            f"{sorted(set(our_keys) - set(ws_keys))[:5]}, shapes differ {sorted(shapes)[:5]}, "
            f"same order: {ws_keys == our_keys}")


def trainable_report(ws_model: torch.nn.Module, ours: torch.nn.Module) -> str:
    def names(model: torch.nn.Module) -> set:
        return {name for name, param in model.named_parameters() if param.requires_grad}

    ws_names, our_names = names(ws_model), names(ours)
    frontend = sum(name.startswith("frontend.") for name in ws_names)
    if ws_names == our_names:
        return f"the same {len(ws_names)} parameters train ({frontend} of the front-end)"
    return (f"DIFFER: only WeSpeaker {sorted(ws_names - our_names)[:5]}, only ours "
            f"{sorted(our_names - ws_names)[:5]}")


# -- running them ---------------------------------------------------------------------------
def waves(length: int, seed: int) -> torch.Tensor:
    """Two rows in [-1, 1]: white noise at speech level with a silent stretch, so that the
    features' floor (the utterance maximum minus 8) acts."""
    generator = torch.Generator().manual_seed(seed)
    wavs = (0.1 * torch.randn(2, length, generator=generator)).clamp(-1.0, 1.0)
    wavs[:, length // 4:length // 2] = 0.0
    return wavs


@torch.no_grad()
def wespeaker_run(ws: types.SimpleNamespace, model: torch.nn.Module, wavs: torch.Tensor
                  ) -> Dict[str, torch.Tensor]:
    """WeSpeaker's extract.py: ``frontend(wavs, wavs_len)`` -> ``apply_cmvn`` -> model."""
    import whisper
    lengths = torch.full((wavs.shape[0],), wavs.shape[1], dtype=torch.long)
    mel = torch.stack([whisper.log_mel_spectrogram(row, n_mels=model.frontend.n_mels)
                       for row in wavs]).transpose(1, 2)
    features = ws.apply_cmvn(model.frontend(wavs, lengths)[0])
    return {"mel": mel, "features": features, "embedding": model(features)}


@torch.no_grad()
def our_run(model: torch.nn.Module, wavs: torch.Tensor) -> Dict[str, torch.Tensor]:
    scaled = wavs * 32768.0
    features = model.frontend(scaled)
    return {"mel": model.frontend.features(scaled), "features": features,
            "embedding": model(features)}


@torch.no_grad()
def extraction_path(config_path: str, checkpoint: str, wavs: torch.Tensor) -> torch.Tensor:
    """Our extraction: load_embedder + TorchBackend (one waveform prepared at a time)."""
    backend = TorchBackend(load_embedder(load_config(config_path), checkpoint),
                           torch.device("cpu"))
    prepared = torch.stack([backend.prepare(row * 32768.0) for row in wavs])
    return torch.from_numpy(backend.embed(prepared))


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


class Report:
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


def compare_outputs(report: Report, ws: types.SimpleNamespace, ws_model: torch.nn.Module,
                    ours: torch.nn.Module, label: str, seed: int) -> None:
    for length in LENGTHS:
        wavs = waves(length, seed + length)
        ws_out, our_out = wespeaker_run(ws, ws_model, wavs), our_run(ours, wavs)
        report.line(f"  {label}, {length / 16000:g} s: mel {tuple(ws_out['mel'].shape[1:])} "
                    f"{diff(ws_out['mel'], our_out['mel']):.2e}, front-end output "
                    f"{tuple(ws_out['features'].shape[1:])} vs "
                    f"{tuple(our_out['features'].shape[1:])} "
                    f"{diff(ws_out['features'], our_out['features']):.2e}")
        report.embedding(f"{label}, {length / 16000:g} s, embeddings", ws_out["embedding"],
                         our_out["embedding"])


def cross_load(report: Report, ws: types.SimpleNamespace, config: Dict[str, Any],
               num_class: int, seed: int, what: str
               ) -> Tuple[torch.nn.Module, torch.nn.Module]:
    """Both directions of strict loading; returns (WeSpeaker's, ours) with equal weights."""
    ws_model = build_wespeaker(ws, config, num_class)
    ours, our_classes = build_ours(config)
    assert our_classes == num_class
    report.line(f"  {what}: state_dict keys {key_report(ws_model.state_dict(), ours.state_dict())}")
    report.line(f"  {what}: {trainable_report(ws_model, ours)}")
    if config["dataset_args"]["whisper_encoder_args"].get("model_path"):
        ws_front, our_front = ws_model.frontend.state_dict(), ours.frontend.state_dict()
        report.line(f"  {what}: front-end after each side's pretrained loading: max abs tensor "
                    f"diff {max(diff(ws_front[key], our_front[key]) for key in ws_front):.2e}")
    perturb(ws_model, seed)
    load_weights(ours, ws_model.state_dict(), "WeSpeaker's model", allow_head_truncation=False)
    report.line(f"  {what}: WeSpeaker -> ours strict load: ok")
    ws_model.eval()
    ours.eval()
    compare_outputs(report, ws, ws_model, ours, f"{what} (WeSpeaker's weights)", seed)
    ours_b, _ = build_ours(config)
    perturb(ours_b, seed + 1)
    ws_b = build_wespeaker(ws, config, num_class)
    ws_b.load_state_dict(ours_b.state_dict(), strict=True)
    report.line(f"  {what}: ours -> WeSpeaker strict load: ok")
    ws_b.eval()
    ours_b.eval()
    compare_outputs(report, ws, ws_b, ours_b, f"{what} (our weights)", seed + 7)
    return ws_model, ours


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    work = args.work_dir or tempfile.mkdtemp(prefix="whisper_parity_")
    sources = os.path.join(work, "sources")
    os.makedirs(sources, exist_ok=True)
    export(args.wespeaker_git, WESPEAKER_FILES, sources)
    if args.whisper_git:
        export(args.whisper_git, WHISPER_FILES, sources)
    features_from = install_whisper(sources if args.whisper_git else None)
    filters = None
    if args.whisper_git:
        import numpy as np
        with np.load(os.path.join(sources, "whisper/assets/mel_filters.npz")) as shipped:
            filters = {n: diff(torch.from_numpy(shipped[f"mel_{n}"]), mel_filters(n))
                       for n in (80, 128)}
    ws = load_wespeaker(sources)
    checkpoint = os.path.join(work, "tiny_whisper.pt")
    write_random_whisper(checkpoint, tiny_whisper_dims(CHECKPOINT_LAYERS, 80, WIDTH, HEADS))
    with open(os.path.join(work, "utt2spk"), "w") as handle:
        handle.writelines(f"utt{i} spk{i % 5}\n" for i in range(10))
    with open(os.path.join(work, "raw.list"), "w") as handle:
        handle.write("")
    torch.manual_seed(0)

    report = Report(args.tolerance)
    report.line(f"tiny Whisper: {CHECKPOINT_LAYERS} blocks in the checkpoint, "
                f"{WHISPER_ARGS['num_blocks']} built, blocks {WHISPER_ARGS['layer_st']}-"
                f"{WHISPER_ARGS['layer_ed']} used, width {WIDTH}, {HEADS} heads; embed_dim "
                f"{EMBED}; torch {torch.__version__}, {args.threads} thread(s); WeSpeaker's "
                f"`import whisper`: {features_from}")
    if filters:
        report.line(f"mel filterbank vs OpenAI's mel_filters.npz: max abs diff "
                    f"{filters[80]:.1e} (80 bands), {filters[128]:.1e} (128)")
    fresh_ws = build_wespeaker(ws, recipe_config(work, 1, None), 5)
    fresh_ours, _ = build_ours(recipe_config(work, 1, None))
    positions = [model.frontend.encoder.positional_embedding for model in (fresh_ws, fresh_ours)]
    report.line(f"fresh models (no model_path): positional embedding max abs diff "
                f"{diff(*positions):.2e}")

    report.line("(a) stage 0: frozen, pretrained from the tiny OpenAI checkpoint")
    config_a = recipe_config(work, 0, checkpoint)
    _, classes = build_ours(config_a)
    cross_load(report, ws, config_a, classes, 10, "(a)")

    report.line("(b) stage 1: everything trains, weights from a checkpoint")
    config_b = recipe_config(work, 1, None)
    ws_model, _ = cross_load(report, ws, config_b, classes, 20, "(b)")
    saved = dict(config_b, model_args=dict(config_b["model_args"],
                                           feat_dim=ws_model.frontend.output_size()))
    config_path = os.path.join(work, "stage1_config.yaml")
    with open(config_path, "w") as handle:
        yaml.safe_dump(saved, handle, sort_keys=False)
    ws_checkpoint = os.path.join(work, "ws_model.pt")
    torch.save(ws_model.state_dict(), ws_checkpoint)   # a bare state dict, as avg_model.pt
    for length in LENGTHS[:2]:
        wavs = waves(length, 99 + length)
        report.embedding(f"(b) our extraction path on WeSpeaker's checkpoint, "
                         f"{length / 16000:g} s", wespeaker_run(ws, ws_model, wavs)["embedding"],
                         extraction_path(config_path, ws_checkpoint, wavs))
    report.line("FAILED: a difference beyond tolerance" if report.failed else
                f"all embeddings within {args.tolerance:g}")
    return 1 if report.failed else 0


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wespeaker_git", required=True,
                        help="a clone of wenet-e2e/wespeaker (its HEAD is exported)")
    parser.add_argument("--whisper_git", default=None,
                        help="a clone of openai/whisper (its HEAD's audio.py is exported); "
                             "without it WeSpeaker's front-end gets our log-mel")
    parser.add_argument("--work_dir", default=None, help="scratch directory (default: a new "
                        "temporary one)")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=1)
    sys.exit(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
