"""Helpers of the fine-tuning tests."""
from typing import Optional

from wespeaker_py.finetune.data import FinetuneData, read_finetune_corpus
from wespeaker_py.finetune.split import split_finetune_data, warn_about_split


def read_finetune_data(data_dir: str, dev_speakers: Optional[int] = None,
                       mix_dir: Optional[str] = None,
                       sample_rate: Optional[int] = None) -> FinetuneData:
    """Read ``data_dir`` (and ``mix_dir``), split it drawing ``dev_speakers`` and warn about
    the split: the steps of a fresh fine-tuning run, without the claim of OUT that
    ``finetune.run`` makes between the split and the warning (where a resumed run takes
    back its recorded split, :func:`~wespeaker_py.finetune.split.kept_split`)."""
    corpus = read_finetune_corpus(data_dir, mix_dir, sample_rate)
    data = split_finetune_data(corpus, dev_speakers)
    warn_about_split(corpus, data)
    return data
