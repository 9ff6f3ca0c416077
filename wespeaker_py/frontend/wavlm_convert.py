"""Original WavLM checkpoints <-> Hugging Face WavLM directories.

The *original* format is the file Microsoft released (``WavLM-Large.pt``) and
s3prl's ``wavlm_large`` upstream loads: ``torch.save({"cfg": dict, "model":
state_dict})``, where ``cfg`` holds the fields of the original ``WavLMConfig``
and ``model`` uses fairseq names (``encoder.layers.N.self_attn.k_proj.weight``,
``feature_extractor.conv_layers.I.0.weight``, ``post_extract_proj``,
``encoder.pos_conv.0.weight_g``, a relative position bias in layer 0 only).

A *Hugging Face* directory holds ``config.json`` and ``model.safetensors`` for
``transformers.WavLMModel``. The two name sets are related by one explicit
table (:func:`original_to_hf_names`), used in both directions, and every
tensor must be accounted for: a checkpoint tensor the table does not name, or a
named tensor the checkpoint lacks, is an error that names it.

Loading a Hugging Face directory goes through :func:`load_hf_directory`,
which is as strict: local files only, every tensor accounted for.
``transformers`` is imported only inside the functions that need it, so this
module can be imported without the ``ssl`` extra.
"""
from __future__ import annotations

import ast
import os
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Tuple

import torch

from wespeaker_py.errors import ModelSourceError, WespeakerError, first_line
from wespeaker_py.utils.atomic_files import atomic_dir, save_torch
from wespeaker_py.utils.logging_utils import get_logger, listed_names
from wespeaker_py.utils.torch_files import CheckpointFileNotFound, read_checkpoint

if TYPE_CHECKING:
    from transformers import WavLMConfig, WavLMModel

logger = get_logger(__name__)

# Defaults of the original WavLMConfig: a cfg dict may leave any of these out.
ORIGINAL_CFG_DEFAULTS: Dict[str, Any] = {
    "extractor_mode": "default",
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "conv_bias": False,
    "feature_grad_mult": 1.0,
    "normalize": False,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "dropout_features": 0.0,
    "mask_length": 10,
    "mask_prob": 0.65,
    "mask_selection": "static",
    "mask_other": 0,
    "no_mask_overlap": False,
    "mask_min_space": 1,
    "mask_channel_length": 10,
    "mask_channel_prob": 0.0,
    "mask_channel_selection": "static",
    "mask_channel_other": 0,
    "no_mask_channel_overlap": False,
    "mask_channel_min_space": 1,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "relative_position_embedding": False,
    "num_buckets": 320,
    "max_distance": 1280,
    "gru_rel_pos": False,
}

_EXTRACTOR_MODE_TO_HF = {"default": "group", "layer_norm": "layer"}
_HF_TO_EXTRACTOR_MODE = {hf: original for original, hf in _EXTRACTOR_MODE_TO_HF.items()}

# Per transformer layer: original name (below encoder.layers.N.) -> HF name.
_LAYER_NAMES = {
    "self_attn.q_proj.weight": "attention.q_proj.weight",
    "self_attn.q_proj.bias": "attention.q_proj.bias",
    "self_attn.k_proj.weight": "attention.k_proj.weight",
    "self_attn.k_proj.bias": "attention.k_proj.bias",
    "self_attn.v_proj.weight": "attention.v_proj.weight",
    "self_attn.v_proj.bias": "attention.v_proj.bias",
    "self_attn.out_proj.weight": "attention.out_proj.weight",
    "self_attn.out_proj.bias": "attention.out_proj.bias",
    "self_attn.grep_linear.weight": "attention.gru_rel_pos_linear.weight",
    "self_attn.grep_linear.bias": "attention.gru_rel_pos_linear.bias",
    "self_attn.grep_a": "attention.gru_rel_pos_const",
    "self_attn_layer_norm.weight": "layer_norm.weight",
    "self_attn_layer_norm.bias": "layer_norm.bias",
    "fc1.weight": "feed_forward.intermediate_dense.weight",
    "fc1.bias": "feed_forward.intermediate_dense.bias",
    "fc2.weight": "feed_forward.output_dense.weight",
    "fc2.bias": "feed_forward.output_dense.bias",
    "final_layer_norm.weight": "final_layer_norm.weight",
    "final_layer_norm.bias": "final_layer_norm.bias",
}

# The weight-normalised positional convolution: its HF names depend on the
# torch version (parametrizations in recent torch, weight_g/weight_v before).
_POS_CONV_HF_CANDIDATES = {
    "encoder.pos_conv.0.weight_g": ("encoder.pos_conv_embed.conv.parametrizations.weight.original0",
                                    "encoder.pos_conv_embed.conv.weight_g"),
    "encoder.pos_conv.0.weight_v": ("encoder.pos_conv_embed.conv.parametrizations.weight.original1",
                                    "encoder.pos_conv_embed.conv.weight_v"),
}


# Weight files a Hugging Face model directory may hold (single file or sharded).
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                   "pytorch_model.bin", "pytorch_model.bin.index.json")


class WavLMConversionError(WespeakerError, ValueError):
    """A WavLM checkpoint does not fit the conversion; the message names the key."""


def parse_conv_feature_layers(spec: str) -> List[Tuple[int, int, int]]:
    """Read the original ``conv_feature_layers`` expression without ``eval``.

    Accepts list and tuple literals of integers joined by ``+`` (list
    concatenation) and ``*`` (list repetition), e.g.
    ``"[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"``.
    """
    def value(node: ast.AST):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(item) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise WavLMConversionError(
            f"cfg.conv_feature_layers: unsupported expression {ast.dump(node)} in {spec!r}")

    try:
        layers = value(ast.parse(spec, mode="eval").body)
    except SyntaxError as err:
        raise WavLMConversionError(
            f"cfg.conv_feature_layers is not an expression: {spec!r}") from err
    if not isinstance(layers, list) or not all(
            isinstance(layer, tuple) and len(layer) == 3 for layer in layers):
        raise WavLMConversionError(
            f"cfg.conv_feature_layers must list (dim, kernel, stride) triples, got {spec!r}")
    return layers


def format_conv_feature_layers(layers: List[Tuple[int, int, int]]) -> str:
    """The ``conv_feature_layers`` expression for explicit ``(dim, kernel, stride)`` triples."""
    return "[" + ", ".join(f"({dim}, {kernel}, {stride})" for dim, kernel, stride in layers) + "]"


def complete_original_cfg(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """``cfg`` with the original defaults filled in; unknown fields are logged and kept."""
    unknown = sorted(set(cfg) - set(ORIGINAL_CFG_DEFAULTS))
    if unknown:
        logger.warning("original WavLM cfg fields without effect here: %s", ", ".join(unknown))
    full = dict(ORIGINAL_CFG_DEFAULTS)
    full.update(cfg)
    return full


def hf_config_from_original_cfg(cfg: Mapping[str, Any]) -> "WavLMConfig":
    """The ``transformers.WavLMConfig`` describing the same network as an original ``cfg``.

    Raises :class:`WavLMConversionError` naming the field for variants that
    ``transformers.WavLMModel`` cannot express (no gated relative position
    bias, GLU feed-forward, ...).
    """
    from transformers import WavLMConfig

    cfg = complete_original_cfg(cfg)
    required = {"relative_position_embedding": True, "gru_rel_pos": True}
    for key, needed in required.items():
        if cfg[key] != needed:
            raise WavLMConversionError(
                f"cfg.{key} is {cfg[key]!r}; transformers' WavLM needs {needed!r}")
    if cfg["extractor_mode"] not in _EXTRACTOR_MODE_TO_HF:
        raise WavLMConversionError(f"cfg.extractor_mode {cfg['extractor_mode']!r} is not one of "
                                   f"{sorted(_EXTRACTOR_MODE_TO_HF)}")
    if cfg["activation_fn"] not in ("gelu", "relu"):
        raise WavLMConversionError(f"cfg.activation_fn {cfg['activation_fn']!r} is not supported")
    # Waveform normalisation is not stored in a transformers config; the
    # front-end derives it from the extractor mode, so the two must agree.
    if bool(cfg["normalize"]) != (cfg["extractor_mode"] == "layer_norm"):
        raise WavLMConversionError(
            f"cfg.normalize={cfg['normalize']!r} with extractor_mode={cfg['extractor_mode']!r}: "
            f"only normalize=True with layer_norm (WavLM Large) or normalize=False with "
            f"default (WavLM Base/Base+) is supported")
    conv_layers = parse_conv_feature_layers(cfg["conv_feature_layers"])
    return WavLMConfig(
        hidden_size=cfg["encoder_embed_dim"],
        num_hidden_layers=cfg["encoder_layers"],
        num_attention_heads=cfg["encoder_attention_heads"],
        intermediate_size=cfg["encoder_ffn_embed_dim"],
        hidden_act=cfg["activation_fn"],
        hidden_dropout=cfg["dropout"],
        attention_dropout=cfg["attention_dropout"],
        activation_dropout=cfg["activation_dropout"],
        feat_proj_dropout=cfg["dropout_input"],
        layerdrop=cfg["encoder_layerdrop"],
        feat_extract_norm=_EXTRACTOR_MODE_TO_HF[cfg["extractor_mode"]],
        feat_extract_activation="gelu",
        conv_dim=[dim for dim, _, _ in conv_layers],
        conv_kernel=[kernel for _, kernel, _ in conv_layers],
        conv_stride=[stride for _, _, stride in conv_layers],
        conv_bias=cfg["conv_bias"],
        num_conv_pos_embeddings=cfg["conv_pos"],
        num_conv_pos_embedding_groups=cfg["conv_pos_groups"],
        do_stable_layer_norm=cfg["layer_norm_first"],
        num_buckets=cfg["num_buckets"],
        max_bucket_distance=cfg["max_distance"],
        mask_time_prob=cfg["mask_prob"],
        mask_time_length=cfg["mask_length"],
        mask_feature_prob=cfg["mask_channel_prob"],
        mask_feature_length=cfg["mask_channel_length"],
        layer_norm_eps=1e-5,
    )


def original_cfg_from_hf_config(config: "WavLMConfig") -> Dict[str, Any]:
    """The original ``cfg`` dict for a ``transformers.WavLMConfig`` (inverse of the above)."""
    if config.feat_extract_norm not in _HF_TO_EXTRACTOR_MODE:
        raise WavLMConversionError(f"config.feat_extract_norm {config.feat_extract_norm!r} "
                                   f"has no original counterpart")
    mode = _HF_TO_EXTRACTOR_MODE[config.feat_extract_norm]
    cfg = dict(ORIGINAL_CFG_DEFAULTS)
    cfg.update({
        "extractor_mode": mode,
        "encoder_layers": config.num_hidden_layers,
        "encoder_embed_dim": config.hidden_size,
        "encoder_ffn_embed_dim": config.intermediate_size,
        "encoder_attention_heads": config.num_attention_heads,
        "activation_fn": config.hidden_act,
        "layer_norm_first": config.do_stable_layer_norm,
        "conv_feature_layers": format_conv_feature_layers(
            list(zip(config.conv_dim, config.conv_kernel, config.conv_stride))),
        "conv_bias": config.conv_bias,
        "normalize": mode == "layer_norm",
        "dropout": config.hidden_dropout,
        "attention_dropout": config.attention_dropout,
        "activation_dropout": config.activation_dropout,
        "encoder_layerdrop": config.layerdrop,
        "dropout_input": config.feat_proj_dropout,
        "mask_prob": config.mask_time_prob,
        "mask_length": config.mask_time_length,
        "mask_channel_prob": config.mask_feature_prob,
        "mask_channel_length": config.mask_feature_length,
        "conv_pos": config.num_conv_pos_embeddings,
        "conv_pos_groups": config.num_conv_pos_embedding_groups,
        "relative_position_embedding": True,
        "num_buckets": config.num_buckets,
        "max_distance": config.max_bucket_distance,
        "gru_rel_pos": True,
    })
    return cfg


def original_to_hf_names(config: "WavLMConfig", hf_names: List[str]) -> Dict[str, str]:
    """Every original tensor name of the network ``config`` describes -> its HF name.

    ``hf_names`` are the state_dict keys of ``WavLMModel(config)``; the table
    must cover exactly those (the pre-training mask vector ``mask_emb`` maps to
    ``masked_spec_embed``, which transformers creates only when a masking
    probability is positive).
    """
    names: Dict[str, str] = {}
    for index in range(len(config.conv_dim)):
        block = f"feature_extractor.conv_layers.{index}"  # same prefix on both sides
        names[f"{block}.0.weight"] = f"{block}.conv.weight"
        if config.conv_bias:
            names[f"{block}.0.bias"] = f"{block}.conv.bias"
        if config.feat_extract_norm == "layer":
            norm = f"{block}.2.1"  # Sequential(TransposeLast, LayerNorm, TransposeLast)
        elif index == 0:
            norm = f"{block}.2"  # GroupNorm of the first block only
        else:
            continue
        names[f"{norm}.weight"] = f"{block}.layer_norm.weight"
        names[f"{norm}.bias"] = f"{block}.layer_norm.bias"
    for suffix in ("weight", "bias"):
        names[f"layer_norm.{suffix}"] = f"feature_projection.layer_norm.{suffix}"
        names[f"post_extract_proj.{suffix}"] = f"feature_projection.projection.{suffix}"
        names[f"encoder.layer_norm.{suffix}"] = f"encoder.layer_norm.{suffix}"
    names["encoder.pos_conv.0.bias"] = "encoder.pos_conv_embed.conv.bias"
    available = set(hf_names)
    for original, candidates in _POS_CONV_HF_CANDIDATES.items():
        found = [name for name in candidates if name in available]
        if not found:
            raise WavLMConversionError(
                f"this transformers version names the positional convolution differently "
                f"(none of {candidates}); cannot place {original}")
        names[original] = found[0]
    if "masked_spec_embed" in available:
        names["mask_emb"] = "masked_spec_embed"
    for layer in range(config.num_hidden_layers):
        block = f"encoder.layers.{layer}"
        for original_name, hf_name in _LAYER_NAMES.items():
            names[f"{block}.{original_name}"] = f"{block}.{hf_name}"
        if layer == 0:
            names[f"{block}.self_attn.relative_attention_bias.weight"] = \
                f"{block}.attention.rel_attn_embed.weight"
    uncovered = sorted(available - set(names.values()))
    if uncovered:
        raise WavLMConversionError(f"transformers' WavLMModel has tensor {uncovered[0]!r} that no "
                                   f"original tensor maps to ({len(uncovered)} such tensors)")
    return names


def renamed_state(state: Mapping[str, torch.Tensor], names: Mapping[str, str],
                  expected: Mapping[str, torch.Tensor], what: str,
                  key_prefix: str = "") -> Dict[str, torch.Tensor]:
    """``state`` under the names of ``names``; every key accounted for, shapes checked
    against ``expected`` (by target name). A mismatch raises :class:`WavLMConversionError`
    starting with ``what`` and naming the tensor, its name preceded by ``key_prefix``
    (where ``state`` was cut out of a larger one under that prefix)."""
    unexpected = sorted(set(state) - set(names))
    if unexpected:
        raise WavLMConversionError(f"{what}: unexpected tensor {key_prefix + unexpected[0]!r} "
                                   f"({len(unexpected)} unexpected tensors)")
    missing = sorted(set(names) - set(state))
    if missing:
        raise WavLMConversionError(f"{what}: missing tensor {key_prefix + missing[0]!r} "
                                   f"({len(missing)} missing tensors)")
    renamed = {}
    for source, target in names.items():
        tensor = state[source]
        if tuple(tensor.shape) != tuple(expected[target].shape):
            raise WavLMConversionError(
                f"{what}: tensor {key_prefix + source!r} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(expected[target].shape)} for {target!r}")
        renamed[target] = tensor
    return renamed


def dropped_mask_emb(state: Mapping[str, torch.Tensor], names: Mapping[str, str]
                     ) -> Mapping[str, torch.Tensor]:
    """Leave out ``mask_emb`` when the HF network has no masking vector to receive it."""
    if "mask_emb" in state and "mask_emb" not in names:
        logger.info("mask_emb is dropped: masking probabilities are 0, so transformers keeps "
                    "no masking vector (it is used only in pre-training)")
        return {key: value for key, value in state.items() if key != "mask_emb"}
    return state


def wavlm_from_original(cfg: Mapping[str, Any], state: Mapping[str, torch.Tensor],
                        source: str = "checkpoint") -> "WavLMModel":
    """Build a ``transformers.WavLMModel`` holding an original checkpoint's weights."""
    from transformers import WavLMModel

    config = hf_config_from_original_cfg(cfg)
    model = WavLMModel(config)
    expected = model.state_dict()
    names = original_to_hf_names(config, list(expected))
    hf_state = renamed_state(dropped_mask_emb(state, names), names, expected, source)
    model.load_state_dict(hf_state, strict=True)
    return model.eval()


def original_state_from_wavlm(model: "WavLMModel") -> Dict[str, Any]:
    """The original-format checkpoint dict ``{"cfg", "model"}`` of a ``WavLMModel``."""
    hf_state = model.state_dict()
    names = original_to_hf_names(model.config, list(hf_state))
    if "mask_emb" not in names:
        raise WavLMConversionError("the model has no masked_spec_embed (masking probabilities are "
                                   "0), but original checkpoints always carry mask_emb")
    # the table covers every HF tensor (checked above), so nothing is left out
    state = {original: hf_state[hf].detach().clone().contiguous() for original, hf in names.items()}
    return {"cfg": original_cfg_from_hf_config(model.config), "model": state}


_ORIGINAL_FILE = "an original WavLM checkpoint (WavLM-Large.pt, the file s3prl's wavlm_large loads)"


def read_original_checkpoint(path: str) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """``(cfg, state_dict)`` of an original WavLM checkpoint file."""
    if os.path.isdir(path):
        raise WavLMConversionError(f"{path} is a directory (a Hugging Face WavLM directory "
                                   f"needs no conversion); {_ORIGINAL_FILE} is expected")
    try:
        checkpoint = read_checkpoint(path, weights_only=True, what=_ORIGINAL_FILE)
    except CheckpointFileNotFound:
        raise
    except ModelSourceError as error:
        raise WavLMConversionError(str(error)) from None
    if "cfg" not in checkpoint or "model" not in checkpoint:
        keys = [str(key) for key in checkpoint]
        found = f"{len(keys)} keys: {listed_names(keys, 5)}"
        raise WavLMConversionError(f"{path}: not {_ORIGINAL_FILE}, which holds 'cfg' and 'model'; "
                                   f"it holds {found}")
    if not isinstance(checkpoint["cfg"], Mapping):
        raise WavLMConversionError(
            f"{path}: 'cfg' must be a dict, got {type(checkpoint['cfg']).__name__}")
    return dict(checkpoint["cfg"]), dict(checkpoint["model"])


def load_original_checkpoint(path: str) -> "WavLMModel":
    """A ``transformers.WavLMModel`` built from an original WavLM checkpoint file."""
    cfg, state = read_original_checkpoint(path)
    return wavlm_from_original(cfg, state, source=path)


def save_hf_directory(model: "WavLMModel", dst_dir: str) -> None:
    """``model.save_pretrained`` into ``dst_dir``, which appears complete or not at all.

    ``dst_dir`` must not exist or be an empty directory (else :class:`FileExistsError`); a
    killed conversion's temporary folder is removed by the next write beside it
    (:func:`~wespeaker_py.utils.atomic_files.atomic_dir`).
    """
    with atomic_dir(dst_dir) as tmp_dir:
        model.save_pretrained(tmp_dir)
        _apply_umask(tmp_dir)


def _apply_umask(directory: str) -> None:
    """Give the files in ``directory`` the mode a plain open would have (transformers writes
    ``model.safetensors`` readable by its owner only)."""
    umask = os.umask(0)
    os.umask(umask)
    for name in os.listdir(directory):
        os.chmod(os.path.join(directory, name), 0o666 & ~umask)


def convert_original_checkpoint(src: str, dst_dir: str) -> None:
    """Convert an original WavLM checkpoint file into a Hugging Face directory."""
    model = load_original_checkpoint(src)
    save_hf_directory(model, dst_dir)
    logger.info("converted %s (%d layers, hidden %d) into %s", src,
                model.config.num_hidden_layers, model.config.hidden_size, dst_dir)


def export_original_checkpoint(hf_dir: str, dst: str) -> None:
    """Write a Hugging Face WavLM directory as an original-format checkpoint file.

    The inverse of :func:`convert_original_checkpoint`; it lets the tests and
    the mini recipe exercise the original-checkpoint path with a tiny model.
    """
    checkpoint = original_state_from_wavlm(load_hf_directory(hf_dir))
    save_torch(checkpoint, dst)
    logger.info("wrote original-format checkpoint %s from %s", dst, hf_dir)


def check_hf_directory(path: str) -> None:
    """Raise FileNotFoundError saying what is missing unless ``path`` is a complete HF directory."""
    if not os.path.isdir(path):
        what = "is a file, not a directory" if os.path.exists(path) else "does not exist"
        raise FileNotFoundError(
            f"Hugging Face WavLM directory {path} {what} (such a directory holds config.json "
            f"and model.safetensors or pytorch_model.bin, e.g. a copy of microsoft/wavlm-large)")
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(
            f"{config_file} is missing: a Hugging Face WavLM directory holds config.json and "
            f"model.safetensors (or pytorch_model.bin), e.g. a copy of microsoft/wavlm-large")
    if not any(os.path.isfile(os.path.join(path, name)) for name in HF_WEIGHT_FILES):
        raise FileNotFoundError(
            f"{path} has config.json but no weights: place one of {', '.join(HF_WEIGHT_FILES)} "
            f"beside it")


def load_hf_directory(path: str) -> "WavLMModel":
    """Load ``transformers.WavLMModel`` from a local directory, never from the hub.

    Every tensor of the directory must fill a tensor of the model and the other
    way round; any mismatch raises :class:`WavLMConversionError` naming it.
    The model comes back in float32 and eval mode.
    """
    check_hf_directory(path)   # before the import: a wrong --src needs no transformers
    from transformers import WavLMConfig, WavLMModel

    try:
        config = WavLMConfig.from_pretrained(path, local_files_only=True)
    except Exception as error:   # transformers' many errors for a file it cannot read
        raise WavLMConversionError(f"{path}/config.json: not a readable WavLM config "
                                   f"({first_line(error)})") from None
    if config.model_type != "wavlm":
        raise WavLMConversionError(f"{path}/config.json describes a {config.model_type!r} model, "
                                   f"not 'wavlm'")
    try:
        model, info = WavLMModel.from_pretrained(path, config=config, local_files_only=True,
                                                 output_loading_info=True)
    except Exception as error:   # a damaged weights file (safetensors' or torch's errors)
        raise WavLMConversionError(f"{path}: its WavLM weights cannot be read "
                                   f"({first_line(error)})") from None
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        problems = sorted(str(item) for item in info.get(kind) or [])
        if problems:
            raise WavLMConversionError(f"{path}: {kind.replace('_', ' ')[:-1]} {problems[0]} "
                                       f"({len(problems)} in all)")
    return model.float().eval()
