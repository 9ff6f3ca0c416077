"""The file names of an experiment folder, an embedding set and a model folder, in one place.

An experiment folder (``exp_dir``) holds ``config.yaml``, ``models/`` (the checkpoints
and ``avg_model.pt``), ``train.log`` and ``scores/<trials name>.score``; a WeSpeaker-style
model folder holds ``config.yaml`` and ``avg_model.pt`` side by side, with the files that
travel with a model (its calibration, window LDAs, band fills) and, when fine-tuned,
the run's report and work folder. An embedding set's folder holds ``xvector.ark``/``.scp``,
the speaker means ``spk_xvector.ark``/``.scp`` and the set's mean ``mean_vec.npy``. These
are WeSpeaker's names (and wespeaker-py's), which its recipes and users rely on: they do
not change. Imports no torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from wespeaker_py.errors import WespeakerError

CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "avg_model.pt"   # the averaged model, the one a model folder is loaded with
MODELS_DIR = "models"
SCORES_DIR = "scores"
EMBEDDINGS_DIR = "embeddings"
SCORE_SUFFIX = ".score"
EMBEDDINGS_NAME = "xvector.ark"
SPEAKER_MEANS_NAME = "spk_xvector.ark"
MEAN_NAME = "mean_vec.npy"
# the files that travel with a model, beside its weights (or beside a single file under its
# stem, ``<stem>.calibration.json``: api.companion_files)
CALIBRATION_NAME = "calibration.json"   # its score calibration (api.calibration)
WINDOW_LDA_NAME = "window_lda.npz"   # its window LDA for diarization (diarization.projection)
NARROWBAND_WINDOW_LDA = "window_lda_{}hz.npz"   # a window LDA learnt from audio heard at {} Hz
BAND_FILL_NAME = "band_fill_{}hz.npz"   # its band fill for audio heard at {} Hz (frontend)
ONNX_NAME = "model.onnx"   # the graph an export to a folder writes there (api.exporting)
# a fine-tuned model folder (finetune.run)
REPORT_NAME = "finetune.json"   # what the fine-tuning did, and its dev figures before and after
WORK_DIR = "work"   # the run's lists and phases, kept for a rerun to resume
REQUEST_NAME = "request.json"   # in WORK_DIR: the run's arguments, which a rerun must match


class ArchiveNameError(WespeakerError, ValueError):
    """An embedding archive path that does not end in ``.ark``."""


def scp_path_for(ark_path: str) -> str:
    """The scp that indexes ``ark_path`` (``x/xvector.ark`` -> ``x/xvector.scp``)."""
    root, ext = os.path.splitext(ark_path)
    if ext != ".ark":
        raise ArchiveNameError(f"an embedding archive must end in '.ark', got {ark_path!r}")
    return root + ".scp"


@dataclass(frozen=True)
class ExperimentLayout:
    """Where a run's outputs go inside ``exp_dir``."""

    exp_dir: str

    @property
    def model_dir(self) -> str:
        return os.path.join(self.exp_dir, MODELS_DIR)

    @property
    def config_path(self) -> str:
        return os.path.join(self.exp_dir, CONFIG_NAME)

    @property
    def avg_model_path(self) -> str:
        return os.path.join(self.model_dir, WEIGHTS_NAME)

    @property
    def log_path(self) -> str:
        return os.path.join(self.exp_dir, "train.log")

    @property
    def curves_path(self) -> str:
        return os.path.join(self.exp_dir, "train_curves.png")

    @property
    def tensorboard_dir(self) -> str:
        return os.path.join(self.exp_dir, "tensorboard")

    @property
    def scores_dir(self) -> str:
        return os.path.join(self.exp_dir, SCORES_DIR)

    @property
    def embeddings_dir(self) -> str:
        return os.path.join(self.exp_dir, EMBEDDINGS_DIR)

    def score_path(self, trials: str) -> str:
        """The cosine scores of the trial list ``trials`` (a path: its file name counts)."""
        return score_path_in(self.scores_dir, trials)


def score_path_in(scores_dir: str, trials: str) -> str:
    """``scores_dir/<file name of trials>.score``: where the cosine scores of ``trials`` go."""
    return os.path.join(scores_dir, os.path.basename(trials) + SCORE_SUFFIX)


@dataclass(frozen=True)
class EmbeddingSetLayout:
    """The files of one embedding set in ``set_dir``: its embeddings, the per-speaker means
    and the set's mean vector."""

    set_dir: str

    @classmethod
    def beside(cls, embed_ark: str) -> "EmbeddingSetLayout":
        """The set whose folder holds ``embed_ark`` (whatever that ark is named)."""
        return cls(os.path.dirname(os.path.abspath(embed_ark)))

    @property
    def embeddings_ark(self) -> str:
        return os.path.join(self.set_dir, EMBEDDINGS_NAME)

    @property
    def embeddings_scp(self) -> str:
        return scp_path_for(self.embeddings_ark)

    @property
    def speaker_means_ark(self) -> str:
        return os.path.join(self.set_dir, SPEAKER_MEANS_NAME)

    @property
    def speaker_means_scp(self) -> str:
        return scp_path_for(self.speaker_means_ark)

    @property
    def mean_path(self) -> str:
        return os.path.join(self.set_dir, MEAN_NAME)
