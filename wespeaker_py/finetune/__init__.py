"""Fine-tuning a trained speaker model on a folder of new speakers (``wespeaker-py finetune``).

See :func:`~wespeaker_py.finetune.run.finetune` and docs/finetune.md.
"""
from wespeaker_py.finetune.config import FREEZE_CHOICES, FinetuneOptions
from wespeaker_py.finetune.data import FinetuneDataError
from wespeaker_py.finetune.run import OutputExistsError, finetune

__all__ = ["FREEZE_CHOICES", "FinetuneDataError", "FinetuneOptions", "OutputExistsError",
           "finetune"]
