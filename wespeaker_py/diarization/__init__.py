"""Speaker diarization: speech activity, windowed embeddings, clustering, RTTM, DER/JER.

    result = model.diarize("meeting.wav")   # model = wespeaker_py.load_model(...)
    for turn in result.turns: print(turn.start, turn.end, turn.speaker)

Modules: :mod:`.vad`, :mod:`.segmentation`, :mod:`.clustering` (:mod:`.graph`,
:mod:`.spectral`, :mod:`.density`, :mod:`.refine`), :mod:`.turns`, :mod:`.rttm`,
:mod:`.metrics`, :mod:`.pipeline`, :mod:`.synthetic`. The window embeddings come
from ``SpeakerModel.diarizer``. Importing this package does not import torch.
"""
from wespeaker_py.diarization.clustering import (ClusterOptions, Clustering, cluster,
                                                 cluster_windows)
from wespeaker_py.diarization.metrics import score_recordings
from wespeaker_py.diarization.pipeline import (DiarizationOptions, DiarizationResult, Diarizer,
                                               diarize_wav_scp)
from wespeaker_py.diarization.rttm import read_rttm, write_rttm
from wespeaker_py.diarization.turns import Turn

__all__ = ["ClusterOptions", "Clustering", "DiarizationOptions", "DiarizationResult", "Diarizer",
           "Turn", "cluster", "cluster_windows", "diarize_wav_scp", "read_rttm",
           "score_recordings", "write_rttm"]
