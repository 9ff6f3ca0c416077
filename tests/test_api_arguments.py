"""API arguments and their messages: load_model's num_threads, the cause of a calibration
whose audio was all skipped, and embed_many on any iterable."""
import importlib.util
import logging
import os

import numpy as np
import pytest
import torch

import wespeaker_py
from api_helpers import MINI_CORPUS, mini_speech, wespeaker_folder
from wespeaker_py.api import loading
from wespeaker_py.api.calibration import TooFewTrialsError
from wespeaker_py.errors import ModelSourceError, WespeakerError

HAVE_ONNX = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx / onnxruntime not installed")
BAD_THREADS = [0, -1, 2.5, "2", True]


@pytest.fixture(scope="module")
def xvec(tmp_path_factory):
    folder, _ = wespeaker_folder(str(tmp_path_factory.mktemp("xvec")))
    return wespeaker_py.load_model(folder, device="cpu"), folder


@pytest.fixture(scope="module")
def graph(xvec, tmp_path_factory):
    from wespeaker_py.api.exporting import export_waveform_graph
    path = str(tmp_path_factory.mktemp("onnx") / "model.onnx")
    export_waveform_graph(xvec[0], path)
    return path


@pytest.fixture
def torch_threads():
    """Set torch's thread count for a test, and put the one before it back afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("value", BAD_THREADS)
def test_num_threads_that_is_no_whole_number_of_at_least_one_is_refused(xvec, value):
    with pytest.raises(WespeakerError, match=r"num_threads must be a whole number >= 1.*got"):
        wespeaker_py.load_model(xvec[1], device="cpu", num_threads=value)


@needs_onnx
@pytest.mark.parametrize("value", BAD_THREADS)
def test_a_bad_num_threads_for_an_onnx_model_blames_the_argument_not_the_file(graph, value):
    with pytest.raises(WespeakerError) as refused:
        wespeaker_py.load_model(graph, num_threads=value)
    assert "num_threads must be a whole number >= 1" in str(refused.value)
    assert "not a readable ONNX model" not in str(refused.value)


@needs_onnx
def test_an_onnx_model_takes_a_whole_num_threads(graph, xvec):
    model = wespeaker_py.load_model(graph, num_threads=np.int64(1))
    assert model.embed_dim == xvec[0].embed_dim


def test_session_options_refuse_a_thread_count_below_one():
    onnxruntime = pytest.importorskip("onnxruntime")
    from wespeaker_py.utils.onnx_session import session_options
    assert session_options(onnxruntime, 2).intra_op_num_threads == 2
    for value in (0, -3):
        with pytest.raises(ValueError, match="num_threads must be a whole number >= 1"):
            session_options(onnxruntime, value)


def test_num_threads_for_a_torch_model_warns_once_when_torch_uses_another_count(
        xvec, torch_threads, monkeypatch, caplog):
    monkeypatch.setattr(loading, "_torch_threads_warned", False)
    torch_threads(1)
    with caplog.at_level(logging.WARNING):   # what torch uses already: nothing to say
        wespeaker_py.load_model(xvec[1], device="cpu", num_threads=1)
    assert "num_threads" not in caplog.text
    torch_threads(2)
    with caplog.at_level(logging.WARNING):
        wespeaker_py.load_model(xvec[1], device="cpu", num_threads=1)
        wespeaker_py.load_model(xvec[1], device="cpu", num_threads=1)
    warned = [record.getMessage() for record in caplog.records
              if "num_threads=1 applies to ONNX models only" in record.getMessage()]
    assert len(warned) == 1, caplog.text
    assert "torch.set_num_threads(1)" in warned[0]
    assert torch.get_num_threads() == 2   # a load does not change the process's count


def _raising(error):
    """A stand-in for OnnxBackend that raises ``error``."""
    def backend(*_args, **_kwargs):
        raise error
    return backend


@needs_onnx
def test_only_onnxruntimes_load_errors_read_as_an_unreadable_model(tmp_path, monkeypatch):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    from wespeaker_py.api import backends
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07")
    monkeypatch.setattr(backends, "OnnxBackend", _raising(Fail("cannot load the graph")))
    with pytest.raises(ModelSourceError, match=r"model.onnx: not a readable ONNX model "
                                               r"\(cannot load the graph\)"):
        wespeaker_py.load_model(str(path))
    # a fault of the package's own, not of the file, is not hidden behind that message
    monkeypatch.setattr(backends, "OnnxBackend", _raising(TypeError("a bug of the caller")))
    with pytest.raises(TypeError, match="a bug of the caller"):
        wespeaker_py.load_model(str(path))


def _corpus_trials(folder, per_class=10):
    """``folder/trials`` (the mini corpus's first ``per_class`` target and nontarget
    trials) and ``folder/wav.scp`` (their utterances, with the corpus's relative paths)."""
    with open(os.path.join(MINI_CORPUS, "trials")) as source:
        lines = source.readlines()
    chosen = [line for line in lines if line.split()[2] == "target"][:per_class] + \
        [line for line in lines if line.split()[2] == "nontarget"][:per_class]
    (folder / "trials").write_text("".join(chosen))
    needed = {key for line in chosen for key in line.split()[:2]}
    with open(os.path.join(MINI_CORPUS, "wav.scp")) as source:
        entries = [line for line in source if line.split()[0] in needed]
    (folder / "wav.scp").write_text("".join(entries))
    return str(folder / "trials"), str(folder / "wav.scp"), len(entries)


def test_a_calibration_whose_audio_was_all_skipped_says_why(xvec, tmp_path, monkeypatch):
    trials, wav_scp, num_utts = _corpus_trials(tmp_path)
    monkeypatch.chdir(tmp_path)   # the corpus's relative paths are not found from here
    with pytest.raises(TooFewTrialsError) as refused:
        xvec[0].calibrate(trials, wav_scp, output=str(tmp_path / "cal.json"), progress=False)
    message = str(refused.value)
    assert "0 target and 0 nontarget trial(s)" in message
    assert "20 of its 10 target and 10 nontarget trial(s) were left out" in message
    assert f"{num_utts} of the trials' {num_utts} utterance(s) (from {wav_scp}) were " \
           f"skipped ({num_utts} missing_file; the first: " in message
    assert f"relative paths in a wav.scp are read from the current folder, {tmp_path}" \
        in message
    assert not (tmp_path / "cal.json").exists()


def test_embed_many_takes_a_generator(xvec, caplog):
    model = xvec[0]
    speech = mini_speech(2)
    with caplog.at_level(logging.INFO):
        results = model.embed_many((path for path in speech + speech[:1]), progress=False)
    assert list(results.embeddings) == speech
    assert "1 paths were listed more than once" in caplog.text
    listed = model.embed_many(speech, progress=False)
    for path in speech:
        np.testing.assert_array_equal(results.embeddings[path], listed.embeddings[path])


def test_embed_many_refuses_items_that_are_no_collection(xvec):
    with pytest.raises(WespeakerError, match="embed_many's items must be .* got int"):
        xvec[0].embed_many(5, progress=False)


def test_embed_many_refuses_bytes_and_one_recording_given_as_the_list(xvec):
    model = xvec[0]
    with pytest.raises(WespeakerError, match=r"got bytes \(its bytes would each be an item\)"):
        model.embed_many(b"data/wav.scp", progress=False)
    samples = np.zeros(16000, np.float32)
    for one in (samples, torch.from_numpy(samples)):
        with pytest.raises(WespeakerError, match=rf"one 1-D {type(one).__name__} of 16000 "
                           r"values.*pass \[array\] to embed one recording"):
            model.embed_many(one, sample_rate=16000, progress=False)


def test_a_calibration_that_lost_some_trials_warns_with_counts_and_no_folder_note(
        xvec, tmp_path, monkeypatch, caplog):
    trials, wav_scp, num_utts = _corpus_trials(tmp_path, per_class=14)
    monkeypatch.chdir(MINI_CORPUS)   # where the corpus's relative paths are found
    uses = {}
    for key in (key for line in open(trials) for key in line.split()[:2]):
        uses[key] = uses.get(key, 0) + 1
    lost_key, lost = min(uses.items(), key=lambda item: item[1])   # the fewest trials lost
    entries = [f"{lost_key} wav/not_there.flac" if line.split()[0] == lost_key else line
               for line in open(wav_scp).read().splitlines()]
    (tmp_path / "wav.scp").write_text("\n".join(entries) + "\n")
    with caplog.at_level(logging.WARNING):
        xvec[0].calibrate(trials, wav_scp, output=str(tmp_path / "cal.json"), progress=False)
    assert (tmp_path / "cal.json").exists()
    assert f"{lost} of its 14 target and 14 nontarget trial(s) were left out" in caplog.text
    assert f"1 of the trials' {num_utts} utterance(s) (from {wav_scp}) were skipped " \
           f"(1 missing_file; the first: {lost_key}: " in caplog.text
    assert "relative paths in a wav.scp" not in caplog.text
