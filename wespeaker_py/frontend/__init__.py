"""Front-end: batched Kaldi-compatible fbank, CMN, SpecAugment and SSL (WavLM) features."""
from wespeaker_py.frontend.fbank import fbank
from wespeaker_py.frontend.factory import build_frontend
from wespeaker_py.frontend.features import FbankFeatures
from wespeaker_py.frontend.framing import frame_params, num_frames, samples_for_frames
from wespeaker_py.frontend.specaug import apply_cmn, spec_augment
from wespeaker_py.frontend.ssl import SSLFrontend

__all__ = ["fbank", "apply_cmn", "spec_augment", "FbankFeatures",
           "build_frontend", "SSLFrontend",
           "frame_params", "num_frames", "samples_for_frames"]
