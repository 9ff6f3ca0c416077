"""Fine-tuning a trained speaker model on a folder of new speakers (``wespeaker-py finetune``).

See :func:`~wespeaker_py.finetune.run.finetune` and docs/finetune.md. The options
import without torch (``--help`` answers at once); the rest loads on first use.
"""
from wespeaker_py.finetune.config import FREEZE_CHOICES, FinetuneOptions

__all__ = ["FREEZE_CHOICES", "FinetuneDataError", "FinetuneOptions", "OutputExistsError",
           "finetune"]
_LAZY = {"FinetuneDataError": "wespeaker_py.finetune.data",
         "OutputExistsError": "wespeaker_py.finetune.request",
         "finetune": "wespeaker_py.finetune.run"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'wespeaker_py.finetune' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(_LAZY[name]), name)
