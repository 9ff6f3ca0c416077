"""A Kaldi folder whose wav.scp lists recordings and whose ``segments`` cuts the utterances
from them: its training lists (``--segments`` of make_raw_list.py / make_shard_list.py, and
stage 2's make_lists.sh), a segment end of -1, the utterances stage 4 expects, QMF's
durations (wav2dur.py --segments, stage 7) and the mini recipe's preparation."""
import os

import numpy as np
import pytest

from dataset_helpers import RATE, random_int16, training_args, write_audio
from recipe_helpers import V2_DIR, run_script
from tool_helpers import run_tool
from wespeaker_py.dataset import Dataset
from wespeaker_py.dataset.lists import (read_raw_list, read_segment_table, read_segments,
                                        segment_durations)
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
                            "after it, or -1 for the end of the recording"),
    ("rec1-b rec1 -0.5 -1", "bad segment [-0.5, -1]: the start must be 0 or more and the end "
                            "after it, or -1 for the end of the recording"),
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


# ---------------------------------------------------------------------------
# Kaldi's segment end -1: to the end of the recording


def write_open_ended(root: str) -> dict:
    """write_segments_folder's folder with rec1-b running from 1.5 s to the end of rec1
    (end -1); return the recordings' samples."""
    recordings = write_segments_folder(root)
    segments = os.path.join(root, "segments")
    text = open(segments).read().replace("rec1-b rec1 1.5 2.125", "rec1-b rec1 1.5 -1")
    open(segments, "w").write(text)
    return recordings


def test_a_segment_ending_in_minus_1_is_read_to_the_end_of_its_recording(tmp_path):
    recordings = write_open_ended(str(tmp_path))
    tables = [str(tmp_path / name) for name in ("wav.scp", "utt2spk")]
    segments = str(tmp_path / "segments")
    assert read_segments(segments)["rec1-b"].end is None
    raw = str(tmp_path / "raw.list")
    run_tool("make_raw_list.py", "--segments", segments, *tables, raw)
    assert '"vad": [[1.5, null]]' in open(raw).read().splitlines()[1]
    expected = expected_samples(recordings)
    expected["rec1-b"] = recordings["rec1"][int(1.5 * RATE):]
    shard_list = str(tmp_path / "shard.list")
    run_tool("make_shard_list.py", "--segments", segments, *tables, str(tmp_path / "shards"),
             shard_list)
    for data_type, data_list in (("raw", raw), ("shard", shard_list)):
        read = read_through_dataset(data_type, data_list)
        for utt, samples in expected.items():
            np.testing.assert_array_equal(read[utt], samples.astype(np.float32),
                                          err_msg=f"{data_type} {utt}")


@pytest.mark.parametrize("end", ["-2", "-0.5"])
def test_a_negative_end_other_than_minus_1_is_refused(tmp_path, end):
    path = tmp_path / "segments"
    path.write_text(f"u1 r1 0 -1\nu2 r1 1.5 {end}\n")
    with pytest.raises(DataFormatError) as caught:
        read_segments(str(path))
    assert str(caught.value) == (f"{path}:2: bad segment [1.5, {end}]: the start must be 0 or "
                                 f"more and the end after it, or -1 for the end of the "
                                 f"recording")


# ---------------------------------------------------------------------------
# QMF's durations (tools/wav2dur.py --segments, score_calibration.sh stage 1)


def test_wav2dur_gives_the_segments_lengths_measuring_only_open_ended_recordings(
        tmp_path, monkeypatch):
    from wespeaker_py.dataset import lists
    write_open_ended(str(tmp_path))
    segments = tmp_path / "segments"
    with open(segments, "a") as out:
        out.write("rec1-c rec1 2.0 -1\n")
    os.remove(tmp_path / "audio" / "rec2.wav")   # its segment's length needs no audio
    measured, measure = [], lists.audio_duration
    monkeypatch.setattr(lists, "audio_duration", lambda wav: measured.append(wav) or measure(wav))
    utt2dur = tmp_path / "utt2dur"
    run_tool("wav2dur.py", "--segments", str(segments), str(tmp_path / "wav.scp"), str(utt2dur))
    assert utt2dur.read_text().splitlines() == [
        "rec1-a 0.7500", "rec1-b 1.0000", "rec2-a 1.2500", "rec1-c 0.5000"]
    assert measured == [str(tmp_path / "audio" / "rec1.wav")]   # once, for both


def test_an_open_ended_segment_starting_past_its_recordings_end_names_its_line(tmp_path):
    write_segments_folder(str(tmp_path))
    segments = tmp_path / "segments"
    with open(segments, "a") as out:
        out.write("rec2-b rec2 2.5 -1\n")
    with pytest.raises(DataFormatError) as caught:
        segment_durations(str(tmp_path / "wav.scp"), str(segments))
    assert str(caught.value) == (f"{segments}:4: utterance 'rec2-b' starts at 2.5 s, at or "
                                 f"past the end of recording 'rec2' (2.500 s)")


# a stand-in python for the stage scripts: real for -c programs and tools/wav2dur.py; the
# extraction writes no embeddings (an empty ark and scp); anything else only logs its call
FAKE_PYTHON = """#!/usr/bin/env bash
echo "python $*" >> "{log}"
if [ "$1" == "-c" ] || [ "$1" == "tools/wav2dur.py" ]; then
  exec {python} "$@"
fi
if [[ " $* " == *" -m wespeaker_py.bin.extract "* ]]; then
  while [ $# -gt 0 ]; do
    [ "$1" == "--embed_ark" ] && : > "$2" && : > "${{2%.ark}}.scp"
    shift
  done
fi
exit 0
"""


def fake_python(tmp_path) -> tuple:
    """``(env, log)``: PATH with :data:`FAKE_PYTHON` first, and the file it logs calls to."""
    import sys
    bin_dir, log = tmp_path / "fakebin", tmp_path / "python.log"
    os.makedirs(bin_dir)
    (bin_dir / "python").write_text(FAKE_PYTHON.format(log=log, python=sys.executable))
    os.chmod(bin_dir / "python", 0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, log


def test_calibration_durations_of_a_set_with_segments_are_its_segments_lengths(tmp_path):
    env, log = fake_python(tmp_path)
    data, exp = tmp_path / "data", tmp_path / "exp"
    os.makedirs(data / "tr")
    write_segments_folder(str(data / "tr"))
    os.makedirs(data / "ev" / "trials")
    (data / "ev" / "trials" / "cali").write_text("rec1-a rec2-a target\n")   # taken as it is
    os.makedirs(exp / "embeddings" / "tr")
    os.makedirs(exp / "scores")
    for name in ("xvector.scp", "spk_xvector.scp"):
        (exp / "embeddings" / "tr" / name).write_text("")
    # the recordings' durations, newer than wav.scp, older than the segments file
    utt2dur = data / "tr" / "utt2dur"
    utt2dur.write_text("rec1 2.5000\nrec2 2.5000\n")
    for age, name in enumerate(("segments", "utt2dur", "wav.scp")):
        os.utime(data / "tr" / name, (1e9 - age, 1e9 - age))
    run_script(V2_DIR, "tools/recipe/score_calibration.sh", "--stage", "1", "--stop_stage", "1",
               "--data", str(data), "--exp_dir", str(exp), "--train_set", "tr",
               "--eval_set", "ev", "--cohort_set", "tr", "--calibration_trial", "cali",
               "--drop_duration", "true", env=env)
    assert utt2dur.read_text() == "rec1-a 0.7500\nrec1-b 0.6250\nrec2-a 1.2500\n"
    assert log.read_text().count("tools/wav2dur.py --segments") == 1


# ---------------------------------------------------------------------------
# stage 4: the utterances extraction expects


def test_extraction_expects_a_segment_sets_utterances_not_its_recordings(tmp_path):
    env, log = fake_python(tmp_path)
    data, exp = tmp_path / "data", tmp_path / "exp"
    os.makedirs(data / "tr")
    write_segments_folder(str(data / "tr"))   # 2 recordings, 3 utterances
    os.makedirs(data / "ev")
    (data / "ev" / "wav.scp").write_text("u1 /a.wav\nu2 /b.wav\n")   # no segments
    os.makedirs(exp / "models")
    (exp / "config.yaml").write_text("num_frms: 200\n")
    (exp / "models" / "avg_model.pt").write_text("model")
    result = run_script(V2_DIR, "tools/recipe/extract_sets.sh", "--exp_dir", str(exp),
                        "--model_path", str(exp / "models" / "avg_model.pt"), "--nj", "1",
                        "--gpus", "[]", "--data_type", "shard", "--data", str(data),
                        "--train_set", "tr", "--eval_set", "ev", env=env)
    calls = [line for line in log.read_text().splitlines() if "wespeaker_py.bin.extract" in line]
    assert [call.split("--expected_utterances ")[1].split()[0] for call in calls] == ["3", "2"]
    assert "3 of 3 utterances were skipped" in result.stderr


# ---------------------------------------------------------------------------
# the mini recipe's stage 1 on a corpus with segments

MINI_SPEAKERS = ["anna", "bert", "cleo", "dave", "emma", "finn"]


def make_segments_corpus(root) -> dict:
    """A corpus of one 2 s recording a speaker (relative wav.scp paths), cut into four
    0.5 s utterances by its segments file; trials over emma and finn. Return the
    segments lines by utterance."""
    from recipe_helpers import write_tone
    lines = {}
    with open(root / "wav.scp", "w") as scp, open(root / "utt2spk", "w") as u2s:
        for index, spk in enumerate(MINI_SPEAKERS):
            write_tone(str(root / "wav" / f"{spk}.flac"), 2.0, 8000, 120 + 40 * index,
                       seed=index)
            scp.write(f"{spk}-rec wav/{spk}.flac\n")
            for i in range(4):
                utt = f"{spk}-{i:03d}"
                lines[utt] = f"{utt} {spk}-rec {0.5 * i} {0.5 * i + 0.5}"
                u2s.write(f"{utt} {spk}\n")
    (root / "segments").write_text("".join(line + "\n" for line in lines.values()))
    (root / "trials").write_text("emma-000 emma-001 target\nemma-000 finn-001 nontarget\n"
                                 "finn-000 finn-001 target\nfinn-000 emma-001 nontarget\n")
    return lines


def test_mini_prepare_carries_a_corpus_segments_into_each_set(tmp_path):
    from recipe_helpers import MINI_DIR, read_table
    corpus, data = tmp_path / "corpus", tmp_path / "prepared"
    os.makedirs(corpus)
    lines = make_segments_corpus(corpus)
    result = run_script(MINI_DIR, "local/prepare_data.sh", "--data_dir", str(corpus),
                        "--data", str(data))
    test_utts = ["emma-000", "emma-001", "finn-000", "finn-001"]
    assert (data / "test" / "segments").read_text() == "".join(
        lines[utt] + "\n" for utt in test_utts)
    assert read_table(data / "test" / "wav.scp") == {
        f"{spk}-rec": [str(corpus / "wav" / f"{spk}.flac")] for spk in ("emma", "finn")}
    assert "train: 20 utterances of 6 speakers" in result.stdout
    for name in ("train", "backend", "test"):   # as stage 2 reads them
        folder = data / name
        entries = read_segment_table(*(str(folder / table)
                                       for table in ("wav.scp", "utt2spk", "segments")))
        assert len(entries) == len(read_table(folder / "utt2spk")) > 0, name
    assert ("stage 12's window LDA and synthetic conversations read wav.scp as utterances; "
            "run the recipe with --stop_stage 11") in result.stderr
