"""Where the companion files of a model lie and which exist: the path prefix beside the model
(its folder, or ``model.`` beside ``model.pt``/``model.onnx``) that their names extend, and
the mean vector, calibration, window LDAs and band fills found there; and what learning one
of them takes (its heard rate, its data folders, where it is written)."""
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from wespeaker_py.errors import WespeakerError
from wespeaker_py.io.layout import (BAND_FILL_NAME, CALIBRATION_NAME, MEAN_NAME,
                                    NARROWBAND_WINDOW_LDA, WINDOW_LDA_NAME)
from wespeaker_py.utils.paths import files_named_by_rate, rate_in_name, same_file
from wespeaker_py.utils.values import is_whole_number

FIXED_NAMES = (MEAN_NAME, CALIBRATION_NAME, WINDOW_LDA_NAME)


def rate_templates() -> Tuple[str, ...]:
    """The companion names made for a rate (``{}``: the rate): narrowband window LDAs and
    band fills."""
    return NARROWBAND_WINDOW_LDA, BAND_FILL_NAME


def companion_prefix(model_path: str) -> str:
    """What the companion files of the model at ``model_path`` start with: a folder and its
    separator (``exp/``), or the file's path without its extension and a dot
    (``exp/avg_model.``)."""
    if os.path.isdir(model_path):
        return os.path.join(model_path, "")
    return os.path.splitext(model_path)[0] + "."


def side_file_prefix(window_lda_path: Optional[str]) -> Optional[str]:
    """``window_lda_path`` without its file name (a folder, or ``model.`` for ONNX); None
    when there is none, or it is not named ``window_lda.npz``."""
    if window_lda_path is None or not window_lda_path.endswith(WINDOW_LDA_NAME):
        return None
    return window_lda_path[:-len(WINDOW_LDA_NAME)]


def companions_at(prefix: str, names: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """``{name: path}`` of the companion files that exist at ``prefix``, by their names there
    (``mean_vec.npy``, ``calibration.json``, ``window_lda.npz``, ``window_lda_<HZ>hz.npz``,
    ``band_fill_<HZ>hz.npz``), sorted by name; ``names``: only those of these names (a
    template of :func:`rate_templates` stands for the files of its form)."""
    found = [path for name in (names or FIXED_NAMES + rate_templates())
             for path in files_named_by_rate(prefix, name)]
    return {path[len(prefix):]: path for path in sorted(set(found)) if os.path.isfile(path)}


def companion_name_at(path: str, prefix: str) -> Optional[str]:
    """The companion name that ``path`` has at ``prefix`` (``exp/band_fill_8000hz.npz`` at
    ``exp/``: ``band_fill_8000hz.npz``), whether the file exists or not; None when ``path``
    is not one of the companion files at ``prefix``."""
    folder, start = os.path.split(prefix)
    where, name = os.path.split(path)
    if not name.startswith(start) or not same_file(where or os.curdir, folder or os.curdir):
        return None
    name = name[len(start):]
    if name in FIXED_NAMES or any(rate_in_name(template, name) is not None
                                  for template in rate_templates()):
        return name
    return None


def check_heard_rate(heard_rate: Any, sample_rate: int) -> int:
    """``heard_rate`` as an int: 0 (the model's ``sample_rate``) or a rate below it."""
    if not is_whole_number(heard_rate) or not 0 <= heard_rate < sample_rate:
        raise WespeakerError(f"heard_rate must be a whole number of Hz below the model's "
                             f"{sample_rate} Hz (0: its own rate), got {heard_rate!r}")
    return int(heard_rate)


def learnt_file_target(output: Optional[str], beside_model: Optional[str]) -> str:
    """Where a companion file being learnt is written: ``output``, else ``beside_model``
    (its place beside the model; None when the model has no folder, an error here)."""
    target = output or beside_model
    if target is None:
        raise WespeakerError("this model has no folder beside it; give output=")
    return target


def data_folders(data: Union[str, Sequence[str]]) -> List[str]:
    """The Kaldi data directories a companion file is learnt from: ``data``, one or many."""
    return [data] if isinstance(data, str) else list(data)
