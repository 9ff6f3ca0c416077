"""Gallery files as one model uses them: each read checked against the model (its identity,
its mean vector, and the band fills its low-rate enrolments went through), and an enrolment
or a removal written under the gallery's lock."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from wespeaker_py.api.band_fill_files import BandFillFiles, band_fill_mismatch
from wespeaker_py.api.gallery import (MIXED_FILLS, Gallery, gallery_lock, load_gallery,
                                      recording_digest, remove_speaker, save_gallery)
from wespeaker_py.runtime.identity import combined_record, mean_vec_digest
from wespeaker_py.utils.logging_utils import get_logger, listed_names

logger = get_logger(__name__)

if TYPE_CHECKING:
    from wespeaker_py.api.model import SpeakerModel


class ModelGalleries:
    """The galleries of speakers enrolled with a model; each method is given the model
    (``SpeakerModel``), which this does not keep."""

    def __init__(self, band_fills: BandFillFiles):
        self._band_fills = band_fills

    def read(self, model: "SpeakerModel", path: str, force: bool,
             only: Optional[str] = None) -> Gallery:
        """The gallery at ``path`` (empty when missing), checked against ``model``: one of
        another model, or with speakers (or speaker ``only``) enrolled from low-rate audio
        through another band fill than the model now has, is an error unless ``force``."""
        speakers = self._load(model, path, force)
        self._check_fills(model, path, speakers, force, only)
        return speakers

    def enrollment_target(self, model: "SpeakerModel", path: str, name: str, replace: bool,
                          append: bool, force: bool) -> Gallery:
        """The gallery ``name`` may be enrolled into (the checks of an enrolment)."""
        speakers = self._load(model, path, force)
        speakers.check_enrollment(name, replace, append)
        if append:
            self._check_fills(model, path, speakers, force, only=name)
        return speakers

    def enroll(self, model: "SpeakerModel", path: str, name: str, units: List[np.ndarray],
               inputs: Sequence[str], fills: Dict[int, Set[str]], replace: bool, append: bool,
               force: bool) -> int:
        """Add the unit embeddings ``units`` of speaker ``name``'s recordings ``inputs``
        (their names for messages), whose audio heard at each rate went through the band
        fills of ``fills`` (``{rate: digests}``), to the gallery at ``path``, read again and
        rewritten under its lock; return its size in speakers. Recordings given twice are
        counted once (:func:`distinct_recordings`), and so are recordings appended to a
        speaker who holds them already (a warning names them; with none left the gallery
        is left as it is)."""
        units, inputs = distinct_recordings(name, units, inputs)
        heard = {rate: digests.pop() if len(digests) == 1 else MIXED_FILLS
                 for rate, digests in fills.items()}
        with gallery_lock(path):
            speakers = self.enrollment_target(model, path, name, replace, append, force)
            if append:
                units = _new_recordings(name, speakers, units, inputs)
                if not units:
                    return len(speakers.names)
            # speakers of another model (forced) make the gallery one that no model may use
            # unchecked, the one that made them included
            others = [other for other in speakers.names if other != name or append]
            speakers.identity = combined_record(speakers.identity or None, model.identity,
                                                bool(others))
            speakers.mean_vec = combined_record(speakers.mean_vec,
                                                mean_vec_digest(model.mean_vec), bool(others))
            speakers.add(name, np.stack(units), replace=replace, append=append, heard=heard)
            save_gallery(path, speakers)
        return len(speakers.names)

    @staticmethod
    def remove(path: str, name: str) -> int:
        """Remove speaker ``name`` from the gallery at ``path``
        (:func:`~wespeaker_py.api.gallery.remove_speaker`: no model is needed); return how
        many speakers it still holds."""
        return remove_speaker(path, name)

    @staticmethod
    def _load(model: "SpeakerModel", path: str, force: bool) -> Gallery:
        """The gallery at ``path``, checked against the model's identity and mean vector."""
        return load_gallery(path, f"{model.name}/emb{model.embed_dim}", model.identity, force,
                            mean_vec_digest(model.mean_vec))

    def _check_fills(self, model: "SpeakerModel", path: str, speakers: Gallery, force: bool,
                     only: Optional[str] = None) -> None:
        """Refuse (``force``: warn about) the gallery's speakers (or speaker ``only``)
        enrolled from low-rate audio through another band fill than the model now has."""
        band_fills = self._band_fills
        now = functools.partial(band_fills.refreshed_digest, model)
        for rate, names in speakers.stale_band_fills(now, only).items():
            band_fill_mismatch(
                f"{path}: speaker(s) {listed_names(names, 5)} were enrolled from {rate} Hz audio "
                f"that went through a different band fill (or none) than such audio goes through "
                f"now ({band_fills.refreshed_description(model, rate)}); their embeddings no "
                f"longer match new ones: enroll them again with --replace (replace=True)", force)


def distinct_recordings(name: str, units: Sequence[np.ndarray], inputs: Sequence[str]
                        ) -> Tuple[List[np.ndarray], List[str]]:
    """The unit embeddings ``units`` of speaker ``name``'s recordings ``inputs``, and those
    inputs, less each one identical to an earlier one (the same audio given twice), with a
    warning naming them: a repeat would weigh the speaker's mean embedding twice."""
    kept: List[np.ndarray] = []
    kept_inputs: List[str] = []
    first_of: Dict[str, str] = {}
    repeats = []
    for number, (unit, described) in enumerate(zip(units, inputs), 1):
        key = recording_digest(unit)
        if key in first_of:
            repeats.append(f"recording {number} ({described}) repeats {first_of[key]}")
            continue
        first_of[key] = f"recording {number} ({described})"
        kept.append(unit)
        kept_inputs.append(described)
    if repeats:
        logger.warning("enroll %r: the same audio given more than once (identical "
                       "embeddings), counted once: %s", name, listed_names(repeats, 5))
    return kept, kept_inputs


def _new_recordings(name: str, speakers: Gallery, units: List[np.ndarray],
                    inputs: Sequence[str]) -> List[np.ndarray]:
    """``units`` less the recordings speaker ``name`` of ``speakers`` holds already, with a
    warning naming them."""
    held = set(speakers.enrolled_already(name, units))
    if held:
        logger.warning("enroll %r --append: %s already enrolled for this speaker (identical "
                       "embeddings), not counted again: %s", name,
                       "all recordings are" if len(held) == len(units) else
                       f"{len(held)} of {len(units)} recordings are",
                       listed_names([inputs[number] for number in sorted(held)], 5))
    return [unit for number, unit in enumerate(units) if number not in held]
