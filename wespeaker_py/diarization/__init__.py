"""Speaker diarization: speech activity, windowed embeddings, clustering, RTTM, DER/JER.

    result = model.diarize("meeting.wav")   # model = wespeaker_py.load_model(...)
    for turn in result.turns: print(turn.start, turn.end, turn.speaker)

Modules: :mod:`.options` (the settings), :mod:`.vad`, :mod:`.segmentation`,
:mod:`.clustering` (:mod:`.graph`, :mod:`.spectral`, :mod:`.density`,
:mod:`.refine`), :mod:`.turns`, :mod:`.rttm`, :mod:`.metrics`, :mod:`.pipeline` (one
recording), :mod:`.batch` (many, resumable), :mod:`.recordings` (audio files and folders
as recordings), :mod:`.report` (DER/JER tables of RTTMs, and their time-line plots:
:mod:`.plot`), :mod:`.synthetic`. The window embeddings come from ``SpeakerModel.diarizer``.
The names below load their module on first use, so importing this package (or
only :mod:`.options`, as the command line does to build its flags) imports
neither torch nor numpy.
"""
import importlib
from typing import Any

_HOMES = {
    "ClusterOptions": "options", "DiarizationOptions": "options",
    "Clustering": "clustering", "cluster": "clustering", "cluster_windows": "clustering",
    "score_conditions": "metrics", "score_recordings": "metrics",
    "ScoredSet": "report", "SystemScore": "report", "comparison_table": "report",
    "plot_recordings": "report", "plot_systems": "report", "read_scored": "report",
    "score_system": "report", "score_table": "report", "scored_table": "report",
    "scored_comparison": "report", "plot_scored": "report", "plot_scored_systems": "report",
    "DiarizationResult": "pipeline", "Diarizer": "pipeline",
    "BatchSummary": "batch", "diarize_wav_scp": "batch",
    "read_rttm": "rttm", "write_rttm": "rttm",
    "Turn": "turns",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
