"""Side by side: WeSpeaker's W2V-BERT recipe code and ours on one tiny random W2V-BERT.

WeSpeaker's own ``W2VBertFrontend`` + ``W2VBert_Adapter_MFA`` (+ its ArcFace head)
and ``tools/merge_lora.py`` run from an exported copy of its sources; nothing of
WeSpeaker's is in this project. Export the five files it needs:

    mkdir -p /tmp/ws_w2v && git -C /work/.mirror/wenet-e2e+wespeaker/repo archive HEAD \\
        wespeaker/frontend/w2vbert.py wespeaker/models/w2vbert_adapter_mfa.py \\
        wespeaker/models/pooling_layers.py wespeaker/models/projections.py \\
        tools/merge_lora.py | tar -x -C /tmp/ws_w2v

then (about 10 s on one CPU thread):

    flock -x /tmp/wsp_cpu.lock python bench/w2vbert_parity.py --wespeaker_dir /tmp/ws_w2v

Only those files are loaded (by path, under their WeSpeaker module names); the
rest of the ``wespeaker`` package is replaced by stubs: ``speaker_model`` and
``frontend_class_dict`` name just the W2V-BERT classes, ``parse_config_or_kwargs``
reads the YAML as WeSpeaker's does, and ``fire`` is stubbed when not installed.

The tiny W2V-BERT (2 conformer layers, hidden 32) is written as
``tools/make_tiny_w2vbert.py`` writes it, plus a ``preprocessor_config.json``
from ``SeamlessM4TFeatureExtractor(padding_value=1.0)``: facebook/w2v-bert-2.0's
preprocessor config sets feature_size 80, num_mel_bins 80, stride 2,
padding_value 1, padding_side right, return_attention_mask true, sampling_rate
16000; every value but padding_value is the class default (as copies of that
config in public code show; assumed, the hub file itself was not read).

Cases, each on two batches of two equal-length rows, 48240 samples (300 fbank
frames, even) and 48400 samples (301, odd: the last stacked frame is masked),
all in eval mode; WeSpeaker gets waveforms in [-1, 1], ours the same x 32768:

(a) frozen, no LoRA (w2vbert_s1_lora.yaml without LoRA);
(b) LoRA (w2vbert_s1_lora.yaml; LoRA B weights set non-zero);
(c) (b) merged by WeSpeaker's ``merge`` and by ``python -m wespeaker_py.bin.merge_lora``
    (run in-process through its ``main``), each loaded into a w2vbert_s2_ft.yaml model.

For each: state_dict keys and shapes of the whole training model (WeSpeaker: speaker
model + ``frontend`` + ``projection`` as its train.py builds it; ours: the trainer's
``build_model``), WeSpeaker's weights loaded into ours strictly (our checkpoint
loader) and ours into WeSpeaker's (``load_state_dict(strict=True)``), and max abs
differences of the input features, of the hidden states and of the embeddings. The
``ours <- WeSpeaker's features`` row feeds WeSpeaker's processor output through our
encoder and model: what is left once the feature arithmetic is taken out. (b) and (c)
also embed through our extraction path (``load_embedder`` + ``TorchBackend``).
Exits 1 when an embedding differs by more than ``--tolerance``.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import sys
import tempfile
import types
from typing import Any, Dict, List, Optional

import torch
import yaml

from parity_common import (REPO, Report, Sides, add_run_args, build_ours, cross_load, diff,
                           extraction_path, key_report, load_module, on_speaker_list,
                           package_module, quiet, waves, write_speaker_list)
from wespeaker_py.bin import merge_lora as merge_cli
from wespeaker_py.frontend.w2vbert_random import tiny_w2vbert_config, write_random_w2vbert
from wespeaker_py.runtime.checkpoint import load_weights

LAYERS, HIDDEN, ADAPTER, EMBED = 2, 32, 8, 16
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["linear_q", "linear_v"],
        "lora_dropout": 0.0, "bias": "none"}
LENGTHS = (48240, 48400)  # 300 and 301 fbank frames


# -- WeSpeaker's modules, loaded by path ----------------------------------------------------
def load_wespeaker(root: str) -> types.SimpleNamespace:
    """WeSpeaker's W2V-BERT front-end, model, pooling, head and merge_lora, with stubs."""
    load_module(root, "wespeaker/models/pooling_layers.py")
    projections = load_module(root, "wespeaker/models/projections.py")
    mfa = load_module(root, "wespeaker/models/w2vbert_adapter_mfa.py")
    frontend = load_module(root, "wespeaker/frontend/w2vbert.py")
    speaker_model = types.ModuleType("wespeaker.models.speaker_model")
    speaker_model.get_speaker_model = lambda name: getattr(mfa, name)
    sys.modules[speaker_model.__name__] = speaker_model
    package_module("wespeaker.models").speaker_model = speaker_model
    package_module("wespeaker.frontend").frontend_class_dict = {
        "w2vbert": frontend.W2VBertFrontend}
    utils = types.ModuleType("wespeaker.utils.utils")

    def parse_config_or_kwargs(config_file: str, **kwargs: Any) -> Dict[str, Any]:
        with open(config_file) as handle:
            return dict(yaml.load(handle, Loader=yaml.FullLoader), **kwargs)

    utils.parse_config_or_kwargs = parse_config_or_kwargs
    sys.modules[utils.__name__] = utils
    package_module("wespeaker.utils").utils = utils
    try:
        import fire  # noqa: F401
    except ImportError:
        sys.modules["fire"] = types.SimpleNamespace(Fire=lambda *args, **kwargs: None)
    merge = load_module(root, "tools/merge_lora.py", "ws_tools_merge_lora")
    return types.SimpleNamespace(Frontend=frontend.W2VBertFrontend, Model=mfa.W2VBert_Adapter_MFA,
                                 get_projection=projections.get_projection, merge=merge.merge)


# -- configs --------------------------------------------------------------------------------
def recipe_config(work: str, step: int, model_dir: str, use_lora: bool) -> Dict[str, Any]:
    """conf/w2vbert_s{1,2}*.yaml pointed at the tiny model and a tiny speaker list."""
    name = "w2vbert_s1_lora.yaml" if step == 1 else "w2vbert_s2_ft.yaml"
    with open(os.path.join(REPO, "conf", name)) as handle:
        config = yaml.safe_load(handle)
    w2vbert = config["dataset_args"]["w2vbert_args"]
    w2vbert["model_name"] = model_dir
    w2vbert["use_lora"] = use_lora
    w2vbert["lora_config_args"] = dict(LORA) if use_lora else None
    config["model_args"].update(feat_dim=HIDDEN, embed_dim=EMBED, adapter_dim=ADAPTER,
                                num_frontend_hidden_layers=LAYERS)
    return on_speaker_list(config, work, f"exp_s{step}_{int(use_lora)}")


def saved_config(config: Dict[str, Any], num_class: int, path: str) -> str:
    """``config`` as WeSpeaker's train.py saves it (feat_dim, embed_dim, num_class filled)."""
    config = dict(config, projection_args=dict(config["projection_args"], embed_dim=EMBED,
                                               num_class=num_class, do_lm=False))
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    return path


# -- the two models -------------------------------------------------------------------------
def build_wespeaker(ws: types.SimpleNamespace, config: Dict[str, Any], num_class: int
                    ) -> torch.nn.Module:
    """Speaker model + ``frontend`` + ``projection`` as WeSpeaker's train.py builds them."""
    dataset_args = config["dataset_args"]
    with quiet():
        frontend = ws.Frontend(**dataset_args["w2vbert_args"],
                               sample_rate=dataset_args["resample_rate"])
        model = ws.Model(**dict(config["model_args"], feat_dim=frontend.output_size()))
        model.add_module("frontend", frontend)
        model.add_module("projection", ws.get_projection(dict(
            config["projection_args"], embed_dim=EMBED, num_class=num_class, do_lm=False)))
    return model


def noise_scale(name: str) -> Optional[float]:
    """Noise on every speaker-model weight (so a swapped tensor shows) and non-zero LoRA B
    weights (LoRA starts as a no-op); the rest of the front-end as it is."""
    if name.startswith("frontend.") and "lora_B" not in name:
        return None
    return 0.3 if "lora_B" in name else 0.05


# -- running them ---------------------------------------------------------------------------
@torch.no_grad()
def wespeaker_run(model: torch.nn.Module, wavs: torch.Tensor) -> Dict[str, torch.Tensor]:
    """WeSpeaker's extract.py: ``frontend(wavs, wavs_len)`` -> all hidden states -> model."""
    lengths = torch.full((wavs.shape[0],), wavs.shape[1], dtype=torch.long)
    processed = model.frontend.processor(list(wavs), return_tensors="pt", sampling_rate=16000,
                                         padding="longest")
    states, _ = model.frontend(wavs, lengths)
    return {"features": processed["input_features"], "mask": processed["attention_mask"],
            "states": torch.cat(states, dim=-1), "embedding": model(states)[-1]}


@torch.no_grad()
def our_run(model: torch.nn.Module, wavs: torch.Tensor) -> Dict[str, torch.Tensor]:
    scaled = wavs * 32768.0
    features, mask = model.frontend.features.features_and_mask(scaled)
    states = model.frontend(scaled)
    return {"features": features, "mask": mask, "states": states, "embedding": model(states)}


@torch.no_grad()
def our_run_on(model: torch.nn.Module, wavs: torch.Tensor, features: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
    """Our encoder and model on WeSpeaker's processor output (the features taken out)."""
    frontend = model.frontend.features
    valid = mask.bool()
    original = frontend.features_and_mask
    frontend.features_and_mask = lambda *args, **kwargs: (features,
                                                          None if valid.all() else valid)
    try:
        return model(model.frontend(wavs * 32768.0))
    finally:
        frontend.features_and_mask = original


def compare_outputs(report: Report, ws_model: torch.nn.Module, ours: torch.nn.Module,
                    label: str, seed: int) -> None:
    for length in LENGTHS:
        wavs = waves(length, seed + length)
        ws_out, our_out = wespeaker_run(ws_model, wavs), our_run(ours, wavs)
        ws_mask = ws_out["mask"].bool()
        our_mask = (torch.ones_like(ws_mask) if our_out["mask"] is None else our_out["mask"])
        frames = ws_out["features"].shape[1]
        features = diff(ws_out["features"], our_out["features"])
        report.line(f"  {label}, {length} samples ({frames} frames, "
                    f"{int((~ws_mask).sum(dim=1).max())} masked per row): features {features:.2e}"
                    f", masks {'equal' if torch.equal(ws_mask, our_mask) else 'DIFFER'}"
                    f", hidden states {diff(ws_out['states'], our_out['states']):.2e}")
        report.embedding(f"{label}, {length} samples, embeddings", ws_out["embedding"],
                         our_out["embedding"])
        report.embedding(f"{label}, {length} samples, ours <- WeSpeaker's features",
                         ws_out["embedding"],
                         our_run_on(ours, wavs, ws_out["features"], ws_out["mask"]))


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    ws = load_wespeaker(args.wespeaker_dir)
    from transformers import SeamlessM4TFeatureExtractor

    work = args.work_dir or tempfile.mkdtemp(prefix="w2vbert_parity_")
    os.makedirs(work, exist_ok=True)
    model_dir = os.path.join(work, "tiny_w2vbert")
    if not os.path.isfile(os.path.join(model_dir, "model.safetensors")):
        write_random_w2vbert(model_dir, tiny_w2vbert_config(LAYERS), seed=0)
    SeamlessM4TFeatureExtractor(padding_value=1.0).save_pretrained(model_dir)
    torch.manual_seed(0)  # the same random speaker models whether or not the encoder was new
    write_speaker_list(work)
    sides = Sides(build_wespeaker=functools.partial(build_wespeaker, ws),
                  noise_scale=noise_scale, compare=compare_outputs)

    report = Report(args.tolerance)
    report.line(f"tiny W2V-BERT: {LAYERS} layers, hidden {HIDDEN}; adapter_dim {ADAPTER}, "
                f"embed_dim {EMBED}; torch {torch.__version__}, {args.threads} thread(s)")

    report.line("(a) frozen, no LoRA")
    config_a = recipe_config(work, 1, model_dir, use_lora=False)
    _, classes = build_ours(config_a)
    cross_load(report, sides, config_a, classes, 10, "(a)")

    report.line("(b) LoRA")
    config_b = recipe_config(work, 1, model_dir, use_lora=True)
    ws_lora, ours_lora = cross_load(report, sides, config_b, classes, 20, "(b)")
    s1_config = saved_config(config_b, classes, os.path.join(work, "s1_config.yaml"))
    ws_ckpt, our_ckpt = os.path.join(work, "ws_lora.pt"), os.path.join(work, "ours_lora.pt")
    torch.save(ws_lora.state_dict(), ws_ckpt)       # both bare state dicts (avg_model.pt)
    torch.save(ours_lora.state_dict(), our_ckpt)
    lora_embeddings = {length: wespeaker_run(ws_lora, waves(length, 99 + length))["embedding"]
                       for length in LENGTHS}
    for length in LENGTHS:
        report.embedding(f"(b) our extraction path, {length} samples", lora_embeddings[length],
                         extraction_path(s1_config, our_ckpt, waves(length, 99 + length)))

    report.line("(c) after merging the LoRA weights")
    ws_merged, our_merged = (os.path.join(work, "ws_merged.pt"),
                             os.path.join(work, "ours_merged.pt"))
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        ws.merge(s1_config, ws_ckpt, ws_merged)
    if "Merge successful" not in captured.getvalue():
        raise SystemExit(f"WeSpeaker's merge failed:\n{captured.getvalue()}")
    merge_cli.main(["--config", s1_config, "--checkpoint_in", our_ckpt,
                    "--checkpoint_out", our_merged])
    ws_state = torch.load(ws_merged, map_location="cpu")
    our_state = torch.load(our_merged, map_location="cpu")
    report.line(f"  merged checkpoints: keys {key_report(ws_state, our_state)}; max abs "
                f"tensor diff {max(diff(ws_state[k], our_state[k]) for k in ws_state):.2e}")
    config_c = recipe_config(work, 2, model_dir, use_lora=False)
    s2_config = saved_config(config_c, classes, os.path.join(work, "s2_config.yaml"))
    ws_s2 = build_wespeaker(ws, config_c, classes)
    ws_s2.load_state_dict(our_state, strict=True)   # ours merged -> WeSpeaker's S2 model
    ours_s2, _ = build_ours(config_c)
    load_weights(ours_s2, ws_state, ws_merged, allow_head_truncation=False)  # and reverse
    report.line("  WeSpeaker's merged -> our S2 model and our merged -> WeSpeaker's S2 model, "
                "strict loads: ok")
    report.line(f"  (c) state_dict keys of the S2 models: "
                f"{key_report(ws_s2.state_dict(), ours_s2.state_dict())}")
    with quiet():
        ws_s2.eval()
    ours_s2.eval()
    for length in LENGTHS:
        wavs = waves(length, 99 + length)
        ws_out = wespeaker_run(ws_s2, wavs)
        report.embedding(f"(c) {length} samples, WeSpeaker merged vs WeSpeaker LoRA",
                         lora_embeddings[length], ws_out["embedding"])
        report.embedding(f"(c) {length} samples, ours merged vs WeSpeaker merged",
                         ws_out["embedding"], our_run(ours_s2, wavs)["embedding"])
        report.embedding(f"(c) {length} samples, our extraction path (ours merged)",
                         ws_out["embedding"], extraction_path(s2_config, our_merged, wavs))
    return report.finish()


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wespeaker_dir", required=True,
                        help="exported WeSpeaker files (see the docstring)")
    add_run_args(parser)
    sys.exit(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
