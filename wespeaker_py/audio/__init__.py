"""The one audio module: reading, the sample convention, resampling and the input checks.

Every reader of audio goes through here: the training pipeline (chunk reads),
extraction, the Python API and its commands, diarization, noise/RIR sources
and shard writing.

- **Input:** a file path, a Kaldi ``wav.scp`` pipe (``command |``), in-memory
  bytes (tar shard members), a NumPy array or a torch tensor (with its
  ``sample_rate``). :func:`load_audio` reads a whole input;
  :func:`open_audio` opens a file for frame-accurate partial reads
  (``handle.read(start, count)``: the pipeline reads only its chunk).
- **Sample convention:** mono float32 on the int16 scale
  (:data:`INT16_SCALE` = 32768: float audio in [-1, 1] is multiplied by it,
  int16 audio is taken as stored). That is what fbank and every model get;
  front-ends that want [-1, 1] (WavLM, the waveform ONNX graph, VAD) divide by
  :data:`INT16_SCALE`.
- **Channel policy:** the first channel of a multi-channel input (as training
  has always done, so embeddings match the model's training), applied by
  :func:`mix_to_mono` to file reads and arrays alike. Arrays are ``[samples]``
  or two-axis, the shorter axis holding the channels.
- **Resampling:** once, with soxr HQ (:func:`resample`), from the input's rate
  to the model's rate. Audio at 8 kHz or lower given to a model built for
  16 kHz or more is logged as a warning, once per process and pair of rates.
- **Checks**, shared by every caller, each a named error deriving from
  :class:`~wespeaker_py.errors.AudioInputError` whose ``reason`` the training
  pipeline counts skips under: :class:`AudioMissingError`,
  :class:`AudioUnreadableError` (and :class:`AudioPipeError`,
  :class:`AudioTruncatedError`), :class:`AudioEmptyError`,
  :class:`AudioTooShortError`, :class:`AudioNonFiniteError` and
  :class:`AudioSilentError` (every sample zero). Training counts them as skips;
  the API raises them and the commands print them as one line, exit status 2.

This package imports neither torch nor anything above it (see docs/architecture).
"""
from wespeaker_py.audio.errors import (AudioCheckError, AudioEmptyError, AudioMissingError,
                                       AudioNonFiniteError, AudioPipeError, AudioSilentError,
                                       AudioTooShortError, AudioTruncatedError,
                                       AudioUnreadableError)
from wespeaker_py.audio.files import (ArrayHandle, AudioHandle, apply_vad, is_pipe,
                                      open_audio, read_pipe)
from wespeaker_py.audio.load import AudioLike, describe_audio, load_audio, read_whole
from wespeaker_py.audio.resample import resample
from wespeaker_py.audio.samples import (INT16_SCALE, check_samples, first_channel, mix_to_mono,
                                        to_int16_scale, warn_if_narrowband)

__all__ = ["INT16_SCALE", "ArrayHandle", "AudioCheckError", "AudioEmptyError", "AudioHandle",
           "AudioLike", "AudioMissingError", "AudioNonFiniteError", "AudioPipeError",
           "AudioSilentError", "AudioTooShortError", "AudioTruncatedError",
           "AudioUnreadableError", "apply_vad", "check_samples", "describe_audio",
           "first_channel", "is_pipe", "load_audio", "mix_to_mono", "open_audio", "read_pipe",
           "read_whole", "resample", "to_int16_scale", "warn_if_narrowband"]
