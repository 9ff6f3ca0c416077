"""Training on real speech: the LibriSpeech train speakers of ../shared/data."""
import json
import os

import pytest

from train_helpers import tiny_config
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from train_helpers import run_training


def _train_speaker_lists(shared_data_dir, out_dir):
    root = os.path.join(shared_data_dir, "librispeech_tc100")
    with open(os.path.join(root, "train_spk")) as handle:
        train_speakers = set(handle.read().split())
    with open(os.path.join(root, "wav.scp")) as handle:
        wavs = dict(line.split(maxsplit=1) for line in handle if line.strip())
    raw_list, utt2spk = os.path.join(out_dir, "raw.list"), os.path.join(out_dir, "utt2spk")
    with open(os.path.join(root, "utt2spk")) as source, open(raw_list, "w") as raw, \
            open(utt2spk, "w") as labels:
        for line in source:
            key, speaker = line.split()
            if speaker in train_speakers:
                path = os.path.join(root, wavs[key].strip())
                raw.write(json.dumps({"key": key, "wav": path, "spk": speaker}) + "\n")
                labels.write(f"{key} {speaker}\n")
    return {"raw_list": raw_list, "utt2spk": utt2spk}, len(train_speakers)


@pytest.mark.shared_data
def test_real_speech_training_accuracy_is_well_above_chance(shared_data_dir, tmp_path):
    corpus, num_speakers = _train_speaker_lists(shared_data_dir, str(tmp_path))
    config = tiny_config(
        str(tmp_path / "exp"), corpus, num_epochs=8, save_epoch_interval=8, num_avg=1,
        dataloader_args={"batch_size": 16, "num_workers": 0, "pin_memory": False,
                         "drop_last": True},
        model_args={"feat_dim": 40, "hid_dim": 64, "stats_dim": 128, "embed_dim": 64,
                    "pooling_func": "TSTP"},
        projection_args={"project_type": "arc_margin", "scale": 32.0, "easy_margin": False},
        margin_update={"initial_margin": 0.0, "final_margin": 0.0, "increase_start_epoch": 1,
                       "fix_start_epoch": 1, "update_margin": False},
        optimizer="Adam", optimizer_args={"weight_decay": 0.0001},
        # x 16/64 for the batch size: Adam at 2e-3 falling to 2e-4
        scheduler_args={"initial_lr": 0.008, "final_lr": 0.0008, "warm_up_epoch": 1,
                        "warm_from_zero": True})
    config["dataset_args"].update(
        num_frms=150, shuffle_args={"shuffle_size": 100},
        fbank_args={"num_mel_bins": 40, "frame_shift": 10, "frame_length": 25, "dither": 1.0})
    history = run_training(config)
    chance = 100.0 / num_speakers
    assert num_speakers == 93
    assert history[-1].accuracy > 8 * chance  # > 8.6 %: chance is 1.1 %
    assert history[-1].loss < history[0].loss - 2.0
