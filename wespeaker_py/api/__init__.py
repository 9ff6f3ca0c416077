"""Using a trained speaker model from Python.

    import wespeaker_py
    model = wespeaker_py.load_model("exp/ResNet34")      # or a WeSpeaker folder, a .onnx
    vector = model.embed("a.wav")
    model.similarity("a.wav", "b.wav")                   # cosine in [-1, 1]
    model.verify("a.wav", "b.wav")                       # score, LLR, probability, decision
    model.enroll("alice", "alice1.wav", gallery="speakers.npz")
    model.identify("who.wav", gallery="speakers.npz", top_k=3)
"""
from wespeaker_py.api.calibration import Calibration
from wespeaker_py.api.decisions import Candidate, Verification
from wespeaker_py.api.embedding_inputs import EmbeddingResults
from wespeaker_py.api.loading import load_model
from wespeaker_py.api.model import SpeakerModel
from wespeaker_py.errors import AudioInputError, ModelSourceError, WespeakerError
from wespeaker_py.runtime.identity import ModelMismatchError

__all__ = ["AudioInputError", "Calibration", "Candidate", "EmbeddingResults",
           "ModelMismatchError", "ModelSourceError", "SpeakerModel", "Verification",
           "WespeakerError", "load_model"]
