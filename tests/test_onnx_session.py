"""The one onnxruntime session opener: options, a missing package, and its fork guard."""
import json
import re
import subprocess
import sys
import textwrap
import types

import pytest

from wespeaker_py.errors import MissingPackagesError, WespeakerError
from wespeaker_py.utils import onnx_session

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _identity_graph(path) -> None:
    from onnx import TensorProto, helper
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.save(model, str(path))


def test_a_session_runs_on_the_cpu_with_the_threads_asked_for(tmp_path):
    import numpy as np
    path = tmp_path / "identity.onnx"
    _identity_graph(path)
    session = onnx_session.open_onnx_session(str(path), num_threads=2)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().intra_op_num_threads == 2
    given = np.array([1.5, -2.0], dtype=np.float32)
    assert np.array_equal(session.run(None, {"x": given})[0], given)


def test_a_missing_onnxruntime_names_the_feature_and_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingPackagesError, match="the Silero VAD needs the package "
                                                   "onnxruntime: pip install x") as caught:
        onnx_session.open_onnx_session("any.onnx", purpose="the Silero VAD",
                                       install="pip install x")
    assert isinstance(caught.value, (WespeakerError, ImportError))


# A child process (not this one: the test suite's conftest registers the same guard) holds
# garbage in a reference cycle, forks, and the child collects; the finaliser reports where
# it ran (the child writes "child"; the parent prints where it freed it, or "none"). Once a
# session has been opened, the cycle is freed in the parent, before the fork.
_FORK_SCRIPT = textwrap.dedent("""
    import gc, os, sys
    from wespeaker_py.utils.onnx_session import open_onnx_session
    if sys.argv[2] == "open":
        open_onnx_session(sys.argv[1])
    gc.disable()
    freed_in = []

    class Garbage:
        def __del__(self):
            freed_in.append("parent" if os.getpid() == parent else "child")
            if os.getpid() != parent:
                os.write(1, b"child\\n")

    parent = os.getpid()
    garbage = Garbage()
    garbage.itself = garbage
    del garbage
    pid = os.fork()
    if pid == 0:
        gc.collect()
        os._exit(0)
    os.waitpid(pid, 0)
    print(",".join(freed_in) or "none")
""")


@pytest.mark.parametrize("opened, freed_in", [("open", ["parent"]),
                                              ("none", ["child", "none"])])
def test_after_a_session_is_opened_garbage_is_collected_before_a_fork(tmp_path, opened,
                                                                      freed_in):
    path = tmp_path / "identity.onnx"
    _identity_graph(path)
    run = subprocess.run([sys.executable, "-c", _FORK_SCRIPT, str(path), opened],
                         capture_output=True, text=True, timeout=120, check=True)
    assert run.stdout.split() == freed_in


def test_only_load_and_parse_errors_count_as_a_file_onnxruntime_cannot_load(tmp_path):
    from onnxruntime.capi import onnxruntime_pybind11_state as state
    errors = onnx_session.onnxruntime_errors()
    assert state.InvalidProtobuf in errors and state.NoSuchFile in errors
    # failures of a run or of a provider (out of memory included) say nothing of the file
    assert state.RuntimeException not in errors and state.EPFail not in errors
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07 not a graph")
    with pytest.raises(errors):
        onnx_session.open_onnx_session(str(garbage))


def test_an_onnxruntime_without_some_error_classes_gives_those_it_has(monkeypatch):
    state = types.ModuleType("onnxruntime.capi.onnxruntime_pybind11_state")
    state.Fail = type("Fail", (Exception,), {})
    state.InvalidGraph = "not a class"
    monkeypatch.setitem(sys.modules, state.__name__, state)
    assert onnx_session.onnxruntime_errors() == (state.Fail,)


class _Session:
    """What read_waveform_onnx_info reads of an onnxruntime session: metadata and inputs."""

    def __init__(self, info):
        from wespeaker_py.export import metadata
        self.props = {metadata.KIND_KEY: metadata.WAVEFORM_KIND,
                      metadata.INFO_KEY: json.dumps(info)}

    def get_modelmeta(self):
        return types.SimpleNamespace(custom_metadata_map=self.props)

    def get_inputs(self):
        return [types.SimpleNamespace(name="wavs")]


COUNTS = {"sample_rate": 16000, "embed_dim": 256, "min_samples": 400}


@pytest.mark.parametrize("key, value, problem", [
    ("sample_rate", None, "has no 'sample_rate'"),
    ("embed_dim", "256", "records embed_dim='256', not a whole number >= 1"),
    ("min_samples", 0, "records min_samples=0, not a whole number >= 1")])
def test_a_waveform_graph_without_a_count_it_needs_is_refused_naming_file_and_key(
        tmp_path, monkeypatch, key, value, problem):
    import wespeaker_py
    from wespeaker_py.api import backends
    from wespeaker_py.errors import ModelSourceError
    info = {name: count for name, count in COUNTS.items() if name != key or value is not None}
    if value is not None:
        info[key] = value
    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    monkeypatch.setattr(backends, "open_onnx_session", lambda *_args, **_kw: _Session(info))
    with pytest.raises(ModelSourceError, match=f"^{re.escape(str(path))}: the ONNX metadata "
                                               f"'wespeaker_py_info' of this waveform graph "
                                               f"{problem}; export the model again"):
        wespeaker_py.load_model(str(path))


def test_a_waveform_graph_with_its_counts_gives_its_metadata():
    from wespeaker_py.export.waveform_onnx import read_waveform_onnx_info
    assert read_waveform_onnx_info(_Session(dict(COUNTS, model="XVEC")), "m.onnx") == \
        dict(COUNTS, model="XVEC")
