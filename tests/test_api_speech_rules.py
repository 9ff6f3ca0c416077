"""The speaker API's speech rules: runs of exact zeros as long as an fbank window, and
near-silent leading and trailing audio, are left out before embedding (torch and ONNX), so
padding does not make every recording the same speaker, and steady noise with no speech is
refused; bin.extract keeps the audio whole, as WeSpeaker does. Also: ``channel`` and
``sample_rate`` of embed_many are checked once, before any item is read."""
import importlib.util
import json
import logging
import os

import numpy as np
import pytest
import soundfile as sf

import wespeaker_py
from api_helpers import mini_speech, wespeaker_folder
from dataset_helpers import write_audio
from wespeaker_py.audio import AudioNoSpeechError, AudioTooShortError
from wespeaker_py.audio.resample import resample
from wespeaker_py.audio.samples import loudest_frame_dbfs
from wespeaker_py.audio.speech_rules import (SpeechLog, SpeechRules, check_level_varies,
                                             near_silent_edges, without_digital_silence)
from wespeaker_py.bin.extract import main as extract_main
from wespeaker_py.errors import AudioInputError
from wespeaker_py.io.ark import load_embeddings
from wespeaker_py.runtime.embedding import embed_stream

HAVE_ONNX = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
RATE = 16000
WINDOW = 400            # one 25 ms fbank window at 16 kHz
EDGE = RATE // 8        # 0.125 s of zeros at each end, as an audio editor pads
GAP = 1600              # 0.1 s of zeros inside


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return wespeaker_folder(str(tmp_path_factory.mktemp("xvec")))[0]


@pytest.fixture(scope="module")
def torch_model(folder):
    return wespeaker_py.load_model(folder, device="cpu")


@pytest.fixture(scope="module")
def engines(torch_model, tmp_path_factory):
    """The torch model, and its ONNX export when onnx is installed."""
    models = {"torch": torch_model}
    if HAVE_ONNX:
        from wespeaker_py.api.exporting import export_waveform_graph
        path = str(tmp_path_factory.mktemp("onnx") / "model.onnx")
        export_waveform_graph(torch_model, path)
        models["onnx"] = wespeaker_py.load_model(path)
    return models


@pytest.fixture(scope="module")
def speech():
    """int16 speech of one utterance, cut in two halves."""
    samples = sf.read(mini_speech(1)[0], dtype="int16")[0]
    assert not without_digital_silence(samples, WINDOW)[1]   # no silence of its own
    return samples[:samples.size // 2], samples[samples.size // 2:]


def zeros(count):
    return np.zeros(count, np.int16)


def padded(first, second):
    """``first`` and ``second`` with zeros before, between and after them."""
    return np.concatenate([zeros(EDGE), first, zeros(GAP), second, zeros(EDGE)])


def test_without_digital_silence_removes_long_zero_runs_only():
    samples = np.array([0, 0, 0, 5, 0, 0, 7, -0.0, 0, 0, 0, 9, 0, 0, 0], np.float32)
    kept, removed = without_digital_silence(samples, 3)
    np.testing.assert_array_equal(kept, [5, 0, 0, 7, 9])     # the run of 2 stays
    assert removed == 10
    kept, removed = without_digital_silence(samples, 4)
    np.testing.assert_array_equal(kept, [0, 0, 0, 5, 0, 0, 7, 9, 0, 0, 0])
    assert removed == 4
    voiced = np.arange(1, 6, dtype=np.float32)
    assert without_digital_silence(voiced, 1) == (voiced, 0)
    assert without_digital_silence(np.zeros(7, np.float32), 7)[0].size == 0
    with pytest.raises(ValueError, match="min_run must be at least 1"):
        without_digital_silence(voiced, 0)
    with pytest.raises(ValueError, match=r"mono samples \(one axis\), got an array of shape "
                       r"\(2, 5\)"):
        without_digital_silence(np.stack([voiced, voiced]), 3)


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_zero_padding_and_a_zero_gap_do_not_change_the_embedding(engines, speech, engine,
                                                                 caplog):
    if engine not in engines:
        pytest.skip("onnx / onnxruntime not installed")
    model = engines[engine]
    first, second = speech
    plain = model.embed(np.concatenate([first, second]), sample_rate=RATE)
    with caplog.at_level(logging.INFO, logger="wespeaker_py.api.model"):
        zero_padded = model.embed(padded(first, second), sample_rate=RATE)
    np.testing.assert_allclose(zero_padded, plain, rtol=0, atol=1e-6)
    removed = (2 * EDGE + GAP) / RATE
    assert f"{removed:.3f} s of digital silence (runs of 25 ms or more" in caplog.text
    # the same through embed_many
    many = model.embed_many({"padded": padded(first, second), "plain": np.concatenate(
        [first, second])}, sample_rate=RATE, progress=False)
    np.testing.assert_allclose(many.embeddings["padded"], many.embeddings["plain"],
                               rtol=0, atol=1e-6)
    # two speakers padded alike stay two speakers: their score is what it was unpadded
    other = sf.read(mini_speech(2)[1], dtype="int16")[0]
    unpadded_score = model.similarity(np.concatenate([first, second]), other, RATE)
    padded_score = model.similarity(padded(first, second),
                                    np.concatenate([zeros(EDGE), other, zeros(EDGE)]), RATE)
    assert padded_score == pytest.approx(unpadded_score, abs=1e-5)


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_digital_silence_around_too_little_audio_is_refused(engines, speech, engine,
                                                            tmp_path):
    if engine not in engines:
        pytest.skip("onnx / onnxruntime not installed")
    model = engines[engine]
    burst = speech[1][:int(0.1 * RATE)]     # under the model's shortest input
    assert burst.size < model.backend.min_samples
    mostly_silent = np.concatenate([zeros(RATE), burst, zeros(RATE)])
    with pytest.raises(AudioTooShortError, match=r"<ndarray of shape \(33600,\)>: 0\.100 s "
                       r"\(1600 samples\) of audio left once 2\.000 s of digital silence"):
        model.embed(mostly_silent, sample_rate=RATE)
    path = write_audio(str(tmp_path / "mostly_silent.wav"), mostly_silent)
    results = model.embed_many([path], progress=False)
    assert results.reasons == {"too_short": 1}
    assert "left once 2.000 s of digital silence" in results.skipped[path]


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_audio_shorter_than_the_model_takes_is_a_too_short_error(engines, speech, engine):
    if engine not in engines:
        pytest.skip("onnx / onnxruntime not installed")
    model = engines[engine]
    burst = speech[1][:int(0.01 * RATE)]     # nothing for the rules to remove
    with pytest.raises(AudioTooShortError, match=r"<ndarray of shape \(160,\)>: 0\.010 s of "
                       r"audio \(160 samples\); the model needs at least") as raised:
        model.embed(burst, sample_rate=RATE)
    assert raised.value.reason == "too_short"
    with pytest.raises(AudioTooShortError, match=r"waveform 1: 0\.010 s"):
        model.embed_waveforms([speech[0], burst], sample_rate=RATE)


def test_bin_extract_keeps_the_zeros(folder, torch_model, speech, tmp_path):
    first, second = speech
    path = write_audio(str(tmp_path / "padded.wav"), padded(first, second))
    plain_path = write_audio(str(tmp_path / "plain.wav"), np.concatenate([first, second]))
    raw_list = tmp_path / "raw.list"
    raw_list.write_text(json.dumps({"key": "padded", "wav": path, "spk": "s"}) + "\n")
    ark = str(tmp_path / "emb" / "xvector.ark")
    extract_main(["--config", os.path.join(folder, "config.yaml"),
                  "--model_path", os.path.join(folder, "avg_model.pt"),
                  "--data_type", "raw", "--data_list", str(raw_list), "--embed_ark", ark,
                  "--batch_size", "1", "--num_workers", "0", "--device", "cpu"])
    table = load_embeddings(ark[:-4] + ".scp")
    extracted = table.matrix[table.index["padded"]]
    # the runtime loop, given the samples with their zeros, is what extraction computed
    [kept] = embed_stream(torch_model.backend,
                          [("padded", padded(first, second).astype(np.float32))], 1)
    np.testing.assert_allclose(extracted, kept.embedding, rtol=1e-4, atol=1e-5)
    api = torch_model.embed(path)
    np.testing.assert_array_equal(api, torch_model.embed(plain_path))
    assert np.abs(api - extracted).max() > 1e-3     # the zeros count there, not here


def test_a_bad_channel_or_sample_rate_fails_at_once_instead_of_skipping_every_item(
        torch_model, speech, tmp_path):
    files = mini_speech(2)
    with pytest.raises(AudioInputError, match="channel must be one of first, mean, loudest"):
        torch_model.embed_many(files, channel="left", progress=False)
    with pytest.raises(AudioInputError, match="channel must be one of"):
        torch_model.calibrate(str(tmp_path / "trials"), str(tmp_path / "wav.scp"),
                              output=str(tmp_path / "calibration.json"), channel="left")
    arrays = [speech[0], speech[1]]
    with pytest.raises(AudioInputError, match=r"give sample_rate= with arrays or tensors: 2 "
                       r"of the 3 inputs are \(the first: item 1\)"):
        torch_model.embed_many([files[0]] + arrays, progress=False)
    with pytest.raises(AudioInputError, match="sample_rate must be a positive integer, got 0"):
        torch_model.embed_many(arrays, sample_rate=0, progress=False)
    # paths alone need no rate, and a good channel number embeds them
    assert len(torch_model.embed_many(files, channel=0, progress=False).embeddings) == 2


@pytest.mark.parametrize("rate", [8000, 44100])
def test_zeros_are_removed_before_resampling(torch_model, speech, rate, tmp_path):
    """At another rate than the model's, resampling turns the zeros next to speech into
    ringing that is no longer exactly zero: the runs are found at the input's own rate."""
    first, second = (resample(half.astype(np.float32), RATE, rate) for half in speech)
    edge = rate // 8
    pad = np.zeros(edge, np.float32)
    gapped = np.concatenate([pad, first, np.zeros(rate // 10, np.float32), second, pad])
    # what the old order (resample, then look for zeros) would have missed
    assert np.count_nonzero(resample(gapped, rate, RATE)[:EDGE]) > 0
    plain = np.concatenate([first, second])
    unpadded = torch_model.embed(plain / 32768, sample_rate=rate)
    np.testing.assert_allclose(torch_model.embed(gapped / 32768, sample_rate=rate), unpadded,
                               rtol=0, atol=1e-5)
    path = write_audio(str(tmp_path / f"padded_{rate}.wav"),
                       np.round(gapped).astype(np.int16), rate)
    plain_path = write_audio(str(tmp_path / f"plain_{rate}.wav"),
                             np.round(plain).astype(np.int16), rate)
    np.testing.assert_allclose(torch_model.embed(path), torch_model.embed(plain_path),
                               rtol=0, atol=1e-5)


def test_embed_waveforms_removes_the_zeros_too(torch_model, speech):
    first, second = speech
    plain = np.concatenate([first, second])
    padded_row, plain_row = torch_model.embed_waveforms([padded(first, second), plain], RATE)
    np.testing.assert_allclose(padded_row, plain_row, rtol=0, atol=1e-6)
    with pytest.raises(AudioInputError, match=r"waveform 1: .* left once 2\.000 s of digital "
                       r"silence"):
        torch_model.embed_waveforms([plain, np.concatenate(
            [zeros(RATE), second[:1600], zeros(RATE)])], RATE)


def test_embed_many_sums_the_removed_silence_up_in_one_line(torch_model, speech, caplog):
    first, second = speech
    items = {f"padded{index}": padded(first, second) for index in range(3)}
    items["plain"] = np.concatenate([first, second])
    with caplog.at_level(logging.DEBUG, logger="wespeaker_py"):
        torch_model.embed_many(items, sample_rate=RATE, progress=False)
    removed = 3 * (2 * EDGE + GAP) / RATE
    info = [record.getMessage() for record in caplog.records
            if record.levelno == logging.INFO and "digital silence" in record.getMessage()]
    assert info == [f"removed before embedding from 3 of 4 input(s): {removed:.3f} s of digital "
                    f"silence (runs of 25 ms or more of zero samples), 0.000 s of near-silent "
                    f"edges (leading and trailing audio 40 dB or more below its speech)"]
    debug = [record for record in caplog.records
             if record.levelno == logging.DEBUG and "digital silence" in record.getMessage()]
    assert len(debug) == 3


def hiss(count, dbfs, seed=0):
    """int16 white noise at ``dbfs`` (RMS re 32768)."""
    noise = np.random.default_rng(seed).normal(0, 32768 * 10 ** (dbfs / 20), count)
    return np.round(noise).astype(np.int16)


def test_near_silent_edges_are_cut_next_to_the_speech_and_a_noisy_background_stays(speech):
    plain = np.concatenate(speech)
    edge = RATE      # 1 s of hiss at each end, 45 dB or more below the speech
    quiet = np.concatenate([hiss(edge, -75), plain, hiss(edge, -75, seed=1)])
    start, stop = near_silent_edges(quiet.astype(np.float32), RATE)
    keep = int(0.05 * RATE)
    # what stays begins at most one frame and the kept 50 ms before the speech, likewise after
    assert edge - keep - WINDOW <= start <= edge - keep + WINDOW
    assert edge + plain.size + keep - WINDOW <= stop <= edge + plain.size + keep + WINDOW
    # a background 20 dB under the speech is the recording's own noise, not an edge to cut
    level = 10 * np.log10(np.mean(plain.astype(np.float64) ** 2) / 32768 ** 2)
    noisy = np.concatenate([hiss(edge, level - 20), plain, hiss(edge, level - 20, seed=1)])
    assert near_silent_edges(noisy.astype(np.float32), RATE) == (0, noisy.size)


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_faint_hiss_padding_is_cut_before_embedding(engines, speech, engine, caplog):
    if engine not in engines:
        pytest.skip("onnx / onnxruntime not installed")
    model = engines[engine]
    plain = np.concatenate(speech)
    padded_hiss = np.concatenate([hiss(RATE, -80), plain, hiss(RATE, -80, seed=1)])
    kept = near_silent_edges(padded_hiss.astype(np.float32), RATE)
    with caplog.at_level(logging.INFO, logger="wespeaker_py"):
        embedding = model.embed(padded_hiss, sample_rate=RATE)
    removed = (padded_hiss.size - (kept[1] - kept[0])) / RATE
    assert removed > 1.8
    assert any(f"{removed:.3f} s of near-silent edges" in record.getMessage()
               for record in caplog.records)
    # what is embedded is the speech and the 50 ms kept on each side of it
    np.testing.assert_allclose(embedding, model.embed(padded_hiss[kept[0]:kept[1]],
                                                      sample_rate=RATE), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dbfs", [-80, -70, -45])
def test_faint_steady_noise_is_refused_as_no_speech(torch_model, dbfs, tmp_path):
    samples = hiss(2 * RATE, dbfs)
    with pytest.raises(AudioNoSpeechError, match=r"<ndarray of shape \(32000,\)>: no speech "
                       r"found: its level stays within [0-2]\.\d dB .* as faint steady noise"):
        torch_model.embed(samples, sample_rate=RATE)
    path = write_audio(str(tmp_path / "steady.wav"), samples)
    results = torch_model.embed_many([path], progress=False)
    assert results.reasons == {"no_speech": 1}
    with pytest.raises(AudioNoSpeechError):
        torch_model.similarity(samples, samples, sample_rate=RATE)


def test_loud_steady_input_is_embedded_as_given(torch_model):
    tone = np.round(8000 * np.sin(2 * np.pi * 440 * np.arange(2 * RATE) / RATE))
    for samples in (hiss(2 * RATE, -35), tone.astype(np.int16)):
        assert np.isfinite(torch_model.embed(samples, sample_rate=RATE)).all()


def test_faint_speech_in_loud_noise_is_not_refused(speech):
    plain = np.concatenate(speech).astype(np.float64)
    noisy = plain + np.random.default_rng(3).normal(0, np.sqrt(np.mean(plain ** 2)), plain.size)
    noisy /= 100     # every frame under -40 dBFS: the level range alone decides
    assert loudest_frame_dbfs(noisy) < SpeechRules().steady_below_dbfs
    check_level_varies(noisy, RATE, "speech at 0 dB SNR")      # no error
    with pytest.raises(AudioNoSpeechError):
        check_level_varies(noisy, RATE, "speech at 0 dB SNR", SpeechRules(min_level_range_db=30))
    log = SpeechLog()
    log.apply(noisy.astype(np.float32), RATE, "speech at 0 dB SNR")
    assert log.last.seconds == 0


@pytest.mark.parametrize("seconds", [1, 20])
def test_padding_far_longer_than_the_speech_is_still_cut(speech, seconds):
    plain = np.concatenate(speech)
    pad = seconds * RATE
    quiet = np.concatenate([hiss(pad, -70), plain, hiss(pad, -70, seed=1)])
    start, stop = near_silent_edges(quiet.astype(np.float32), RATE)
    keep = int(0.05 * RATE)
    assert pad - keep - WINDOW <= start and stop <= pad + plain.size + keep + WINDOW


def test_a_nan_in_a_near_silent_edge_of_a_file_is_still_refused(torch_model, speech, tmp_path):
    plain = np.concatenate(speech).astype(np.float32) / 32768
    lead = hiss(RATE, -75).astype(np.float32) / 32768
    lead[100] = np.nan
    path = str(tmp_path / "nan_edge.wav")
    sf.write(path, np.concatenate([lead, plain]), RATE, subtype="FLOAT")
    with pytest.raises(AudioInputError, match="NaN or infinite samples"):
        torch_model.embed(path)


def test_refused_inputs_are_not_counted_in_the_summary(torch_model, speech, caplog):
    plain = np.concatenate(speech)
    refused = np.concatenate([zeros(RATE), hiss(2 * RATE, -70)])   # zeros cut, then no speech
    with caplog.at_level(logging.INFO, logger="wespeaker_py"):
        results = torch_model.embed_many({"speech": plain, "refused": refused},
                                         sample_rate=RATE, progress=False)
    assert results.reasons == {"no_speech": 1}
    assert not any("removed before embedding" in record.getMessage()
                   for record in caplog.records)


def test_embed_waveforms_keeps_the_error_class(torch_model):
    with pytest.raises(AudioNoSpeechError, match=r"^waveform 0: "):
        torch_model.embed_waveforms([hiss(2 * RATE, -70)], RATE)
