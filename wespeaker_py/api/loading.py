"""Where a model comes from: :func:`load_model` for folders, checkpoints and ONNX files.

Accepted sources:

* an experiment directory: ``config.yaml`` + ``models/avg_model.pt``;
* a WeSpeaker-style model folder: ``config.yaml`` + ``avg_model.pt`` side by side
  (the layout of WeSpeaker's released models), loaded strictly and unchanged;
* a checkpoint file (``avg_model.pt``, ``model_<epoch>.pt``) with ``config=``, or
  with ``config.yaml`` beside it or one folder up;
* an ``.onnx`` file written by ``wespeaker-py export --onnx --with_frontend``.

Files that travel with a folder are read from it: ``mean_vec.npy`` (subtracted
before every cosine), ``calibration.json``, the window LDAs (``window_lda.npz``,
``window_lda_<HZ>hz.npz``) and the band fills (``band_fill_<HZ>hz.npz``). Beside a
single file they are ``<stem>.mean_vec.npy``, ``<stem>.calibration.json`` and so on
(a checkpoint file loaded from a folder that has its own such files says which it
leaves unused); ``wespeaker-py export --with_frontend`` writes the model's beside its
graph.
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple, Union

import numpy as np

from wespeaker_py.api.companion_files import companion_prefix, companions_at
from wespeaker_py.api.model import EmbeddingShapeError, SpeakerModel
from wespeaker_py.errors import (MissingPackagesError, ModelSourceError, WespeakerError,
                                 first_line)
from wespeaker_py.io.layout import (CALIBRATION_NAME, CONFIG_NAME, MEAN_NAME, REQUEST_NAME,
                                    WEIGHTS_NAME, WINDOW_LDA_NAME, WORK_DIR, EmbeddingSetLayout,
                                    ExperimentLayout)
from wespeaker_py.scoring.embeddings import load_mean_vector
from wespeaker_py.train.checkpoint import checkpoints_by_epoch, epoch_from_name
from wespeaker_py.utils.logging_utils import get_logger, listed_names
from wespeaker_py.utils.tables import DataFormatError

logger = get_logger(__name__)

RECIPE_NUM_AVG = 10   # checkpoints WeSpeaker's recipes average, when a config names none

_torch_threads_warned = False


def is_onnx_source(source: Union[str, "os.PathLike[str]"]) -> bool:
    """Whether :func:`load_model` reads ``source`` as an ONNX graph (an ``.onnx`` path that
    is not a folder) rather than as PyTorch weights."""
    path = os.fspath(source)
    return path.endswith(".onnx") and not os.path.isdir(path)


def _folder_files(folder: str) -> Tuple[str, str]:
    """``(config, checkpoint)`` of a model folder or experiment directory."""
    config = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(config) and os.path.isfile(os.path.join(folder, WORK_DIR,
                                                                  REQUEST_NAME)):
        raise ModelSourceError(f"{folder} holds a wespeaker-py finetune run that has not "
                               f"finished (its {WORK_DIR}/{REQUEST_NAME}, no model yet): run "
                               f"the same finetune command again to finish it")
    if not os.path.isfile(config):
        raise ModelSourceError(f"{folder} has no {CONFIG_NAME}: place the model's config "
                               f"(model, model_args, dataset_args) at {config}")
    places = (folder, ExperimentLayout(folder).model_dir)
    for place in places:
        if os.path.isfile(os.path.join(place, WEIGHTS_NAME)):
            return config, os.path.join(place, WEIGHTS_NAME)
    where = (f"{WEIGHTS_NAME} at {os.path.join(folder, WEIGHTS_NAME)} (a model folder) or "
             f"{ExperimentLayout(folder).avg_model_path} (an experiment)")
    held = [_checkpoints_in(place) for place in places]
    if not any(held):
        raise ModelSourceError(f"{folder} has no weights: place {where}")
    names = [os.path.join(place, name) for place, names in zip(places, held) for name in names]
    hint = f"give one as the model (--model {names[0]})"
    for place, names_here in zip(places, held):
        epochs = [name for name in names_here if epoch_from_name(name) is not None]
        if epochs:   # as the recipe's stage that writes avg_model.pt
            hint += (f", or average the last ones: python -m wespeaker_py.bin.average_model "
                     f"--src_path {place} --num {min(len(epochs), _num_avg(config))} "
                     f"--dst_model {os.path.join(place, WEIGHTS_NAME)}")
            break
    raise ModelSourceError(f"{folder} has no weights: no {where}. It holds "
                           f"{listed_names(names)}: {hint}")


def _num_avg(config: str) -> int:
    """The ``num_avg`` of the training config at ``config`` (how many checkpoints its
    recipe averages), or :data:`RECIPE_NUM_AVG` when it names no usable one."""
    from wespeaker_py.config.loading import read_yaml
    try:
        value = read_yaml(config).get("num_avg")
    except Exception:   # noqa: BLE001 -- a hint only; the config's own load names its faults
        return RECIPE_NUM_AVG
    return value if isinstance(value, int) and value >= 1 else RECIPE_NUM_AVG


def _checkpoints_in(folder: str) -> List[str]:
    """The ``.pt`` file names in ``folder`` (none when it is not one), the latest
    ``model_<epoch>.pt`` first, then the others by name."""
    if not os.path.isdir(folder):
        return []
    others = sorted(name for name in os.listdir(folder)
                    if name.endswith(".pt") and epoch_from_name(name) is None
                    and os.path.isfile(os.path.join(folder, name)))
    return checkpoints_by_epoch(folder)[::-1] + others


def _folder_of_checkpoint(checkpoint: str) -> Optional[str]:
    """The folder whose ``config.yaml`` a checkpoint file belongs to: its own, or the
    one above (``exp/models/avg_model.pt`` belongs to ``exp``); None when neither has one."""
    here = os.path.dirname(os.path.abspath(checkpoint))
    for folder in (here, os.path.dirname(here)):
        if os.path.isfile(os.path.join(folder, CONFIG_NAME)):
            return folder
    return None


def _config_beside(checkpoint: str) -> str:
    folder = _folder_of_checkpoint(checkpoint)
    if folder is not None:
        return os.path.join(folder, CONFIG_NAME)
    raise ModelSourceError(f"{checkpoint}: no {CONFIG_NAME} beside it or one folder up; "
                           f"pass the experiment's config (config=... / --config)")


def _read_mean(path: str) -> Optional[np.ndarray]:
    """The mean vector at ``path`` (:func:`~wespeaker_py.scoring.embeddings.load_mean_vector`),
    None when there is no file."""
    if not os.path.isfile(path):
        return None
    try:
        return load_mean_vector(path)
    except DataFormatError as error:
        raise ModelSourceError(str(error)) from None


def _torch_backend(config_path: str, checkpoint: str, device):
    from wespeaker_py.config import ConfigError, load_model_config
    from wespeaker_py.runtime import TorchBackend, load_embedder
    from wespeaker_py.utils.device import resolve_device
    target = resolve_device(device)   # before the (slow) load
    try:
        config = load_model_config(config_path)
    except ModelSourceError:
        raise
    except ConfigError as error:   # it names the file
        raise ModelSourceError(str(error)) from None
    except (ValueError, OSError) as error:   # DataFormatError, unreadable files
        raise ModelSourceError(f"{config_path}: {error}") from None
    try:
        embedder = load_embedder(config, checkpoint)
    except ModelSourceError:   # the checkpoint (read_checkpoint names it) or its tensors
        raise
    except (ValueError, KeyError) as error:  # a config that does not fit the model
        raise ModelSourceError(f"{config_path}: {error}") from None
    except OSError as error:  # a front-end's pretrained files (the message names them)
        raise ModelSourceError(str(error)) from None
    return TorchBackend(embedder, target, config.model), config.model


def _onnx_backend(path: str, num_threads: Optional[int], device: Optional[str]):
    from wespeaker_py.utils.device import parse_device
    parsed = parse_device(device)
    if parsed is not None and parsed.type != "cpu":
        # OnnxBackend runs onnxruntime's CPU execution provider only
        raise ModelSourceError(f"{path}: an ONNX model runs on the CPU; device={device!r} "
                               f"(--device) cannot be used with it: leave it out or give cpu")
    from wespeaker_py.api.backends import OnnxBackend
    from wespeaker_py.utils.onnx_session import onnxruntime_errors
    try:
        backend = OnnxBackend(path, num_threads)
    except MissingPackagesError:         # no onnxruntime: the message says how to install it
        raise
    except ValueError as error:          # another kind of graph
        raise ModelSourceError(str(error)) from None
    except onnxruntime_errors() as error:   # a file that onnxruntime cannot load as a graph
        raise ModelSourceError(f"{path}: not a readable ONNX model "
                               f"({first_line(error, 200)})") from None
    return backend, str(backend.info.get("model", "onnx"))


def _checked_num_threads(num_threads: object) -> Optional[int]:
    """``load_model``'s ``num_threads`` (:func:`~wespeaker_py.utils.threads.check_num_threads`),
    refused as a :class:`WespeakerError`."""
    from wespeaker_py.utils.threads import check_num_threads
    try:
        return check_num_threads(num_threads)
    except ValueError as error:
        raise WespeakerError(str(error)) from None


def _note_torch_threads(num_threads: int) -> None:
    """Warn (once per process) that ``num_threads`` does not reach a PyTorch model whose
    torch computes with another thread count: torch has one count for the whole process,
    which one model cannot set for itself alone."""
    global _torch_threads_warned
    import torch
    if _torch_threads_warned or torch.get_num_threads() == num_threads:
        return
    _torch_threads_warned = True
    logger.warning("load_model's num_threads=%d applies to ONNX models only; this PyTorch "
                   "model computes with torch's %d thread(s), which are shared by the whole "
                   "process: call torch.set_num_threads(%d) to change them", num_threads,
                   torch.get_num_threads(), num_threads)


def torch_model_files(source: Union[str, "os.PathLike[str]"],
                      config: Optional[str] = None) -> Tuple[str, str]:
    """``(config.yaml, checkpoint)`` of a source with PyTorch weights (see the module doc).

    An ONNX file has no weights to train or rebuild and is refused, as is
    ``config=`` for a folder (which carries its own).
    """
    path = os.fspath(source)
    if not os.path.exists(path):
        raise ModelSourceError(f"{path} does not exist")
    if os.path.isdir(path):
        if config is not None:
            raise ModelSourceError(f"{path} is a folder: its {CONFIG_NAME} is used, "
                                   f"do not pass config=")
        return _folder_files(path)
    if path.endswith(".onnx"):
        raise ModelSourceError(f"{path} is an ONNX model: it has no PyTorch weights to "
                               f"fine-tune; use the experiment directory or model folder "
                               f"it was exported from")
    config_path = config if config is not None else _config_beside(path)
    if not os.path.isfile(config_path):
        raise ModelSourceError(f"config {config_path} does not exist")
    return config_path, path


def _note_folder_files_unused(checkpoint: str, companions: str) -> None:
    """Warn about the files a folder load would use that a load of its checkpoint file
    does not (it reads ``<stem>.<name>``): say, ``exp/calibration.json`` beside the
    ``config.yaml`` of ``exp/models/avg_model.pt``."""
    folder = _folder_of_checkpoint(checkpoint)
    if folder is None:
        return
    names = list(companions_at(companion_prefix(folder)))
    unused = [name for name in names if not os.path.exists(companions + name)]
    if unused:
        logger.warning("%s is loaded as a checkpoint file: it uses %s<name> files, not "
                       "%s of %s; load the folder %s to use those", checkpoint,
                       os.path.basename(companions), ", ".join(unused), folder, folder)


def recipe_mean_vectors(folder: str) -> List[str]:
    """The mean vectors an experiment folder's recipe scored with
    (``embeddings/<set>/mean_vec.npy``), which a load of the folder does not subtract (it
    uses only ``mean_vec.npy`` beside the model); none for a file."""
    embeddings = ExperimentLayout(folder).embeddings_dir
    means = (EmbeddingSetLayout(os.path.join(embeddings, name)).mean_path
             for name in (os.listdir(embeddings) if os.path.isdir(embeddings) else ()))
    return sorted(path for path in means if os.path.isfile(path))


def _note_recipe_mean_vectors(folder: str) -> None:
    """Say so when an experiment folder's recipe scored with a mean vector that a load of
    the folder does not subtract."""
    found = recipe_mean_vectors(folder)
    if found:
        logger.info("%s: scores come without a mean vector, while the recipe's cosine scores "
                    "subtracted %s; give mean_vec= (--mean_vec) to score as it did", folder,
                    " or ".join(found))


def load_model(source: Union[str, "os.PathLike[str]"], device: Optional[str] = None,
               config: Optional[str] = None, mean_vec: Optional[str] = None,
               calibration: Optional[str] = None,
               num_threads: Optional[int] = None, force: bool = False,
               note_recipe_mean: bool = True) -> SpeakerModel:
    """Load a trained speaker model for inference (see the module doc for ``source``).

    ``device``: ``cpu``, ``cuda``, ``cuda:N`` (default: the first GPU when there
    is one); ONNX models run on the CPU (any other ``device`` is an error), with
    ``num_threads`` threads (None or a whole number >= 1; default: onnxruntime's choice).
    A PyTorch model computes with torch's threads, shared by the whole process
    (``torch.set_num_threads``); ``num_threads`` does not change them, and says so once
    when they differ. ``mean_vec``
    and ``calibration`` name other files than the ones beside the model; a calibration
    fitted with another model (another ``identity``) is an error when used, unless
    ``force`` (then a warning), and so is one named here that does not exist (until
    :meth:`~wespeaker_py.api.SpeakerModel.calibrate` writes it). Problems raise
    :class:`~wespeaker_py.errors.ModelSourceError` naming the file and what
    to do. Loaded without a mean vector, an experiment folder whose recipe scored with
    one (:func:`recipe_mean_vectors`) is said so at INFO, with the advice of ``mean_vec=``,
    unless ``note_recipe_mean`` is False (for a caller that says it in its own words).
    """
    num_threads = _checked_num_threads(num_threads)
    path = os.fspath(source)
    if not os.path.exists(path):
        raise ModelSourceError(f"{path} does not exist")
    if is_onnx_source(path):
        if config is not None:
            raise ModelSourceError(f"{path}: an ONNX model carries its settings; "
                                   f"do not pass config=")
        backend, name = _onnx_backend(path, num_threads, device)
    else:
        backend, name = _torch_backend(*torch_model_files(path, config), device)
        if num_threads is not None:
            _note_torch_threads(num_threads)
    companions = companion_prefix(path)
    if not os.path.isdir(path) and not is_onnx_source(path):
        _note_folder_files_unused(path, companions)
    mean_path = mean_vec if mean_vec is not None else companions + MEAN_NAME
    mean = _read_mean(mean_path)
    if mean_vec is not None and mean is None:
        raise ModelSourceError(f"mean vector {mean_vec} does not exist")
    if mean is None and note_recipe_mean and os.path.isdir(path):
        _note_recipe_mean_vectors(path)
    try:
        return SpeakerModel(backend, name, os.path.abspath(path), mean,
                            calibration or companions + CALIBRATION_NAME, force=force,
                            window_lda_path=companions + WINDOW_LDA_NAME,
                            config_path=None if config is None else os.path.abspath(config),
                            calibration_required=bool(calibration))
    except EmbeddingShapeError as error:
        raise ModelSourceError(f"{mean_path}: {error}") from None
