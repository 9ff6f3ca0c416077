"""Training on a CUDA device with bf16 autocast (skipped without CUDA)."""
import os

import pytest
import torch

from train_helpers import make_speaker_corpus, tiny_config
from wespeaker_py.train.trainer import run_training


@pytest.mark.gpu
def test_bf16_training_on_the_gpu(tmp_path):
    corpus = make_speaker_corpus(str(tmp_path / "data"), num_spks=4, utts_per_spk=6)
    settings = dict(num_epochs=3, gpus=[0], enable_amp=True, amp_dtype="bfloat16",
                    channels_last=True)
    full_dir = str(tmp_path / "full")
    history = run_training(tiny_config(full_dir, corpus, **settings))
    assert all(result.skipped_batches == 0 for result in history)
    assert history[-1].loss < history[0].loss
    checkpoint = torch.load(os.path.join(full_dir, "models", "model_3.pt"), weights_only=False)
    assert checkpoint["rng"][0]["cuda"]  # the CUDA generator state is kept for resuming
    assert all(torch.isfinite(value).all() for value in checkpoint["model"].values()
               if value.is_floating_point())
