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
- **Channel policy** (``channel=``, ``--channel``): ``first`` by default, the
  first channel of a multi-channel input (as training always does, so
  embeddings match the model's training and stay what they were); ``mean``
  (average the channels), ``loudest`` (the channel of highest energy) or a
  channel number ``N`` (from 0). Applied by :func:`mix_to_mono` to file reads
  and arrays alike; training keeps ``first``. Arrays are ``[samples]`` or
  two-axis, the shorter axis holding the channels.
- **Resampling:** once, with soxr HQ (:func:`resample`), from the input's rate
  to the model's rate; :func:`~wespeaker_py.audio.load.load_audio_with_rate`
  also returns the rate the input came at. Audio at 8 kHz or lower given to a
  model built for 16 kHz or more is warned about (:func:`warn_if_narrowband`)
  where nothing fills its empty band: by the embedding loop, which knows the
  model's band fills (training counts such utterances and its trainer warns once).
- **Writing:** :func:`write_wav` (a file, atomically) and :func:`wav_bytes` (tar
  shard members), 16-bit PCM WAV unless asked otherwise.
- **Checks**, shared by every caller, each a named error deriving from
  :class:`~wespeaker_py.errors.AudioInputError` whose ``reason`` the training
  pipeline counts skips under: :class:`AudioMissingError`,
  :class:`AudioUnreadableError` (and :class:`AudioPipeError`,
  :class:`AudioTruncatedError`: a WAV header promising more than the file
  holds -- for a ``command |`` only a warning --, a decode that stops early),
  :class:`AudioEmptyError`, :class:`AudioSegmentError` (a VAD segment past the end of
  its audio),
  :class:`AudioTooShortError`, :class:`AudioNonFiniteError`,
  :class:`AudioChannelError` (no such channel), :class:`AudioSilentError`
  (every sample zero) and :class:`AudioNoEnergyError` (no frame reaches
  :data:`SILENCE_FLOOR_DBFS`; whole inputs only: a training chunk may fall in a
  pause). A silent chosen channel of a multi-channel input is an
  :class:`AudioSilentChannelError` (an :class:`AudioSilentError`, reason
  ``silent_channel``) naming the channels with signal and suggesting ``--channel``.
  The speaker API alone also refuses faint steady noise (room tone, a muted
  microphone's hiss) with :class:`AudioNoSpeechError` (reason ``no_speech``; see
  :mod:`wespeaker_py.audio.speech_rules`).
  Training and extraction count them as skips; the API raises them and the commands
  print them as one line, exit status 2.

This package imports neither torch nor anything above it (see docs/architecture).
"""
from wespeaker_py.audio.errors import (AudioChannelError, AudioCheckError, AudioEmptyError,
                                       AudioMissingError, AudioNoEnergyError,
                                       AudioNonFiniteError, AudioNoSpeechError, AudioPipeError,
                                       AudioSegmentError, AudioSilentChannelError,
                                       AudioSilentError, AudioTooShortError,
                                       AudioTruncatedError, AudioUnreadableError)
from wespeaker_py.audio.files import (ArrayHandle, AudioHandle, apply_vad, audio_duration,
                                      is_pipe, open_audio, read_pipe)
from wespeaker_py.audio.load import (AudioLike, describe_audio, load_audio, load_audio_with_rate,
                                     read_checked, read_whole)
from wespeaker_py.audio.resample import heard_rate_of, narrowband, resample
from wespeaker_py.audio.samples import (CHANNEL_POLICIES, DEFAULT_CHANNEL, INT16_SCALE,
                                        SILENCE_FLOOR_DBFS, ChannelChoice, check_samples,
                                        is_narrowband_for, loudest_frame_dbfs, mix_to_mono,
                                        parse_channel, to_int16_scale, warn_if_narrowband)
from wespeaker_py.audio.write import wav_bytes, write_wav

__all__ = ["CHANNEL_POLICIES", "DEFAULT_CHANNEL", "INT16_SCALE", "SILENCE_FLOOR_DBFS",
           "ArrayHandle", "AudioChannelError", "AudioCheckError", "AudioEmptyError", "AudioHandle",
           "AudioLike", "AudioMissingError", "AudioNoEnergyError", "AudioNonFiniteError",
           "AudioNoSpeechError",
           "AudioPipeError", "AudioSegmentError", "AudioSilentChannelError", "AudioSilentError",
           "AudioTooShortError", "AudioTruncatedError", "AudioUnreadableError", "ChannelChoice",
           "apply_vad", "audio_duration", "check_samples", "describe_audio", "heard_rate_of",
           "is_narrowband_for", "is_pipe", "load_audio", "load_audio_with_rate",
           "loudest_frame_dbfs", "mix_to_mono", "narrowband", "open_audio", "parse_channel",
           "read_checked", "read_pipe", "read_whole", "resample", "to_int16_scale",
           "warn_if_narrowband", "wav_bytes", "write_wav"]
