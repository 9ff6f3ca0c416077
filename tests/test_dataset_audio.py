"""Reading audio: partial chunk reads, speed perturbation, resampling and every bad input."""
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf

from dataset_helpers import RATE, random_int16, training_args, write_audio, write_raw_list_file
from wespeaker_py.dataset import Dataset
from wespeaker_py.audio.errors import (AudioEmptyError, AudioMissingError, AudioTruncatedError,
                                       AudioUnreadableError)
from wespeaker_py.dataset import stats as reasons
from wespeaker_py.audio import open_audio
from wespeaker_py.dataset.chunk import read_random_chunk
from wespeaker_py.dataset.lists import TableEntry
from wespeaker_py.dataset.shards import make_shards
from wespeaker_py.frontend.framing import samples_for_frames
from wespeaker_py.utils.tables import DataFormatError

CHUNK = samples_for_frames(200, RATE)


pytestmark = pytest.mark.usefixtures("single_process")


def find_offset(haystack, needle):
    """Start of ``needle`` inside ``haystack`` (both exact int16 values), or -1."""
    for start in np.flatnonzero(haystack == needle[0]):
        if np.array_equal(haystack[start:start + needle.size], needle):
            return int(start)
    return -1


def dominant_frequency(signal, rate):
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    return np.argmax(spectrum) * rate / signal.size


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_partial_read_equals_slicing_the_full_read(tmp_path, ext):
    samples = random_int16(50000, seed=4)
    path = write_audio(str(tmp_path / f"a.{ext}"), samples)
    full, _ = sf.read(path, dtype="float32")
    with open(path, "rb") as handle:
        data = handle.read()
    for source in (dict(wav=path), dict(data=data)):
        with open_audio(**source) as audio:
            assert (audio.frames, audio.samplerate) == (50000, RATE)
            for start, count in ((0, 100), (12345, CHUNK), (50000 - 7, 7)):
                np.testing.assert_array_equal(audio.read(start, count),
                                              full[start:start + count] * 32768)
    # a training chunk is a contiguous run of the file, at a random place
    rng = np.random.default_rng(0)
    starts = set()
    with open_audio(wav=path) as audio:
        for _ in range(5):
            chunk = read_random_chunk(audio, CHUNK, RATE, rng)
            assert chunk.size == CHUNK
            starts.add(find_offset(samples.astype(np.float32), chunk))
    assert -1 not in starts and len(starts) == 5


def test_short_utterances_are_repeated_to_the_chunk(tmp_path):
    samples = random_int16(20000, seed=5)
    path = write_audio(str(tmp_path / "short.wav"), samples)
    with open_audio(wav=path) as audio:
        chunk = read_random_chunk(audio, CHUNK, RATE, np.random.default_rng(0))
    np.testing.assert_array_equal(chunk, np.tile(samples, 2)[:CHUNK].astype(np.float32))


@pytest.mark.parametrize("speed", [Fraction(9, 10), Fraction(11, 10)])
def test_speed_perturbation_reads_chunk_times_speed_and_scales_pitch(tmp_path, speed):
    tone = 1000.0
    t = np.arange(80000) / RATE
    path = write_audio(str(tmp_path / "tone.flac"),
                       (8000 * np.sin(2 * np.pi * tone * t)).astype(np.int16))
    with open_audio(wav=path) as audio:
        chunk = read_random_chunk(audio, CHUNK, RATE, np.random.default_rng(1), speed)
    assert chunk.size == CHUNK
    # speed s plays s times faster: every frequency is multiplied by s
    assert dominant_frequency(chunk, RATE) == pytest.approx(tone * float(speed), abs=2.0)
    assert np.sqrt(np.mean(chunk[100:-100] ** 2)) == pytest.approx(8000 / np.sqrt(2), rel=0.02)


def test_label_offset_names_the_speed_that_was_applied(tmp_path):
    tone = 1000.0
    t = np.arange(64000) / RATE
    path = write_audio(str(tmp_path / "tone.wav"),
                       (8000 * np.sin(2 * np.pi * tone * t)).astype(np.int16))
    raw = write_raw_list_file(str(tmp_path / "raw.list"), [
        {"key": "tone", "wav": path, "spk": "b"}])
    spk2id = {"a": 0, "b": 1, "c": 2, "d": 3}
    args = training_args(speed_perturb=True, sample_num_per_epoch=40)
    seen = set()
    for sample in Dataset("raw", raw, args, spk2id, seed=2):
        offset = (sample["label"] - 1) // len(spk2id)
        speed = {0: 1.0, 1: 0.9, 2: 1.1}[offset]  # WeSpeaker's [1.0, 0.9, 1.1]
        assert dominant_frequency(sample["wav"].numpy(), RATE) == \
            pytest.approx(tone * speed, abs=2.0)
        seen.add(offset)
    assert seen == {0, 1, 2}


def test_other_sample_rates_are_resampled_and_counted(tmp_path, caplog, monkeypatch):
    from wespeaker_py.audio import samples as audio_samples
    monkeypatch.setattr(audio_samples, "_rates_warned", set())
    tone = 500.0
    t = np.arange(24000) / 8000
    path = write_audio(str(tmp_path / "narrow.flac"),
                       (8000 * np.sin(2 * np.pi * tone * t)).astype(np.int16), rate=8000)
    raw = write_raw_list_file(str(tmp_path / "raw.list"),
                              [{"key": "u8k", "wav": path, "spk": "s"}])
    dataset = Dataset("raw", raw, training_args(), {"s": 0})
    with caplog.at_level(logging.WARNING):
        (sample,) = list(dataset)
    assert sample["wav"].numel() == CHUNK
    assert dominant_frequency(sample["wav"].numpy(), RATE) == pytest.approx(tone, abs=2.0)
    assert dataset.stats.repaired == {reasons.RESAMPLED: 1, "narrow_band_8000hz": 1}
    assert dataset.stats.summary().narrow_band() == {8000: 1}
    assert dataset.stats.summary().examples["narrow_band_8000hz"] == ["u8k"]
    assert "Hz audio" not in caplog.text     # counted here; the trainer warns once per job
    caplog.clear()
    monkeypatch.setattr(audio_samples, "_rates_warned", set())
    whole = Dataset("raw", raw, training_args(), None, whole_utt=True)
    with caplog.at_level(logging.WARNING):
        (sample,) = list(whole)
    assert sample["wav"].numel() == 48000 and sample["label"] == -1
    assert "Hz audio" not in caplog.text     # extraction: the embedding loop decides


def test_stereo_keeps_the_first_channel(tmp_path):
    stereo = random_int16(40000, seed=6, channels=2)
    path = write_audio(str(tmp_path / "stereo.wav"), stereo)
    raw = write_raw_list_file(str(tmp_path / "raw.list"), [{"key": "st", "wav": path, "spk": "s"}])
    dataset = Dataset("raw", raw, training_args(), {"s": 0}, whole_utt=True)
    (sample,) = list(dataset)
    np.testing.assert_array_equal(sample["wav"].numpy(), stereo[:, 0].astype(np.float32))
    assert dataset.stats.repaired == {reasons.MULTI_CHANNEL: 1}


def test_vad_segments_of_a_raw_list_are_cut_out(tmp_path):
    samples = random_int16(40000, seed=8)
    path = write_audio(str(tmp_path / "v.flac"), samples)
    raw = write_raw_list_file(str(tmp_path / "raw.list"), [
        {"key": "v", "wav": path, "spk": "s", "vad": [[0.5, 1.0], [1.5, 2.0]]}])
    (sample,) = list(Dataset("raw", raw, training_args(), {"s": 0}, whole_utt=True))
    expected = np.concatenate([samples[8000:16000], samples[24000:32000]])
    np.testing.assert_array_equal(sample["wav"].numpy(), expected.astype(np.float32))


def make_bad_corpus(root):
    """One good utterance and one of each bad kind; returns (entries, expected skip reasons)."""
    def path(name):
        return os.path.join(root, name)

    good = write_audio(path("good.flac"), random_int16(40000, seed=1))
    empty = path("empty.wav")
    open(empty, "wb").close()
    not_audio = path("text.wav")
    with open(not_audio, "w") as handle:
        handle.write("this is a text file, not audio\n" * 50)
    flac_bytes = io.BytesIO()
    sf.write(flac_bytes, random_int16(40000, seed=2), RATE, format="FLAC")
    truncated_flac = path("cut.flac")
    with open(truncated_flac, "wb") as handle:
        handle.write(flac_bytes.getvalue()[:len(flac_bytes.getvalue()) // 2])
    short = write_audio(path("short.wav"), random_int16(8000, seed=3))
    rows = [("good", good), ("missing", path("absent.wav")), ("empty", empty),
            ("not_audio", not_audio), ("cut_flac", truncated_flac), ("short", short)]
    expected = {"missing": AudioMissingError.reason, "empty": AudioEmptyError.reason,
                "not_audio": AudioUnreadableError.reason, "cut_flac": AudioTruncatedError.reason,
                "short": reasons.TOO_SHORT}
    return [TableEntry(key, "s", wav) for key, wav in rows], expected


def test_bad_inputs_are_skipped_counted_and_logged_once(tmp_path, caplog):
    entries, expected = make_bad_corpus(str(tmp_path))
    raw = write_raw_list_file(str(tmp_path / "raw.list"),
                              [{"key": e.key, "wav": e.wav, "spk": e.spk} for e in entries])
    dataset = Dataset("raw", raw, training_args(), {"s": 0}, whole_utt=True)
    with caplog.at_level(logging.INFO, logger="wespeaker_py.dataset"):
        keys = [s["key"] for s in dataset]
    # whole-utterance mode has no duration filter: a 0.5 s file is kept there
    assert keys == ["good", "short"]
    whole_expected = {k: r for k, r in expected.items() if k != "short"}
    assert dataset.stats.skipped == {AudioMissingError.reason: 1, AudioEmptyError.reason: 1,
                                     AudioUnreadableError.reason: 1, AudioTruncatedError.reason: 1}
    for key, reason in whole_expected.items():
        lines = [r.getMessage() for r in caplog.records if f"skipping {key} ({reason})" in
                 r.getMessage()]
        assert len(lines) == 1, (key, reason, caplog.text)
    line = dataset.epoch_summary().describe()
    assert line.startswith("2 utterances used;") and "missing_file=1 (e.g. missing)" in line

    # training: the 0.5 s file is below min_num_frames; every chunk of the half-cut FLAC
    # reaches past the cut, so it fails too
    train = Dataset("raw", raw, training_args(), {"s": 0})
    assert [s["key"] for s in train] == ["good"]
    assert train.stats.skipped == {reason: 1 for reason in expected.values()}


def test_bad_inputs_inside_shards(tmp_path):
    entries, expected = make_bad_corpus(str(tmp_path))
    # packed as they are (make_shards would leave the empty and not-audio files out), as
    # another tool's shards may hold them
    shard = str(tmp_path / "theirs.tar")
    with tarfile.open(shard, "w") as tar:
        for entry in entries:
            if entry.key != "missing":
                (tmp_path / f"{entry.key}.spk").write_text(entry.spk)
                tar.add(str(tmp_path / f"{entry.key}.spk"), arcname=f"{entry.key}.spk")
                tar.add(entry.wav, arcname=f"{entry.key}.{entry.wav.rsplit('.', 1)[1]}")
    shard_list = str(tmp_path / "shard.list")
    with open(shard_list, "w") as handle:
        handle.write(f"{shard}\n{tmp_path / 'no_such_shard.tar'}\n")
    dataset = Dataset("shard", shard_list, training_args(), {"s": 0}, whole_utt=True)
    assert [s["key"] for s in dataset] == ["good", "short"]
    assert dataset.stats.skipped == {AudioEmptyError.reason: 1, AudioUnreadableError.reason: 1,
                                     AudioTruncatedError.reason: 1, reasons.BAD_SHARD: 1}


def test_truncated_wav_is_skipped_as_truncated(tmp_path):
    samples = random_int16(40000, seed=9)
    buffer = io.BytesIO()
    sf.write(buffer, samples, RATE, format="WAV", subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(buffer.getvalue()[:44 + 2 * 30000])
    raw = write_raw_list_file(str(tmp_path / "raw.list"), [{"key": "w", "wav": str(cut),
                                                            "spk": "s"}])
    dataset = Dataset("raw", raw, training_args(), {"s": 0}, whole_utt=True)
    assert list(dataset) == []
    assert dataset.stats.skipped == {AudioTruncatedError.reason: 1}


def test_shorter_than_one_frame_is_skipped_in_whole_utterance_mode(tmp_path):
    tiny = write_audio(str(tmp_path / "tiny.wav"), random_int16(300, seed=1))
    raw = write_raw_list_file(str(tmp_path / "raw.list"), [{"key": "tiny", "wav": tiny}])
    dataset = Dataset("raw", raw, training_args(), None, whole_utt=True)
    assert list(dataset) == []
    assert dataset.stats.skipped == {reasons.TOO_SHORT: 1}


def test_unknown_speaker_is_skipped_in_training(tmp_path):
    path = write_audio(str(tmp_path / "a.wav"), random_int16(40000, seed=1))
    raw = write_raw_list_file(str(tmp_path / "raw.list"), [
        {"key": "a", "wav": path, "spk": "known"}, {"key": "b", "wav": path, "spk": "other"}])
    dataset = Dataset("raw", raw, training_args(), {"known": 0})
    assert [s["key"] for s in dataset] == ["a"]
    assert dataset.stats.skipped == {reasons.UNKNOWN_SPEAKER: 1}


def test_broken_list_line_is_an_error_naming_file_and_line(tmp_path):
    raw = tmp_path / "raw.list"
    raw.write_text(json.dumps({"key": "a", "wav": "a.wav", "spk": "s"}) + "\n"
                   + json.dumps({"wav": "b.wav", "spk": "s"}) + "\n")
    with pytest.raises(DataFormatError, match=r"raw\.list:2: missing field 'key'"):
        Dataset("raw", str(raw), training_args(), {"s": 0})


def test_pipe_shards_and_pipe_wavs(tmp_path):
    path = write_audio(str(tmp_path / "a.flac"), random_int16(40000, seed=1))
    shard_list = str(tmp_path / "shard.list")
    (tar_path,) = make_shards([TableEntry("a", "s", path)], str(tmp_path / "shards"),
                              shard_list)
    with open(shard_list, "w") as handle:
        handle.write(f"pipe:cat {tar_path}\n")
    from_pipe = list(Dataset("shard", shard_list, training_args(), {"s": 0}, whole_utt=True))
    raw = write_raw_list_file(str(tmp_path / "raw.list"),
                              [{"key": "a", "wav": f"cat {path} |", "spk": "s"}])
    from_cmd = list(Dataset("raw", raw, training_args(), {"s": 0}, whole_utt=True))
    expected = sf.read(path, dtype="float32")[0] * 32768
    for samples in (from_pipe, from_cmd):
        assert [s["key"] for s in samples] == ["a"]
        np.testing.assert_array_equal(samples[0]["wav"].numpy(), expected)


_READ_PIPES = """
import sys
from wespeaker_py.audio import open_audio
from wespeaker_py.dataset.shards import iter_shard
from wespeaker_py.dataset.stats import PipelineStats
with open_audio(sys.argv[1]) as handle:
    print(handle.frames)
print([utt.key for utt in iter_shard(sys.argv[2], PipelineStats())])
"""


def test_wav_scp_and_shard_commands_do_not_read_our_stdin(tmp_path):
    # ffmpeg reads its stdin for keys: from a terminal it takes what the user types, and
    # in a background job it stops the run; our stdin here is a pipe nobody writes to
    path = write_audio(str(tmp_path / "a.wav"), random_int16(4000, seed=1))
    (tar_path,) = make_shards([TableEntry("a", "s", path)], str(tmp_path / "shards"),
                              str(tmp_path / "shard.list"))
    reads_stdin = "head -c 1 > /dev/null; cat"
    our_stdin, held_open = os.pipe()
    try:
        done = subprocess.run([sys.executable, "-c", _READ_PIPES, f"{reads_stdin} {path} |",
                               f"pipe:{reads_stdin} {tar_path}"],
                              stdin=our_stdin, capture_output=True, text=True, timeout=120)
    finally:
        os.close(held_open)
        os.close(our_stdin)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["4000", "['a']"]


@pytest.mark.parametrize("subtype, sample_bytes", [("PCM_16", 2), ("PCM_24", 3), ("FLOAT", 4)])
def test_pipe_output_shorter_than_its_header_is_sharded_as_read(tmp_path, subtype, sample_bytes):
    path = str(tmp_path / "a.wav")
    sf.write(path, np.random.default_rng(11).uniform(-0.5, 0.5, (2 * RATE, 2)), RATE,
             subtype=subtype)
    samples = sf.read(path, dtype="float64")[0]
    frame_bytes = 2 * sample_bytes
    header = os.path.getsize(path) - samples.shape[0] * frame_bytes
    kept = 20000
    # a streaming writer (sox) whose header promises more frames than it writes
    cmd = f"head -c {header + kept * frame_bytes} {path} |"
    shard_list = str(tmp_path / "shard.list")
    (tar_path,) = make_shards([TableEntry("a", "s", cmd)], str(tmp_path / "shards"), shard_list)
    with tarfile.open(tar_path) as tar:
        member = tar.extractfile("a.wav").read()
    assert sf.info(io.BytesIO(member)).subtype == subtype
    np.testing.assert_array_equal(sf.read(io.BytesIO(member), dtype="float64")[0],
                                  samples[:kept])
    raw = write_raw_list_file(str(tmp_path / "raw.list"), [{"key": "a", "wav": cmd, "spk": "s"}])
    for data_type, data_list in (("shard", shard_list), ("raw", raw)):
        dataset = Dataset(data_type, data_list, training_args(), {"s": 0}, whole_utt=True)
        (got,) = list(dataset)
        np.testing.assert_array_equal(got["wav"].numpy(),
                                      samples[:kept, 0].astype(np.float32) * 32768)
        assert dataset.stats.skipped == {}


def test_repeating_a_list_of_only_bad_files_stops(tmp_path, caplog):
    raw = write_raw_list_file(str(tmp_path / "raw.list"), [
        {"key": f"gone{i}", "wav": str(tmp_path / f"gone{i}.wav"), "spk": "s"} for i in range(3)])
    dataset = Dataset("raw", raw, training_args(sample_num_per_epoch=100, shuffle=True),
                      {"s": 0})
    with caplog.at_level(logging.WARNING, logger="wespeaker_py.dataset"):
        assert list(dataset) == []
    assert dataset.stats.skipped[AudioMissingError.reason] >= 3
    assert "no usable utterance" in caplog.text
    # each bad key is logged once per epoch, however often the list repeats
    assert caplog.text.count("skipping gone0 (missing_file)") == 1
