"""Whisper log-mel features: parity with transformers' WhisperFeatureExtractor, shapes, scale."""
import numpy as np
import pytest
import torch

from wespeaker_py.frontend.whisper_features import WhisperLogMel, mel_filters

transformers = pytest.importorskip("transformers")

SR = 16000
INT16 = 32768.0
# Against the extractor's numpy path (its own STFT, complex64): measured at most 5.8e-5
# (a chirp, 128 bands; bins near the floor), 1.3e-5 on tones, 1e-5 on noise.
TOL_NUMPY = 1e-4
# Against its public call (torch.stft, as Whisper's own code): measured 1.2e-7.
TOL_CALL = 1e-6


def signals(samples: int, seed: int = 0) -> dict:
    """[-1, 1] test signals; 'gap' has silence, where the max-minus-8 floor acts."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SR
    gap = 0.3 * rng.standard_normal(samples)
    gap[samples // 4:samples // 2] = 0.0
    return {"gauss": 0.1 * rng.standard_normal(samples),
            "uniform": rng.uniform(-0.9, 0.9, samples),
            "chirp": 0.5 * np.sin(2 * np.pi * (200 * t + 1500 * t ** 2)),
            "sine_440": 0.5 * np.sin(2 * np.pi * 440 * t),
            "quiet_noise": 1e-4 * rng.standard_normal(samples),
            "gap": gap}


def ours(wave: np.ndarray, n_mels: int) -> np.ndarray:
    """Our features ``[frames, n_mels]`` of a [-1, 1] waveform, fed at int16 scale."""
    return WhisperLogMel(n_mels)(torch.from_numpy(wave.astype(np.float32))[None] * INT16)[0]


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_are_the_slaney_filterbank_whisper_ships(n_mels):
    from transformers.audio_utils import mel_filter_bank
    reference = mel_filter_bank(num_frequency_bins=201, num_mel_filters=n_mels,
                                min_frequency=0.0, max_frequency=8000.0, sampling_rate=SR,
                                norm="slaney", mel_scale="slaney").T
    filters = mel_filters(n_mels)
    assert filters.dtype == torch.float32 and filters.shape == (n_mels, 201)
    # float32 rounding of values up to 0.04: 2e-9 measured
    np.testing.assert_allclose(filters.numpy(), reference, rtol=0, atol=1e-8)


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("samples", [201, 16000, 16159, 48000])
def test_features_are_whisper_feature_extractors(n_mels, samples):
    extractor = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    for name, wave in signals(samples, seed=samples).items():
        wave = wave.astype(np.float32)
        got = ours(wave, n_mels).numpy()
        assert got.shape == (samples // 160, n_mels), name
        # the extractor without its 30 s padding: its numpy path on the bare waveform ...
        numpy_ref = extractor._np_extract_fbank_features(wave[None].astype(np.float64),
                                                         "cpu")[0].T
        np.testing.assert_allclose(got, numpy_ref, rtol=0, atol=TOL_NUMPY, err_msg=name)
        # ... and its public call, padded to the longest row (itself) only
        called = extractor(wave, sampling_rate=SR, padding="longest",
                           return_tensors="np")["input_features"][0].T
        np.testing.assert_allclose(got, called, rtol=0, atol=TOL_CALL, err_msg=name)


def test_each_row_is_floored_at_its_own_maximum_minus_8():
    waves = signals(16000, seed=1)
    loud, gap = waves["uniform"], waves["gap"]
    batch = torch.from_numpy(np.stack([loud, gap]).astype(np.float32)) * INT16
    together = WhisperLogMel()(batch)
    for row, wave in enumerate((loud, gap)):
        torch.testing.assert_close(together[row], ours(wave, 80), rtol=0, atol=1e-6)
    # the frames inside the silence (samples 4000-8000) sit at the row's floor, 8 log10
    # units (2 after the scaling) below its maximum
    floor = float(together[1].max()) - 2.0
    silent = together[1, 27:48]
    torch.testing.assert_close(silent, torch.full_like(silent, floor), rtol=0, atol=1e-6)
    assert together[0].min() > floor + 1.0   # the other row has its own, higher floor


def test_the_input_is_int16_scale_and_float64_stays_float64():
    wave = signals(8000, seed=2)["gauss"]
    as_int16 = WhisperLogMel()(torch.from_numpy(wave)[None] * INT16)
    as_unit = WhisperLogMel()(torch.from_numpy(wave)[None])
    assert as_int16.dtype == torch.float64
    # 32768 x the amplitude is +9.03 in log10 power: a different signal, not a rescaling
    assert (as_int16 - as_unit).abs().max() > 1.0


def test_frames_and_the_shortest_input():
    features = WhisperLogMel(128)
    assert [features.num_frames(n) for n in (200, 201, 320, 16159)] == [0, 1, 2, 100]
    assert features(torch.zeros(1, 201)).shape == (1, 1, 128)
    with pytest.raises(ValueError, match="at least 201 samples"):
        features(torch.zeros(1, 200))
    with pytest.raises(ValueError, match="80 or 128"):
        WhisperLogMel(64)
    assert features.state_dict() == {}   # nothing of it enters a model's checkpoint
