"""A model's identity: one digest of what makes its embeddings what they are.

Galleries and calibration files record the identity of the model that wrote them,
so that using one with another model (say a second training run of the same
architecture) is an error instead of silently wrong names and probabilities.

The identity of a torch model (:func:`embedder_identity`) is the SHA-256 of

* the speaker model's state (parameters and BatchNorm statistics, as loaded from the
  checkpoint; a RepVGG model in its fused form), every tensor in sorted key order with
  its dtype and shape;
* the front-end's learned weights (an SSL front-end's; fbank and TFMel have none: their
  filter banks follow from the settings below);
* the canonical JSON of the front-end settings (:func:`frontend_settings`): sample rate,
  front-end kind and every argument that changes an inference embedding; settings used
  only in training (dither, SpecAugment, learning-rate scales) are left out.

The model's name and ``model_args`` are not hashed: an argument that changes a model's
embeddings changes its weights' keys or shapes too (hashed above). The one exception, a
checkpoint loaded under another parameter-free pooling of the same width (``TAP`` for
``TSDP``), is a wrong config rather than another model, and hashing them would change
every identity recorded so far (galleries, calibration files, exported graphs).

It is the same in every process and thread that loads the same checkpoint with the same
config, and is computed once per loaded model, on first use. An ONNX graph exported
from a model carries that model's identity; an older graph without one is identified by
the SHA-256 of its file. Messages show the first :data:`SHORT_LENGTH` hex digits.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, Iterable, Optional, Set, Tuple

import numpy as np
import torch
import torch.nn as nn

from wespeaker_py.config import DatasetArgs
from wespeaker_py.errors import WespeakerError
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.paths import file_digest

logger = get_logger(__name__)

SHORT_LENGTH = 12
# what a file records once it holds results of several models (or mean vectors), forced
# together: it matches no model, so every later use needs force again
MIXED = "mixed"
# front-end arguments that act in training only (or only say where weights come from)
TRAINING_ONLY_ARGS = frozenset({
    "dither", "do_spec_aug", "freq_mask_width", "time_mask_width",   # fbank, TFMel
    "frozen", "frozen_bf16", "gradient_checkpointing", "lr_scale",   # SSL
    "download_dir", "path_or_url",                                    # SSL weights: hashed
    "model_name", "model_config_file", "use_bnb", "bnb_config_args",  # W2V-BERT: hashed too
    "use_lora", "lora_config_args",
    "model_path",                                                     # Whisper: hashed too
})
# files already warned about for having no identity (one warning per file and process)
_WARNED_UNRECORDED: Set[str] = set()


class ModelMismatchError(WespeakerError, ValueError):
    """A gallery or calibration file written by another model than the one using it."""


def _inference_args(value: Any) -> Any:
    """``value`` (a config block or plain data) as JSON data without training-only keys."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {key: _inference_args(item) for key, item in value.items()
                if key not in TRAINING_ONLY_ARGS}
    if isinstance(value, (list, tuple)):
        return [_inference_args(item) for item in value]
    return value


def frontend_settings(dataset_args: DatasetArgs) -> Dict[str, Any]:
    """The settings of ``dataset_args`` that change an inference embedding."""
    return {"sample_rate": dataset_args.resample_rate, "frontend": dataset_args.frontend,
            "args": _inference_args(dataset_args.frontend_args),
            "cmn": bool(dataset_args.cmvn and dataset_args.cmvn_args.norm_mean)}


def _hash_tensors(hasher, named: Iterable[Tuple[str, torch.Tensor]]) -> None:
    for key, tensor in sorted(named, key=lambda item: item[0]):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        hasher.update(f"{key}\0{data.dtype}\0{tuple(tensor.shape)}\0".encode())
        hasher.update(data.view(torch.uint8).numpy().tobytes())


def embedder_identity(model: nn.Module, frontend: nn.Module,
                      settings: Dict[str, Any]) -> str:
    """The identity (64 hex digits) of ``frontend`` + ``model`` built with ``settings``."""
    hasher = hashlib.sha256(b"wespeaker_py model identity 1\0")
    _hash_tensors(hasher, model.state_dict().items())
    _hash_tensors(hasher, (("frontend." + key, value)
                           for key, value in frontend.named_parameters()))
    hasher.update(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode())
    return hasher.hexdigest()


def file_identity(path: str) -> str:
    """The SHA-256 (64 hex digits) of a file: the identity of a model file that records none."""
    return file_digest(path)


def short_identity(identity: str) -> str:
    """The first :data:`SHORT_LENGTH` hex digits, for messages."""
    return identity[:SHORT_LENGTH]


def combined_record(recorded: Optional[str], current: str, holds_results: bool) -> str:
    """What a file that held results under ``recorded`` (an identity or mean vector digest;
    None: an older file that recorded none) records once results made under ``current``
    are added: ``current`` when it held none, or they agree (or it recorded none), else
    :data:`MIXED`."""
    if not holds_results or recorded is None or recorded == current:
        return current
    return MIXED


def _described(record: str) -> str:
    return ("several models (results added with --force)" if record == MIXED
            else f"model {short_identity(record)}")


def check_recorded_identity(path: str, what: str, recorded: str, identity: str,
                            force: bool = False) -> None:
    """Check that the ``what`` file at ``path`` was written by the model of ``identity``.

    A file recording another identity raises :class:`ModelMismatchError` naming both,
    unless ``force``, which makes it a warning. A file recording none (written before
    identities were recorded) is used with a warning, once per file and process.
    """
    if not recorded:
        if os.path.abspath(path) not in _WARNED_UNRECORDED:
            _WARNED_UNRECORDED.add(os.path.abspath(path))
            logger.warning("%s: this %s records no model identity (written by an older "
                           "version); using it with model %s, unchecked", path, what,
                           short_identity(identity))
        return
    if recorded == identity:
        return
    message = (f"{path}: this {what} was made with {_described(recorded)}, not "
               f"with the model in use ({short_identity(identity)})")
    if not force:
        raise ModelMismatchError(f"{message}; its results would be wrong. Use the model "
                                 f"that made it, or pass --force (force=True) to use it anyway")
    logger.warning("%s; used anyway (--force)", message)


def mean_vec_digest(mean_vec: Optional[np.ndarray]) -> str:
    """What galleries and calibrations record of the mean vector subtracted before a cosine:
    "" for none, else the SHA-256 (64 hex digits) of its float32 values."""
    if mean_vec is None:
        return ""
    values = np.ascontiguousarray(mean_vec, dtype=np.float32).reshape(-1)
    return hashlib.sha256(b"wespeaker_py mean vector\0" + values.tobytes()).hexdigest()


def check_recorded_mean(path: str, what: str, recorded: Optional[str], current: str,
                        force: bool = False) -> None:
    """Check that the ``what`` file at ``path`` was made with the mean vector the model
    subtracts now (digests of :func:`mean_vec_digest`; ``recorded`` None: a file written
    before they were recorded, not checked). Another one (or none where there is one, or
    the reverse) moves every cosine: :class:`ModelMismatchError` unless ``force``, which
    makes it a warning."""
    if recorded is None or recorded == current:
        return

    def subtracting(digest: str) -> str:
        if digest == MIXED:
            return "with several mean vectors (results added with --force)"
        return (f"with mean vector {short_identity(digest)} subtracted" if digest
                else "without a mean vector")

    message = (f"{path}: this {what} was made {subtracting(recorded)}, and the model in use "
               f"scores {subtracting(current)}")
    if not force:
        raise ModelMismatchError(f"{message}; every cosine moves with it. Make it again, or "
                                 f"load the model with the mean vector it was made with, or "
                                 f"pass --force (force=True) to use it anyway")
    logger.warning("%s; used anyway (--force)", message)
