"""The band-fill companion files of a model: where they live, which fill audio heard at a rate
goes through now (the files read again when they change), and learning a new one."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import (TYPE_CHECKING, Dict, Iterable, Iterator, Optional, Sequence, Set, Tuple,
                    Union)

import numpy as np

from wespeaker_py.api.companion_files import (check_heard_rate, companions_at, data_folders,
                                              learnt_file_target)
from wespeaker_py.audio import heard_rate_of, narrowband
from wespeaker_py.audio.readable import readable_recordings
from wespeaker_py.errors import RunFailedError
from wespeaker_py.frontend.band_fill import (NARROW_SOURCE, BandFill, BandFillError,
                                             band_fill_name, fit_band_fill, load_band_fills)
from wespeaker_py.io.layout import BAND_FILL_NAME
from wespeaker_py.runtime.identity import ModelMismatchError
from wespeaker_py.utils.atomic_files import require_writable
from wespeaker_py.utils.list_jobs import DEFAULT_MAX_FAIL_FRACTION, JobTally
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.paths import FileStamp, file_stamp
from wespeaker_py.utils.tables import read_wav_scp

logger = get_logger(__name__)

if TYPE_CHECKING:
    from wespeaker_py.api.model import SpeakerModel
    from wespeaker_py.frontend.features import FbankFeatures


def band_fill_mismatch(message: str, force: bool) -> None:
    """A file made through another band fill: :class:`ModelMismatchError` saying
    ``message``, or with ``force`` a warning."""
    if not force:
        raise ModelMismatchError(f"{message}; or pass --force (force=True) to use the file "
                                 f"anyway")
    logger.warning("%s (used anyway: force)", message)


class BandFillFiles:
    """The band fills beside a model, handed to its backend as they change on disk; each
    method is given the model (``SpeakerModel``), which this does not keep."""

    def __init__(self):
        # the stamps of the files last handed to the backend
        self.stamps: Tuple[Tuple[str, Optional[FileStamp]], ...] = ()

    @staticmethod
    def file(model: "SpeakerModel", heard_rate: int) -> Optional[str]:
        """Where the band fill of ``model`` for audio heard at ``heard_rate`` lives; None when
        the model has no folder."""
        prefix = model.companion_prefix
        return None if prefix is None else prefix + band_fill_name(heard_rate)

    def refreshed_fills(self, model: "SpeakerModel") -> Dict[int, "BandFill"]:
        """``{heard rate: band fill}`` that audio heard at each rate goes through now, the
        files beside the model read again if they changed."""
        self.refresh(model)
        return dict(model.backend.band_fills)

    def refreshed_digest(self, model: "SpeakerModel", heard_rate: int) -> str:
        """The digest of the band fill that audio heard at ``heard_rate`` goes through now
        ("": none), the files beside the model read again if they changed."""
        if heard_rate:
            self.refresh(model)
        return self.loaded_digest(model, heard_rate)

    @staticmethod
    def loaded_digest(model: "SpeakerModel", heard_rate: int) -> str:
        """The digest of the band fill the backend holds for ``heard_rate`` ("": none),
        without reading the files again: the one the last embeddings went through."""
        fill = model.backend.band_fill_for(heard_rate) if heard_rate else None
        return "" if fill is None else fill.digest

    def loaded_digests(self, model: "SpeakerModel",
                       heard_rates: Iterable[int]) -> Dict[int, str]:
        """``{rate: digest of the band fill the last embeddings of audio heard at it went
        through ("": none)}``, without reading the files again; call it right after
        embedding them."""
        return {rate: self.loaded_digest(model, rate) for rate in sorted(heard_rates)}

    def refreshed_description(self, model: "SpeakerModel", heard_rate: int) -> str:
        """What audio heard at ``heard_rate`` goes through now, in words, the files beside
        the model read again if they changed."""
        return ("the band fill beside the model" if self.refreshed_digest(model, heard_rate)
                else "none")

    def files_in_use(self, model: "SpeakerModel") -> Union[Dict[int, str], str]:
        """``{heard rate: file}`` of the band fills the model uses (for its ``info``), the
        files beside it read again if they changed; or why they cannot be used."""
        try:
            self.refresh(model)
        except BandFillError as error:   # info reports it rather than failing
            return f"not used: {error}"
        return {rate: self.file(model, rate) for rate in sorted(model.backend.band_fills)}

    def refresh(self, model: "SpeakerModel") -> None:
        """Hand the band fills beside the model to its backend; read again whenever the
        files there change (one learnt since is used, one removed is dropped)."""
        prefix = model.companion_prefix
        if prefix is None or not model.backend.takes_band_fills:
            return
        found = companions_at(prefix, [BAND_FILL_NAME])
        # the files listed once, stamped before they are read: the stamps describe the files
        # loaded, and one rewritten in between is read again next time
        stamps = tuple((path, file_stamp(path)) for path in found.values())
        if stamps == self.stamps:
            return
        fills = load_band_fills(found)
        for fill in fills:
            logger.info("band fill for %d Hz beside %s: %s", fill.heard_rate, model.source,
                        fill.describe())
        model.backend.set_band_fills(fills)
        self.stamps = stamps

    @staticmethod
    def fbank_frontend(model: "SpeakerModel"):
        """The fbank front-end of ``model`` when band fills can be learnt for it (a torch
        model with fbank features), else None."""
        from wespeaker_py.frontend.features import FbankFeatures
        frontend = getattr(getattr(model.backend, "embedder", None), "frontend", None)
        return frontend if isinstance(frontend, FbankFeatures) else None

    def train(self, model: "SpeakerModel", data: Union[str, Sequence[str]], heard_rate: int,
              output: Optional[str] = None, progress: bool = True,
              max_fail_fraction: float = DEFAULT_MAX_FAIL_FRACTION) -> "BandFill":
        """Learn the band fill for ``heard_rate`` from the wide-band speech of the Kaldi data
        directories ``data``, write it to ``output`` (default :meth:`file`) and use it (see
        :meth:`~wespeaker_py.api.SpeakerModel.train_band_fill`)."""
        sample_rate = model.sample_rate
        frontend = self.fbank_frontend(model)
        if frontend is None:
            raise BandFillError("a band fill needs a torch model with an fbank front-end")
        heard_rate = _rate_below_the_models(heard_rate, sample_rate)
        target = learnt_file_target(output, self.file(model, heard_rate))
        require_writable(target)
        folders = data_folders(data)
        tally = _DataTally(sample_rate, heard_rate, ", ".join(folders))
        try:
            fill = fit_band_fill(tally.log_mel_pairs(folders, frontend, progress), heard_rate,
                                 frontend.sample_rate, frontend.num_mel_bins,
                                 frontend.frame_length)
        except BandFillError:
            # nothing read says so, naming the data, before "too few frames"
            tally.check(max_fail_fraction)
            raise
        tally.check(max_fail_fraction)
        fill.save(target)
        self.refresh(model)
        tally.log_learnt()
        logger.info("band fill -> %s: %s", target, fill.describe())
        return fill


def _rate_below_the_models(heard_rate: int, sample_rate: int) -> int:
    """``heard_rate`` as :func:`check_heard_rate` takes it: a rate below the model's
    ``sample_rate``, which a band fill is for (a :class:`BandFillError` otherwise)."""
    heard_rate = check_heard_rate(heard_rate, sample_rate)
    if not heard_rate:
        raise BandFillError(f"a band fill is for a rate below the model's "
                            f"{sample_rate} Hz, got heard_rate 0")
    return heard_rate


@dataclass
class _DataTally:
    """The reading of a band fill's data (``source``: its folders, for the messages) at the
    model's ``sample_rate``: the utterances learnt from, the skips by reason (NARROW_SOURCE
    among them: an expected skip, not a failure) and the rates those NARROW_SOURCE skips
    came at."""

    sample_rate: int
    heard_rate: int
    source: str
    done: int = 0
    skipped: Counter = field(default_factory=Counter)
    narrow_rates: Set[int] = field(default_factory=set)

    def log_mel_pairs(self, folders: Sequence[str], frontend: "FbankFeatures",
                      progress: bool) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """The log-mel energies of each wide-band utterance of ``folders`` and of it as heard
        at ``heard_rate``, counted here as they are read."""
        for folder in folders:
            recordings = read_wav_scp(os.path.join(folder, "wav.scp"))
            for _, wide, source_rate in readable_recordings(
                    recordings, self.sample_rate, self.skipped, "band fill", progress):
                if heard_rate_of(source_rate, self.sample_rate):
                    # counted in the summary, not warned about one by one
                    self.skipped[NARROW_SOURCE] += 1
                    self.narrow_rates.add(source_rate)
                    continue
                self.done += 1
                yield (_log_mels(frontend, wide),
                       _log_mels(frontend, narrowband(wide, self.heard_rate, self.sample_rate)))

    def failures(self) -> JobTally:
        """The tally of the utterances that failed: those at a lower rate are not
        counted against ``max_fail_fraction``, an expected skip rather than a fault."""
        return JobTally.of(self.done, {why: count for why, count in self.skipped.items()
                                       if why != NARROW_SOURCE})

    def narrow_count(self) -> str:
        """How many utterances came below the model's rate, and at which rates."""
        return (f"{self.skipped[NARROW_SOURCE]} came at {self.narrow_rates_text()} Hz (below "
                f"the model's {self.sample_rate} Hz)")

    def narrow_rates_text(self) -> str:
        """The rates the utterances below the model's rate came at (``8000 or 11025``)."""
        return " or ".join(str(rate) for rate in sorted(self.narrow_rates))

    def check(self, max_fail_fraction: float) -> None:
        """A :class:`RunFailedError` when every utterance read came below the model's rate,
        or when more than ``max_fail_fraction`` of them failed."""
        failed = self.failures()
        if not self.done and self.skipped[NARROW_SOURCE]:
            others = (f"; {failed.num_skipped} more skipped ({failed.describe_reasons()})"
                      if failed.num_skipped else "")
            raise RunFailedError(
                f"nothing learnt from {self.source}: {self.narrow_count()}{others}. A band "
                f"fill learns from speech at the model's {self.sample_rate} Hz (e.g. the "
                f"model's own training data), which it brings down to {self.heard_rate} Hz "
                f"itself; the {self.narrow_rates_text()} Hz audio has no wide band to teach "
                f"it. Give --data (data=) speech at {self.sample_rate} Hz; no band fill was "
                f"learnt")
        failed.check(self.source, max_fail_fraction, "no band fill was learnt",
                     unit="utterances")

    def log_learnt(self) -> None:
        """Log what the band fill was learnt from: a warning naming the skips, if any."""
        summary = (f"band fill for {self.heard_rate} Hz learnt from {self.done} utterance(s) "
                   f"of {self.source}")
        if self.skipped:
            reasons = [self.narrow_count()] if self.skipped[NARROW_SOURCE] else []
            if self.failures().num_skipped:
                reasons.append(self.failures().describe_reasons())
            logger.warning("%s; skipped %d: %s", summary, sum(self.skipped.values()),
                           ", ".join(reasons))
        else:
            logger.info("%s", summary)


def _log_mels(frontend: "FbankFeatures", samples: np.ndarray) -> np.ndarray:
    """The log-mel energies ``[frames, bins]`` of ``samples`` through ``frontend``."""
    import torch
    return frontend.log_mel(torch.as_tensor(samples).unsqueeze(0))[0].numpy()
