"""The window-LDA companion files of a model: where they live, reading those diarization
uses (each checked against the model, its name and the band fill in use), and learning a
new one."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from wespeaker_py.api.band_fill_files import BandFillFiles, band_fill_mismatch
from wespeaker_py.api.companion_files import (check_heard_rate, companions_at, data_folders,
                                              learnt_file_target)
from wespeaker_py.errors import WespeakerError
from wespeaker_py.io.layout import NARROWBAND_WINDOW_LDA, WINDOW_LDA_NAME
from wespeaker_py.runtime.identity import ModelMismatchError, check_recorded_identity
from wespeaker_py.utils.atomic_files import require_writable
from wespeaker_py.utils.list_jobs import DEFAULT_MAX_FAIL_FRACTION
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.paths import FileStamp, file_stamp
from wespeaker_py.utils.tables import read_key_value

logger = get_logger(__name__)

if TYPE_CHECKING:
    from wespeaker_py.api.model import SpeakerModel
    from wespeaker_py.diarization.projection import WindowLDA


class ChosenLda(NamedTuple):
    """A window LDA diarization uses, and the file it was read from."""

    path: str
    lda: "WindowLDA"


class WindowLdaFiles:
    """The window LDAs of a model (the one at its ``window_lda_path`` and the narrowband ones
    named for a rate beside it), each read again only when its file changes; each method is
    given the model (``SpeakerModel``), which this does not keep."""

    def __init__(self, band_fills: BandFillFiles):
        self._band_fills = band_fills
        # absolute path: (the file's stamp when read, the LDA read)
        self._read: Dict[str, Tuple[Optional[FileStamp], "WindowLDA"]] = {}

    @staticmethod
    def file(model: "SpeakerModel", heard_rate: int = 0) -> Optional[str]:
        """Where the window LDA of ``model`` learnt at ``heard_rate`` lives (0: its
        ``window_lda_path``); None when the model has no folder beside it."""
        from wespeaker_py.diarization.options import window_lda_name
        prefix = model.companion_prefix
        if prefix is None:
            return None if heard_rate else model.window_lda_path
        return prefix + window_lda_name(heard_rate)

    @staticmethod
    def present(model: "SpeakerModel") -> Dict[str, str]:
        """``{name: path}`` of the window LDA files of ``model`` that exist, by the names
        they have beside it."""
        prefix = model.companion_prefix
        if prefix is not None:
            return companions_at(prefix, [WINDOW_LDA_NAME, NARROWBAND_WINDOW_LDA])
        path = model.window_lda_path   # a file of another name: no folder beside the model
        return {WINDOW_LDA_NAME: path} if path and os.path.isfile(path) else {}

    def for_diarization(self, model: "SpeakerModel", choice: str) -> Dict[int, ChosenLda]:
        """``{rate: (file, LDA)}`` of the window LDAs diarization uses: under 0 the one
        ``choice`` names (``off``/``none``: none; a file, which must exist, for every
        recording; ``auto``: the model's ``window_lda_path`` if it exists) and, with
        ``auto``, the narrowband ones beside it under their heard rate, each checked
        against the model and against its file name."""
        from wespeaker_py.diarization.options import (narrowband_rate_of, window_lda_file,
                                                      window_lda_name)
        named = window_lda_file(choice)
        if named is not None:
            lda = self.load(model, named)
            if lda.heard_rate:
                logger.warning("window LDA %s was learnt from audio heard at %d Hz; given "
                               "by name, it projects every recording whatever its rate",
                               named, lda.heard_rate)
            return {0: ChosenLda(named, lda)}
        if choice != "auto":   # off or none
            return {}
        chosen = {}
        path = model.window_lda_path
        if path and os.path.exists(path):
            main = self.load(model, path)
            if main.heard_rate:
                raise ModelMismatchError(
                    f"window LDA {path} was learnt from audio heard at {main.heard_rate} Hz, "
                    f"but that name is for the model's own rate; rename it "
                    f"{window_lda_name(main.heard_rate)}, which serves recordings at or below "
                    f"{main.heard_rate} Hz")
            chosen[0] = ChosenLda(path, main)
        prefix = model.companion_prefix
        for name, found in ({} if prefix is None else
                            companions_at(prefix, [NARROWBAND_WINDOW_LDA])).items():
            rate = narrowband_rate_of(name)
            if rate is None:
                logger.warning("ignoring %s: not a window_lda_<HZ>hz.npz name", found)
                continue
            lda = self.load(model, found)
            if lda.heard_rate != rate or rate >= model.sample_rate:
                raise ModelMismatchError(
                    f"window LDA {found}: its name says {rate} Hz but it was learnt from audio "
                    f"heard at {lda.heard_rate or model.sample_rate} Hz; a narrowband one is "
                    f"learnt with heard_rate below the model's {model.sample_rate} Hz and "
                    f"named for it")
            if lda.band_fill != self._band_fills.refreshed_digest(model, rate):
                learnt = "through another band fill" if lda.band_fill else "without a band fill"
                band_fill_mismatch(
                    f"window LDA {found} was learnt from windows {learnt}, but {rate} Hz audio "
                    f"now goes through {self._band_fills.refreshed_description(model, rate)}; "
                    f"learn it again: wespeaker-py window-lda --heard_rate {rate}", model.force)
            chosen[rate] = ChosenLda(found, lda)
        return chosen

    def files_in_use(self, model: "SpeakerModel") -> Union[Dict[int, str], str]:
        """``{rate: file}`` of the window LDAs diarization uses by default (``auto``; for
        its ``info``): the narrowband ones under the rate they serve recordings at or
        below, the model-rate one under the model's rate; or why they cannot be used."""
        from wespeaker_py.diarization.projection import WindowLDAError
        from wespeaker_py.frontend.band_fill import BandFillError
        try:
            chosen = self.for_diarization(model, "auto")
        except (WindowLDAError, ModelMismatchError, BandFillError) as error:
            return f"not used: {error}"   # info reports it rather than failing
        return {rate or model.sample_rate: item.path for rate, item in chosen.items()}

    def load(self, model: "SpeakerModel", path: str) -> "WindowLDA":
        """One window LDA file, checked against ``model`` (identity and dimension); read
        again only when the file changed since it was last read."""
        from wespeaker_py.diarization.projection import WindowLDA
        key = os.path.abspath(path)
        stamp = file_stamp(path)
        known = self._read.get(key)
        if known is not None and stamp is not None and known[0] == stamp:
            return known[1]
        lda = WindowLDA.load(path)
        check_recorded_identity(path, "window LDA", lda.identity, model.identity, model.force)
        if lda.input_dim != model.embed_dim:
            raise ModelMismatchError(f"window LDA {path} takes {lda.input_dim}-dim embeddings, "
                                     f"the model gives {model.embed_dim}")
        logger.info("window LDA %s: %s", path, lda.describe())
        self._read[key] = (stamp, lda)
        return lda

    def train(self, model: "SpeakerModel", data: Union[str, Sequence[str]],
              output: Optional[str] = None,
              dim: Optional[int] = None, batch_size: int = 32, progress: bool = True,
              max_fail_fraction: float = DEFAULT_MAX_FAIL_FRACTION,
              heard_rate: int = 0, **settings: Any) -> "WindowLDA":
        """Learn a window LDA from the labelled speakers of the Kaldi data directories
        ``data`` and write it (see :meth:`~wespeaker_py.api.SpeakerModel.train_window_lda`);
        for a ``heard_rate`` without a band fill beside a model that can learn one, that
        band fill is learnt from the same data first."""
        from wespeaker_py.diarization.pipeline import labelled_window_embeddings
        from wespeaker_py.diarization.projection import DEFAULT_LDA_DIM, fit_window_lda
        heard_rate = check_heard_rate(heard_rate, model.sample_rate)
        target = learnt_file_target(output, self.file(model, heard_rate))
        require_writable(target)
        if (heard_rate and self._band_fills.fbank_frontend(model) is not None
                and model.companion_prefix is not None
                and self._band_fills.refreshed_digest(model, heard_rate) == ""):
            logger.info("no band fill for %d Hz beside the model: learning one from the same "
                        "data first", heard_rate)
            model.train_band_fill(data, heard_rate, progress=progress,
                                  max_fail_fraction=max_fail_fraction)
        diarizer = model.diarizer("energy", batch_size=batch_size, progress=progress,
                                  window_lda="off", **settings)
        rows, speakers, skipped = [], [], 0
        for folder in data_folders(data):
            utt2spk_path = os.path.join(folder, "utt2spk")
            utt2spk = read_key_value(utt2spk_path, allow_spaces_in_value=False)
            embeddings, labels, tally = labelled_window_embeddings(
                diarizer, os.path.join(folder, "wav.scp"), utt2spk, progress, max_fail_fraction,
                (heard_rate, 0) if heard_rate else (0,), utt2spk_path)
            rows.append(embeddings)
            speakers.append(labels)
            skipped += tally.num_skipped
        lda = fit_window_lda(np.concatenate(rows), np.concatenate(speakers),
                             dim or DEFAULT_LDA_DIM, model.identity, heard_rate,
                             self._band_fills.refreshed_digest(model, heard_rate))
        if os.path.exists(target):
            _note_replaced(target, lda)
        lda.save(target)
        logger.info("window LDA -> %s: %s; utterances skipped: %d", target, lda.describe(),
                    skipped)
        return lda


def _note_replaced(path: str, new: "WindowLDA") -> None:
    """Say what the window LDA about to be written at ``path`` replaces: a warning when
    the old one was learnt for the same model (a working LDA is being swapped), else a
    note (one of an earlier model, as a recipe rerun after training again replaces)."""
    from wespeaker_py.diarization.projection import WindowLDA
    try:
        old = WindowLDA.load(path)
    except WespeakerError as error:
        logger.info("replacing %s (%s)", path, error)
        return
    log = logger.warning if old.identity == new.identity else logger.info
    log("replacing the window LDA at %s (%s) with one of %s", path, old.describe(),
        new.describe())
