"""Speed perturbation and noise/reverb on the device equal the CPU path (augment_on: cpu).

Tolerances (SNR of the difference between the two paths' waveforms, same draws):
- rows with no speed change: float32 rounding only (>= 60 dB);
- resampled rows: the torch polyphase filter is not soxr HQ; on full-band white
  noise, where their transition bands differ most, the difference stays >= 38 dB
  (measured 44-45 dB); on tones below 4 kHz >= 60 dB over the whole chunk
  (measured 67-75 dB, the abrupt chunk edges dominate) and >= 80 dB away from
  the edges (measured 87-88 dB).
"""
import math
from fractions import Fraction

import numpy as np
import pytest
import soxr
import torch

from dataset_helpers import RATE, random_int16, training_args, write_audio, write_raw_list_file
from wespeaker_py.config import ConfigError, as_dataset_args
from wespeaker_py.dataset import Dataset, collate_train
from wespeaker_py.dataset.augment import AugmentPlan, Augmenter, apply_plan
from wespeaker_py.dataset.collate import AUG_NONE, AUG_REVERB
from wespeaker_py.dataset.device_augment import augment_batch, fft_size
from wespeaker_py.dataset.device_resample import speed_resample
from wespeaker_py.dataset.stats import PipelineStats
from wespeaker_py.frontend.framing import samples_for_frames

CHUNK = samples_for_frames(200, RATE)
NUM_SPKS = 3


pytestmark = pytest.mark.usefixtures("single_process")


def diff_snr(reference, other):
    reference = np.asarray(reference, dtype=np.float64)
    error = reference - np.asarray(other, dtype=np.float64)
    return 10 * np.log10(np.sum(reference ** 2) / max(np.sum(error ** 2), 1e-30))


def speech_band(num_samples, seed):
    """Harmonic tones below 4 kHz at int16 scale."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / RATE
    freqs, phases = rng.uniform(80, 4000, 30), rng.uniform(0, 2 * np.pi, 30)
    return (300 * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None]).sum(0)).astype(
        np.float32)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Utterances (8 s, 16 kHz WAV), MUSAN-like noise keys incl. babble, and RIRs."""
    root = tmp_path_factory.mktemp("device_aug")
    rows = []
    for index in range(9):
        path = write_audio(str(root / f"utt{index}.wav"), random_int16(8 * RATE, seed=index))
        rows.append({"key": f"utt{index}", "wav": path, "spk": f"spk{index % NUM_SPKS}"})
    raw = write_raw_list_file(str(root / "raw.list"), rows)
    noise_rows = []
    for index, key in enumerate(["noise/a", "music/b", "speech/c", "babble/1", "babble/2",
                                 "babble/3", "other/d"]):
        path = write_audio(str(root / f"noise{index}.wav"),
                           random_int16(3 * RATE, seed=50 + index) // (index + 1))
        noise_rows.append(f"{key} {path}\n")
    rir_rows = []
    rng = np.random.default_rng(7)
    for index, seconds in enumerate((0.3, 0.8, 2.5)):
        t = np.arange(int(seconds * RATE)) / RATE
        rir = rng.standard_normal(t.size) * np.exp(-t / 0.1)
        rir[0] = 4.0
        path = write_audio(str(root / f"rir{index}.wav"),
                           (8000 * rir / np.abs(rir).max()).astype(np.int16))
        rir_rows.append(f"rir/{index} {path}\n")
    (root / "noise.scp").write_text("".join(noise_rows))
    (root / "rir.scp").write_text("".join(rir_rows))
    spk2id = {f"spk{i}": i for i in range(NUM_SPKS)}
    return {"raw": raw, "noise": str(root / "noise.scp"), "rir": str(root / "rir.scp"),
            "spk2id": spk2id}


def pipeline(sources, augment_on, num_samples, aug_prob=0.6, seed=3, speed_perturb=True):
    args = training_args(speed_perturb=speed_perturb, aug_prob=aug_prob, augment_on=augment_on,
                         shuffle=True, sample_num_per_epoch=num_samples)
    dataset = Dataset("raw", sources["raw"], args, sources["spk2id"], seed=seed,
                      reverb_data=sources["rir"], noise_data=sources["noise"])
    return list(dataset)


def device_outputs(samples, batch_size=16):
    wavs, labels, batches = [], [], []
    for start in range(0, len(samples), batch_size):
        batch = collate_train(samples[start:start + batch_size])
        out, lab = augment_batch(batch, "cpu")
        wavs.append(out.numpy())
        labels.append(lab.numpy())
        batches.append(batch)
    return np.concatenate(wavs), np.concatenate(labels), batches


@pytest.mark.parametrize("speed", [Fraction(9, 10), Fraction(11, 10)])
def test_speed_resampling_matches_soxr_within_the_stated_tolerance(speed):
    span = math.ceil(CHUNK * speed) + 1
    rows = [random_int16(span, seed=1).astype(np.float32), speech_band(span, seed=2)]
    out = speed_resample(torch.from_numpy(np.stack(rows)), speed, CHUNK).numpy()
    assert out.shape == (2, CHUNK)
    expected = [soxr.resample(row, RATE * float(speed), RATE, quality="HQ")[:CHUNK]
                for row in rows]
    assert diff_snr(expected[0], out[0]) >= 38.0
    assert diff_snr(expected[1], out[1]) >= 60.0
    edge = 400
    assert diff_snr(expected[1][edge:-edge], out[1][edge:-edge]) >= 80.0


def test_same_draws_give_the_cpu_paths_waveforms_and_labels(sources):
    cpu = pipeline(sources, "cpu", 96)
    device = pipeline(sources, "device", 96)
    assert [s["key"] for s in cpu] == [s["key"] for s in device]
    wavs, labels, batches = device_outputs(device)
    assert labels.tolist() == [s["label"] for s in cpu]
    speeds = torch.cat([b["speeds"] for b in batches]).numpy()
    kinds = torch.cat([b["aug"] for b in batches]).numpy()
    assert set(speeds.tolist()) == {0, 1, 2} and set(kinds.tolist()) == {0, 1, 2}
    for row, sample in enumerate(cpu):
        expected = sample["wav"].numpy()
        assert wavs[row].shape == expected.shape
        if speeds[row] == 0 and kinds[row] == AUG_NONE:
            np.testing.assert_array_equal(wavs[row], expected)
        elif speeds[row] == 0:
            assert diff_snr(expected, wavs[row]) >= 60.0, (row, kinds[row])
        else:
            assert diff_snr(expected, wavs[row]) >= 38.0, (row, speeds[row], kinds[row])


def test_labels_are_shifted_by_speed_as_on_the_cpu(sources):
    device = pipeline(sources, "device", 60, aug_prob=0.0)
    _, labels, batches = device_outputs(device)
    speeds = torch.cat([b["speeds"] for b in batches]).numpy()
    base = np.array([sources["spk2id"][f"spk{int(s['key'][3:]) % NUM_SPKS}"] for s in device])
    np.testing.assert_array_equal(labels, base + NUM_SPKS * speeds)


def test_draw_statistics_are_wespeakers(sources):
    """Many draws of the planning both paths share: choice, type, SNR and babble counts."""
    augmenter = Augmenter(sources["rir"], sources["noise"], RATE)
    rng, stats = np.random.default_rng(11), PipelineStats()
    reverbs, snr_by_type, babble_counts = 0, {}, set()
    draws = 1500
    for _ in range(draws):
        plan = augmenter.plan(CHUNK, rng, stats)
        if plan.rir is not None:
            reverbs += 1
            continue
        lengths = {noise.size for noise in plan.noises}
        assert lengths == {CHUNK}
        if len(plan.snrs) > 1:
            babble_counts.add(len(plan.snrs))
            kind = "babble"
        else:
            low = min(plan.snrs)
            kind = "speech" if low > 15 else "noise-like"
        snr_by_type.setdefault(kind, []).extend(plan.snrs)
    assert abs(reverbs / draws - 0.5) < 0.05
    assert babble_counts == set(range(3, 8))
    babble = np.array(snr_by_type["babble"])
    assert 13.0 <= babble.min() and babble.max() <= 20.0 and abs(babble.mean() - 16.5) < 0.3
    everything = np.concatenate([np.array(v) for v in snr_by_type.values()])
    assert 0.0 <= everything.min() and everything.max() <= 30.0
    # noise, music, speech, other: one source each; speech is the only one above 15 dB
    single = [s for k, v in snr_by_type.items() if k != "babble" for s in v]
    assert abs(np.mean(np.array(single) > 15.0) - 0.25 * 0.5) < 0.06


def test_device_arithmetic_is_the_cpu_paths_and_keeps_the_drawn_choices(sources):
    device = pipeline(sources, "device", 300, aug_prob=0.6)
    wavs, _, batches = device_outputs(device, batch_size=60)
    speeds = torch.cat([b["speeds"] for b in batches]).numpy()
    kinds = torch.cat([b["aug"] for b in batches]).numpy()
    for index in range(3):
        assert abs(np.mean(speeds == index) - 1 / 3) < 0.08
    assert abs(np.mean(kinds != AUG_NONE) - 0.6) < 0.08
    augmented = kinds != AUG_NONE
    assert abs(np.mean(kinds[augmented] == AUG_REVERB) - 0.5) < 0.1
    peaks = np.abs(wavs[augmented]).max(axis=1) / 32768
    assert np.all((peaks > 0.99) & (peaks < 1.0))
    # every augmented row of a batch against the CPU path's own arithmetic on the same chunk
    batch = batches[0]
    clean, _ = augment_batch({**batch, "aug": torch.zeros_like(batch["aug"])}, "cpu")
    out, _ = augment_batch(batch, "cpu")
    owners, rir_owner = batch["noise_owner"].tolist(), batch["rir_owner"].tolist()
    for row in np.flatnonzero(batch["aug"].numpy()):
        chunk = clean[row].numpy()
        if row in rir_owner:
            rir = batch["rirs"][rir_owner.index(row)].numpy()
            plan = AugmentPlan(rir=np.trim_zeros(rir, "b"))
        else:
            sources = [i for i, owner in enumerate(owners) if owner == row]
            plan = AugmentPlan(noises=[batch["noises"][i].numpy() for i in sources],
                               snrs=[float(batch["noise_snrs"][i]) for i in sources])
        assert diff_snr(apply_plan(chunk, plan), out[row].numpy()) >= 60.0


def test_cpu_batch_passes_through_and_empty_augmentation_is_harmless(sources):
    cpu = pipeline(sources, "cpu", 8, aug_prob=0.0, speed_perturb=False)
    batch = collate_train(cpu)
    wavs, labels = augment_batch(batch)
    assert torch.equal(wavs, batch["wavs"]) and torch.equal(labels, batch["labels"])
    device = pipeline(sources, "device", 8, aug_prob=0.0, speed_perturb=False)
    batch = collate_train(device)
    assert batch["rirs"].shape[0] == 0 and batch["noises"].shape == (0, CHUNK)
    wavs, _ = augment_batch(batch)
    assert torch.equal(wavs, torch.stack([s["wav"] for s in cpu]))


def test_augment_on_is_checked():
    assert as_dataset_args({}).augment_on == "cpu"
    assert as_dataset_args({"augment_on": "device"}).augment_on == "device"
    with pytest.raises(ConfigError, match="dataset_args.augment_on"):
        as_dataset_args({"augment_on": "gpu"})


def test_fft_size_is_smooth_and_large_enough():
    for minimum in (1, 7, 97, 40239, 64481):
        size = fft_size(minimum)
        rest = size
        for factor in (2, 3, 5):
            while rest % factor == 0:
                rest //= factor
        assert size >= minimum and rest == 1 and size < 1.25 * minimum + 2


def test_training_step_applies_the_device_augmentation(sources, tmp_path, monkeypatch):
    """A training run with augment_on: device (one worker process) resamples on the device."""
    import wespeaker_py.dataset.device_augment as device_augment
    from train_helpers import make_speaker_corpus, tiny_config
    from train_helpers import run_training

    corpus = make_speaker_corpus(str(tmp_path / "corpus"), num_spks=2, utts_per_spk=4,
                                 seconds=2.0)
    resampled = []
    original = device_augment.speed_resample

    def spy(wavs, speed, out_len):
        out = original(wavs, speed, out_len)
        resampled.append((float(speed), tuple(out.shape)))
        return out

    monkeypatch.setattr(device_augment, "speed_resample", spy)
    config = tiny_config(str(tmp_path / "exp"), corpus, num_epochs=1,
                         reverb_data=sources["rir"], noise_data=sources["noise"],
                         dataloader_args={"batch_size": 4, "num_workers": 1,
                                          "pin_memory": False, "drop_last": True})
    config["dataset_args"].update(speed_perturb=True, aug_prob=1.0, augment_on="device")
    history = run_training(config)
    assert history[0].batches == 2 and history[0].skipped_batches == 0
    chunk = samples_for_frames(config["dataset_args"]["num_frms"], RATE)
    assert resampled and all(shape[1] == chunk for _, shape in resampled)
    assert {speed for speed, _ in resampled} - {1.0}
