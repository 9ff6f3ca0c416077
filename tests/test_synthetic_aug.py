import numpy as np
import pytest
import soundfile as sf

from wespeaker_py.dataset.synthetic_aug import (coloured_noise, make_synthetic_aug_data,
                                                synthetic_rir)
from wespeaker_py.utils.tables import read_key_value


def _spectral_slope(signal):
    power = np.abs(np.fft.rfft(signal)) ** 2
    freqs = np.arange(len(power))
    band = (freqs > 10) & (freqs < len(power) // 2)
    slope, _ = np.polyfit(np.log(freqs[band]), np.log(power[band] + 1e-20), 1)
    return slope


def test_noise_colours_have_their_spectral_slopes():
    rng = np.random.default_rng(1)
    for exponent in (0.0, 1.0, 2.0):
        slope = _spectral_slope(coloured_noise(32000, exponent, rng))
        assert abs(slope + exponent) < 0.2


def _schroeder_rt60(rir, sample_rate):
    energy = np.cumsum(rir[::-1] ** 2)[::-1]
    decay_db = 10 * np.log10(energy / energy[0] + 1e-30)
    # fit the -5..-25 dB part of the decay and extrapolate to -60 dB (T20 method)
    part = (decay_db <= -5) & (decay_db >= -25)
    t = np.arange(len(rir))[part] / sample_rate
    slope, _ = np.polyfit(t, decay_db[part], 1)
    return -60.0 / slope


def test_rir_decay_matches_requested_rt60():
    rng = np.random.default_rng(2)
    for rt60 in (0.3, 0.8):
        rir = synthetic_rir(16000, rt60, rng)
        assert rir[0] == np.abs(rir).max()
        assert abs(_schroeder_rt60(rir, 16000) - rt60) / rt60 < 0.2


def test_make_synthetic_aug_data_writes_recipe_lists(tmp_path):
    rng = np.random.default_rng(3)
    speech = []
    for i in range(3):
        path = tmp_path / f"s{i}.wav"
        sf.write(path, rng.standard_normal(8000).astype(np.float32) * 0.1, 16000)
        speech.append(str(path))
    lists = make_synthetic_aug_data(str(tmp_path / "aug"), speech, num_noise=3, num_music=1,
                                    num_babble=1, num_rirs=2, duration=1.0)
    musan = read_key_value(lists["musan"])
    kinds = sorted({key.split("/")[0] for key in musan})
    assert kinds == ["music", "noise", "speech"]
    rirs = read_key_value(lists["rirs"])
    assert len(rirs) == 2
    for path in list(musan.values()) + list(rirs.values()):
        audio, rate = sf.read(path)
        assert rate == 16000 and audio.ndim == 1 and np.isfinite(audio).all()
    assert all(sf.info(p).frames == 16000 for p in musan.values())


def test_make_synthetic_aug_tool_resolves_relative_paths_and_leaves_pipes(
        tmp_path, monkeypatch):
    import os
    import runpy
    import sys

    import wespeaker_py.dataset.synthetic_aug as synthetic_aug

    rng = np.random.default_rng(4)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        sf.write(data / f"s{i}.wav", rng.standard_normal(8000).astype(np.float32) * 0.1, 16000)
    # a folder put in front of a pipe made "<data>/cat <data>/s1.wav |", a broken command
    (data / "wav.scp").write_text(f"u0 s0.wav\nu1 cat {data}/s1.wav |\nu2 cat {data}/s2.wav |\n")
    real, given = synthetic_aug.make_synthetic_aug_data, []

    def small(out_dir, wavs, **kwargs):
        given.extend(wavs)
        return real(out_dir, wavs, num_noise=1, num_music=1, num_babble=2, duration=1.0,
                    **kwargs)

    monkeypatch.setattr(synthetic_aug, "make_synthetic_aug_data", small)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["make_synthetic_aug.py", "--num_rirs", "1",
                                      "data/wav.scp", "aug"])
    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "tools", "make_synthetic_aug.py")
    with pytest.raises(SystemExit) as stop:   # through run_main: its status
        runpy.run_path(tool, run_name="__main__")
    assert stop.value.code == 0
    assert given == [str(data / "s0.wav"), f"cat {data}/s1.wav |", f"cat {data}/s2.wav |"]
    babble = [path for key, path in read_key_value("aug/musan/wav.scp").items()
              if key.startswith("speech/")]
    assert len(babble) == 2 and all(sf.info(path).frames == 16000 for path in babble)
