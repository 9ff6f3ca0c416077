"""The checks a ``wespeaker-py`` subcommand makes before the (slow) model load: its input
files exist and are readable, its outputs can be written and replace none of its inputs."""
from __future__ import annotations

import argparse
import os
from typing import Dict, Mapping, Optional, Sequence, Union


def check_before_compute(audio: Sequence[Optional[str]] = (),
                         inputs: Union[Sequence[Optional[str]],
                                       Mapping[str, Optional[str]]] = (),
                         wav_scp: Optional[str] = None,
                         outputs: Sequence[Optional[str]] = (),
                         max_fail_fraction: float = 1.0) -> None:
    """Everything that can fail before the (slow) model load and the compute, checked first.

    Audio files exist and are not empty; other input files (``inputs``: paths, or
    ``{flag: path}`` for messages that start with the flag) are files that exist, are
    not empty and can be read; a ``wav_scp`` is
    read whole (a malformed line, or a key given twice, names its lines) and its
    files that do not exist must not fail the run by themselves
    (:func:`~wespeaker_py.utils.list_jobs.check_missing_inputs`); every output's
    folder is writable. None entries are passed over.
    """
    from wespeaker_py.errors import AudioInputError
    from wespeaker_py.utils.atomic_files import require_writable
    from wespeaker_py.utils.paths import require_input_file
    from wespeaker_py.utils.tables import read_wav_scp
    for path in filter(None, audio):
        if not os.path.exists(path):
            raise AudioInputError(f"{path} does not exist")
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise AudioInputError(f"{path} is empty")
    named = inputs.items() if isinstance(inputs, Mapping) else (("", path) for path in inputs)
    for what, path in named:
        if path:
            require_input_file(path, what)
    if wav_scp is not None:
        from wespeaker_py.audio import is_pipe
        from wespeaker_py.utils.list_jobs import check_missing_inputs
        table = read_wav_scp(wav_scp)
        missing = [wav for wav in table.values() if not is_pipe(wav) and not os.path.exists(wav)]
        check_missing_inputs(wav_scp, len(table), missing, max_fail_fraction)
    for path in filter(None, outputs):
        require_writable(path)


def refuse_over_inputs(args: argparse.Namespace, outputs: Mapping[str, Optional[str]],
                       inputs: Mapping[str, Optional[str]]) -> None:
    """Refuse, before any work, an output that is one of ``inputs`` or of MODEL's files given
    on the command line (--model, --config, --mean_vec); maps of flag -> path. The files
    MODEL finds by itself are known once it is loaded
    (:func:`~wespeaker_py.cli.model_files.refuse_over_model_files`)."""
    from wespeaker_py.utils.paths import refuse_output_over_input
    model_files = {"--model": args.model, "--config": args.config, "--mean_vec": args.mean_vec}
    refuse_output_over_input(outputs, {**inputs, **model_files})


def audio_arguments(paths: Sequence[Optional[str]]) -> Dict[str, Optional[str]]:
    """The audio arguments as :func:`refuse_over_inputs` names them."""
    if len(paths) == 1:
        return {"the audio argument": paths[0]}
    return {f"audio argument {number}": path for number, path in enumerate(paths, 1)}
