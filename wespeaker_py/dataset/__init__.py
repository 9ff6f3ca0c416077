"""Input pipeline: data lists, tar shards, chunking, speed perturbation, augmentation.

Public entry points::

    from wespeaker_py.dataset import Dataset, collate_train, spk2id_from_utt2spk
"""
from wespeaker_py.dataset.collate import collate_train
from wespeaker_py.dataset.dataset import Dataset
from wespeaker_py.dataset.lists import spk2id_from_utt2spk

__all__ = ["Dataset", "collate_train", "spk2id_from_utt2spk"]
