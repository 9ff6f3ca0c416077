"""The files a loaded model consists of, which no output of a ``wespeaker-py`` subcommand may
replace unless writing that very file is the subcommand's job (``calibrate`` writes the
model's calibration.json, ``window-lda`` its window LDA, ``band-fill`` its band fill)."""
from __future__ import annotations

import argparse
from typing import Dict, Mapping, Optional, Sequence


def files_beside(model) -> Dict[str, str]:
    """``{name: path}`` of the files beside ``model`` that exist, by their names there
    (:func:`~wespeaker_py.api.companion_files.companions_at`), and a calibration named
    elsewhere that the model reads (:meth:`~wespeaker_py.api.SpeakerModel.companion_files`)."""
    from wespeaker_py.api.companion_files import companion_prefix, companions_at
    files = companions_at(companion_prefix(model.source))
    files.update(model.companion_files())
    return files


def model_files(model) -> Dict[str, str]:
    """``{name: path}`` of the files ``model`` consists of: its config and checkpoint (a
    torch model) or its graph (ONNX), and its :func:`files_beside`."""
    if model.backend.kind == "torch":
        from wespeaker_py.api.loading import torch_model_files
        config, checkpoint = torch_model_files(model.source, model.config_path)
        files = {"config": config, "checkpoint": checkpoint}
    else:
        files = {"graph": model.source}
    files.update(files_beside(model))
    return files


def refuse_over_model_files(args: argparse.Namespace, model,
                            outputs: Mapping[str, Optional[str]],
                            writes: Sequence[str] = ()) -> None:
    """Refuse an output (flag -> path) that is one of the loaded ``model``'s
    :func:`model_files` (named as ``--model MODEL's NAME``), but for those named in
    ``writes``: the model's files that the subcommand is there to write."""
    from wespeaker_py.utils.file_utils import refuse_output_over_input
    own = {f"--model {args.model}'s {name}": path
           for name, path in model_files(model).items() if name not in writes}
    refuse_output_over_input(outputs, own)
