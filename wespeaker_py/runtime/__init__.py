"""The runtime layer: what every user of a trained model goes through.

* :mod:`.checkpoint` reads checkpoints and loads their weights (strict, with the
  documented head and frozen-SSL rules); training's ``model_init``, resume and
  LM start use it too;
* :mod:`.builder` builds a speaker model from a config
  (:func:`build_speaker_model`) and a trained front-end + model from (config,
  checkpoint) (:func:`load_embedder`, the one place inference models come from);
* :mod:`.identity` digests a loaded model's weights and front-end settings into the
  identity that galleries and calibration files record;
* :mod:`.engine` holds a loaded embedder on a device (:class:`TorchBackend`);
* :mod:`.batching` and :mod:`.embedding` hold the one embedding loop
  (:func:`embed_stream`: batched, length-bucketed, with a progress bar), behind
  ``bin.extract``, the API's ``embed``/``embed_many`` and the diarization windows.

    from wespeaker_py.runtime import TorchBackend, embed_stream, load_embedder
"""
from wespeaker_py.runtime.batching import LengthBuckets, min_valid_frames
from wespeaker_py.runtime.builder import SpeakerEmbedder, build_speaker_model, load_embedder
from wespeaker_py.runtime.checkpoint import CheckpointMismatchError
from wespeaker_py.runtime.embedding import Outcome, embed_stream
from wespeaker_py.runtime.engine import TorchBackend, exact_fp32

__all__ = ["CheckpointMismatchError", "LengthBuckets", "Outcome", "SpeakerEmbedder",
           "TorchBackend", "build_speaker_model", "embed_stream", "exact_fp32",
           "load_embedder", "min_valid_frames"]
