"""W2V-BERT 2.0 features: parity with transformers' SeamlessM4TFeatureExtractor, shapes, masks."""
import math
from typing import List, Optional

import numpy as np
import pytest
import torch

from wespeaker_py.frontend.fbank import fbank
from wespeaker_py.frontend.w2vbert_features import W2VBertFeatures

SR = 16000
INT16 = 32768.0
# Well-conditioned signals (every mel bin varies across frames), float64 arithmetic.
TOL = 1e-4
# float32 arithmetic: log-mel differs by ~1e-4, divided by per-bin std ~0.3-1.
TOL_FLOAT32 = 2e-3
# Pure tones: some bins are nearly constant (std ~1e-4), so normalisation amplifies
# the extractor's own ~1e-6 rounding (complex64 spectrum, float32 log-mel). There we
# compare in log-mel units: difference times that bin's std.
TOL_LOGMEL = 2e-5


@pytest.fixture(scope="module")
def extractor_cls():
    transformers = pytest.importorskip("transformers")
    return transformers.SeamlessM4TFeatureExtractor


def reference(extractor, waves: List[np.ndarray], **kwargs) -> tuple:
    """The extractor's (input_features, attention_mask) for [-1, 1] float32 waveforms."""
    out = extractor([w.astype(np.float32) for w in waves], return_tensors="pt",
                    sampling_rate=SR, padding="longest", **kwargs)
    return out["input_features"], out["attention_mask"]


def batch(waves: List[np.ndarray], width: Optional[int] = None) -> torch.Tensor:
    """Right-zero-padded int16-scale batch of [-1, 1] waveforms."""
    width = width or max(len(w) for w in waves)
    out = torch.zeros(len(waves), width)
    for row, wave in enumerate(waves):
        out[row, :len(wave)] = torch.from_numpy(wave.astype(np.float32)) * INT16
    return out


def signals(samples: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SR
    return {
        "gauss": 0.1 * rng.standard_normal(samples),
        "uniform": rng.uniform(-0.9, 0.9, samples),
        "noisy_sine": 0.3 * np.sin(2 * np.pi * 1234.5 * t) + 0.1 * rng.standard_normal(samples),
        "chirp": 0.5 * np.sin(2 * np.pi * (200 * t + 1500 * t ** 2)),
        "sine_440": 0.5 * np.sin(2 * np.pi * 440 * t),
        "sine_3k": 0.25 * np.sin(2 * np.pi * 3000.7 * t + 0.3),
    }


def logmel_std(wave: np.ndarray) -> torch.Tensor:
    """Per-bin std (ddof 1) of one waveform's log-mel, tiled to the stacked 160 dims."""
    feats = fbank(torch.from_numpy(wave).double()[None] * INT16, window_type="povey")[0]
    return torch.sqrt(feats.var(dim=0) + 1e-7).repeat(2)


def assert_rows_close(feats: torch.Tensor, ref: torch.Tensor, waves: List[np.ndarray]) -> None:
    """Rows of >= 10 fbank frames within TOL; shorter rows (a bin's std over 2-3 frames
    can be tiny) within TOL_LOGMEL in log-mel units."""
    for row, wave in enumerate(waves):
        diff = (feats[row] - ref[row]).abs()
        if len(wave) >= 400 + 9 * 160:
            assert diff.max().item() < TOL, (row, diff.max().item())
        else:
            scaled = (diff * logmel_std(wave)).max().item()
            assert scaled < TOL_LOGMEL, (row, scaled, diff.max().item())


def test_equal_length_noise_and_sines(extractor_cls):
    """Equal rows of 200 fbank frames: no mask, and the extractor's features."""
    sigs = signals(32240)
    names = list(sigs)
    waves = [sigs[n] for n in names]
    ref, ref_mask = reference(extractor_cls(), waves)
    module = W2VBertFeatures(padding_value=0.0)
    feats, mask = module.features_and_mask(batch(waves))
    assert feats.shape == ref.shape == (len(waves), 100, 160)
    assert feats.dtype == torch.float32
    assert mask is None and bool(ref_mask.all())
    assert module.num_frames(32240) == 100
    for row, name in enumerate(names):
        diff = (feats[row] - ref[row]).abs()
        if name.startswith("sine"):
            scaled = (diff * logmel_std(waves[row])).max().item()
            assert scaled < TOL_LOGMEL, (name, scaled, diff.max().item())
        else:
            assert diff.max().item() < TOL, (name, diff.max().item())


@pytest.mark.parametrize("padding_value", [0.0, 1.0])
@pytest.mark.parametrize("samples, fbank_frames", [(32240, 200), (32400, 201),
                                                   (560, 2), (720, 3), (16000, 98)])
def test_odd_and_even_frame_counts(extractor_cls, padding_value, samples, fbank_frames):
    """An odd fbank frame count is padded to even; the last stacked frame is masked."""
    sigs = signals(samples, seed=samples)
    waves = [sigs["gauss"], sigs["uniform"], sigs["noisy_sine"]]
    ref, ref_mask = reference(extractor_cls(padding_value=padding_value), waves)
    module = W2VBertFeatures(padding_value=padding_value)
    feats, mask = module.features_and_mask(batch(waves))
    out_frames = math.ceil(fbank_frames / 2)
    assert feats.shape == ref.shape == (3, out_frames, 160)
    assert module.num_frames(samples) == out_frames
    assert_rows_close(feats, ref, waves)
    if fbank_frames % 2:
        assert mask is not None and torch.equal(mask, ref_mask.bool())
        assert not mask[:, -1].any() and mask[:, :-1].all()
        assert bool((feats[:, -1, 80:] == padding_value).all())
    else:
        assert mask is None and bool(ref_mask.all())


def test_float32_arithmetic_close(extractor_cls):
    waves = [signals(16160)[n] for n in ("gauss", "uniform", "noisy_sine")]
    ref, _ = reference(extractor_cls(padding_value=1.0), waves)
    feats = W2VBertFeatures(compute_dtype=torch.float32)(batch(waves))
    assert feats.dtype == torch.float32
    assert (feats - ref).abs().max().item() < TOL_FLOAT32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes_device_and_batch(dtype):
    module = W2VBertFeatures().to(torch.device("cpu"))
    wavs = (torch.randn(4, 16000, dtype=dtype) * 2000).to(torch.device("cpu"))
    feats = module(wavs)
    assert feats.dtype == dtype and feats.device.type == "cpu"
    assert feats.shape == (4, module.num_frames(16000), module.output_dim) == (4, 49, 160)
    assert bool(torch.isfinite(feats).all())
    # Every row is normalised on its own: rows do not depend on their neighbours.
    assert torch.allclose(feats[2:3], module(wavs[2:3]), atol=1e-6)
    # 1-D input is one row.
    assert module(wavs[0]).shape == (1, 49, 160)
    assert module.sample_rate == SR
    assert not list(module.parameters()) and not module.state_dict()


@pytest.mark.parametrize("samples", [0, 399, 400, 559])
def test_too_short_raises(samples):
    with pytest.raises(ValueError, match=rf"{samples} samples.*at least 560 samples"):
        W2VBertFeatures()(torch.zeros(2, samples))


def test_other_sample_rates_raise():
    with pytest.raises(ValueError, match="16000 Hz"):
        W2VBertFeatures(sample_rate=8000)
