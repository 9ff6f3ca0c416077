"""Settings of diarization: which clustering, which counts, which windows and VAD rules.

Plain data and checks only (no numpy), so the command line can build its flags
and check them before anything heavy is imported. :class:`DiarizationOptions`
holds every setting of :class:`~wespeaker_py.diarization.Diarizer`;
:class:`ClusterOptions` the clustering's share of them. Defaults measured in
``bench/results_diarization_clustering.md``. Each setting's type and range are
declared as a config block's are (:func:`~wespeaker_py.config.fields.setting`)
and checked by :func:`~wespeaker_py.config.fields.checked_fields`; the rules
across settings are written out in the ``check`` methods.
"""
from __future__ import annotations

import importlib.util
import math
import typing
from dataclasses import dataclass, fields
from typing import Any, Literal, Optional, Tuple

from wespeaker_py.config.fields import FieldValueError, checked_fields, convert_value, setting
from wespeaker_py.diarization.segmentation import GRID
from wespeaker_py.errors import MissingPackagesError, WespeakerError
# WINDOW_LDA_NAME: read from here too, where it was before io.layout held it
from wespeaker_py.io.layout import NARROWBAND_WINDOW_LDA, WINDOW_LDA_NAME  # noqa: F401
from wespeaker_py.utils.paths import rate_in_name

CLUSTER_METHODS = ("spectral", "spectral-norm", "nme-sc", "umap-hdbscan", "agglomerative")
DEFAULT_METHOD = "spectral-norm"  # bench/results_diarization_clustering.md, "Fourth session"
SPECTRAL_METHODS = ("spectral", "spectral-norm", "nme-sc")  # counted by an eigengap
# spectral-norm's gap_ratio: the lowest that split no single calibration speaker's windows
# (bench/results_diarization_clustering.md, "Fifth session"); the others keep 1
DEFAULT_GAP_RATIO = 0.8
# a spectral graph's kept neighbours: 1 each (WeSpeaker's binarised graph) or their cosine
EdgeWeights = Literal["binary", "cosine"]
EDGE_WEIGHTS = typing.get_args(EdgeWeights)
# the speech detectors (diarization.vad)
VadKind = Literal["silero", "energy"]
# spectral-norm's edge weights (bench/results_diarization_clustering.md, "Sixth session");
# the others keep WeSpeaker's and NeMo's binary graphs
DEFAULT_EDGE_WEIGHTS = "cosine"
# agglomerative's cut: the cosine distance at which merging stops
DEFAULT_AHC_THRESHOLD = 0.6
# per method, the modules it imports that no base install has: (module, package), and the
# extra of setup.py that installs them
METHOD_PACKAGES = {"umap-hdbscan": ((("umap", "umap-learn"),), "diar-umap")}
# the finest frame of turns: RTTM times are written to the millisecond
MIN_RESOLUTION = 0.001
# the Silero VAD's speech probability that starts a region
DEFAULT_VAD_THRESHOLD = 0.5
# the bounds of an estimated number of speakers
DEFAULT_MIN_SPEAKERS = 1
DEFAULT_MAX_SPEAKERS = 10


def window_lda_name(heard_rate: int = 0) -> str:
    """The file name of a model's window LDA learnt at ``heard_rate`` (0: the model's rate)."""
    return WINDOW_LDA_NAME if not heard_rate else NARROWBAND_WINDOW_LDA.format(heard_rate)


def window_lda_file(choice: str) -> Optional[str]:
    """The file a ``window_lda`` setting names; None for ``auto`` (the model's own window
    LDAs) and for ``off`` or ``none`` (in any case: no window LDA)."""
    return None if choice == "auto" or choice.lower() in ("off", "none") else choice


def narrowband_rate_of(name: str) -> Optional[int]:
    """The rate in a narrowband window LDA's file name (``window_lda_8000hz.npz``: 8000);
    None for a name not of that form."""
    return rate_in_name(NARROWBAND_WINDOW_LDA, name)


class ClusteringOptionError(WespeakerError, ValueError):
    """Speaker counts or a clustering method that cannot be used."""


def _check_fields(options: Any) -> None:
    """Raise :class:`ClusteringOptionError` for the first field of ``options`` that its
    declaration refuses (:func:`~wespeaker_py.config.fields.checked_fields`)."""
    try:
        checked_fields(options)
    except FieldValueError as error:
        raise _refused(error) from None


def _refused(error: FieldValueError) -> ClusteringOptionError:
    return ClusteringOptionError(f"{error.key} {error.wanted}, got {error.got}")


@dataclass(frozen=True)
class ClusterOptions:
    """Which method, and the refinements applied when the count is estimated."""

    method: str = DEFAULT_METHOD  # one of CLUSTER_METHODS (check_cluster_options)
    # cosine distance cut of ``agglomerative``; None: DEFAULT_AHC_THRESHOLD (unset, so that
    # one given for another method is refused even at the default's value)
    ahc_threshold: Optional[float] = setting(None, above=0, below=2,
                                             reason="a cosine distance")
    # fold clusters of at most this many windows
    min_cluster_size: int = setting(0, minimum=0)
    # join clusters with centroid cosine >= this
    merge_threshold: Optional[float] = setting(None, minimum=-1, maximum=1, reason="a cosine")
    # None: the method's own (see resolved_gap_ratio)
    gap_ratio: Optional[float] = setting(None, above=0, maximum=1)
    edge_weights: Optional[EdgeWeights] = None  # None: the method's own (resolved_edge_weights)
    seed: int = 0

    def resolved_ahc_threshold(self) -> float:
        """``agglomerative``'s cut: ``ahc_threshold`` when set, else
        :data:`DEFAULT_AHC_THRESHOLD`."""
        return DEFAULT_AHC_THRESHOLD if self.ahc_threshold is None else self.ahc_threshold

    def resolved_gap_ratio(self) -> float:
        """The eigengap rule's ratio (``spectral.eigengap_count``): ``gap_ratio`` when set,
        else :data:`DEFAULT_GAP_RATIO` for ``spectral-norm`` and 1 (the largest gap, as
        WeSpeaker and NeMo count) for ``spectral`` and ``nme-sc``."""
        if self.gap_ratio is not None:
            return self.gap_ratio
        return DEFAULT_GAP_RATIO if self.method == "spectral-norm" else 1.0

    def resolved_edge_weights(self) -> str:
        """The spectral graph's edge weights: ``edge_weights`` when set, else
        :data:`DEFAULT_EDGE_WEIGHTS` for ``spectral-norm`` and ``binary`` for ``spectral``
        and ``nme-sc``."""
        if self.edge_weights is not None:
            return self.edge_weights
        return DEFAULT_EDGE_WEIGHTS if self.method == "spectral-norm" else "binary"

    def check(self, num_speakers: Optional[int] = None, min_speakers: Optional[int] = None,
              max_speakers: Optional[int] = None) -> None:
        """Raise :class:`ClusteringOptionError` for a field its declaration refuses, what
        :func:`check_cluster_options` refuses, a ``gap_ratio``, ``edge_weights`` or
        ``ahc_threshold`` set for a method that does not read it, and (``num_speakers``
        given) what :meth:`check_count_given` refuses."""
        _check_fields(self)
        check_cluster_options(self.method, num_speakers, min_speakers, max_speakers)
        if self.gap_ratio is not None and self.method not in SPECTRAL_METHODS:
            raise ClusteringOptionError(f"gap_ratio applies to {', '.join(SPECTRAL_METHODS)} "
                                        f"(they count by an eigengap), not to {self.method}")
        if self.edge_weights is not None and self.method not in SPECTRAL_METHODS:
            raise ClusteringOptionError(f"edge_weights applies to {', '.join(SPECTRAL_METHODS)} "
                                        f"(they cluster a neighbour graph), not to {self.method}")
        if self.ahc_threshold is not None and self.method != "agglomerative":
            raise ClusteringOptionError(f"ahc_threshold ({self.ahc_threshold:g}) is where "
                                        f"agglomerative stops merging; {self.method} takes "
                                        f"none")
        if num_speakers is not None:
            self.check_count_given(f"num_speakers={num_speakers}")

    def check_count_given(self, given: str) -> None:
        """Raise :class:`ClusteringOptionError` naming a setting that only shapes an
        estimated count (``min_cluster_size``, ``merge_threshold``, ``ahc_threshold``), the
        count being given (``given`` says how, e.g. ``num_speakers=3``)."""
        unused = (("min_cluster_size", self.min_cluster_size, self.min_cluster_size > 0),
                  ("merge_threshold", self.merge_threshold, self.merge_threshold is not None),
                  ("ahc_threshold", self.ahc_threshold, self.ahc_threshold is not None))
        for name, value, is_set in unused:
            if is_set:
                raise ClusteringOptionError(f"{name} ({value:g}) shapes an estimated number of "
                                            f"speakers; with the count given ({given}) it "
                                            f"would do nothing: leave it out")


def speaker_bounds(min_speakers: Optional[int], max_speakers: Optional[int]) -> Tuple[int, int]:
    """The bounds of an estimated count: those given, else :data:`DEFAULT_MIN_SPEAKERS` and
    :data:`DEFAULT_MAX_SPEAKERS`."""
    return (DEFAULT_MIN_SPEAKERS if min_speakers is None else min_speakers,
            DEFAULT_MAX_SPEAKERS if max_speakers is None else max_speakers)


def refuse_bounds_with_count(min_speakers: Optional[int], max_speakers: Optional[int],
                             given: str) -> None:
    """Raise :class:`ClusteringOptionError` for a ``min_speakers`` or ``max_speakers`` given
    with the count (``given`` says how, e.g. ``num_speakers=3``): they bound an estimated
    count only."""
    for name, value in (("min_speakers", min_speakers), ("max_speakers", max_speakers)):
        if value is not None:
            raise ClusteringOptionError(f"{name} ({value}) bounds an estimated number of "
                                        f"speakers; with the count given ({given}) it would "
                                        f"do nothing: leave it out")


def given_or(value: Any, option: Any) -> Any:
    """A per-call setting (None: not given), else the options' ``option``."""
    return option if value is None else value


def on_grid(seconds: float) -> bool:
    """Whether ``seconds`` is a whole number of :data:`GRID` steps (to a rounding error)."""
    steps = seconds / GRID
    return math.isfinite(steps) and abs(steps - round(steps)) < 1e-6


def check_method_packages(method: str) -> None:
    """Raise :class:`MissingPackagesError` naming what the clustering ``method`` needs that is
    not installed (looked up, not imported) and the extra that installs it."""
    modules, extra = METHOD_PACKAGES.get(method, ((), ""))
    missing = [package for module, package in modules if importlib.util.find_spec(module) is None]
    if missing:
        raise MissingPackagesError(f"cluster method {method!r} needs the package(s) "
                                   f"{', '.join(missing)}: pip install 'wespeaker_py[{extra}]' "
                                   f"(or choose another --cluster_method)")


def _check_count_types(**counts: Optional[int]) -> None:
    for name, value in counts.items():
        try:   # as DiarizationOptions' own counts are checked
            convert_value(Optional[int], value, name, from_code=True)
        except FieldValueError as error:
            raise _refused(error) from None


def check_cluster_options(method: str, num_speakers: Optional[int],
                          min_speakers: Optional[int] = None,
                          max_speakers: Optional[int] = None) -> None:
    """Raise :class:`ClusteringOptionError` for an unknown method, or impossible counts (or
    bounds given with a count), per call or in the options.
    ``min_speakers``/``max_speakers``: None when not given (see :func:`speaker_bounds`)."""
    if method not in CLUSTER_METHODS:
        raise ClusteringOptionError(f"unknown clustering method {method!r}; choose from "
                                    f"{', '.join(CLUSTER_METHODS)}")
    _check_count_types(num_speakers=num_speakers, min_speakers=min_speakers,
                       max_speakers=max_speakers)
    if num_speakers is not None:
        if num_speakers < 1:
            raise ClusteringOptionError(f"num_speakers must be at least 1, got {num_speakers}")
        refuse_bounds_with_count(min_speakers, max_speakers, f"num_speakers={num_speakers}")
    low, high = speaker_bounds(min_speakers, max_speakers)
    if max_speakers is None and low > high:
        raise ClusteringOptionError(f"min_speakers={low} is above max_speakers (default "
                                    f"{high}): raise max_speakers (--max_speakers) to {low} "
                                    f"or more")
    if not 1 <= low <= high:
        raise ClusteringOptionError(f"need 1 <= min_speakers <= max_speakers, got "
                                    f"{low}, {high}")


@dataclass
class DiarizationOptions:
    """Settings of :class:`Diarizer` (WeSpeaker's windows; the rest measured, see
    ``bench/results_diarization_clustering.md``)."""

    vad: VadKind = "silero"
    # Silero's; None: DEFAULT_VAD_THRESHOLD
    vad_threshold: Optional[float] = setting(None, above=0, below=1)
    # shorter speech regions are dropped
    min_speech: float = setting(0.25, minimum=0, unit="seconds")
    min_silence: float = setting(0.1, minimum=0, unit="seconds")  # shorter pauses are bridged
    window: float = setting(1.5, minimum=GRID, unit="seconds")  # per embedding window
    shift: float = setting(0.75, minimum=GRID, unit="seconds")  # between window starts
    # noise floor added to each window, in 16-bit steps
    dither: float = setting(1.0, minimum=0)
    # the clustering's share (cluster_options): their ranges are ClusterOptions'
    cluster_method: str = DEFAULT_METHOD  # one of CLUSTER_METHODS
    ahc_threshold: Optional[float] = ClusterOptions.ahc_threshold
    min_cluster_size: int = ClusterOptions.min_cluster_size
    merge_threshold: Optional[float] = ClusterOptions.merge_threshold
    gap_ratio: Optional[float] = ClusterOptions.gap_ratio
    edge_weights: Optional[EdgeWeights] = ClusterOptions.edge_weights
    # seconds per frame of the turns; None: window halves
    resolution: Optional[float] = setting(None, minimum=MIN_RESOLUTION, unit="seconds",
                                          reason="RTTM's millisecond")
    window_lda: str = "auto"  # the model's window_lda.npz if it has one; "off"; or a file
    num_speakers: Optional[int] = None  # None: estimated
    # bounds of an estimated count; None: DEFAULT_MIN_SPEAKERS / DEFAULT_MAX_SPEAKERS
    min_speakers: Optional[int] = None
    max_speakers: Optional[int] = None

    @classmethod
    def from_settings(cls, **settings: Any) -> "DiarizationOptions":
        """Options with ``settings`` (field names) changed from the defaults, checked.

        An unknown name or an impossible value raises :class:`ClusteringOptionError`
        naming it.
        """
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ClusteringOptionError(f"unknown diarization setting(s) {', '.join(unknown)}; "
                                        f"known: {', '.join(sorted(known))}")
        options = cls(**settings)
        options.check()
        return options

    def check(self) -> None:
        """Raise :class:`ClusteringOptionError` naming the first setting that cannot work:
        a field its declaration refuses, then what the declarations cannot say (a finite
        window, the grid, the rules across settings, a ``window_lda`` that names something),
        then the clustering's share (:meth:`ClusterOptions.check`)."""
        _check_fields(self)
        rules = (("window", math.isfinite(self.window), "finite"),
                 ("window", on_grid(self.window), f"a multiple of {GRID:g} seconds (windows are "
                  f"cut on that grid)"),
                 ("shift", self.shift <= self.window, f"at most window ({self.window:g})"),
                 ("shift", on_grid(self.shift), f"a multiple of {GRID:g} seconds (windows are "
                  f"cut on that grid)"),
                 ("resolution", self.resolution is None or self.resolution <= self.shift,
                  f"at least {MIN_RESOLUTION:g} seconds (RTTM's millisecond) and at most shift "
                  f"({self.shift:g}; coarser frames than the windows' shift: leave it out)"),
                 ("window_lda", self.window_lda != "", "'auto', 'off' or a window_lda.npz file"))
        for name, valid, wanted in rules:
            if not valid:
                raise ClusteringOptionError(f"{name} must be {wanted}, got "
                                            f"{getattr(self, name)!r}")
        self.cluster_options().check(self.num_speakers, self.min_speakers, self.max_speakers)
        if self.vad == "energy" and self.vad_threshold is not None:
            raise ClusteringOptionError(f"vad_threshold ({self.vad_threshold:g}) is the Silero "
                                        f"VAD's speech probability; the energy VAD takes none")
        check_method_packages(self.cluster_method)

    def check_count_given(self, given: str, min_speakers: Optional[int] = None,
                          max_speakers: Optional[int] = None) -> None:
        """Raise :class:`ClusteringOptionError` for a setting that only shapes an estimated
        count (:meth:`ClusterOptions.check_count_given`) or bounds it
        (:func:`refuse_bounds_with_count`), the count being given (``given`` says how, e.g.
        ``--reco2num_spk FILE``). ``min_speakers``/``max_speakers``: a call's bounds (None:
        these options')."""
        self.cluster_options().check_count_given(given)
        refuse_bounds_with_count(given_or(min_speakers, self.min_speakers),
                                 given_or(max_speakers, self.max_speakers), given)

    def cluster_options(self) -> ClusterOptions:
        """The clustering's share of these settings."""
        return ClusterOptions(method=self.cluster_method, ahc_threshold=self.ahc_threshold,
                              min_cluster_size=self.min_cluster_size,
                              merge_threshold=self.merge_threshold, gap_ratio=self.gap_ratio,
                              edge_weights=self.edge_weights)

    def region_rules(self):
        """The VAD's :class:`~wespeaker_py.diarization.vad.RegionRules` from these settings."""
        from wespeaker_py.diarization.vad import RegionRules
        threshold = (DEFAULT_VAD_THRESHOLD if self.vad_threshold is None
                     else self.vad_threshold)
        return RegionRules(threshold=threshold, offset_threshold=max(0.01, threshold - 0.15),
                           min_speech=self.min_speech, min_silence=self.min_silence)
