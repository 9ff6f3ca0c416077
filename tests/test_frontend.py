"""Front-end: fbank parity with kaldi-native-fbank, batching, dither, CMN, SpecAugment, module."""
import math
import os

import numpy as np
import pytest
import torch

from wespeaker_py.config import SpecAugArgs
from wespeaker_py.frontend import (FbankFeatures, apply_cmn, fbank, num_frames,
                                   samples_for_frames, spec_augment)

knf = pytest.importorskip("kaldi_native_fbank")

PARITY_TOL = 1e-3
# Kaldi's log floor: log(FLT_EPSILON).
LOG_FLOOR = math.log(torch.finfo(torch.float32).eps)


def knf_fbank(wave: torch.Tensor, sample_rate: int, num_mel_bins: int,
              window_type: str = "hamming") -> np.ndarray:
    """Reference features from kaldi-native-fbank, one utterance, dither off."""
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = sample_rate
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = window_type
    opts.mel_opts.num_bins = num_mel_bins
    extractor = knf.OnlineFbank(opts)
    extractor.accept_waveform(sample_rate, wave.numpy().astype(np.float32))
    extractor.input_finished()
    frames = [extractor.get_frame(i) for i in range(extractor.num_frames_ready)]
    return np.stack(frames) if frames else np.zeros((0, num_mel_bins), dtype=np.float32)


def noise(samples: int, seed: int, scale: float = 3000.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(samples, generator=generator) * scale).clamp(-32768, 32767)


def tones(samples: int, sample_rate: int, seed: int) -> torch.Tensor:
    """Three sines plus a DC offset over a -70 dB noise floor.

    Pure tones put some mel bins 140 dB below the peak, where any float32
    implementation (kaldi-native-fbank included) is only as exact as its rounding;
    a recording's noise floor keeps every bin well above that.
    """
    t = torch.arange(samples, dtype=torch.float64) / sample_rate
    wave = (6000 * torch.sin(2 * math.pi * 440 * t) + 3000 * torch.sin(2 * math.pi * 1250 * t)
            + 1000 * torch.sin(2 * math.pi * 3100 * t * (sample_rate / 16000)) + 150)
    return wave.float() + noise(samples, seed, scale=3.0)


def parity_lengths(sample_rate: int) -> list:
    window = samples_for_frames(1, sample_rate)
    return [window, window + 1, samples_for_frames(7, sample_rate) + 37, sample_rate]


@pytest.mark.parametrize("sample_rate", [8000, 16000])
@pytest.mark.parametrize("num_mel_bins", [40, 64, 80])
def test_matches_kaldi_native_fbank(sample_rate, num_mel_bins):
    for index, samples in enumerate(parity_lengths(sample_rate)):
        for wave in (noise(samples, seed=index), tones(samples, sample_rate, seed=index)):
            ours = fbank(wave, sample_rate=sample_rate, num_mel_bins=num_mel_bins)
            expected = knf_fbank(wave, sample_rate, num_mel_bins)
            assert ours.shape == (1,) + expected.shape
            assert expected.shape[0] == num_frames(samples, sample_rate)
            np.testing.assert_allclose(ours[0].numpy(), expected, rtol=0, atol=PARITY_TOL)


# float32 rounding of a frame's spectrum is about eps times its total energy, so
# bins more than ~87 dB below it (20 nats) carry rounding noise in every float32
# implementation, kaldi-native-fbank's included; in speech (and at 8 kHz
# with white noise) these are the lowest mel bins, which pre-emphasis attenuates.
RESOLVED_NATS = 18.0
WORST_TOL = 2e-2


def assert_parity_where_resolved(ours: np.ndarray, expected: np.ndarray) -> None:
    """Bins within RESOLVED_NATS of their frame's energy match to PARITY_TOL; all to WORST_TOL."""
    error = np.abs(ours - expected)
    frame_energy = np.logaddexp.reduce(expected.astype(np.float64), axis=1, keepdims=True)
    resolved = expected > frame_energy - RESOLVED_NATS
    assert resolved.mean() > 0.99
    assert error[resolved].max() <= PARITY_TOL
    assert error.max() <= WORST_TOL


@pytest.mark.parametrize("window_type", ["hanning", "povey", "rectangular", "blackman"])
def test_other_windows_match_kaldi_native_fbank(window_type):
    for sample_rate in (8000, 16000):
        wave = noise(samples_for_frames(20, sample_rate), seed=3)
        ours = fbank(wave, sample_rate=sample_rate, num_mel_bins=64, window_type=window_type)
        expected = knf_fbank(wave, sample_rate, 64, window_type)
        assert_parity_where_resolved(ours[0].numpy(), expected)


def test_silence_hits_kaldi_log_floor():
    wave = torch.zeros(samples_for_frames(3, 16000))
    ours = fbank(wave)
    np.testing.assert_allclose(ours[0].numpy(), knf_fbank(wave, 16000, 80), atol=PARITY_TOL)
    assert torch.allclose(ours, torch.full_like(ours, LOG_FLOOR))


@pytest.mark.shared_data
@pytest.mark.parametrize("corpus, sample_rate", [("fsdd", 8000), ("librispeech_tc100", 16000)])
def test_matches_kaldi_native_fbank_on_speech(shared_data_dir, corpus, sample_rate):
    soundfile = pytest.importorskip("soundfile")
    corpus_dir = os.path.join(shared_data_dir, corpus)
    with open(os.path.join(corpus_dir, "wav.scp"), encoding="utf-8") as scp:
        relative_paths = [line.split()[1] for line, _ in zip(scp, range(3))]
    for relative_path in relative_paths:
        audio, rate = soundfile.read(os.path.join(corpus_dir, relative_path), dtype="int16")
        assert rate == sample_rate
        wave = torch.from_numpy(audio.astype(np.float32))
        for num_mel_bins in (40, 80):
            ours = fbank(wave, sample_rate=sample_rate, num_mel_bins=num_mel_bins)[0].numpy()
            assert_parity_where_resolved(ours, knf_fbank(wave, sample_rate, num_mel_bins))


def test_batched_equals_one_by_one():
    waves = torch.stack([noise(8000, seed=s) for s in range(4)])
    batched = fbank(waves)
    assert batched.shape == (4, num_frames(8000, 16000), 80)
    for row, wave in enumerate(waves):
        assert torch.allclose(batched[row], fbank(wave)[0], atol=1e-5)


def test_input_forms_and_short_input():
    wave = noise(4000, seed=1)
    assert fbank(wave).shape == fbank(wave[None]).shape
    as_int16 = fbank(wave.round().to(torch.int16))
    assert as_int16.dtype == torch.float32
    assert torch.allclose(as_int16, fbank(wave.round()))
    assert fbank(torch.zeros(2, 399)).shape == (2, 0, 80)
    assert fbank(torch.zeros(0, 800)).shape == (0, num_frames(800, 16000), 80)
    with pytest.raises(ValueError, match="num_mel_bins=128"):
        fbank(wave, sample_rate=8000, num_mel_bins=128)  # mel bins narrower than FFT bins
    with pytest.raises(ValueError, match="shape"):
        fbank(torch.zeros(1, 2, 400))
    with pytest.raises(ValueError, match="window_type"):
        fbank(wave, window_type="kaiser")


def test_autocast_does_not_lower_precision():
    waves = torch.stack([noise(4000, seed=s) for s in range(2)])
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under_autocast = fbank(waves)
    assert under_autocast.dtype == torch.float32
    assert torch.allclose(under_autocast, fbank(waves), atol=1e-5)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    waves = torch.stack([tones(samples_for_frames(50, 16000), 16000, seed=s) for s in range(3)])
    on_gpu = fbank(waves.cuda())
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(on_gpu.cpu(), fbank(waves), atol=PARITY_TOL)
    generator = torch.Generator(device="cuda").manual_seed(0)
    dithered = fbank(waves.cuda(), dither=1.0, generator=generator)
    masked = spec_augment(apply_cmn(dithered), prob=1.0, generator=generator)
    assert masked.shape == on_gpu.shape and (masked == 0).any()
    module = FbankFeatures(dither=1.0, spec_aug=True).train()
    assert module(waves.cuda()).device.type == "cuda"


def test_dither_only_when_positive_and_reproducible():
    wave = noise(6400, seed=2)
    plain = fbank(wave)
    assert torch.equal(fbank(wave, dither=0.0, generator=torch.Generator().manual_seed(1)),
                       plain)
    first = fbank(wave, dither=1.0, generator=torch.Generator().manual_seed(5))
    again = fbank(wave, dither=1.0, generator=torch.Generator().manual_seed(5))
    other = fbank(wave, dither=1.0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.allclose(first, plain, atol=1e-6)
    # Dither of 1 on a loud signal only nudges the features.
    assert (first - plain).abs().max() < 0.5


def test_dither_lifts_silence_off_the_floor():
    silence = torch.zeros(1, samples_for_frames(50, 16000))
    feats = fbank(silence, dither=1.0, generator=torch.Generator().manual_seed(0))
    assert (feats > LOG_FLOOR + 1).all()


def test_cmn_gives_zero_mean_per_utterance():
    feats = torch.randn(3, 50, 8) * 4 + torch.arange(3.0)[:, None, None] * 10
    normed = apply_cmn(feats)
    assert torch.allclose(normed.mean(dim=1), torch.zeros(3, 8), atol=1e-5)
    assert torch.allclose(normed[1] - normed[1].mean(0), feats[1] - feats[1].mean(0), atol=1e-5)


def masked_runs(mask_1d: torch.Tensor) -> list:
    """Lengths of the runs of True in a 1-D boolean tensor."""
    runs, current = [], 0
    for value in mask_1d.tolist() + [False]:
        if value:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


def expected_band_width(size: int, max_width: int) -> float:
    """Mean width of one band: start uniform in [0, size), width in [1, max_width], cut at size."""
    return float(np.mean([min(width, size - start) for start in range(size)
                          for width in range(1, max_width + 1)]))


def test_spec_augment_statistics_and_bounds():
    batch, frames, bins = 3000, 40, 30
    feats = torch.rand(batch, frames, bins) + 1.0  # never zero before masking
    original = feats.clone()
    out = spec_augment(feats, num_t_mask=1, num_f_mask=1, max_t=10, max_f=8, prob=0.6,
                       generator=torch.Generator().manual_seed(0))
    assert out.shape == feats.shape
    assert torch.equal(feats, original)
    zero = out == 0
    assert torch.equal(out[~zero], feats[~zero])

    augmented = zero.flatten(1).any(dim=1)
    assert abs(augmented.float().mean().item() - 0.6) < 0.035  # 3.9 standard errors

    time_masked = zero.all(dim=2)  # [B, T]: whole frames set to zero
    freq_masked = zero.all(dim=1)  # [B, F]: whole bins set to zero
    # Every zero lies in a masked frame or a masked bin.
    assert torch.equal(zero, time_masked[:, :, None] | freq_masked[:, None, :])
    assert not time_masked[~augmented].any() and not freq_masked[~augmented].any()
    time_widths, freq_widths = [], []
    for row in torch.nonzero(augmented).flatten()[:400].tolist():
        time_runs, freq_runs = masked_runs(time_masked[row]), masked_runs(freq_masked[row])
        assert len(time_runs) == 1 and len(freq_runs) == 1
        time_widths += time_runs
        freq_widths += freq_runs
    assert min(time_widths) >= 1 and max(time_widths) == 10
    assert min(freq_widths) >= 1 and max(freq_widths) == 8
    assert abs(np.mean(time_widths) - expected_band_width(frames, 10)) < 0.45
    assert abs(np.mean(freq_widths) - expected_band_width(bins, 8)) < 0.35


def test_spec_augment_several_masks_and_edge_cases():
    feats = torch.rand(64, 30, 20) + 1.0
    out = spec_augment(feats, num_t_mask=3, num_f_mask=2, max_t=4, max_f=3, prob=1.0,
                       generator=torch.Generator().manual_seed(1))
    zero = out == 0
    assert zero.flatten(1).any(dim=1).all()
    assert (zero.all(dim=2).sum(dim=1) <= 12).all()
    assert (zero.all(dim=1).sum(dim=1) <= 6).all()
    assert torch.equal(spec_augment(feats, prob=0.0), feats)
    assert spec_augment(feats, prob=0.0) is not feats
    with pytest.raises(ValueError, match="max_t"):
        spec_augment(feats, max_t=0)


def test_spec_augment_batch_mask_is_one_draw_for_the_batch():
    # WeSpeaker's executor mode: the whole batch is masked, with the same bands, or not at all
    feats = torch.rand(32, 40, 20) + 1.0
    generator = torch.Generator().manual_seed(5)
    masked_batches = 0
    for _ in range(200):
        zero = spec_augment(feats, prob=0.6, batch_mask=True, generator=generator) == 0
        assert torch.equal(zero, zero[:1].expand_as(zero))
        masked_batches += int(zero.any())
    assert abs(masked_batches / 200 - 0.6) < 0.14  # 4 standard errors
    per_utterance = spec_augment(feats, prob=1.0, generator=torch.Generator().manual_seed(5))
    zero = per_utterance == 0
    assert not torch.equal(zero, zero[:1].expand_as(zero))


def test_spec_augment_reproducible_with_generator():
    feats = torch.rand(16, 40, 20)
    first = spec_augment(feats, generator=torch.Generator().manual_seed(3))
    again = spec_augment(feats, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again)


def test_fbank_features_train_and_eval():
    torch.manual_seed(0)
    waves = torch.stack([noise(samples_for_frames(100, 16000), seed=s) for s in range(8)])
    module = FbankFeatures(dither=1.0, spec_aug=True,
                           spec_aug_args=SpecAugArgs(num_t_mask=2, max_t=20, prob=1.0))
    assert module.output_dim == 80
    assert list(module.state_dict()) == [] and list(module.parameters()) == []

    module.eval()
    evaluated = module(waves)
    assert torch.equal(evaluated, module(waves))  # no dither, no SpecAugment
    assert torch.allclose(evaluated, apply_cmn(fbank(waves)))
    assert not (evaluated == 0).all(dim=2).any()

    module.train()
    trained = module(waves)
    assert trained.shape == evaluated.shape == (8, 100, 80)
    assert (trained == 0).all(dim=2).any(dim=1).all()  # every utterance time-masked
    assert not torch.equal(trained, module(waves))  # dither and masks differ per call

    without_cmn = FbankFeatures(cmn=False).eval()
    assert torch.allclose(without_cmn(waves), fbank(waves))


def test_from_dataset_args_reads_wespeaker_block():
    dataset_args = {
        "resample_rate": 8000, "num_frms": 200, "aug_prob": 0.6,
        "fbank_args": {"num_mel_bins": 64, "frame_shift": 10, "frame_length": 25,
                       "dither": 1.0},
        "spec_aug": True,
        "spec_aug_args": {"num_t_mask": 1, "num_f_mask": 1, "max_t": 10, "max_f": 8,
                          "prob": 0.6},
    }
    module = FbankFeatures.from_dataset_args(dataset_args)
    assert (module.sample_rate, module.num_mel_bins, module.dither) == (8000, 64, 1.0)
    assert module.spec_aug and module.spec_aug_args.max_f == 8
    assert module.cmn and module.output_dim == 64
    assert module.eval()(noise(8000, seed=0)[None]).shape == (1, num_frames(8000, 8000), 64)

    defaults = FbankFeatures.from_dataset_args({})
    assert (defaults.sample_rate, defaults.num_mel_bins, defaults.spec_aug) == (16000, 80, False)
    assert not FbankFeatures.from_dataset_args({"cmvn": False}).cmn


@pytest.mark.parametrize("dataset_args, message", [
    ({"fbank_args": {"foo": 1}}, "dataset_args.fbank_args.foo"),
    ({"spec_aug_args": {"max_time": 3}}, "dataset_args.spec_aug_args.max_time"),
    ({"fbank_args": {"num_mel_bins": "80"}}, "dataset_args.fbank_args.num_mel_bins"),
    ({"spec_aug_args": {"max_t": True}}, "dataset_args.spec_aug_args.max_t"),
    ({"spec_aug": "yes"}, "dataset_args.spec_aug"),
    ({"resample_rate": 16000.5}, "dataset_args.resample_rate"),
    ({"cmvn_args": {"norm_var": True}}, "dataset_args.cmvn_args.norm_var"),
    ({"frontend": "wavlm"}, "dataset_args.frontend"),
])
def test_from_dataset_args_errors_name_the_key(dataset_args, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        FbankFeatures.from_dataset_args(dataset_args)
