"""Where the companion files of a model lie and which exist: the path prefix beside the model
(its folder, or ``model.`` beside ``model.pt``/``model.onnx``) that their names extend, and
the mean vector, calibration, window LDAs and band fills found there."""
import os
from typing import Dict, Optional, Sequence, Tuple

from wespeaker_py.api.calibration import CALIBRATION_NAME
from wespeaker_py.diarization.options import NARROWBAND_WINDOW_LDA, WINDOW_LDA_NAME
from wespeaker_py.io.layout import MEAN_NAME
from wespeaker_py.utils.paths import files_named_by_rate, rate_in_name, same_file

FIXED_NAMES = (MEAN_NAME, CALIBRATION_NAME, WINDOW_LDA_NAME)


def rate_templates() -> Tuple[str, ...]:
    """The companion names made for a rate (``{}``: the rate): narrowband window LDAs and
    band fills."""
    from wespeaker_py.frontend.band_fill import BAND_FILL_NAME   # imports torch: when asked
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
