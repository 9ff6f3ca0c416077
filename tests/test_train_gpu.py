"""Training on a CUDA device with bf16 autocast (skipped without CUDA)."""
import dataclasses
import os

import pytest
import torch

from train_helpers import make_speaker_corpus, tiny_config
from train_helpers import run_training


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
    # the CUDA generator state of the rank's own device is kept for resuming
    assert torch.is_tensor(checkpoint["rng"][0]["cuda"])
    assert all(torch.isfinite(value).all() for value in checkpoint["model"].values()
               if value.is_floating_point())


@pytest.mark.gpu
def test_a_training_step_never_waits_for_the_gpu(tmp_path):
    """Between log points a step queues its work without one device-to-host sync."""
    from train_helpers import CPU_WORLD, plan_of
    from wespeaker_py.train.trainer import Trainer

    corpus = make_speaker_corpus(str(tmp_path / "data"), num_spks=4, utts_per_spk=2)
    config = tiny_config(str(tmp_path / "exp"), corpus, enable_amp=True, grad_clip=5.0,
                         nonfinite_loss="skip")
    device = torch.device("cuda", 0)
    trainer = Trainer(plan_of(config, dataclasses.replace(CPU_WORLD, device=device)))
    batch = {"wavs": (torch.randn(4, 16000) * 1000).pin_memory(),
             "labels": torch.tensor([0, 1, 2, 3]).pin_memory(), "keys": list("abcd")}
    trainer.step.train()
    trainer.step(batch)  # the optimizer creates its state (decided on the host, once)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        outcomes = [trainer.step(batch) for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(bool(outcome.good) for outcome in outcomes)
