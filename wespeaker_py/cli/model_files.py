"""The files a loaded model consists of, which no output of a ``wespeaker-py`` subcommand may
replace unless writing that very file is the subcommand's job (``calibrate`` writes the
model's calibration.json, ``window-lda`` its window LDA, ``band-fill`` its band fill); nor
may an output take a companion file's name beside the model, which every later load of it
would read."""
from __future__ import annotations

import argparse
from typing import Dict, Mapping, Optional, Sequence


def files_beside(model) -> Dict[str, str]:
    """``{name: path}`` of the files beside ``model`` that exist, by their names there
    (:func:`~wespeaker_py.api.companion_files.companions_at` at its
    :attr:`~wespeaker_py.api.SpeakerModel.companion_prefix`)."""
    from wespeaker_py.api.companion_files import companions_at
    prefix = model.companion_prefix
    return {} if prefix is None else companions_at(prefix)


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
    :func:`model_files` (named as ``--model MODEL's NAME``) or the calibration that
    ``--calibration`` names, or that lies beside the model under a companion file's name
    (:func:`~wespeaker_py.api.companion_files.companion_name_at`), existing or not; but for
    the names in ``writes``: the model's files that the subcommand is there to write."""
    from wespeaker_py.io.layout import CALIBRATION_NAME
    from wespeaker_py.api.companion_files import companion_name_at
    from wespeaker_py.utils.paths import OutputNotWritableError, refuse_output_over_input
    own = {f"--model {args.model}'s {name}": path
           for name, path in model_files(model).items() if name not in writes}
    if CALIBRATION_NAME not in writes:
        own["--calibration"] = args.calibration
    refuse_output_over_input(outputs, own)
    prefix = model.companion_prefix
    for flag, path in outputs.items():
        name = None if path is None or prefix is None else companion_name_at(path, prefix)
        if name is not None and name not in writes:
            raise OutputNotWritableError(
                f"{flag} {path} would be --model {args.model}'s {name}, which every load of "
                f"the model reads as its own; choose another output path")
