"""Choices and defaults that both the library and the ``bin/`` argument parsers use.

They live here, in a module that imports nothing, so that every command's ``--help``
can show them without importing torch (their library modules do); the library modules
import them from here under their usual names.
"""

# how :mod:`wespeaker_py.export.torchscript` turns a model into TorchScript
TORCHSCRIPT_METHODS = ("auto", "script", "trace")
# the ONNX opset :func:`wespeaker_py.export.onnx_export.export_onnx` writes (WeSpeaker's)
DEFAULT_OPSET = 14
# Features waiting for a batch of their length (extraction): at 80-dim fbank ~8000
# utterances of 8 s, enough for batches of ~16 over the ~600 frame counts common in a
# VoxCeleb-sized set.
DEFAULT_BUFFER_MB = 2048
# the score normalisations of :mod:`wespeaker_py.scoring.norm`
NORM_METHODS = ("asnorm", "snorm")
