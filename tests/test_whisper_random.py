"""A random Whisper checkpoint is written atomically (atomic_files.save_torch)."""
import os

import pytest
import torch

from wespeaker_py.frontend.whisper_random import tiny_whisper_dims, write_random_whisper


def test_a_failed_write_leaves_the_earlier_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "tiny.pt"
    write_random_whisper(str(path), tiny_whisper_dims(num_layers=1), seed=1)
    earlier = path.read_bytes()
    assert torch.load(str(path))["dims"]["n_audio_layer"] == 1
    real_save = torch.save

    def cut_short(obj, target, *args, **kwargs):
        real_save(obj, target, *args, **kwargs)
        raise OSError("the disk went away")

    monkeypatch.setattr(torch, "save", cut_short)
    with pytest.raises(OSError, match="the disk went away"):
        write_random_whisper(str(path), tiny_whisper_dims(num_layers=2), seed=2)
    assert path.read_bytes() == earlier
    assert os.listdir(tmp_path / "sub") == ["tiny.pt"]
