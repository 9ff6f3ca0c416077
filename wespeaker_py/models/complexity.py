"""Model size and compute: parameter counts, multiply-accumulates (MACs), and
the summary table of ``python -m wespeaker_py.bin.model_summary``.

MACs come from torch's own FLOP counter (``torch.utils.flop_counter``), which
counts the matrix products and convolutions, two FLOPs per multiply-add;
element-wise work (activations, normalisation, pooling arithmetic) is not
counted, so figures can differ by a few percent from counters that do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from wespeaker_py.models import get_model
from wespeaker_py.utils.progress import progress_bar


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model`` (trainable or not; buffers excluded).

    Speaker models here carry no projection head, so this is the "params
    without the head" figure of the results table.
    """
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, num_frames: int = 200, feat_dim: int = 80) -> int:
    """MACs of one forward pass of ``model`` on a single ``[1, num_frames, feat_dim]`` input.

    The model is run in eval mode under ``torch.no_grad`` and its mode is
    restored afterwards. A model built on the ``meta`` device (``with
    torch.device("meta"): ...``) is counted without computing anything.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    features = torch.randn(1, num_frames, feat_dim, device=device)
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(features)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


# model_args of the VoxCeleb v2 recipe beyond the input size, by name prefix
# (longest first, as in the registry).
_RECIPE_MODEL_ARGS = (
    ("SimAM_ResNet", {"embed_dim": 256}),
    ("XI_VEC_XVEC", {"embed_dim": 512}),
    ("XI_VEC", {"embed_dim": 192}),
    ("XVEC", {"embed_dim": 512}),
    ("ECAPA_TDNN", {"embed_dim": 192}),
    ("ResNet", {"embed_dim": 256}),
    ("REPVGG", {"embed_dim": 256}),
    ("CAMPPlus", {"embed_dim": 512}),
    ("ERes2Net", {"embed_dim": 512}),
    ("Res2Net", {"embed_dim": 256}),
    ("Gemini", {"embed_dim": 256}),
    ("ReDimNet", {"embed_dim": 192}),
    ("W2VBert", {"embed_dim": 256, "pooling_func": "ASP", "adapter_dim": 128,
                 "num_frontend_hidden_layers": 24}),
    ("whisper_PMFA", {"embed_dim": 192}),   # WeSpeaker's VoxCeleb v1 Whisper-PMFA recipe
    ("Whisper_PMFA", {"embed_dim": 192}),
)

# The recipe's input size where it is not 80-dim fbank: WeSpeaker's redimnet*.yaml
# use 72 mel bins (fbank for ReDimNet, TFMel for ReDimNet2).
# W2VBert_Adapter_MFA's feat_dim is the hidden size of W2V-BERT 2.0; whisper_PMFA's the
# outputs of Whisper large-v2's blocks 17-24 side by side (8 x 1280).
_WHISPER_PMFA_FEAT_DIM = 8 * 1280
_RECIPE_FEAT_DIM = (("ReDimNet", 72), ("W2VBert", 1024), ("whisper_PMFA", _WHISPER_PMFA_FEAT_DIM),
                    ("Whisper_PMFA", _WHISPER_PMFA_FEAT_DIM))
DEFAULT_FEAT_DIM = 80


# WeSpeaker's SimAM-ResNet calls its input size acoustic_dim instead of feat_dim.
_INPUT_SIZE_KEY = (("SimAM_ResNet", "acoustic_dim"),)
# The results table reports RepVGG in its re-parameterised deployment form.
_DEPLOYED_FORM_ARGS = (("REPVGG", {"deploy": True}),)


def recipe_feat_dim(name: str) -> int:
    """The input size (mel bins) the VoxCeleb v2 recipe gives model ``name``."""
    return next((dim for prefix, dim in _RECIPE_FEAT_DIM if name.startswith(prefix)),
                DEFAULT_FEAT_DIM)


def recipe_input_dim(name: str) -> int:
    """The width of one input frame of model ``name`` as the recipe builds it:
    :func:`recipe_feat_dim`, except for a model over every W2V-BERT hidden state,
    which reads them side by side (``(num_frontend_hidden_layers + 1) * feat_dim``)."""
    layers = recipe_model_args(name).get("num_frontend_hidden_layers")
    return recipe_feat_dim(name) * (1 if layers is None else layers + 1)


def recipe_model_args(name: str, feat_dim: Optional[int] = None,
                      deployed: bool = False) -> Dict[str, object]:
    """The model_args the VoxCeleb v2 recipe trains model ``name`` with.

    The input size ``feat_dim`` (default: :func:`recipe_feat_dim`) goes under
    WeSpeaker's argument name for the model (``acoustic_dim`` for SimAM-ResNet).
    ``deployed`` selects the inference-time form where a model has one (RepVGG),
    as the results table counts it.
    """
    input_key = next((key for prefix, key in _INPUT_SIZE_KEY if name.startswith(prefix)),
                     "feat_dim")
    if feat_dim is None:
        feat_dim = recipe_feat_dim(name)
    for prefix, args in _RECIPE_MODEL_ARGS:
        if name.startswith(prefix):
            model_args = {input_key: feat_dim, **args}
            break
    else:
        raise ValueError(f"no recipe model_args for model {name!r}")
    if deployed:
        for prefix, args in _DEPLOYED_FORM_ARGS:
            if name.startswith(prefix):
                model_args.update(args)
    return model_args


@dataclass
class ModelSummary:
    """One row of the model table."""

    name: str
    params: int
    macs: int
    embed_dim: int
    feat_dim: int = DEFAULT_FEAT_DIM


def summarize_models(names: Iterable[str], num_frames: int = 200,
                     feat_dim: Optional[int] = None) -> List[ModelSummary]:
    """Build each named model with its recipe model_args (deployed form) and measure it.

    ``feat_dim`` None gives every model its recipe's input size (:func:`recipe_feat_dim`).
    A model the recipe's arguments cannot build (a generic name such as ``ResNet``) is a
    ValueError naming it.
    """
    rows = []
    for name in progress_bar(list(names), desc="models", unit="model"):
        dim = recipe_feat_dim(name) if feat_dim is None else feat_dim
        model_args = recipe_model_args(name, dim, deployed=True)
        width = recipe_input_dim(name) // recipe_feat_dim(name) * dim
        try:
            with torch.device("meta"):  # shapes only: nothing is allocated or computed
                model = get_model(name, **model_args)
        except TypeError as error:   # a generic name: its architecture is not in the table
            raise ValueError(f"{name} cannot be built from the recipe's model_args "
                             f"({error}); name one of its recipe models") from None
        rows.append(ModelSummary(name, count_params(model), count_macs(model, num_frames, width),
                                 int(model_args["embed_dim"]), width))
    return rows


def format_summary_table(rows: Iterable[ModelSummary], num_frames: int = 200) -> str:
    """Markdown table: model, input size, params (M, without head), MACs (G), embedding size."""
    lines = [f"| model | input | params (M) | MACs (G, {num_frames} frames) | embedding |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.name} | {row.feat_dim} | {row.params / 1e6:.3f} "
                     f"| {row.macs / 1e9:.2f} | {row.embed_dim} |")
    return "\n".join(lines)
