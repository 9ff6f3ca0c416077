"""Inputs that used to pass without a word: a quiet first channel beside a loud one, a VAD
segment past the end of its audio, an all-zero embedding, and aug_prob without any
augmentation list."""
import logging
import os

import numpy as np
import pytest
import soundfile as sf

from api_helpers import wespeaker_folder
from dataset_helpers import RATE, random_int16, training_args, write_audio, write_raw_list_file
from train_helpers import CPU_WORLD, plan_of, tiny_config
from wespeaker_py import audio
from wespeaker_py.audio import samples as audio_samples
from wespeaker_py.audio.errors import AudioSegmentError
from wespeaker_py.audio.files import MAX_SEGMENT_OVERSHOOT
from wespeaker_py.config import load_model_config
from wespeaker_py.dataset import Dataset
from wespeaker_py.inference.extraction import ExtractionOptions, extract_embeddings
from wespeaker_py.io.ark import MIN_NORM, load_embeddings, write_embeddings
from wespeaker_py.scoring.cosine import score_trial_files
from wespeaker_py.utils.tables import DataFormatError


pytestmark = pytest.mark.usefixtures("single_process")


@pytest.fixture(autouse=True)
def fresh_quiet_channel_warnings(monkeypatch):
    monkeypatch.setattr(audio_samples, "_quiet_warned", set())


# -- a hiss-only first channel beside a loud one ----------------------------------------------

def at_dbfs(signal: np.ndarray, dbfs: float) -> np.ndarray:
    """``signal`` scaled so that its RMS is ``dbfs`` (relative to the int16 full scale)."""
    rms = np.sqrt(np.mean(signal.astype(np.float64) ** 2))
    return signal * (32768.0 * 10 ** (dbfs / 20) / rms)


def hiss_and_speech(path: str, hiss_dbfs: float = -75.0, seconds: float = 2.0) -> np.ndarray:
    """A 16-bit stereo WAV: hiss at ``hiss_dbfs`` on channel 0, a loud signal (-7.5 dBFS)
    on channel 1; returns its [frames, 2] int16 samples."""
    rng = np.random.default_rng(0)
    size = int(seconds * RATE)
    t = np.arange(size) / RATE
    loud = at_dbfs(np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)), -7.5)
    frames = np.stack([at_dbfs(rng.standard_normal(size), hiss_dbfs), loud], axis=1)
    frames = np.round(frames).astype(np.int16)
    sf.write(path, frames, RATE, subtype="PCM_16")
    return frames


def quiet_channel_lines(caplog):
    return [record.getMessage() for record in caplog.records
            if "--channel" in record.getMessage() and "below channel" in record.getMessage()]


def test_a_hiss_only_first_channel_beside_a_loud_one_is_embedded_with_a_warning(tmp_path, caplog):
    path = str(tmp_path / "hiss.wav")
    frames = hiss_and_speech(path)
    with caplog.at_level(logging.WARNING):
        samples = audio.load_audio(path, RATE)
        audio.load_audio(path, RATE)                    # once per file and process
    np.testing.assert_array_equal(samples, frames[:, 0].astype(np.float32))   # still first
    (line,) = quiet_channel_lines(caplog)
    levels = audio_samples.channel_levels(frames.astype(np.float32))
    assert path in line and "--channel 1" in line and "--channel loudest" in line
    assert f"{levels[0]:.1f} dBFS" in line and f"{levels[1]:.1f} dBFS" in line
    assert levels[1] - levels[0] > 60
    # the same for an array, named by its shape
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        audio.load_audio(frames, RATE, sample_rate=RATE)
    assert len(quiet_channel_lines(caplog)) == 1


def test_no_quiet_channel_warning_when_chosen_or_close_in_level(tmp_path, caplog):
    path = str(tmp_path / "hiss.wav")
    hiss_and_speech(path)
    closer = str(tmp_path / "closer.wav")
    hiss_and_speech(closer, hiss_dbfs=-30.0)            # 22.5 dB below: a real second mic
    with caplog.at_level(logging.WARNING):
        for channel in ("loudest", "mean", 0, 1):
            audio.load_audio(path, RATE, channel=channel)
        audio.load_audio(closer, RATE)
    assert quiet_channel_lines(caplog) == []


def test_extraction_warns_about_a_quiet_first_channel_and_training_chunks_do_not_scan(
        tmp_path, caplog, monkeypatch):
    path = str(tmp_path / "hiss.wav")
    hiss_and_speech(path, seconds=3.0)
    raw = write_raw_list_file(str(tmp_path / "raw.list"), [{"key": "h", "wav": path,
                                                            "spk": "s"}])
    with caplog.at_level(logging.WARNING):
        assert [s["key"] for s in Dataset("raw", raw, training_args(), None,
                                          whole_utt=True)] == ["h"]
    (line,) = quiet_channel_lines(caplog)
    assert line.startswith("h: channel 0")

    def no_scan(*args, **kwargs):
        raise AssertionError("a training chunk must not compute every channel's level")

    monkeypatch.setattr(audio_samples, "_quiet_warned", set())
    monkeypatch.setattr(audio_samples, "channel_levels", no_scan)
    assert [s["key"] for s in Dataset("raw", raw, training_args(), {"s": 0})] == ["h"]


# -- a VAD segment past the end of its audio -------------------------------------------------

def three_seconds(tmp_path) -> str:
    return write_audio(str(tmp_path / "three.wav"), random_int16(3 * RATE, seed=1))


def test_a_segment_past_the_end_is_an_error_naming_utterance_segment_and_length(tmp_path):
    path = three_seconds(tmp_path)
    for segment in ((2.0, 9.0), (3.0, 3.2), (3.5, 4.0)):
        with audio.open_audio(path, name="utt1") as handle:
            with pytest.raises(AudioSegmentError) as caught:
                audio.apply_vad(handle, [(0.0, 1.0), segment])
        message = str(caught.value)
        assert message.startswith("utt1: vad segment") and "3.000 s" in message
        assert f"[{segment[0]:g}, {segment[1]:g}]" in message
        assert caught.value.reason == AudioSegmentError.reason
        assert isinstance(caught.value, audio.AudioCheckError)
    # within Kaldi's tolerance the segment is cut at the end, as before
    with audio.open_audio(path, name="utt1") as handle:
        voiced = audio.apply_vad(handle, [(2.0, 3.0 + MAX_SEGMENT_OVERSHOOT)])
        assert voiced.frames == RATE


def test_training_and_extraction_skip_and_count_a_segment_past_the_end(tmp_path):
    path = three_seconds(tmp_path)
    raw = write_raw_list_file(str(tmp_path / "raw.list"), [
        {"key": "good", "wav": path, "spk": "s", "vad": [[0.0, 2.5]]},
        {"key": "bad", "wav": path, "spk": "s", "vad": [[0.5, 1.5], [2.0, 9.0]]}])
    for dataset in (Dataset("raw", raw, training_args(), None, whole_utt=True),
                    Dataset("raw", raw, training_args(), {"s": 0})):
        assert [s["key"] for s in dataset] == ["good"]
        assert dataset.stats.skipped == {AudioSegmentError.reason: 1}
    folder, _ = wespeaker_folder(str(tmp_path / "model"))
    summary = extract_embeddings(load_model_config(os.path.join(folder, "config.yaml")),
                                 os.path.join(folder, "avg_model.pt"), "raw", raw,
                                 str(tmp_path / "emb" / "xvector.ark"),
                                 options=ExtractionOptions(num_workers=0), device="cpu")
    assert summary.extracted == 1 and summary.skipped == {AudioSegmentError.reason: 1}


# -- an embedding of zero length ---------------------------------------------------------------

@pytest.mark.parametrize("scale", [0.0, MIN_NORM / 100])
def test_a_zero_length_embedding_is_refused_naming_key_and_line(tmp_path, scale):
    matrix = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    matrix[1] *= scale / np.linalg.norm(matrix[1])
    scp = write_embeddings(str(tmp_path / "xvector.ark"), ["a", "b", "c"], matrix)
    with pytest.raises(DataFormatError, match=r"xvector.scp:2: embedding 'b' has zero length"):
        load_embeddings(scp)
    with pytest.raises(DataFormatError, match="embedding 'b' has zero length"):
        load_embeddings(str(tmp_path / "xvector.ark"))
    assert load_embeddings(scp, keys=["a", "c"]).keys == ["a", "c"]   # only kept rows
    trials = tmp_path / "trials"
    trials.write_text("a b target\n")
    with pytest.raises(DataFormatError, match="embedding 'b' has zero length"):
        score_trial_files(scp, [str(trials)], str(tmp_path), device="cpu")


# -- aug_prob without a list -------------------------------------------------------------------

def test_aug_prob_without_a_list_is_warned_about_at_plan_time(tmp_path, caplog):
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("".join(f"u{index} s{index % 2}\n" for index in range(8)))
    noise = tmp_path / "noise.scp"
    noise.write_text(f"n1 {write_audio(str(tmp_path / 'n1.wav'), random_int16(RATE, 2))}\n")
    corpus = {"raw_list": "unused", "utt2spk": str(utt2spk)}
    config = tiny_config(str(tmp_path / "exp"), corpus)
    config["dataset_args"]["aug_prob"] = 0.6

    def warnings_for(**paths):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="wespeaker_py.train"):
            plan_of(dict(config, **paths), CPU_WORLD)
        return [r.getMessage() for r in caplog.records if "aug_prob" in r.getMessage()]

    (line,) = warnings_for()
    assert "dataset_args.aug_prob is 0.6" in line and "--reverb_data" in line
    assert "--noise_data" in line and "without augmentation" in line
    assert warnings_for(noise_data=str(noise)) == []
    config["dataset_args"]["aug_prob"] = 0.0
    assert warnings_for() == []
