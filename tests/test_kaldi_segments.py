"""Training lists of a Kaldi folder whose wav.scp lists recordings and whose ``segments``
cuts the utterances from them (``--segments`` of make_raw_list.py / make_shard_list.py,
and stage 2's make_lists.sh)."""
import os

import numpy as np
import pytest

from dataset_helpers import RATE, random_int16, training_args, write_audio
from recipe_helpers import V2_DIR, run_script
from tool_helpers import run_tool
from wespeaker_py.dataset import Dataset
from wespeaker_py.dataset.lists import read_raw_list, read_segment_table, read_segments
from wespeaker_py.utils.tables import DataFormatError

# utterance -> (recording, start s, end s, speaker); the spans fall on whole samples
SEGMENTS = {"rec1-a": ("rec1", 0.25, 1.0, "spkA"),
            "rec1-b": ("rec1", 1.5, 2.125, "spkB"),
            "rec2-a": ("rec2", 0.5, 1.75, "spkA")}


def write_segments_folder(root: str) -> dict:
    """Two 2.5 s recordings (wav.scp), SEGMENTS (segments, utt2spk); return the
    recordings' samples by recording."""
    recordings = {name: random_int16(40000, seed=seed) for seed, name in
                  enumerate(("rec1", "rec2"))}
    with open(os.path.join(root, "wav.scp"), "w") as scp:
        for name, samples in recordings.items():
            path = write_audio(os.path.join(root, "audio", f"{name}.wav"), samples)
            scp.write(f"{name} {path}\n")
    with open(os.path.join(root, "segments"), "w") as seg, \
            open(os.path.join(root, "utt2spk"), "w") as u2s:
        for utt, (recording, start, end, spk) in SEGMENTS.items():
            seg.write(f"{utt} {recording} {start} {end}\n")
            u2s.write(f"{utt} {spk}\n")
    return recordings


def expected_samples(recordings: dict) -> dict:
    """Each utterance's samples: its span of its recording."""
    return {utt: recordings[recording][int(start * RATE):int(end * RATE)]
            for utt, (recording, start, end, _) in SEGMENTS.items()}


def read_through_dataset(data_type: str, data_list: str) -> dict:
    """``key -> samples`` of a list as the dataset reads whole utterances."""
    dataset = Dataset(data_type, data_list, training_args(), None, whole_utt=True)
    return {sample["key"]: sample["wav"].numpy() for sample in dataset}


def assert_segments_read(data_type: str, data_list: str, recordings: dict) -> None:
    read = read_through_dataset(data_type, data_list)
    expected = expected_samples(recordings)
    assert sorted(read) == sorted(expected)
    for utt, samples in expected.items():
        np.testing.assert_array_equal(read[utt], samples.astype(np.float32), err_msg=utt)


def test_raw_and_shard_lists_with_segments_read_exactly_each_segment(tmp_path):
    recordings = write_segments_folder(str(tmp_path))
    tables = [str(tmp_path / name) for name in ("wav.scp", "utt2spk")]
    segments = str(tmp_path / "segments")
    raw = str(tmp_path / "raw.list")
    run_tool("make_raw_list.py", "--segments", segments, *tables, raw)
    by_key = {utt.key: utt for utt in read_raw_list(raw)}
    assert by_key["rec1-b"].wav == str(tmp_path / "audio" / "rec1.wav")
    assert by_key["rec1-b"].vad == ((1.5, 2.125),) and by_key["rec1-b"].spk == "spkB"
    assert_segments_read("raw", raw, recordings)

    shard_list = str(tmp_path / "shard.list")
    run_tool("make_shard_list.py", "--segments", segments, *tables, str(tmp_path / "shards"),
             shard_list)
    assert_segments_read("shard", shard_list, recordings)


def test_segments_cannot_be_given_with_a_vad_file(tmp_path, capsys):
    write_segments_folder(str(tmp_path))
    segments = str(tmp_path / "segments")
    with pytest.raises(SystemExit):
        run_tool("make_raw_list.py", "--segments", segments, "--vad_file", segments,
                 str(tmp_path / "wav.scp"), str(tmp_path / "utt2spk"), str(tmp_path / "r"))
    assert "not allowed with argument --segments" in capsys.readouterr().err


@pytest.mark.parametrize("line, reason", [
    ("rec1-b rec9 1.5 2.125", "recording 'rec9' of utterance 'rec1-b' is not in {wav_scp}"),
    ("rec1-b rec1 2.0 2.0", "bad segment [2.0, 2.0]: the start must be 0 or more and the end "
                            "after it"),
    ("rec1-b rec1 2.0", "expected at least 4 fields, got 3: 'rec1-b rec1 2.0'"),
])
def test_a_bad_segment_is_an_error_naming_file_and_line(tmp_path, line, reason):
    write_segments_folder(str(tmp_path))
    segments, wav_scp = str(tmp_path / "segments"), str(tmp_path / "wav.scp")
    lines = open(segments).read().splitlines()
    lines[1] = line
    open(segments, "w").write("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as caught:
        read_segment_table(wav_scp, str(tmp_path / "utt2spk"), segments)
    assert str(caught.value) == f"{segments}:2: {reason.format(wav_scp=wav_scp)}"


def test_an_utterance_without_a_segment_is_an_error_naming_utt2spk_and_line(tmp_path, caplog):
    write_segments_folder(str(tmp_path))
    utt2spk, segments = str(tmp_path / "utt2spk"), str(tmp_path / "segments")
    with open(utt2spk, "a") as u2s:
        u2s.write("rec2-b spkB\n")
    with pytest.raises(DataFormatError, match=f"^{utt2spk}:4: utterance 'rec2-b' is not in "
                                              f"{segments}$"):
        read_segment_table(str(tmp_path / "wav.scp"), utt2spk, segments)
    # a segment of no utterance of utt2spk is left out, with a warning
    open(utt2spk, "w").write("rec1-a spkA\nrec2-a spkA\n")
    with caplog.at_level("WARNING"):
        entries = read_segment_table(str(tmp_path / "wav.scp"), utt2spk, segments)
    assert [entry.key for entry in entries] == ["rec1-a", "rec2-a"]
    assert f"1 of the 3 utterances of {segments} are not in {utt2spk}" in caplog.text


def test_a_segment_given_twice_names_both_lines(tmp_path):
    path = tmp_path / "segments"
    path.write_text("u1 r1 0 1\nu2 r1 1 2\nu1 r1 2 3\n")
    with pytest.raises(DataFormatError, match=f"^{path}:3: duplicate segment 'u1', already on "
                                              f"line 1$"):
        read_segments(str(path))


@pytest.mark.parametrize("tool, outputs", [("make_raw_list.py", ["raw.list"]),
                                           ("make_shard_list.py", ["shards", "shard.list"])])
def test_without_segments_the_error_says_wav_scp_lists_recordings(
        tmp_path, capsys, tool, outputs):
    write_segments_folder(str(tmp_path))
    wav_scp, segments = str(tmp_path / "wav.scp"), str(tmp_path / "segments")
    with pytest.raises(SystemExit):
        run_tool(tool, wav_scp, str(tmp_path / "utt2spk"),
                 *(str(tmp_path / name) for name in outputs))
    assert (f"utterance 'rec1-a' is not in {wav_scp}; {wav_scp} lists recordings, and "
            f"{segments} cuts the utterances from them: give --segments {segments}"
            in capsys.readouterr().err)


@pytest.mark.parametrize("data_type", ["raw", "shard"])
def test_stage_2_lists_a_set_with_segments_by_its_segments(tmp_path, data_type):
    data = tmp_path / "data"
    os.makedirs(data / "s1")
    recordings = write_segments_folder(str(data / "s1"))
    run_script(V2_DIR, "tools/recipe/make_lists.sh", "--data", str(data), "--sets", "s1",
               "--data_type", data_type, "--num_threads", "1")
    assert_segments_read(data_type, str(data / "s1" / f"{data_type}.list"), recordings)
