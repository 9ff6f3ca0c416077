import logging

import numpy as np
import pytest
import soundfile as sf

from wespeaker_py.dataset.synthetic_aug import (SpeechSourceError, coloured_noise,
                                                make_synthetic_aug_data, speech_sample_rate,
                                                synthetic_rir)
from wespeaker_py.errors import WespeakerError
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


def _noise_files(folder, rates, seed=5):
    """One second of white noise at each of ``rates``; returns the paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for i, rate in enumerate(rates):
        path = folder / f"n{i}_{rate}.wav"
        sf.write(path, rng.standard_normal(rate).astype(np.float32) * 0.1, rate)
        paths.append(str(path))
    return paths


def _babble_files(lists):
    return [path for key, path in read_key_value(lists["musan"]).items()
            if key.startswith("speech/")]


def _small_set(out_dir, speech, **kwargs):
    return make_synthetic_aug_data(str(out_dir), speech, num_noise=1, num_music=1,
                                   num_rirs=1, duration=1.0, **kwargs)


def test_babble_resamples_speech_at_other_rates(tmp_path):
    # white noise at 8 kHz brought to 16 kHz leaves the band above 4 kHz empty
    speech = _noise_files(tmp_path, [8000, 8000, 8000])
    lists = _small_set(tmp_path / "aug", speech, num_babble=2, sample_rate=16000)
    for path in _babble_files(lists):
        audio, rate = sf.read(path)
        assert rate == 16000 and audio.size == 16000
        power = np.abs(np.fft.rfft(audio)) ** 2
        assert power[4400:].sum() < 1e-3 * power[:3600].sum()


def test_babble_skips_unusable_speech_and_counts_it(tmp_path, caplog):
    speech = _noise_files(tmp_path, [16000, 44100, 16000])
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "nan.wav", np.full(1600, np.nan, dtype=np.float32), 16000)
    bad = [str(tmp_path / "empty.wav"), str(tmp_path / "missing.wav"), "false |",
           str(tmp_path / "nan.wav")]
    with caplog.at_level(logging.WARNING):
        lists = _small_set(tmp_path / "aug", speech + bad, num_babble=8)
    babble = _babble_files(lists)
    assert len(babble) == 8
    assert all(np.isfinite(sf.read(path)[0]).all() for path in babble)
    assert "babble: skipped 4 unusable speech file(s) of 7" in caplog.text
    for path in bad:
        assert f"babble: skipping {path}" in caplog.text


def test_babble_needs_three_usable_speech_files(tmp_path):
    speech = _noise_files(tmp_path, [16000, 16000])
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(SpeechSourceError, match=r"at least 3 usable speech files; 1 of the 3 "
                                                r"given are not \(.*empty\.wav; the first: "):
        _small_set(tmp_path / "aug", speech + [str(tmp_path / "empty.wav")], num_babble=1)
    # too few to start with: the package's one-line error, not a bare ValueError
    with pytest.raises(WespeakerError, match="at least 3 speech files, got 2"):
        _small_set(tmp_path / "aug", speech, num_babble=1)


def test_speech_sample_rate_runs_pipes_and_passes_over_unopenable_files(tmp_path, caplog):
    low, high = _noise_files(tmp_path, [8000, 16000])
    (tmp_path / "empty.wav").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        assert speech_sample_rate([str(tmp_path / "empty.wav"), f"cat {low} |", high]) == 8000
    assert "empty.wav is empty; taking the sample rate from the next" in caplog.text
    with pytest.raises(SpeechSourceError, match="none of the 2 speech files opens"):
        speech_sample_rate([str(tmp_path / "empty.wav"), "false |"])


def test_make_synthetic_aug_tool_takes_the_rate_of_the_first_utterance_that_opens(
        tmp_path, monkeypatch, capsys):
    import os
    import runpy
    import sys

    speech = _noise_files(tmp_path, [8000, 8000, 16000])
    # the first entry a pipe, as Kaldi corpora have them; the last at another rate
    (tmp_path / "wav.scp").write_text(f"u0 cat {speech[0]} |\nu1 {speech[1]}\nu2 {speech[2]}\n")
    monkeypatch.setattr(sys, "argv", ["make_synthetic_aug.py", "--num_rirs", "1",
                                      str(tmp_path / "wav.scp"), str(tmp_path / "aug")])
    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "tools", "make_synthetic_aug.py")
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(tool, run_name="__main__")
    assert stop.value.code == 0
    assert "rirs/wav.scp (8000 Hz)" in capsys.readouterr().out
    musan = read_key_value(str(tmp_path / "aug" / "musan" / "wav.scp"))
    assert {sf.info(path).samplerate for path in musan.values()} == {8000}
