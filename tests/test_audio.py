"""The one audio module: one sample convention, one channel policy, one resampling, and the
same named check for every caller (the API, the training pipeline, diarization)."""
import io
import logging
import os

import numpy as np
import pytest
import soundfile as sf
import torch

import wespeaker_py
from api_helpers import mini_speech, wespeaker_folder
from dataset_helpers import random_int16, training_args, write_raw_list_file
from wespeaker_py import audio
from wespeaker_py.audio import samples as audio_samples
from wespeaker_py.dataset import Dataset
from wespeaker_py.diarization import DiarizationOptions, Diarizer
from wespeaker_py.diarization.vad import EnergyVAD

RATE = 16000
PACKAGE = os.path.dirname(os.path.abspath(wespeaker_py.__file__))


pytestmark = pytest.mark.usefixtures("single_process")


def bad_inputs(root):
    """One file (or wav.scp entry) per check, with the error class it must raise."""
    def path(name):
        return os.path.join(root, name)

    empty = path("empty.wav")
    open(empty, "wb").close()
    header_only = path("header_only.wav")
    sf.write(header_only, np.zeros(0, np.int16), RATE, subtype="PCM_16")
    text = path("text.wav")
    with open(text, "w") as handle:
        handle.write("not audio\n" * 20)
    nan = random_int16(40000, seed=1) / 32768.0
    nan[::997] = np.nan
    sf.write(path("nan.wav"), nan.astype(np.float32), RATE, subtype="FLOAT")
    sf.write(path("zeros.wav"), np.zeros(40000, np.int16), RATE, subtype="PCM_16")
    flac = io.BytesIO()
    sf.write(flac, random_int16(40000, seed=2), RATE, format="FLAC")
    with open(path("cut.flac"), "wb") as handle:
        handle.write(flac.getvalue()[:len(flac.getvalue()) // 2])
    wav = io.BytesIO()
    sf.write(wav, random_int16(40000, seed=3), RATE, format="WAV", subtype="PCM_16")
    with open(path("cut.wav"), "wb") as handle:
        handle.write(wav.getvalue()[:44 + 2 * 30000])
    dither = np.random.default_rng(4).integers(-1, 2, 40000).astype(np.int16)
    sf.write(path("dither.wav"), dither, RATE, subtype="PCM_16")
    return {"missing": (path("absent.wav"), audio.AudioMissingError),
            "empty": (empty, audio.AudioEmptyError),
            "no_frames": (header_only, audio.AudioEmptyError),
            "text": (text, audio.AudioUnreadableError),
            "pipe": ("exit 3 |", audio.AudioPipeError),
            "nan": (path("nan.wav"), audio.AudioNonFiniteError),
            "zeros": (path("zeros.wav"), audio.AudioSilentError),
            "cut": (path("cut.flac"), audio.AudioTruncatedError),
            "cut_wav": (path("cut.wav"), audio.AudioTruncatedError),
            "dither": (path("dither.wav"), audio.AudioNoEnergyError)}


def test_each_check_is_one_named_error_for_every_caller(tmp_path):
    cases = bad_inputs(str(tmp_path))
    # the API's reader
    for key, (wav, error) in cases.items():
        with pytest.raises(error) as caught:
            audio.load_audio(wav, RATE, name=key)
        assert type(caught.value) is error, key
        assert isinstance(caught.value, wespeaker_py.AudioInputError)
        assert str(caught.value).startswith(key) or wav in str(caught.value), key
        assert "\n" not in str(caught.value)
    # the training/extraction pipeline counts the same checks under the classes' reasons
    raw = write_raw_list_file(str(tmp_path / "raw.list"),
                              [{"key": key, "wav": wav, "spk": "s"}
                               for key, (wav, _) in cases.items()])
    dataset = Dataset("raw", raw, training_args(), {"s": 0}, whole_utt=True)
    assert list(dataset) == []
    expected = {}
    for _, error in cases.values():
        expected[error.reason] = expected.get(error.reason, 0) + 1
    assert dataset.stats.skipped == expected


def test_arrays_follow_one_convention_and_channel_policy():
    int16 = random_int16(8000, seed=3)
    as_float = int16.astype(np.float32) / np.float32(audio.INT16_SCALE)
    reference = audio.load_audio(int16, RATE, sample_rate=RATE)
    np.testing.assert_array_equal(reference, int16.astype(np.float32))
    other = random_int16(8000, seed=4)
    stereo_tensor = torch.from_numpy(np.stack([as_float, -as_float]))
    for given in (as_float, torch.from_numpy(as_float), np.stack([int16, other]),
                  np.stack([int16, other], axis=1), stereo_tensor):
        np.testing.assert_array_equal(audio.load_audio(given, RATE, sample_rate=RATE), reference)
    # resampled once, to the target rate
    assert audio.load_audio(int16, RATE, sample_rate=8000).size == 16000
    for bad, message in ((np.zeros((2, 2, 5), np.float32), "expected"),
                         (int16.astype(np.int32), "must be int16"),
                         (int16, "give sample_rate="),
                         ([0.1, 0.2], "cannot use a list")):
        with pytest.raises(wespeaker_py.AudioInputError, match=message):
            audio.load_audio(bad, RATE, sample_rate=None if message == "give sample_rate="
                             else RATE)
    with pytest.raises(audio.AudioSilentError):
        audio.load_audio(np.zeros(100, np.float32), RATE, sample_rate=RATE)
    # a list names its type even without a rate (it used to ask for sample_rate= first)
    with pytest.raises(wespeaker_py.AudioInputError, match="cannot use a list"):
        audio.load_audio(["a.wav", "b.wav"], RATE)


def test_floats_on_another_scale_are_refused_not_scaled_again():
    int16 = random_int16(8000, seed=3)
    as_float = int16.astype(np.float32) / np.float32(audio.INT16_SCALE)
    # int16-scale floats (what WeSpeaker's extract_embedding_from_pcm takes)
    for given in (int16.astype(np.float32), torch.from_numpy(int16.astype(np.float32))):
        with pytest.raises(wespeaker_py.AudioInputError, match="int16 scale.*int16, or divided"):
            audio.load_audio(given, RATE, sample_rate=RATE, name="pcm")
    # a little overshoot of [-1, 1] (after processing) is still audio, scaled as ever
    overshoot = as_float * np.float32(1.5 / np.abs(as_float).max())
    np.testing.assert_allclose(audio.load_audio(overshoot, RATE, sample_rate=RATE),
                               overshoot * np.float32(audio.INT16_SCALE), rtol=1e-6)
    # NaN is refused as before, by its own check
    with pytest.raises(audio.AudioNonFiniteError):
        audio.load_audio(np.array([np.nan] + [0.1] * 999, np.float32), RATE, sample_rate=RATE)
    with pytest.raises(audio.AudioTooShortError, match="fewer than the 50"):
        audio.check_samples(int16[:10].astype(np.float32), "x", min_samples=50)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_tensors_of_types_numpy_lacks_are_upcast_or_refused_by_name():
    as_float = random_int16(8000, seed=3).astype(np.float32) / np.float32(audio.INT16_SCALE)
    stereo = torch.from_numpy(np.stack([as_float, -as_float]))
    for dtype in (torch.bfloat16, torch.float8_e4m3fn):
        given = stereo.to(dtype)
        expected = audio.load_audio(given.float().numpy(), RATE, sample_rate=RATE)
        np.testing.assert_array_equal(audio.load_audio(given, RATE, sample_rate=RATE), expected)
    complex_half = torch.zeros(100, dtype=torch.complex64).to(torch.complex32)
    with pytest.raises(wespeaker_py.AudioInputError, match="dtype torch.complex32"):
        audio.load_audio(complex_half, RATE, sample_rate=RATE)


def test_reading_narrowband_audio_does_not_warn(caplog, monkeypatch):
    # the embedding loop warns, knowing whether the model fills the band (test_band_fill)
    monkeypatch.setattr(audio_samples, "_rates_warned", set())
    with caplog.at_level(logging.WARNING, logger="wespeaker_py.audio"):
        samples, rate = audio.load_audio_with_rate(random_int16(8000, seed=5), RATE,
                                                   sample_rate=8000, name="phone")
    assert rate == 8000 and samples.size == 2 * 8000 and caplog.records == []


def test_the_narrowband_warning_is_given_once_per_rate_pair_and_reason(caplog, monkeypatch):
    monkeypatch.setattr(audio_samples, "_rates_warned", set())
    with caplog.at_level(logging.WARNING, logger="wespeaker_py.audio"):
        for _ in range(2):
            audio.warn_if_narrowband(8000, RATE, "a", "no fill")
        audio.warn_if_narrowband(8000, RATE, "b", "training")      # another reason
        audio.warn_if_narrowband(8000, 8000, "c", "no fill")       # an 8 kHz model
        audio.warn_if_narrowband(11025, RATE, "d", "no fill")      # above 8 kHz
    assert [r.getMessage().split(" for a model")[0] for r in caplog.records] == \
        ["8000 Hz audio (first: a)", "8000 Hz audio (first: b)"]


def test_the_int16_scale_is_defined_once():
    definitions = []
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as handle:
                    if any(line.startswith("INT16_SCALE =") for line in handle):
                        definitions.append(os.path.relpath(os.path.join(folder, name), PACKAGE))
    assert definitions == [os.path.join("audio", "samples.py")]


def test_diarization_reads_once_at_the_models_rate(tmp_path, monkeypatch):
    # 44.1 kHz stereo, speech on the first channel only
    speech, rate = sf.read(mini_speech(1)[0], dtype="float32")
    high = audio.resample(speech, rate, 44100)
    path = str(tmp_path / "stereo44k.wav")
    sf.write(path, np.stack([high, np.zeros_like(high)], axis=1), 44100, subtype="FLOAT")
    calls = []
    real = audio.load.resample

    def counting(samples, in_rate, out_rate):
        calls.append((in_rate, out_rate))
        return real(samples, in_rate, out_rate)

    monkeypatch.setattr(audio.load, "resample", counting)
    seen = []

    def embed_windows(windows):
        seen.extend(windows)
        return np.random.default_rng(0).standard_normal((len(windows), 4))

    diarizer = Diarizer(embed_windows, DiarizationOptions(vad="energy", num_speakers=1),
                        EnergyVAD(), sample_rate=8000)
    result = diarizer.diarize(path)
    assert calls == [(44100.0, 8000.0)]
    assert result.turns and {w.size for w in seen} == {int(1.5 * 8000)}
    # the windows are model samples: first channel, int16 scale
    assert max(np.max(np.abs(w)) for w in seen) > 1000


def test_speaker_model_diarize_embeds_windows_without_a_second_read(tmp_path, monkeypatch):
    folder, _ = wespeaker_folder(str(tmp_path / "model"))
    model = wespeaker_py.load_model(folder, device="cpu")
    monkeypatch.setattr(model, "embed_waveforms", None)  # the public reader is not used
    loads = []
    real = audio.load_audio_with_rate

    def counting(*args, **kwargs):
        loads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr("wespeaker_py.diarization.pipeline.load_audio_with_rate", counting)
    result = model.diarize(mini_speech(1)[0], vad="energy", num_speakers=1)
    assert loads == [mini_speech(1)[0]] and result.turns


def test_write_wav_makes_its_folder_and_reads_back_what_it_was_given(tmp_path):
    samples = random_int16(16000, seed=3)
    path = str(tmp_path / "new" / "folder" / "a.wav")
    audio.write_wav(path, samples, 8000)
    assert sf.info(path).subtype == "PCM_16" and sf.info(path).samplerate == 8000
    back, _ = sf.read(path, dtype="int16")
    np.testing.assert_array_equal(back, samples)
    assert os.listdir(os.path.dirname(path)) == ["a.wav"]  # no temporary file left


def test_write_wav_leaves_no_file_when_the_samples_cannot_be_written(tmp_path):
    path = str(tmp_path / "a.wav")
    with pytest.raises(Exception):
        audio.write_wav(path, np.zeros((10, 2, 2), dtype=np.float32), 16000)
    assert os.listdir(tmp_path) == []


def test_wav_bytes_keep_the_subtype_asked_for():
    samples = np.linspace(-0.5, 0.5, 800, dtype=np.float32)
    data = audio.wav_bytes(samples, 16000, "FLOAT")
    back, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == 16000 and sf.info(io.BytesIO(data)).subtype == "FLOAT"
    np.testing.assert_array_equal(back, samples)
