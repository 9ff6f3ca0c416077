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

from wespeaker_py.models import family_module, get_model
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


# The input size (mel bins) of the recipes, unless a family's RECIPE_FEAT_DIM says otherwise.
DEFAULT_FEAT_DIM = 80


def recipe_feat_dim(name: str) -> int:
    """The input size (mel bins) the VoxCeleb v2 recipe gives model ``name``: its family's
    ``RECIPE_FEAT_DIM``, else :data:`DEFAULT_FEAT_DIM`."""
    return getattr(family_module(name), "RECIPE_FEAT_DIM", DEFAULT_FEAT_DIM)


def recipe_input_dim(name: str) -> int:
    """The width of one input frame of model ``name`` as the recipe builds it:
    :func:`recipe_feat_dim`, except for a model over every W2V-BERT hidden state,
    which reads them side by side (``(num_frontend_hidden_layers + 1) * feat_dim``)."""
    layers = recipe_model_args(name).get("num_frontend_hidden_layers")
    return recipe_feat_dim(name) * (1 if layers is None else layers + 1)


def recipe_model_args(name: str, feat_dim: Optional[int] = None,
                      deployed: bool = False) -> Dict[str, object]:
    """The model_args the VoxCeleb v2 recipe trains model ``name`` with: its entry in
    its family's ``RECIPE_MODEL_ARGS``, and the input size.

    The input size ``feat_dim`` (default: :func:`recipe_feat_dim`) goes under the
    family's ``INPUT_SIZE_KEY`` (``acoustic_dim`` for SimAM-ResNet), else ``feat_dim``.
    ``deployed`` adds the family's ``DEPLOYED_FORM_ARGS``, the inference-time form
    where a model has one (RepVGG), as the results table counts it. A model without
    an entry is a ValueError naming it and the table its entry belongs in.
    """
    family = family_module(name)
    args = getattr(family, "RECIPE_MODEL_ARGS", {}).get(name)
    if args is None:
        raise ValueError(f"no recipe model_args for model {name!r}: they belong in "
                         f"RECIPE_MODEL_ARGS of {family.__name__}, beside its MODELS")
    input_key = getattr(family, "INPUT_SIZE_KEY", "feat_dim")
    model_args = {input_key: recipe_feat_dim(name) if feat_dim is None else feat_dim, **args}
    if deployed:
        model_args.update(getattr(family, "DEPLOYED_FORM_ARGS", {}))
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
    Every model's recipe model_args are looked up before any model is built, so a model
    without them (:func:`recipe_model_args`) stops the table at once. A model the recipe's
    arguments cannot build (a generic name such as ``ResNet``) is a ValueError naming it.
    """
    plans = []
    for name in names:
        dim = recipe_feat_dim(name) if feat_dim is None else feat_dim
        plans.append((name, recipe_model_args(name, dim, deployed=True),
                      recipe_input_dim(name) // recipe_feat_dim(name) * dim))
    rows = []
    for name, model_args, width in progress_bar(plans, desc="models", unit="model"):
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
