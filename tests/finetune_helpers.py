"""Helpers of the fine-tuning tests."""
import os
from typing import Callable, Iterable, Optional, Tuple

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


def write_segments_folder(root: str, utterances: Iterable[Tuple[str, str, str]],
                          span_of: Callable[[str], Tuple[float, float]]) -> str:
    """Make the Kaldi data folder ``root`` (wav.scp, segments, utt2spk) in which each
    ``(key, speaker, audio path)`` of ``utterances`` is the segment ``span_of(key)`` (start,
    end in seconds) of a recording of its own, ``rec-KEY``; return ``root``."""
    os.makedirs(root)
    with open(os.path.join(root, "wav.scp"), "w") as scp, \
            open(os.path.join(root, "segments"), "w") as seg, \
            open(os.path.join(root, "utt2spk"), "w") as u2s:
        for key, speaker, path in utterances:
            start, end = span_of(key)
            scp.write(f"rec-{key} {path}\n")
            seg.write(f"{key} rec-{key} {start} {end}\n")
            u2s.write(f"{key} {speaker}\n")
    return root
