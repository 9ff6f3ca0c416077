"""Noise and reverberation: length kept, SNR as intended, only the noise segment read."""
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import fftconvolve

from dataset_helpers import RATE, random_int16, training_args, write_audio, write_raw_list_file
from wespeaker_py.dataset import Dataset
from wespeaker_py.audio import INT16_SCALE, AudioHandle
from wespeaker_py.dataset.augment import (NOISE_TYPES, Augmenter, AugmentListError,
                                          full_convolution, power_db, reverberate,
                                          scale_noise_to_snr)
from wespeaker_py.dataset.processors import augmented
from wespeaker_py.dataset.stats import PipelineStats
from wespeaker_py.frontend.framing import samples_for_frames

CHUNK = samples_for_frames(200, RATE)


pytestmark = pytest.mark.usefixtures("single_process")


def speech_like(num_samples, seed=0):
    """A loud harmonic signal (int16 scale) that white noise is uncorrelated with."""
    t = np.arange(num_samples) / RATE
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, 5)
    wave = sum(np.sin(2 * np.pi * 150 * (k + 1) * t + phases[k]) / (k + 1) for k in range(5))
    return (6000 * wave).astype(np.float32)


def snr_db(signal, noise):
    return 10 * np.log10(np.mean(np.square(signal, dtype=np.float64))
                         / np.mean(np.square(noise, dtype=np.float64)))


def measured_snr(clean, augmented):
    """SNR of the noise inside a peak-normalised mixture of ``clean`` and noise."""
    a, out = clean / INT16_SCALE, augmented / INT16_SCALE
    scale = np.dot(out, a) / np.dot(a, a)  # the peak normalisation, noise being uncorrelated
    return snr_db(a, out / scale - a)


def noise_list(tmp_path, keys, seconds=4.0, rate=RATE):
    rows = []
    for index, key in enumerate(keys):
        path = write_audio(str(tmp_path / f"noise{index}.wav"),
                           random_int16(int(seconds * rate), seed=100 + index), rate)
        rows.append(f"{key} {path}\n")
    scp = tmp_path / "noise.scp"
    scp.write_text("".join(rows))
    return str(scp)


def test_scale_noise_to_snr_hits_the_target():
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.2, 16000).astype(np.float32)
    noise = rng.normal(0, 0.3, 16000).astype(np.float32)
    for snr in (0.0, 7.5, 20.0):
        scaled = scale_noise_to_snr(audio, noise, snr)
        # WeSpeaker's 1e-4 power floor shifts the result by under 0.05 dB for signals this loud
        assert snr_db(audio, scaled) == pytest.approx(snr, abs=0.05)
        gain_sq = np.mean(scaled.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2)
        assert 10 * np.log10(gain_sq) == pytest.approx(power_db(audio) - power_db(noise) - snr,
                                                       abs=1e-4)


@pytest.mark.parametrize("kind", ["noise", "music", "speech"])
def test_noise_is_mixed_at_an_snr_of_its_type(tmp_path, kind):
    augmenter = Augmenter(None, noise_list(tmp_path, [f"{kind}/a", f"{kind}/b"]), RATE)
    clean = speech_like(CHUNK)
    rng, stats = np.random.default_rng(1), PipelineStats()
    snrs = []
    for _ in range(25):
        out = augmenter(clean, rng, stats)
        assert out.shape == clean.shape and out.dtype == np.float32
        assert np.max(np.abs(out)) == pytest.approx(INT16_SCALE, rel=1e-3)  # peak-normalised
        snrs.append(measured_snr(clean, out))
    low, high = NOISE_TYPES[kind].snr_low, NOISE_TYPES[kind].snr_high
    assert low - 0.3 <= min(snrs) and max(snrs) <= high + 0.3
    assert max(snrs) - min(snrs) > 0.5 * (high - low)  # spread over the range
    assert not stats.skipped


def test_babble_mixes_three_to_seven_utterances(tmp_path, monkeypatch):
    keys = [f"babble/{i}" for i in range(8)]
    augmenter = Augmenter(None, noise_list(tmp_path, keys, seconds=1.0), RATE)
    calls = []
    segment = Augmenter._noise_segment

    def counting(self, key, path, length, rng):
        calls.append(key)
        return segment(self, key, path, length, rng)

    monkeypatch.setattr(Augmenter, "_noise_segment", counting)
    clean = speech_like(CHUNK)
    rng, counts, snrs = np.random.default_rng(2), [], []
    for _ in range(30):
        calls.clear()
        snrs.append(measured_snr(clean, augmenter(clean, rng, PipelineStats())))
        counts.append(len(calls))
    assert set(counts) <= set(range(3, 8)) and len(set(counts)) >= 3
    # k babble signals at 13-20 dB each: 13 - 10 log10(7) .. 20 - 10 log10(3)
    assert 13 - 10 * np.log10(7) - 0.3 <= min(snrs) and max(snrs) <= 20 - 10 * np.log10(3) + 0.3


def test_only_the_needed_noise_segment_is_read(tmp_path, monkeypatch):
    augmenter = Augmenter(None, noise_list(tmp_path, ["noise/long"], seconds=30.0), RATE)
    reads = []
    original = AudioHandle.read

    def spy(self, start, count):
        reads.append(count)
        return original(self, start, count)

    monkeypatch.setattr(AudioHandle, "read", spy)
    augmenter(speech_like(CHUNK), np.random.default_rng(0), PipelineStats())
    assert reads == [CHUNK]


def test_short_and_resampled_noise_still_fill_the_chunk(tmp_path):
    short = noise_list(tmp_path, ["noise/short"], seconds=0.5, rate=8000)
    augmenter = Augmenter(None, short, RATE)
    clean = speech_like(CHUNK)
    out = augmenter(clean, np.random.default_rng(0), PipelineStats())
    assert out.shape == clean.shape
    assert 0.0 - 0.3 <= measured_snr(clean, out) <= 15.0 + 0.3


def test_the_augmenter_refuses_a_wespeaker_lmdb_folder_as_training_does(tmp_path):
    # the dataset's own reader, not only the training plan's check, names the format
    lmdb = tmp_path / "lmdb"
    lmdb.mkdir()
    (lmdb / "data.mdb").write_bytes(b"\0" * 64)
    with pytest.raises(AugmentListError, match=r"^noise_data .*/lmdb \(--noise_data or the "
                                               r"config key\): a WeSpeaker LMDB noise set"):
        Augmenter(None, str(lmdb), RATE)
    with pytest.raises(AugmentListError, match=r"^reverb_data .*: a folder, not a RIR list; "
                                               r"give a wav.scp or raw.list file$"):
        Augmenter(str(tmp_path), None, RATE)


def test_reverb_is_the_truncated_convolution_with_the_unit_energy_rir(tmp_path):
    rir = np.zeros(4000, dtype=np.int16)
    rir[200] = 20000
    rir[200:] += (3000 * np.exp(-np.arange(3800) / 400.0)).astype(np.int16)
    path = write_audio(str(tmp_path / "rir.wav"), rir)
    scp = tmp_path / "rir.scp"
    scp.write_text(f"rir1 {path}\n")
    augmenter = Augmenter(str(scp), None, RATE)
    clean = speech_like(CHUNK)
    out = augmenter(clean, np.random.default_rng(0), PipelineStats())
    h = rir.astype(np.float64) / np.sqrt(np.sum(rir.astype(np.float64) ** 2))
    expected = fftconvolve(clean / INT16_SCALE, h)[:CHUNK]
    expected = expected / (np.max(np.abs(expected)) + 1e-4) * INT16_SCALE
    assert out.shape == (CHUNK,)
    np.testing.assert_allclose(out, expected, atol=0.05)


@pytest.mark.parametrize("signal_dtype", [np.float32, np.float64])
def test_full_convolution_is_scipy_signal_fftconvolve(signal_dtype):
    rng = np.random.default_rng(20261207)
    # chunk-sized signals with room responses shorter and longer than them, and the extremes
    sizes = [(int(rng.integers(8000, 48000)), int(rng.integers(1, 30000))) for _ in range(12)]
    for n, m in sizes + [(1, 1), (1, 700), (3001, 1), (500, 4000)]:
        signal = rng.normal(0.0, 0.3, n).astype(signal_dtype)
        kernel = (rng.normal(0.0, 1.0, m) * np.exp(-np.arange(m) / 900.0)).astype(np.float32)
        expected = fftconvolve(signal, kernel, mode="full")
        got = full_convolution(signal, kernel)
        assert got.dtype == expected.dtype and got.shape == (n + m - 1,)
        tol = 1e-6 if signal_dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, expected, rtol=0, atol=tol * np.abs(expected).max())


def test_reverberate_keeps_the_start_of_the_convolution_with_the_unit_energy_rir():
    rng = np.random.default_rng(5)
    audio = rng.normal(0.0, 0.2, 3000).astype(np.float32)
    rir = rng.normal(0.0, 500.0, 4500).astype(np.float32)   # longer than the audio
    unit = (rir / np.sqrt(np.sum(np.square(rir, dtype=np.float64)))).astype(np.float32)
    out = reverberate(audio, rir)
    assert out.dtype == np.float32 and out.shape == audio.shape
    np.testing.assert_allclose(out, fftconvolve(audio, unit)[:audio.size], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="all zeros"):
        reverberate(audio, np.zeros(10, dtype=np.float32))


def test_reverberating_does_not_import_scipy_signal():
    """Each DataLoader worker reverberates afresh at every epoch: importing scipy.signal
    there cost about a second per worker per epoch."""
    code = ("import sys\n"
            "import numpy as np\n"
            "from wespeaker_py.dataset.augment import reverberate\n"
            "reverberate(np.ones(1000, np.float32), np.ones(50, np.float32))\n"
            "print('scipy.signal' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"


def test_dataset_applies_augmentation_with_aug_prob(tmp_path):
    path = write_audio(str(tmp_path / "u.wav"), speech_like(5 * RATE).astype(np.int16))
    raw = write_raw_list_file(str(tmp_path / "raw.list"),
                              [{"key": f"u{i}", "wav": path, "spk": "s"} for i in range(20)])
    noises = noise_list(tmp_path, ["noise/a"])
    rir = tmp_path / "rir.scp"
    rir.write_text(f"r {write_audio(str(tmp_path / 'r.wav'), random_int16(800, seed=3))}\n")
    full = speech_like(5 * RATE).astype(np.int16).astype(np.float32)

    def changed(aug_prob):
        dataset = Dataset("raw", raw, training_args(aug_prob=aug_prob), {"s": 0},
                          reverb_data=str(rir), noise_data=noises)
        flags = []
        for sample in dataset:
            wav = sample["wav"].numpy()
            assert wav.shape == (CHUNK,)
            starts = np.flatnonzero(full[:full.size - CHUNK + 1] == wav[0])
            flags.append(not any(np.array_equal(wav, full[s:s + CHUNK]) for s in starts))
        return flags

    assert not any(changed(0.0))
    assert all(changed(1.0))
    assert 3 <= sum(changed(0.5)) <= 17


def test_unreadable_noise_keeps_the_sample_and_is_counted(tmp_path):
    scp = tmp_path / "noise.scp"
    scp.write_text(f"noise/gone {tmp_path / 'gone.wav'}\n")
    augmenter = Augmenter(None, str(scp), RATE)
    clean = speech_like(CHUNK)
    stats = PipelineStats()
    np.testing.assert_array_equal(augmenter(clean, np.random.default_rng(0), stats), clean)
    assert stats.bad_sources == {"noise/gone"} and not stats.skipped


def float_source_list(tmp_path, name, key, samples):
    """A list of one float WAV (the format that can hold NaN and infinities)."""
    path = tmp_path / f"{name}.wav"
    sf.write(str(path), samples, RATE, subtype="FLOAT")
    scp = tmp_path / f"{name}.scp"
    scp.write_text(f"{key} {path}\n")
    return str(scp)


@pytest.mark.parametrize("on_device", [False, True])
@pytest.mark.parametrize("what, bad", [("noise", np.nan), ("noise", np.inf), ("rir", np.nan)])
def test_non_finite_source_keeps_the_sample_and_is_counted(tmp_path, what, bad, on_device):
    samples = (random_int16(4 * RATE if what == "noise" else 800, seed=7)
               / INT16_SCALE).astype(np.float32)
    samples[::50] = bad   # in every noise segment a chunk can read
    scp = float_source_list(tmp_path, what, f"{what}/bad", samples)
    augmenter = Augmenter(scp if what == "rir" else None, scp if what == "noise" else None, RATE)
    clean = speech_like(CHUNK)
    stats = PipelineStats()
    out, = augmented([{"key": "u", "wav": clean.copy()}], augmenter, 1.0,
                     np.random.default_rng(0), stats, on_device=on_device)
    np.testing.assert_array_equal(out["wav"], clean)
    assert out.get("aug") is None
    assert stats.bad_sources == {f"{what}/bad"} and not stats.skipped
