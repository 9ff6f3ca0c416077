"""One check of a thread count (utils.threads.check_num_threads) for load_model, onnxruntime's
session options and using_threads; load_model's warning for a torch model compares with
torch's own count exactly, and the CLI gives a torch model no num_threads to warn about."""
import logging

import numpy as np
import pytest
import torch

import wespeaker_py
from api_helpers import mini_speech, wespeaker_folder
from tool_helpers import run_cli
from wespeaker_py.api import loading
from wespeaker_py.errors import WespeakerError
from wespeaker_py.utils.threads import available_cores, check_num_threads, using_threads

WARNING = "applies to ONNX models only"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return wespeaker_folder(str(tmp_path_factory.mktemp("xvec")))[0]


@pytest.fixture
def torch_threads(monkeypatch):
    """Set torch's thread count for a test (put back afterwards), with load_model's
    once-per-process warning not yet given."""
    monkeypatch.setattr(loading, "_torch_threads_warned", False)
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_a_whole_number_of_at_least_one_is_taken_as_an_int():
    assert check_num_threads(None) is None
    for value in (1, 3, np.int64(2), np.int32(5)):
        checked = check_num_threads(value)
        assert checked == value and type(checked) is int


@pytest.mark.parametrize("value", [0, -2, np.int64(0), 2.0, "2", True, np.float32(2)])
def test_anything_else_is_refused_naming_the_argument(value):
    with pytest.raises(ValueError, match=r"^--threads must be a whole number >= 1 or None, "
                                         r"got "):
        check_num_threads(value, "--threads")


def test_using_threads_takes_a_numpy_count_and_refuses_zero():
    with using_threads(np.int64(1)) as count:
        assert count == 1 and type(count) is int
        assert torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="num_threads must be a whole number >= 1"):
        with using_threads(0):
            pass


def test_session_options_take_a_numpy_count():
    onnxruntime = pytest.importorskip("onnxruntime")
    from wespeaker_py.utils.onnx_session import session_options
    assert session_options(onnxruntime, np.int64(3)).intra_op_num_threads == 3
    with pytest.raises(ValueError, match="num_threads must be a whole number >= 1"):
        session_options(onnxruntime, 1.0)


def test_load_model_refuses_a_bad_count_as_its_own_error(folder):
    with pytest.raises(WespeakerError, match="num_threads must be a whole number >= 1"):
        wespeaker_py.load_model(folder, device="cpu", num_threads=np.float64(2))


def test_a_torch_model_warns_when_num_threads_differs_even_above_the_core_count(
        folder, torch_threads, caplog):
    cores = available_cores()
    torch_threads(cores)
    with caplog.at_level(logging.WARNING):
        wespeaker_py.load_model(folder, device="cpu", num_threads=cores)
    assert WARNING not in caplog.text   # what torch uses already
    with caplog.at_level(logging.WARNING):
        wespeaker_py.load_model(folder, device="cpu", num_threads=cores + 2)
    assert f"num_threads={cores + 2} {WARNING}" in caplog.text
    assert torch.get_num_threads() == cores


def test_the_cli_gives_a_torch_model_no_num_threads_to_warn_about(
        folder, torch_threads, capsys, caplog):
    threads = available_cores() + 2   # more than the cores, as torch's import would cap it
    torch_threads(1)
    speech = mini_speech(2)
    with caplog.at_level(logging.WARNING):
        status, out, err = run_cli(capsys, "verify", "--model", folder, "--device", "cpu",
                                   "--num_threads", threads, speech[0], speech[1], "--json")
    assert status == 0, err
    assert WARNING not in caplog.text and WARNING not in err
    assert torch.get_num_threads() == 1   # the command put torch's count back
