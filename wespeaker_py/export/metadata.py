"""What an exported file records of the model in it.

Every export carries one JSON dict (:func:`model_info`: model name, sample rate, front-end
settings, identity, size) extended by its exporter with what it measured: ``embed_dim``,
``mean_subtracted`` (whether the graph subtracts a mean vector itself) and the shortest
input (``min_samples`` for a waveform graph, ``min_frames`` for a features one). ONNX
graphs hold it in ``metadata_props`` under :data:`INFO_KEY`, beside :data:`KIND_KEY` saying
what the graph takes (:data:`WAVEFORM_KIND` or :data:`FEATURE_KIND`), both read back with
:func:`read_onnx_info`; TorchScript files (features in) hold it as the extra file
:data:`TORCHSCRIPT_INFO_FILE`, read back with
``torch.jit.load(path, _extra_files={TORCHSCRIPT_INFO_FILE: ""})``.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Tuple

import torch.nn as nn

from wespeaker_py.models.complexity import count_params

KIND_KEY = "wespeaker_py_kind"
INFO_KEY = "wespeaker_py_info"
WAVEFORM_KIND = "waveform_embedding"
FEATURE_KIND = "feature_embedding"
TORCHSCRIPT_INFO_FILE = "wespeaker_py_info.json"


def model_info(name: str, frontend: nn.Module, network: nn.Module,
               identity: str) -> Dict[str, Any]:
    """What every export records of the model ``name`` (the config's ``model``): its fbank
    or TFMel ``frontend``'s settings, the speaker ``network``'s size and the model's
    ``identity`` (:mod:`wespeaker_py.runtime.identity`)."""
    return {"model": name, "sample_rate": int(frontend.sample_rate),
            "num_mel_bins": int(frontend.output_dim),
            "frame_length": frontend.frame_length, "frame_shift": frontend.frame_shift,
            "cmn": bool(getattr(frontend, "cmn", False)), "identity": identity,
            "frontend": type(frontend).__name__,
            "params_millions": round(count_params(network) / 1e6, 3)}


def info_json(info: Dict[str, Any]) -> str:
    """``info`` as the JSON text an export stores."""
    return json.dumps(info, sort_keys=True)


def add_onnx_metadata(graph: Any, kind: str, info: Dict[str, Any]) -> None:
    """Record ``kind`` and ``info`` in the ``metadata_props`` of ``graph`` (an
    ``onnx.ModelProto``)."""
    for key, value in ((KIND_KEY, kind), (INFO_KEY, info_json(info))):
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value


def read_onnx_info(props: Mapping[str, str],
                   source: str) -> Tuple[Optional[str], Dict[str, Any]]:
    """``(kind, info)`` recorded in an ONNX graph's metadata ``props`` (``metadata_props`` as a
    dict, or onnxruntime's ``custom_metadata_map``); ``(None, {})`` for a graph with no
    kind recorded (not exported by wespeaker_py).

    Raises ValueError naming ``source`` (the file) and the key when the kind is recorded
    but the info is missing or not a JSON object.
    """
    kind = props.get(KIND_KEY)
    if kind is None:
        return None, {}
    if INFO_KEY not in props:
        raise ValueError(f"{source}: ONNX metadata records kind {kind!r} but has no "
                         f"{INFO_KEY!r} entry")
    try:
        info = json.loads(props[INFO_KEY])
    except json.JSONDecodeError as error:
        raise ValueError(f"{source}: ONNX metadata {INFO_KEY!r} is not valid JSON "
                         f"({error})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{source}: ONNX metadata {INFO_KEY!r} is a JSON "
                         f"{type(info).__name__}, not an object")
    return kind, info
