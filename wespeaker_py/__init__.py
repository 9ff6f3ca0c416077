"""wespeaker_py: a recipe-driven speaker verification toolkit in PyTorch.

``wespeaker_py.load_model(...)`` gives a :class:`~wespeaker_py.api.SpeakerModel`
(see :mod:`wespeaker_py.api`); importing the package itself stays cheap (no
torch) until it is called.
"""
from wespeaker_py.errors import AudioInputError, ModelSourceError, WespeakerError

__version__ = "0.1.0"
__all__ = ["AudioInputError", "ModelSourceError", "SpeakerModel", "WespeakerError",
           "load_model"]
_API_NAMES = ("load_model", "SpeakerModel")


def __getattr__(name: str):
    if name in _API_NAMES:
        from wespeaker_py import api
        return getattr(api, name)
    raise AttributeError(f"module 'wespeaker_py' has no attribute {name!r}")
