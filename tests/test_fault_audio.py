"""Audio faults that used to pass silently (issue 20, defects 2-4): a file with no energy, a
multi-channel file whose first channel is silent, and a truncated WAV. Each must now be
one named error (exit status 2 on the command line), for every caller."""
import io
import logging
import os
import struct

import kaldiio

import numpy as np
import pytest
import soundfile as sf

from tool_helpers import run_cli
import wespeaker_py
from api_helpers import mini_speech, wespeaker_folder
from dataset_helpers import random_int16, training_args, write_raw_list_file
from wespeaker_py import audio
from wespeaker_py.audio import errors as audio_errors
from wespeaker_py.audio import samples as audio_samples
from wespeaker_py.bin.extract import main as extract_main
from wespeaker_py.dataset import Dataset
from wespeaker_py.errors import RunFailedError

RATE = 16000


pytestmark = pytest.mark.usefixtures("single_process")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root, _ = wespeaker_folder(str(tmp_path_factory.mktemp("fault_audio") / "model"))
    return root


def speech(index: int) -> np.ndarray:
    """An utterance of the mini corpus (16 kHz) as int16."""
    samples, rate = sf.read(mini_speech(index + 1)[index], dtype="int16")
    assert rate == RATE
    return samples


def dither(size: int, seed: int) -> np.ndarray:
    """±1 LSB noise (integers -1, 0, +1): a channel that recorded nothing."""
    return np.random.default_rng(seed).integers(-1, 2, size).astype(np.int16)


def six_channels(path: str, talk: np.ndarray, seed: int) -> str:
    """A 6-channel int16 WAV: dither on channels 0-2 and 5, speech on 3, a quieter copy on 4."""
    frames = np.stack([dither(talk.size, seed + index) for index in range(6)], axis=1)
    frames[:, 3] = talk
    frames[:, 4] = talk // 4
    sf.write(path, frames, RATE, subtype="PCM_16")
    return path


# -- defect 3: a multi-channel file whose first channel is silent ----------------------------

def test_a_silent_first_channel_is_an_error_naming_the_channel_unless_chosen(
        tmp_path, folder, capsys):
    first = six_channels(str(tmp_path / "a.wav"), speech(0), seed=1)
    second = six_channels(str(tmp_path / "b.wav"), speech(1), seed=10)
    for command in ("similarity", "verify"):
        status, out, err = run_cli(capsys, command, "--model", folder, first, second)
        assert status == 2 and out == "", (command, err)
        assert "channel 0" in err and "--channel 3" in err and "--channel loudest" in err
        assert err.count("\n") == 1 and f"{first} has 6 channels and channel 0" in err
    model = wespeaker_py.load_model(folder, device="cpu")
    expected = model.similarity(speech(0), speech(1), sample_rate=RATE)
    for choice in ("loudest", "3"):
        status, out, err = run_cli(capsys, "similarity", "--model", folder, first, second,
                                   "--channel", choice)
        assert status == 0, err
        assert float(out) == pytest.approx(expected, abs=2e-6)
    status, out, _ = run_cli(capsys, "verify", "--model", folder, first, second,
                             "--channel", "loudest", "--json")
    assert status == 0 and '"score"' in out
    # a channel the file does not have, and a policy that does not exist
    status, _, err = run_cli(capsys, "similarity", "--model", folder, first, second,
                             "--channel", "6")
    assert status == 2 and "has 6 channel(s)" in err and "no channel 6" in err
    status, _, err = run_cli(capsys, "embed", "--model", folder, first, "--channel", "loud")
    assert status == 2 and "--channel" in err


def test_channel_policies_on_files_and_arrays(tmp_path):
    talk, quiet = speech(0), speech(1)[:speech(0).size]
    if quiet.size < talk.size:
        talk = talk[:quiet.size]
    frames = np.stack([talk, quiet // 8], axis=1)
    path = str(tmp_path / "stereo.wav")
    sf.write(path, frames, RATE, subtype="PCM_16")
    as_float = frames.astype(np.float32)
    expected = {"first": as_float[:, 0], 0: as_float[:, 0], 1: as_float[:, 1],
                "loudest": as_float[:, 0], "mean": as_float.mean(axis=1)}
    for channel, want in expected.items():
        for given, kwargs in ((path, {}), (frames, {"sample_rate": RATE}),
                              (frames.T.copy(), {"sample_rate": RATE})):
            got = audio.load_audio(given, RATE, channel=channel, **kwargs)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-3, err_msg=str(channel))
    # the default is the first channel, bit for bit
    np.testing.assert_array_equal(audio.load_audio(path, RATE), as_float[:, 0])
    # loudest: the channel of highest energy, wherever it is
    swapped = str(tmp_path / "swapped.wav")
    sf.write(swapped, frames[:, ::-1], RATE, subtype="PCM_16")
    np.testing.assert_array_equal(audio.load_audio(swapped, RATE, channel="loudest"),
                                  as_float[:, 0])
    with pytest.raises(audio.AudioChannelError, match="has 2 channel"):
        audio.load_audio(path, RATE, channel=2)
    for bad in ("left", -1, "1.5"):
        with pytest.raises(wespeaker_py.AudioInputError):
            audio.parse_channel(bad)
    assert [audio.parse_channel(v) for v in ("Loudest", "2", 0)] == ["loudest", 2, 0]


def test_a_silent_chosen_channel_has_its_own_reason_not_silence(tmp_path):
    """Reported as all_zero_samples / no_energy, a stereo call recorded on its second channel
    was counted with empty files; it is the wrong channel, and says which one to choose."""
    talk = speech(0)
    for channel0, was in ((np.zeros_like(talk), audio.AudioSilentError.reason),
                          (dither(talk.size, seed=4), audio.AudioNoEnergyError.reason)):
        frames = np.stack([channel0, talk], axis=1)
        path = str(tmp_path / f"{was}.wav")
        sf.write(path, frames, RATE, subtype="PCM_16")
        for given, kwargs in ((path, {}), (frames, {"sample_rate": RATE})):
            with pytest.raises(audio_errors.AudioSilentChannelError,
                               match="choose one with --channel 1") as caught:
                audio.load_audio(given, RATE, **kwargs)
            assert caught.value.reason == "silent_channel" != was
            assert caught.value.live_channels == (1,)
            assert isinstance(caught.value, audio.AudioSilentError)   # still refused as silent
        # no live channel: silence keeps its own reason
        silent = np.stack([channel0, channel0], axis=1)
        with pytest.raises(audio.AudioSilentError) as caught:
            audio.load_audio(silent, RATE, sample_rate=RATE)
        assert caught.value.reason == was and not caught.value.live_channels


def test_extraction_and_the_api_take_the_channel_policy(tmp_path):
    path = six_channels(str(tmp_path / "six.wav"), speech(0), seed=3)
    raw = write_raw_list_file(str(tmp_path / "raw.list"), [{"key": "six", "wav": path}])
    first = Dataset("raw", raw, training_args(), None, whole_utt=True)
    assert list(first) == []
    assert first.stats.skipped == {"silent_channel": 1}   # the wrong channel, not silence
    chosen = Dataset("raw", raw, training_args(), None, whole_utt=True, channel=3)
    (sample,) = list(chosen)
    np.testing.assert_array_equal(sample["wav"].numpy(), speech(0).astype(np.float32))
    assert chosen.stats.repaired == {"multi_channel_3_kept": 1}
    with pytest.raises(ValueError, match="training keeps the first channel"):
        Dataset("raw", raw, training_args(), {"s": 0}, channel="loudest")


def test_bin_extract_takes_the_channel_flag(tmp_path, folder):
    path = six_channels(str(tmp_path / "six.wav"), speech(0), seed=3)
    raw = write_raw_list_file(str(tmp_path / "raw.list"), [{"key": "six", "wav": path}])
    ark = str(tmp_path / "emb" / "xvector.ark")
    argv = ["--config", os.path.join(folder, "config.yaml"), "--model_path",
            os.path.join(folder, "avg_model.pt"), "--data_type", "raw", "--data_list", raw,
            "--embed_ark", ark, "--num_workers", "0", "--gpus", "[]"]
    with pytest.raises(RunFailedError, match="silent_channel"):
        extract_main(argv)
    extract_main(argv + ["--channel", "3"])
    (key, vector), = kaldiio.load_scp(ark[:-4] + ".scp").items()
    model = wespeaker_py.load_model(folder, device="cpu")
    assert key == "six"
    np.testing.assert_allclose(vector, model.embed(speech(0), sample_rate=RATE), rtol=1e-5,
                               atol=1e-6)


# -- defect 2: no energy ---------------------------------------------------------------------

def test_a_sample_rate_given_with_a_file_is_warned_about_once(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("wespeaker_py.audio.load._ignored_rates_warned", set())
    path = str(tmp_path / "speech.wav")
    sf.write(path, speech(0), RATE, subtype="PCM_16")
    with caplog.at_level(logging.WARNING, logger="wespeaker_py"):
        samples = audio.load_audio(path, RATE, sample_rate=8000)
        audio.load_audio(path, RATE, sample_rate=8000)
    np.testing.assert_array_equal(samples, audio.load_audio(path, RATE))
    warned = [record.getMessage() for record in caplog.records if "is ignored" in
              record.getMessage()]
    assert warned == [f"{path}: sample_rate=8000 is ignored for a file, which is read at its "
                      f"own rate (16000 Hz); sample_rate= is the rate of arrays and tensors "
                      f"(warned once)"]


def test_a_stack_of_waveforms_is_read_as_channels_with_a_warning(caplog):
    stack = np.stack([speech(0)[:RATE]] * 3)
    with caplog.at_level(logging.WARNING, logger="wespeaker_py"):
        audio.load_audio(stack, RATE, sample_rate=RATE)
    assert any("read as ONE recording of 3 channels, 16000 samples each; to embed 3 "
               "waveforms, pass them as a list" in record.getMessage()
               for record in caplog.records)


def test_a_constant_offset_is_named_as_dc_not_as_silence():
    offset = np.full(RATE, 1200, np.int16)
    with pytest.raises(audio.AudioNoEnergyError, match=r"<ndarray of shape \(16000,\)> has no "
                       r"energy: .*\(a constant offset of 1200 \(DC\) with nothing on it\)"):
        audio.load_audio(offset, RATE, sample_rate=RATE)


def test_dither_level_noise_is_refused_and_quiet_speech_is_kept(tmp_path, folder, capsys):
    noise = str(tmp_path / "dither.wav")
    sf.write(noise, dither(3 * RATE, seed=5), RATE, subtype="PCM_16")
    with pytest.raises(audio.AudioNoEnergyError, match="has no energy") as caught:
        audio.load_audio(noise, RATE)
    assert isinstance(caught.value, audio.AudioSilentError)
    assert "dBFS" in str(caught.value) and noise in str(caught.value)
    status, out, err = run_cli(capsys, "similarity", "--model", folder, noise, noise)
    assert status == 2 and out == "" and "has no energy" in err
    # the same speech 50 dB quieter, stored as int16, is still speech
    quiet = np.round(speech(0) * 10 ** (-50 / 20)).astype(np.int16)
    assert np.abs(quiet).max() < 200
    quiet_path = str(tmp_path / "quiet.wav")
    sf.write(quiet_path, quiet, RATE, subtype="PCM_16")
    assert audio.load_audio(quiet_path, RATE).size == quiet.size
    status, out, err = run_cli(capsys, "similarity", "--model", folder, quiet_path, quiet_path)
    assert status == 0 and float(out) == pytest.approx(1.0, abs=1e-5)


def test_the_floor_sits_between_dither_and_speech():
    floor = audio.SILENCE_FLOOR_DBFS
    assert audio.loudest_frame_dbfs(dither(10 * RATE, seed=1).astype(np.float32)) < floor
    # the loudest any ±1 LSB signal can be: a square wave of ±1
    square = np.tile(np.float32([1, -1]), 5 * RATE)
    assert audio.loudest_frame_dbfs(square) == pytest.approx(-90.3, abs=0.05)
    assert -90.3 < floor
    assert audio.loudest_frame_dbfs(speech(0).astype(np.float32)) > floor + 50
    # a DC offset is not energy
    assert audio.loudest_frame_dbfs(np.full(RATE, 500, np.float32)) == -np.inf


def test_training_chunks_are_not_held_to_the_energy_floor(tmp_path):
    path = str(tmp_path / "pause.wav")
    sf.write(path, dither(3 * RATE, seed=2), RATE, subtype="PCM_16")
    raw = write_raw_list_file(str(tmp_path / "raw.list"), [{"key": "p", "wav": path,
                                                            "spk": "s"}])
    assert [s["key"] for s in Dataset("raw", raw, training_args(), {"s": 0})] == ["p"]
    assert audio_samples.check_samples(np.ones(10, np.float32), "x", floor_dbfs=None).size == 10


# -- defect 4: a truncated WAV ---------------------------------------------------------------

def cut_wav(path: str, samples: np.ndarray, keep: int) -> str:
    """Write ``samples`` as a 16-bit WAV, then cut the file after ``keep`` samples' bytes."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, RATE, format="WAV", subtype="PCM_16")
    with open(path, "wb") as handle:
        handle.write(buffer.getvalue()[:44 + 2 * keep])
    return path


def test_a_truncated_wav_is_refused_by_every_reader(tmp_path, folder, capsys):
    samples = random_int16(40000, seed=9)
    cut = cut_wav(str(tmp_path / "cut.wav"), samples, keep=30000)
    with pytest.raises(audio.AudioTruncatedError, match="truncated") as caught:
        audio.load_audio(cut, RATE)
    assert "2.50 s" in str(caught.value) and "1.88 s" in str(caught.value)
    # in-memory bytes (a tar shard member)
    with open(cut, "rb") as handle:
        with pytest.raises(audio.AudioTruncatedError):
            audio.open_audio(data=handle.read(), name="member")
    # the pipeline (extraction and training) skips it under its reason
    raw = write_raw_list_file(str(tmp_path / "raw.list"), [{"key": "w", "wav": cut,
                                                            "spk": "s"}])
    for kwargs in ({"whole_utt": True}, {}):
        dataset = Dataset("raw", raw, training_args(), {"s": 0}, **kwargs)
        assert list(dataset) == []
        assert dataset.stats.skipped == {audio_errors.AudioTruncatedError.reason: 1}
    status, out, err = run_cli(capsys, "embed", "--model", folder, cut)
    assert status == 2 and out == "" and "is truncated" in err


def test_a_pipe_shorter_than_its_header_is_warned_about_not_refused(tmp_path, caplog):
    # streaming writers (sox) put their estimate of the length in the header; the
    # command's exit status says whether it delivered everything
    samples = random_int16(40000, seed=9)
    cut = cut_wav(str(tmp_path / "cut.wav"), samples, keep=30000)
    with caplog.at_level("WARNING", logger="wespeaker_py.audio"):
        got = audio.load_audio(f"cat {cut} |", RATE, name="piped")
    np.testing.assert_array_equal(got, samples[:30000].astype(np.float32))
    assert "piped: its header promises 80000 bytes" in caplog.text
    with pytest.raises(audio.AudioPipeError):
        audio.load_audio(f"cat {cut}; exit 1 |", RATE)


def test_a_streamed_wav_header_of_unknown_length_is_read_whole(tmp_path):
    samples = random_int16(20000, seed=4)
    buffer = io.BytesIO()
    sf.write(buffer, samples, RATE, format="WAV", subtype="PCM_16")
    for unknown in (0xFFFFFFFF, 0x7FFFF000):
        data = bytearray(buffer.getvalue())
        data[40:44] = struct.pack("<I", unknown)      # the data chunk's size, as a pipe writes
        path = tmp_path / f"streamed_{unknown:x}.wav"
        path.write_bytes(bytes(data))
        np.testing.assert_array_equal(audio.load_audio(f"cat {path} |", RATE),
                                      samples.astype(np.float32))
