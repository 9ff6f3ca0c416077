"""Speaker diarization: speech activity, windowed embeddings, clustering, RTTM, DER/JER.

    result = model.diarize("meeting.wav")   # model = wespeaker_py.load_model(...)
    for turn in result.turns: print(turn.start, turn.end, turn.speaker)

Modules: :mod:`.vad`, :mod:`.segmentation`, :mod:`.clustering`, :mod:`.turns`,
:mod:`.rttm`, :mod:`.metrics`, :mod:`.pipeline`, :mod:`.synthetic`. The window
embeddings come from ``SpeakerModel.embed_waveforms``. Importing this package
does not import torch.
"""
from wespeaker_py.diarization.clustering import cluster, estimate_num_speakers
from wespeaker_py.diarization.metrics import score_recordings
from wespeaker_py.diarization.pipeline import (DiarizationOptions, DiarizationResult, Diarizer,
                                               diarize_wav_scp)
from wespeaker_py.diarization.rttm import read_rttm, write_rttm
from wespeaker_py.diarization.turns import Turn

__all__ = ["DiarizationOptions", "DiarizationResult", "Diarizer", "Turn", "cluster",
           "diarize_wav_scp", "estimate_num_speakers", "read_rttm", "score_recordings",
           "write_rttm"]
