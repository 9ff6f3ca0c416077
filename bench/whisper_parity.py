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
import functools
import os
import sys
import tempfile
import types
from typing import Any, Dict, List, Optional

import torch
import yaml

from parity_common import (REPO, Report, Sides, add_run_args, build_ours, cross_load, diff,
                           export, extraction_path, load_module, on_speaker_list,
                           package_module, quiet, waves, write_speaker_list)
from wespeaker_py.config import as_dataset_args
from wespeaker_py.config.loading import config_to_dict
from wespeaker_py.frontend.whisper_features import WhisperLogMel, mel_filters
from wespeaker_py.frontend.whisper_random import tiny_whisper_dims, write_random_whisper

CHECKPOINT_LAYERS, WIDTH, HEADS, EMBED = 4, 16, 2, 16
WHISPER_ARGS = {"num_blocks": 3, "output_size": WIDTH, "n_head": HEADS, "layer_st": 1,
                "layer_ed": 2}
LENGTHS = (32000, 32160, 31 * 16000)   # 200 mel frames, 201 (odd), 31 s (past 30 s)
WESPEAKER_FILES = ("wespeaker/frontend/whisper_encoder.py", "wespeaker/models/whisper_PMFA.py",
                   "wespeaker/models/pooling_layers.py", "wespeaker/models/projections.py",
                   "wespeaker/dataset/dataset_utils.py")
WHISPER_FILES = ("whisper/audio.py", "whisper/utils.py", "whisper/assets/mel_filters.npz")


# -- WeSpeaker's and OpenAI's modules, exported and loaded by path ------------------------
def install_whisper(root: Optional[str]) -> str:
    """Make ``import whisper`` give a ``log_mel_spectrogram``: OpenAI's (exported under
    ``root``) or, without ``root``, ours; says which."""
    if root is not None:
        package = package_module("whisper", os.path.join(root, "whisper"))
        load_module(root, "whisper/utils.py")
        audio = load_module(root, "whisper/audio.py")
        package.log_mel_spectrogram = audio.log_mel_spectrogram
        return "OpenAI's whisper/audio.py (openai/whisper, exported)"
    package = package_module("whisper")
    features = {}

    def log_mel_spectrogram(audio: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
        module = features.setdefault(n_mels, WhisperLogMel(n_mels))
        return module(audio.reshape(1, -1) * 32768.0)[0].T

    package.log_mel_spectrogram = log_mel_spectrogram
    return "a stub whose log_mel_spectrogram is ours (no --whisper_git)"


def load_wespeaker(root: str) -> types.SimpleNamespace:
    """WeSpeaker's Whisper front-end, PMFA model, pooling, head and apply_cmvn."""
    load_module(root, "wespeaker/models/pooling_layers.py")
    projections = load_module(root, "wespeaker/models/projections.py")
    pmfa = load_module(root, "wespeaker/models/whisper_PMFA.py")
    frontend = load_module(root, "wespeaker/frontend/whisper_encoder.py")
    utils = load_module(root, "wespeaker/dataset/dataset_utils.py")
    return types.SimpleNamespace(Frontend=frontend.whisper_encoder, model=pmfa,
                                 get_projection=projections.get_projection,
                                 apply_cmvn=utils.apply_cmvn)


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
    config["model"] = "whisper_PMFA_large_v2"   # as WeSpeaker's run.sh --model
    config["model_args"]["embed_dim"] = EMBED
    return on_speaker_list(config, work, f"exp_{stage}")


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


def noise_scale(name: str) -> Optional[float]:
    """Noise on every weight outside the pretrained encoder blocks (ln_post2 starts as ones
    and zeros, the head at random)."""
    return 0.05 if ".blocks." not in name else None


def trainable_report(ws_model: torch.nn.Module, ours: torch.nn.Module) -> str:
    def names(model: torch.nn.Module) -> set:
        return {name for name, param in model.named_parameters() if param.requires_grad}

    ws_names, our_names = names(ws_model), names(ours)
    frontend = sum(name.startswith("frontend.") for name in ws_names)
    if ws_names == our_names:
        return f"the same {len(ws_names)} parameters train ({frontend} of the front-end)"
    return (f"DIFFER: only WeSpeaker {sorted(ws_names - our_names)[:5]}, only ours "
            f"{sorted(our_names - ws_names)[:5]}")


def loading_checks(config: Dict[str, Any], ws_model: torch.nn.Module,
                   ours: torch.nn.Module) -> List[str]:
    """Which parameters train and, with ``model_path``, the front-ends as each side loaded
    the checkpoint."""
    lines = [trainable_report(ws_model, ours)]
    if config["dataset_args"]["whisper_encoder_args"].get("model_path"):
        ws_front, our_front = ws_model.frontend.state_dict(), ours.frontend.state_dict()
        lines.append(f"front-end after each side's pretrained loading: max abs tensor diff "
                     f"{max(diff(ws_front[key], our_front[key]) for key in ws_front):.2e}")
    return lines


# -- running them ---------------------------------------------------------------------------
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


def compare_outputs(ws: types.SimpleNamespace, report: Report, ws_model: torch.nn.Module,
                    ours: torch.nn.Module, label: str, seed: int) -> None:
    for length in LENGTHS:
        wavs = waves(length, seed + length, silent_quarter=True)
        ws_out, our_out = wespeaker_run(ws, ws_model, wavs), our_run(ours, wavs)
        report.line(f"  {label}, {length / 16000:g} s: mel {tuple(ws_out['mel'].shape[1:])} "
                    f"{diff(ws_out['mel'], our_out['mel']):.2e}, front-end output "
                    f"{tuple(ws_out['features'].shape[1:])} vs "
                    f"{tuple(our_out['features'].shape[1:])} "
                    f"{diff(ws_out['features'], our_out['features']):.2e}")
        report.embedding(f"{label}, {length / 16000:g} s, embeddings", ws_out["embedding"],
                         our_out["embedding"])


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
    sides = Sides(build_wespeaker=functools.partial(build_wespeaker, ws),
                  noise_scale=noise_scale, compare=functools.partial(compare_outputs, ws),
                  checks=loading_checks, ordered_keys=True)
    checkpoint = os.path.join(work, "tiny_whisper.pt")
    write_random_whisper(checkpoint, tiny_whisper_dims(CHECKPOINT_LAYERS, 80, WIDTH, HEADS))
    write_speaker_list(work)
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
    cross_load(report, sides, config_a, classes, 10, "(a)")

    # WeSpeaker's trainer passes the front-end block whole to its constructor: the block as
    # our trainer writes it into config.yaml must build there
    saved_args = config_to_dict(as_dataset_args(config_a["dataset_args"]))
    try:
        build_wespeaker(ws, dict(config_a, dataset_args=saved_args), classes)
        outcome = "builds"
    except TypeError as err:
        outcome = f"FAILS: {err}"
        report.failed = True
    report.line(f"(a) WeSpeaker's model from the dataset_args our config.yaml holds: {outcome}")

    report.line("(b) stage 1: everything trains, weights from a checkpoint")
    config_b = recipe_config(work, 1, None)
    ws_model, _ = cross_load(report, sides, config_b, classes, 20, "(b)")
    saved = dict(config_b, model_args=dict(config_b["model_args"],
                                           feat_dim=ws_model.frontend.output_size()))
    config_path = os.path.join(work, "stage1_config.yaml")
    with open(config_path, "w") as handle:
        yaml.safe_dump(saved, handle, sort_keys=False)
    ws_checkpoint = os.path.join(work, "ws_model.pt")
    torch.save(ws_model.state_dict(), ws_checkpoint)   # a bare state dict, as avg_model.pt
    for length in LENGTHS[:2]:
        wavs = waves(length, 99 + length, silent_quarter=True)
        report.embedding(f"(b) our extraction path on WeSpeaker's checkpoint, "
                         f"{length / 16000:g} s", wespeaker_run(ws, ws_model, wavs)["embedding"],
                         extraction_path(config_path, ws_checkpoint, wavs))
    return report.finish()


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wespeaker_git", required=True,
                        help="a clone of wenet-e2e/wespeaker (its HEAD is exported)")
    parser.add_argument("--whisper_git", default=None,
                        help="a clone of openai/whisper (its HEAD's audio.py is exported); "
                             "without it WeSpeaker's front-end gets our log-mel")
    add_run_args(parser)
    sys.exit(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
