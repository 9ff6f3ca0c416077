"""Diarizing many recordings (wespeaker_py.diarization.batch): each recording kept as soon as
it is done and a run cut short continued, one RTTM or a folder of them, folders of audio as
input, the RTTM channel field, and the run's summary."""
import json
import os

import numpy as np
import pytest
import soundfile as sf

from tests.diarization_helpers import SR, noise_recordings, speakers_in_turn, whole_recording
from tests.inference_helpers import make_experiment
from tests.tool_helpers import run_cli
from wespeaker_py.diarization import (BatchSummary, DiarizationOptions, Diarizer,
                                      diarize_wav_scp, read_rttm)
from wespeaker_py.diarization.batch import FOLDER_WORK, MANIFEST, WORK_PREFIX, writes_folder
from wespeaker_py.diarization.metrics import score_recordings
from wespeaker_py.diarization.recordings import RecordingInputError, recordings_of
from wespeaker_py.diarization.rttm import format_rttm_line, rttm_channel
from wespeaker_py.diarization.turns import Turn
from wespeaker_py.errors import RunFailedError
from wespeaker_py.utils.paths import OutputNotWritableError
from wespeaker_py.utils.tables import DataFormatError

KEYS = ["rec1", "rec2", "rec3", "rec4"]


class Recorded:
    """An embedding function (two speakers in turn) that records the recordings it embeds,
    and raises ``error`` on the ``fail_at``-th of them."""

    def __init__(self, fail_at=0, error=KeyboardInterrupt):
        self.embedded, self.fail_at, self.error = [], fail_at, error
        self.speakers = speakers_in_turn(2)

    def __call__(self, pieces, name=None):
        self.embedded.append(name)
        if len(self.embedded) == self.fail_at:
            raise self.error("stopped by the test")
        return self.speakers(pieces)


def batch(tmp_path, embed, output, keys=KEYS, **settings):
    """Run the list of ``keys`` (noise recordings made once) into ``output``."""
    wav_scp = tmp_path / "wav.scp"
    if not wav_scp.exists():
        noise_recordings(tmp_path, keys, seconds=4.0)
    diarizer = Diarizer(embed, DiarizationOptions(vad="energy"), whole_recording)
    return diarize_wav_scp(diarizer, str(wav_scp), output, show_progress=False, **settings)


def work_folder(output):
    return os.path.join(os.path.dirname(output), WORK_PREFIX + os.path.basename(output))


# ------------------------------------------------------------------------ resuming a run

@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_a_run_cut_short_keeps_what_it_finished_and_continues_from_there(tmp_path, caplog,
                                                                         error):
    output = str(tmp_path / "out" / "sys.rttm")
    first = Recorded(fail_at=3, error=error)
    with pytest.raises(error):
        batch(tmp_path, first, output, num_speakers=2)
    assert not os.path.exists(output)
    parts = os.listdir(os.path.join(work_folder(output), "parts"))
    assert sorted(parts) == ["rec1.json", "rec2.json"]
    again = Recorded()
    with caplog.at_level("INFO"):
        summary = batch(tmp_path, again, output, num_speakers=2)
    assert again.embedded == ["rec3", "rec4"]            # the finished ones are not redone
    assert f"2 of 4 recordings already diarized in {work_folder(output)}; continuing" in (
        caplog.text)
    assert summary.diarized == 4 and summary.resumed == 2
    assert summary.describe().startswith("4 done (2 from an earlier run), 0 skipped")
    assert list(read_rttm(output)) == KEYS                # in the list's order
    assert not os.path.exists(work_folder(output))        # the merge removed the work
    assert not os.path.exists(work_folder(output) + ".lock")
    # the same as a run never cut short
    whole = str(tmp_path / "whole.rttm")
    batch(tmp_path, Recorded(), whole, num_speakers=2)
    assert open(whole).read() == open(output).read()


def test_a_recording_that_could_not_be_read_is_tried_again(tmp_path):
    output = str(tmp_path / "sys.rttm")
    noise_recordings(tmp_path, KEYS, seconds=4.0)
    good = (tmp_path / "rec2.wav").read_bytes()
    (tmp_path / "rec2.wav").write_bytes(b"not audio")
    with pytest.raises(KeyboardInterrupt):
        batch(tmp_path, Recorded(fail_at=3), output)    # rec1 and rec3 done, rec2 skipped
    (tmp_path / "rec2.wav").write_bytes(good)
    again = Recorded()
    summary = batch(tmp_path, again, output)
    assert again.embedded == ["rec2", "rec4"]
    assert summary.failed == {} and list(read_rttm(output)) == KEYS


@pytest.mark.parametrize("changed", [{"max_speakers": 3}, {"model_identity": {"model": "b"}}])
def test_a_run_of_other_work_starts_over(tmp_path, caplog, changed):
    output = str(tmp_path / "sys.rttm")
    settings = {"max_speakers": 4, "model_identity": {"model": "a"}}
    with pytest.raises(KeyboardInterrupt):
        batch(tmp_path, Recorded(fail_at=3), output, **settings)
    again = Recorded()
    with caplog.at_level("WARNING"):    # what the CLI shows
        summary = batch(tmp_path, again, output, **{**settings, **changed})
    assert again.embedded == KEYS and summary.resumed == 0
    assert f"{work_folder(output)} belongs to other work" in caplog.text
    assert "already diarized" not in caplog.text


def test_the_work_folder_of_an_older_manifest_is_other_work(tmp_path, caplog):
    output = str(tmp_path / "sys.rttm")
    with pytest.raises(KeyboardInterrupt):
        batch(tmp_path, Recorded(fail_at=3), output)
    manifest = os.path.join(work_folder(output), MANIFEST)
    with open(manifest) as handle:
        older = json.load(handle)
    older["recordings"] = {"wav_scp": str(tmp_path / "wav.scp"), "sha256": "0" * 64}
    with open(manifest, "w") as handle:
        json.dump(older, handle)
    again = Recorded()
    with caplog.at_level("WARNING"):
        assert batch(tmp_path, again, output).resumed == 0
    assert again.embedded == KEYS
    assert f"{work_folder(output)} belongs to other work" in caplog.text


def list_of(tmp_path, keys):
    """Write the ``wav.scp`` of ``keys`` (their noise recordings written already)."""
    (tmp_path / "wav.scp").write_text("".join(f"{key} {tmp_path}/{key}.wav\n" for key in keys))


@pytest.mark.parametrize("into", ["sys.rttm", "rttm/"])
def test_a_recording_added_to_the_list_is_diarized_and_the_others_kept(tmp_path, caplog, into):
    output = str(tmp_path / into.rstrip("/")) + ("/" if into.endswith("/") else "")
    noise_recordings(tmp_path, KEYS, seconds=4.0)
    list_of(tmp_path, ["rec1", "rec2", "rec4"])
    with pytest.raises(KeyboardInterrupt):     # one RTTM keeps its work until it is written
        batch(tmp_path, Recorded(fail_at=3), output)
    list_of(tmp_path, KEYS)
    again = Recorded()
    with caplog.at_level("WARNING"):    # what the CLI shows
        summary = batch(tmp_path, again, output)
    assert again.embedded == ["rec3", "rec4"]
    assert summary.diarized == 4 and summary.resumed == 2
    where = work_folder(output) if into == "sys.rttm" else str(tmp_path / "rttm")
    assert (f"2 of 4 recordings already diarized in {where}; continuing with the other 2 "
            f"(2 new or not finished)") in caplog.text
    if into == "sys.rttm":
        assert list(read_rttm(output)) == KEYS          # in the list's order
    else:
        assert sorted(os.listdir(output)) == [FOLDER_WORK] + [f"{key}.rttm" for key in KEYS]


def test_a_recording_whose_audio_changed_is_diarized_again(tmp_path, caplog):
    output = str(tmp_path / "rttm") + "/"
    batch(tmp_path, Recorded(), output)
    rewritten = 0.3 * np.random.default_rng(9).standard_normal(5 * SR)   # another size
    sf.write(tmp_path / "rec2.wav", rewritten.astype(np.float32), SR)
    again = Recorded(fail_at=1)       # stopped while on rec2: its old RTTM is gone already
    with pytest.raises(KeyboardInterrupt):
        batch(tmp_path, again, output)
    assert again.embedded == ["rec2"] and not (tmp_path / "rttm" / "rec2.rttm").exists()
    again = Recorded()
    with caplog.at_level("WARNING"):
        summary = batch(tmp_path, again, output)
    assert again.embedded == ["rec2"] and summary.resumed == 3
    assert "continuing with the other 1 (1 new or not finished)" in caplog.text
    assert (tmp_path / "rttm" / "rec2.rttm").read_text().startswith("SPEAKER rec2 1 ")
    # an audio entry that names other audio is a change too
    caplog.clear()
    (tmp_path / "wav.scp").write_text("".join(
        f"{key} {tmp_path}/{'rec1' if key == 'rec3' else key}.wav\n" for key in KEYS))
    again = Recorded()
    with caplog.at_level("WARNING"):
        batch(tmp_path, again, output)
    assert again.embedded == ["rec3"]
    assert "continuing with the other 1 (1 changed since)" in caplog.text


def test_a_run_stamps_each_recording_once(tmp_path, monkeypatch):
    """One stat per recording, before any is read, serves both deciding what an earlier
    run finished and the part written when it is done."""
    from wespeaker_py.diarization import batch as batch_module
    stamped = []
    stamp = batch_module.file_stamp
    monkeypatch.setattr(batch_module, "file_stamp",
                        lambda path: stamped.append(path) or stamp(path))
    output = str(tmp_path / "rttm") + "/"
    batch(tmp_path, Recorded(), output)
    assert sorted(stamped) == [f"{tmp_path}/{key}.wav" for key in KEYS]   # was each twice
    stamped.clear()
    again = Recorded()
    batch(tmp_path, again, output)          # nothing changed: nothing redone
    assert again.embedded == [] and sorted(stamped) == [f"{tmp_path}/{key}.wav" for key in KEYS]


def test_each_recordings_own_speaker_count_is_kept_with_it(tmp_path, caplog):
    output = str(tmp_path / "rttm") + "/"
    noise_recordings(tmp_path, KEYS, seconds=4.0)
    list_of(tmp_path, ["rec1", "rec2"])
    batch(tmp_path, Recorded(), output, speaker_counts={"rec1": 2, "rec2": 2})
    list_of(tmp_path, KEYS)
    again = Recorded()
    with caplog.at_level("WARNING"):
        summary = batch(tmp_path, again, output,
                        speaker_counts={"rec1": 2, "rec2": 1, "rec3": 2, "rec4": 2})
    assert again.embedded == ["rec2", "rec3", "rec4"] and summary.resumed == 1
    assert (f"1 of 4 recordings already diarized in {tmp_path / 'rttm'}; continuing with "
            f"the other 3 (1 changed since, 2 new or not finished)") in caplog.text
    assert {turn.speaker for turn in read_rttm(str(tmp_path / "rttm" / "rec2.rttm"))["rec2"]} \
        == {"spk0"}


def test_rttms_of_recordings_not_listed_are_left_alone(tmp_path):
    output = str(tmp_path / "rttm") + "/"
    batch(tmp_path, Recorded(), output)
    written = {key: (tmp_path / "rttm" / f"{key}.rttm").read_text() for key in KEYS}
    (tmp_path / "rttm" / "earlier.rttm").write_text("my own\n")
    list_of(tmp_path, ["rec1", "rec2"])
    again = Recorded()
    assert batch(tmp_path, again, output).resumed == 2 and again.embedded == []
    assert (tmp_path / "rttm" / "earlier.rttm").read_text() == "my own\n"
    assert {key: (tmp_path / "rttm" / f"{key}.rttm").read_text() for key in KEYS} == written
    # the whole list again: the unlisted ones' parts were kept, nothing is redone
    list_of(tmp_path, KEYS)
    again = Recorded()
    assert batch(tmp_path, again, output).resumed == 4 and again.embedded == []
    # a listed recording whose RTTM no part of this work backs is still refused
    noise_recordings(tmp_path, ["earlier"], seconds=4.0)
    list_of(tmp_path, KEYS + ["earlier"])
    with pytest.raises(OutputNotWritableError, match="1 RTTM file.* that this work did not "
                                                     "write .*rttm/earlier.rttm"):
        batch(tmp_path, Recorded(), output)
    assert (tmp_path / "rttm" / "earlier.rttm").read_text() == "my own\n"
    again = Recorded()
    assert batch(tmp_path, again, output, overwrite=True).resumed == 4
    assert again.embedded == ["earlier"]


def test_a_second_run_into_the_same_output_is_refused_at_once(tmp_path):
    output = str(tmp_path / "sys.rttm")
    refusals = []

    class Meddling(Recorded):
        def __call__(self, pieces, name=None):
            if name == "rec2":   # while the first run works, a second one starts
                other = Recorded()
                with pytest.raises(RunFailedError) as refused:
                    batch(tmp_path, other, output)
                refusals.append((str(refused.value), other.embedded))
            return super().__call__(pieces, name)
    summary = batch(tmp_path, Meddling(), output)
    [(message, embedded)] = refusals
    assert embedded == []
    assert (f"another diarization into {output} is running (it holds "
            f"{work_folder(output)}.lock)") in message
    assert summary.diarized == 4 and list(read_rttm(output)) == KEYS


def test_a_run_stopped_by_an_error_names_the_recording(tmp_path, caplog):
    wav_scp = noise_recordings(tmp_path, ["recA", "recB"], seconds=6.0)
    calls = []

    def embed(pieces):
        calls.append(len(pieces))
        rows = np.random.default_rng(len(calls)).standard_normal((len(pieces), 8))
        rows[0] = np.nan if len(calls) == 2 else rows[0]   # the second recording's model fails
        return rows
    diarizer = Diarizer(embed, DiarizationOptions(vad="energy"), whole_recording)
    with caplog.at_level("WARNING"), pytest.raises(
            RuntimeError, match=rf"recording recB \({tmp_path}/recB.wav\): the embedding "
                                r"function returned") as raised:
        diarize_wav_scp(diarizer, wav_scp, str(tmp_path / "sys.rttm"), show_progress=False)
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert "recB" not in str(raised.value.__cause__)
    assert ("stopped: the 1 recording(s) diarized so far are kept in "
            f"{work_folder(str(tmp_path / 'sys.rttm'))}") in caplog.text

    def malformed(pieces):                       # an error type built from other arguments
        raise DataFormatError("model.yaml", 3, "no such key")
    diarizer = Diarizer(malformed, DiarizationOptions(vad="energy"), whole_recording)
    with caplog.at_level("ERROR"), pytest.raises(DataFormatError, match="model.yaml:3"):
        diarize_wav_scp(diarizer, wav_scp, str(tmp_path / "other.rttm"), show_progress=False)
    assert f"recording recA ({tmp_path}/recA.wav) failed" in caplog.text


def test_a_run_stopped_by_a_full_disk_counts_only_the_recordings_kept(tmp_path, caplog,
                                                                      monkeypatch):
    import errno

    from wespeaker_py.diarization.batch import BatchWork
    from wespeaker_py.utils.atomic_files import DiskFullError
    wav_scp = noise_recordings(tmp_path, ["recA", "recB", "recC"], seconds=6.0)
    store = BatchWork.store

    def full_at_the_second(self, key, finished, source):
        if key == "recB":
            raise DiskFullError(f"{key}.json", OSError(errno.ENOSPC, "No space left"))
        store(self, key, finished, source)

    monkeypatch.setattr(BatchWork, "store", full_at_the_second)
    diarizer = Diarizer(lambda pieces: np.random.default_rng(0).standard_normal(
        (len(pieces), 8)), DiarizationOptions(vad="energy"), whole_recording)
    output = str(tmp_path / "sys.rttm")
    with caplog.at_level("WARNING"), pytest.raises(DiskFullError):
        diarize_wav_scp(diarizer, wav_scp, output, show_progress=False)
    assert (f"stopped: the 1 recording(s) diarized so far are kept in {work_folder(output)}"
            in caplog.text)
    assert sorted(os.listdir(os.path.join(work_folder(output), "parts"))) == ["recA.json"]


# ---------------------------------------------------------------- a folder of RTTMs

def test_a_folder_output_gets_an_rttm_per_recording_as_each_finishes(tmp_path, caplog):
    output = str(tmp_path / "rttm") + "/"
    assert writes_folder(output) and not writes_folder(str(tmp_path / "sys.rttm"))
    noise_recordings(tmp_path, KEYS, seconds=4.0)
    sf.write(tmp_path / "rec2.wav", np.zeros(2 * SR, np.int16), SR)   # no speech
    with pytest.raises(KeyboardInterrupt):
        batch(tmp_path, Recorded(fail_at=2), output)   # rec1 done, rec2 silent, rec3 stops
    assert sorted(os.listdir(output)) == [FOLDER_WORK, "rec1.rttm", "rec2.rttm"]
    assert os.path.getsize(tmp_path / "rttm" / "rec2.rttm") == 0
    first = (tmp_path / "rttm" / "rec1.rttm").read_text()
    assert first.startswith("SPEAKER rec1 1 ")
    again = Recorded()
    summary = batch(tmp_path, again, output)
    assert again.embedded == ["rec3", "rec4"]
    assert summary.silent == ["rec2"] and summary.resumed == 2
    assert sorted(os.listdir(output)) == [FOLDER_WORK] + [f"{key}.rttm" for key in KEYS]
    assert (tmp_path / "rttm" / "rec1.rttm").read_text() == first
    # the folder keeps its work: a rerun redoes nothing, and writes a removed RTTM again
    os.remove(tmp_path / "rttm" / "rec1.rttm")
    again = Recorded()
    with caplog.at_level("INFO"):
        batch(tmp_path, again, output)
    assert again.embedded == [] and (tmp_path / "rttm" / "rec1.rttm").read_text() == first
    assert f"4 of 4 recordings already diarized in {tmp_path / 'rttm'}; continuing" in (
        caplog.text)


def test_a_folder_output_of_other_work_is_refused_unless_forced(tmp_path):
    output = str(tmp_path / "rttm") + "/"
    batch(tmp_path, Recorded(), output, num_speakers=2)
    before = (tmp_path / "rttm" / "rec1.rttm").read_text()
    other = Recorded()
    with pytest.raises(OutputNotWritableError, match=rf"{tmp_path / 'rttm'} holds the RTTMs of "
                                                     r"other work .*--force"):
        batch(tmp_path, other, output, num_speakers=1)
    assert other.embedded == [] and (tmp_path / "rttm" / "rec1.rttm").read_text() == before
    summary = batch(tmp_path, other, output, num_speakers=1, overwrite=True)
    assert other.embedded == KEYS and summary.resumed == 0
    assert {turn.speaker for turn in read_rttm(str(tmp_path / "rttm" / "rec1.rttm"))["rec1"]} \
        == {"spk0"}
    # RTTMs that no run of this work wrote are not replaced either
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "rec3.rttm").write_text("my own\n")
    with pytest.raises(OutputNotWritableError, match="1 RTTM file.* that this work did not "
                                                     "write .*mine/rec3.rttm"):
        batch(tmp_path, Recorded(), str(tmp_path / "mine"))   # an existing folder
    assert (tmp_path / "mine" / "rec3.rttm").read_text() == "my own\n"


# ------------------------------------------------------------------- folders as input

def write_noise(path, seconds=3.0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    noise = 0.3 * np.random.default_rng(len(str(path))).standard_normal(int(seconds * SR))
    sf.write(path, noise.astype(np.float32), SR)


def test_a_folder_gives_its_audio_at_any_depth_keyed_by_its_path(tmp_path):
    talks = tmp_path / "talks"
    for name in ("a.wav", "sub/b.flac", "sub/deep dir/c.wav", ".hidden/d.wav", "sub/.e.wav"):
        write_noise(talks / name)
    (talks / "sub" / "notes.txt").write_text("not audio\n")
    write_noise(tmp_path / "extra take.wav")
    recordings = recordings_of([str(talks), str(tmp_path / "extra take.wav")])
    assert recordings == {"a": f"{talks}/a.wav", "sub_b": f"{talks}/sub/b.flac",
                          "sub_deep_dir_c": f"{talks}/sub/deep dir/c.wav",
                          "extra_take": f"{tmp_path}/extra take.wav"}
    write_noise(talks / "sub_b.wav")
    with pytest.raises(RecordingInputError, match=rf"{talks}/sub/b.flac and {talks}/sub_b.wav "
                                                  r"are both recording 'sub_b'"):
        recordings_of([str(talks)])
    with pytest.raises(RecordingInputError, match=r"a.wav and .*a.wav are both recording 'a'"):
        recordings_of([str(talks / "a.wav"), str(talks / "a.wav")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordingInputError, match=r"empty: no audio files in it or below"):
        recordings_of([str(tmp_path / "empty")])


def test_a_mapping_of_recordings_runs_like_a_wav_scp(tmp_path):
    noise_recordings(tmp_path, ["x", "y"], seconds=4.0)
    diarizer = Diarizer(Recorded(), DiarizationOptions(vad="energy"), whole_recording)
    mapping = {"y": str(tmp_path / "y.wav"), "x": str(tmp_path / "x.wav")}
    summary = diarize_wav_scp(diarizer, mapping, str(tmp_path / "sys.rttm"),
                              show_progress=False)
    assert summary.diarized == 2 and list(read_rttm(str(tmp_path / "sys.rttm"))) == ["y", "x"]
    with pytest.raises(ValueError, match="recording 'a b': a recording name must be text "
                                         "without whitespace"):
        diarize_wav_scp(diarizer, {"a b": str(tmp_path / "x.wav")}, str(tmp_path / "o.rttm"))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tiny_exp"))
    make_experiment(root, bare=True)
    return root


def test_cli_diarizes_files_and_folders_into_a_folder_of_rttms(tmp_path, tiny_model, capsys):
    write_noise(tmp_path / "in" / "day1" / "a.wav")
    write_noise(tmp_path / "in" / "b.wav")
    write_noise(tmp_path / "solo.wav")
    out = tmp_path / "out"
    common = ["diarize", "--model", tiny_model, "--device", "cpu", "--vad", "energy",
              "--num_speakers", "1"]
    status, _, err = run_cli(capsys, *common, tmp_path / "in", tmp_path / "solo.wav",
                             "-o", f"{out}/")
    assert status == 0, err
    assert "3 done, 0 skipped" in err
    assert sorted(os.listdir(out)) == [FOLDER_WORK, "b.rttm", "day1_a.rttm", "solo.rttm"]
    assert read_rttm(str(out / "day1_a.rttm"))["day1_a"]
    # one file into an existing folder is one recording of a run too
    single = tmp_path / "single"
    single.mkdir()
    status, _, err = run_cli(capsys, *common, tmp_path / "solo.wav", "-o", single)
    assert status == 0 and (single / "solo.rttm").exists(), err
    # several inputs need -o; two of one name are refused before the model loads
    status, _, err = run_cli(capsys, "diarize", "--model", tmp_path / "no_model",
                             tmp_path / "in", tmp_path / "solo.wav")
    assert status == 2 and "give -o FILE.rttm (one RTTM) or -o DIR/" in err
    write_noise(tmp_path / "other" / "b.wav")
    status, _, err = run_cli(capsys, "diarize", "--model", tmp_path / "no_model",
                             tmp_path / "in", tmp_path / "other", "-o", tmp_path / "x.rttm")
    assert status == 2 and "in/b.wav and" in err and "other/b.wav are both recording 'b'" in err


def test_cli_one_file_into_a_folder_draws_its_time_line(tmp_path, tiny_model, capsys,
                                                        monkeypatch):
    write_noise(tmp_path / "solo.wav")
    sf.write(tmp_path / "mute.wav", np.zeros(2 * SR, np.int16), SR)
    out = f"{tmp_path}/out/"
    common = ["diarize", "--model", tiny_model, "--device", "cpu", "--vad", "energy",
              "--num_speakers", "1"]
    status, _, err = run_cli(capsys, *common, tmp_path / "solo.wav", "-o", out,
                             "--plot", tmp_path / "solo.png")
    assert status == 0, err                 # was refused as if several files were given
    assert f"time line in {tmp_path}/solo.png" in err
    assert (tmp_path / "solo.png").read_bytes()[:4] == b"\x89PNG"
    assert read_rttm(f"{out}solo.rttm")["solo"]
    # drawn from the RTTM in the folder: the same turns, over the recording's 3 s; and
    # again when the run finds the recording done by the one before
    from wespeaker_py.diarization import plot
    figures = []
    monkeypatch.setattr(plot, "save_figure", lambda figure, path: figures.append(figure))
    for audio in ("solo", "mute"):
        status, _, err = run_cli(capsys, *common, tmp_path / f"{audio}.wav", "-o", out,
                                 "--plot", tmp_path / f"{audio}.png")
        assert status == 0, err
    solo, mute = [figure.axes[0] for figure in figures]
    assert solo.get_xlim() == pytest.approx((0.0, 3.0)) and not solo.texts
    assert [label.get_text() for label in solo.get_yticklabels()] == ["spk0"]
    assert mute.get_xlim() == pytest.approx((0.0, 2.0))
    assert [text.get_text() for text in mute.texts] == ["no speech"]
    # several recordings still draw nothing: score_diarization --plot_dir draws each
    status, _, err = run_cli(capsys, *common, tmp_path / "solo.wav", tmp_path / "mute.wav",
                             "-o", out, "--plot", tmp_path / "both.png")
    assert status == 2 and "--plot draws one audio file" in err


def test_cli_one_unreadable_file_into_a_folder_fails_before_any_plot(tmp_path, tiny_model,
                                                                     capsys):
    """Even with --max_fail_fraction 1, a lone recording skipped is a run that did nothing:
    it fails (status 1) before the plot, which would have no RTTM to draw."""
    (tmp_path / "bad.wav").write_bytes(b"RIFF, but no audio follows" * 4)
    status, _, err = run_cli(capsys, "diarize", "--model", tiny_model, "--device", "cpu",
                             "--vad", "energy", tmp_path / "bad.wav", "-o", f"{tmp_path}/out/",
                             "--plot", tmp_path / "bad.png", "--max_fail_fraction", "1")
    assert status == 1, err
    assert "nothing done: all recordings of the recordings given were skipped" in err
    assert "Traceback" not in err and "time line" not in err
    assert not (tmp_path / "bad.png").exists() and not (tmp_path / "out" / "bad.rttm").exists()


# ---------------------------------------------------------------------- the RTTM channel

def test_the_rttm_channel_field_is_the_diarized_channel_counted_from_one(tmp_path, tiny_model,
                                                                         capsys):
    assert [rttm_channel(choice) for choice in ("first", "mean", "loudest", 0, 1, 5)] == \
        [1, 1, 1, 1, 2, 6]
    turn = Turn(0.5, 1.75, "spk0")
    assert format_rttm_line("call", turn, 2) == ("SPEAKER call 2 0.500 1.250 <NA> <NA> spk0 "
                                                 "<NA> <NA>")
    noise = 0.3 * np.random.default_rng(0).standard_normal(3 * SR)
    sf.write(tmp_path / "stereo.wav", np.stack([noise, noise[::-1]], axis=1), SR)
    common = ["diarize", "--model", tiny_model, "--device", "cpu", "--vad", "energy",
              "--num_speakers", "1", tmp_path / "stereo.wav"]
    for flags, field in ((["--channel", "1"], "2"), ([], "1"), (["--channel", "mean"], "1")):
        status, out, err = run_cli(capsys, *common, *flags)
        assert status == 0 and out, err
        assert {line.split()[2] for line in out.splitlines()} == {field}, flags
    # a list run writes it too, and the RTTM reads back and scores as before
    (tmp_path / "wav.scp").write_text(f"stereo {tmp_path}/stereo.wav\n")
    status, _, err = run_cli(capsys, "diarize", "--model", tiny_model, "--device", "cpu",
                             "--vad", "energy", "--num_speakers", "1", "--channel", "1",
                             "--wav_scp", tmp_path / "wav.scp", "-o", tmp_path / "sys.rttm")
    assert status == 0, err
    assert {line.split()[2] for line in open(tmp_path / "sys.rttm")} == {"2"}
    system = read_rttm(str(tmp_path / "sys.rttm"))
    assert score_recordings(system, system)[1].der == 0.0


# ------------------------------------------------------------------------- the summary

def test_recordings_short_of_num_speakers_are_listed(tmp_path, caplog):
    wav_scp = noise_recordings(tmp_path, ["long"], seconds=6.0)
    sf.write(tmp_path / "short.wav",
             (0.3 * np.random.default_rng(1).standard_normal(int(1.5 * SR))).astype(np.float32),
             SR)
    with open(wav_scp, "a") as handle:
        handle.write(f"short {tmp_path}/short.wav\n")
    diarizer = Diarizer(speakers_in_turn(2), DiarizationOptions(vad="energy"), whole_recording)
    summary = diarize_wav_scp(diarizer, wav_scp, str(tmp_path / "sys.rttm"),
                              show_progress=False, num_speakers=2)
    assert summary.unmet == ["short"]
    assert ("1 with fewer speakers than num_speakers (too little speech): short"
            in summary.describe())


def test_the_summary_names_the_first_five_of_each_kind():
    summary = BatchSummary(diarized=10, silent=[f"quiet{n}" for n in range(8)],
                           capped=["big"], failed={f"bad{n}": f"why {n}" for n in range(7)})
    summary.reasons["not_audio"] = 7
    text = summary.describe()
    assert "8 without speech (no turns): quiet0, quiet1, quiet2, quiet3, quiet4 (3 more)" in text
    assert "1 with more speakers than max_speakers (capped): big," in text
    assert "7 failed: bad0: why 0; bad1: why 1; bad2: why 2; bad3: why 3; bad4: why 4 (2 more)" \
        in text
    assert "quiet5" not in text and "bad5" not in text


def test_the_capped_recordings_of_a_run_are_named(tmp_path, caplog):
    wav_scp = noise_recordings(tmp_path, ["recA", "recB", "recC"])
    diarizer = Diarizer(speakers_in_turn(4), DiarizationOptions(
        vad="energy", cluster_method="agglomerative"), whole_recording)
    with caplog.at_level("WARNING"):
        summary = diarize_wav_scp(diarizer, wav_scp, str(tmp_path / "sys.rttm"),
                                  show_progress=False, max_speakers=3)
    assert summary.capped == ["recA", "recB", "recC"]
    assert "3 with more speakers than max_speakers (capped): recA, recB, recC" in (
        summary.describe())
    assert "recB: found 4 speakers, more than max_speakers=3" in caplog.text
    relaxed = diarize_wav_scp(diarizer, wav_scp, str(tmp_path / "sys.rttm"),
                              show_progress=False, max_speakers=4)
    assert relaxed.capped == [] and "capped" not in relaxed.describe()
