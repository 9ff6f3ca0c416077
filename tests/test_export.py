"""TorchScript and ONNX export (fbank and TFMel models): outputs equal the eager model, RepVGG
deploy form, clear errors."""
import importlib.util
import json
import logging
import os
import re
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn as nn
import yaml

import wespeaker_py
from inference_helpers import FEAT_DIM, make_experiment, randomise_batchnorm, write_wav
from wespeaker_py.bin.export_jit import main as export_jit_main
from wespeaker_py.bin.export_onnx import main as export_onnx_main
from wespeaker_py.cli.common import run_main
from wespeaker_py.cli.main import main as cli_main
from wespeaker_py.export import (ExportMismatchError, check_against_eager, export_onnx,
                                 export_torchscript, exportable_model, load_exportable_embedder)
from wespeaker_py.export import onnx_export, waveform_onnx
from wespeaker_py.export import checks
from wespeaker_py.export.checks import output_held_back
from wespeaker_py.export.metadata import TORCHSCRIPT_INFO_FILE, model_info, read_onnx_info
from wespeaker_py.config import load_model_config
from wespeaker_py.frontend.factory import build_frontend
from wespeaker_py.frontend.features import FbankFeatures
from wespeaker_py.runtime.batching import min_valid_frames
from wespeaker_py.models import get_model, repvgg
from wespeaker_py.utils.tables import DataFormatError

HAVE_ONNX = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx / onnxruntime not installed")
# shapes the exporters do not check themselves (they use (1,200), (3,123), (2,301))
NEW_SHAPES = ((2, 77), (4, 250))
REDIMNET2_CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "conf",
                              "redimnet2.yaml")


@pytest.fixture(scope="module")
def xvector(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("exp"))
    config_path, checkpoint, network = make_experiment(root)
    return config_path, checkpoint, network


def assert_same_outputs(run, network, shapes=NEW_SHAPES, subtract=0.0):
    for batch, frames in shapes:
        feats = torch.randn(batch, frames, FEAT_DIM)
        with torch.no_grad():
            expected = network(feats) - subtract
            got = run(feats)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_torchscript_export_equals_eager(xvector, tmp_path):
    config_path, checkpoint, network = xvector
    output = str(tmp_path / "final.zip")
    export_jit_main(["--config", config_path, "--checkpoint", checkpoint,
                     "--output_file", output])
    scripted = torch.jit.load(output)
    assert_same_outputs(scripted, network)


def test_quantised_torchscript_copy_stays_close_to_the_float_model(xvector, tmp_path):
    config_path, checkpoint, network = xvector
    quant = str(tmp_path / "final_quant.zip")
    export_jit_main(["--config", config_path, "--checkpoint", checkpoint,
                     "--output_file", str(tmp_path / "final.zip"), "--output_quant_file", quant])
    quantised = torch.jit.load(quant)
    feats = torch.randn(3, 120, FEAT_DIM)
    with torch.no_grad():
        similarity = nn.functional.cosine_similarity(quantised(feats), network(feats))
    assert similarity.min() > 0.98


def test_quantised_copy_on_a_torch_without_eager_quantisation_names_the_flag(
        xvector, tmp_path, monkeypatch):
    # torch has announced the removal of torch.ao.quantization's eager API
    monkeypatch.delattr(torch.ao.quantization, "quantize_dynamic")
    config_path, checkpoint, _ = xvector
    output = tmp_path / "final.zip"
    with pytest.raises(RuntimeError, match="quantize_dynamic.*--output_quant_file"):
        export_jit_main(["--config", config_path, "--checkpoint", checkpoint,
                         "--output_file", str(output),
                         "--output_quant_file", str(tmp_path / "final_quant.zip")])
    assert not output.exists() and not (tmp_path / "final_quant.zip").exists()


def _tiny_repvgg(feat_dim=80, embed_dim=256, pooling_func="TSTP", deploy=False, use_se=False):
    return repvgg.RepVGG(block="RepVGG", num_blocks=(1, 2, 1, 1), strides=(1, 1, 2, 2, 2),
                         base_width=8, width_multiplier=(1, 1, 1, 1), deploy=deploy,
                         use_se=use_se, pooling_func=pooling_func, feat_dim=feat_dim,
                         embed_dim=embed_dim)


def _calibrate_batchnorm(model):
    """Running statistics from a few batches, as training would leave them."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 60, FEAT_DIM))


def test_repvgg_is_exported_in_deploy_form_computing_the_trained_function(monkeypatch,
                                                                          tmp_path):
    monkeypatch.setitem(repvgg.MODELS, "REPVGG_TEST_TINY", _tiny_repvgg)
    config_path, checkpoint, network = make_experiment(
        str(tmp_path), model="REPVGG_TEST_TINY", model_args={"feat_dim": FEAT_DIM,
                                                             "embed_dim": 8},
        calibrate=_calibrate_batchnorm)
    assert any("rbr_dense" in name for name in network.state_dict())
    model, feat_dim = exportable_model(
        load_exportable_embedder(load_model_config(config_path), checkpoint), checkpoint)
    output = str(tmp_path / "repvgg.zip")
    export_torchscript(model, feat_dim, output)
    exported = torch.jit.load(output)
    names = [name for name, _ in exported.named_parameters()]
    assert any("rbr_reparam" in name for name in names)
    assert not any("rbr_dense" in name or "rbr_1x1" in name for name in names)
    assert_same_outputs(exported, network)


class LengthBakingModel(nn.Module):
    """Averages the first half of the frames; int() makes a trace keep the traced length."""

    def forward(self, feats):
        half = int(feats.shape[1]) // 2
        return feats[:, :half].mean(dim=1)


class BranchingModel(nn.Module):
    """A Python branch on a tensor's value: tracing warns that the trace "might be
    incorrect"; here the branch is always taken, so the trace is right."""

    def forward(self, feats):
        pooled = feats.mean(dim=1)
        if pooled.abs().sum() >= 0:
            return pooled
        return -pooled


def test_a_trace_the_check_vouches_for_prints_no_tracer_warning(tmp_path):
    # an XI-vector export printed "Converting a tensor to a Python boolean might cause the
    # trace to be incorrect" above its success line
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_torchscript(BranchingModel(), FEAT_DIM, str(tmp_path / "b.zip"), method="trace")
    assert (tmp_path / "b.zip").exists()
    assert [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)] == []


def test_a_trace_that_bakes_in_the_length_is_refused(tmp_path):
    output = tmp_path / "baked.zip"
    with pytest.raises(ExportMismatchError, match="differs from eager"):
        export_torchscript(LengthBakingModel(), FEAT_DIM, str(output), method="trace")
    assert not output.exists()


def test_check_against_eager_reports_shape_and_value_differences():
    model = nn.Linear(FEAT_DIM, 4)

    def mean_model(feats):
        return model(feats).mean(dim=1)

    with pytest.raises(ExportMismatchError, match="differs"):
        check_against_eager(lambda feats: mean_model(feats) + 1e-2, mean_model, FEAT_DIM)
    with pytest.raises(ExportMismatchError, match="shape"):
        check_against_eager(lambda feats: mean_model(feats)[:, :2], mean_model, FEAT_DIM)
    assert check_against_eager(mean_model, mean_model, FEAT_DIM) == 0.0


class Cancelling(nn.Module):
    """``(x + offset) - offset``: float32 loses about ``offset * 6e-8`` of each value, as a
    deep model's rounding piles up; float64 keeps them."""

    def __init__(self, offset):
        super().__init__()
        self.register_buffer("offset", torch.tensor(offset))

    def forward(self, feats):
        return (feats[:, 0] + self.offset) - self.offset


def test_an_export_within_eager_float32s_own_rounding_is_taken_and_a_wrong_one_is_not():
    # ResNet221/293's exports were refused at 7e-4 to 2.6e-3 from eager while eager itself
    # was as far from float64: the rounding, not the export
    eager, exported = Cancelling(1e4), Cancelling(2e4)   # twice the rounding
    assert check_against_eager(exported, eager, FEAT_DIM) > 1e-4
    with pytest.raises(ExportMismatchError, match=r"more than 0.0001 and 4 times eager "
                                                  r"float32's own error \("):
        check_against_eager(lambda feats: exported(feats) * 1.01, eager, FEAT_DIM)
    with pytest.raises(ExportMismatchError, match=r"differs from eager by .* \(> 0.0001\)$"):
        check_against_eager(exported, lambda feats: eager(feats), FEAT_DIM)   # no float64 copy


def _onnx_session(path):
    import onnxruntime
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


@needs_onnx
def test_onnx_export_equals_eager_with_dynamic_batch_and_time(xvector, tmp_path):
    config_path, checkpoint, network = xvector
    output = str(tmp_path / "final.onnx")
    export_onnx_main(["--config", config_path, "--checkpoint", checkpoint,
                      "--output_model", output])
    session = _onnx_session(output)
    (feats_input,), (embs_output,) = session.get_inputs(), session.get_outputs()
    assert feats_input.name == "feats" and embs_output.name == "embs"
    assert isinstance(feats_input.shape[0], str) and isinstance(feats_input.shape[1], str)
    assert_same_outputs(lambda x: torch.from_numpy(session.run(None, {"feats": x.numpy()})[0]),
                        network)


@needs_onnx
def test_onnx_export_with_fixed_frames_subtracts_the_mean_vector(xvector, tmp_path):
    config_path, checkpoint, network = xvector
    mean_vec = np.linspace(-1, 1, 8).astype(np.float32)
    np.save(tmp_path / "mean_vec.npy", mean_vec)
    output = str(tmp_path / "fixed.onnx")
    export_onnx_main(["--config", config_path, "--checkpoint", checkpoint,
                      "--output_model", output, "--num_frames", "150",
                      "--mean_vec", str(tmp_path / "mean_vec.npy")])
    session = _onnx_session(output)
    assert session.get_inputs()[0].shape[1:] == [150, FEAT_DIM]
    assert_same_outputs(lambda x: torch.from_numpy(session.run(None, {"feats": x.numpy()})[0]),
                        network, shapes=((1, 150), (5, 150)), subtract=torch.from_numpy(mean_vec))


@needs_onnx
def test_a_mean_vector_of_another_size_is_named_and_nothing_written(xvector, tmp_path):
    config_path, checkpoint, _ = xvector
    np.save(tmp_path / "mean_vec.npy", np.zeros(5, np.float32))   # the model gives 8
    output = tmp_path / "model.onnx"
    with pytest.raises(DataFormatError, match=r"mean_vec.npy: mean vector has shape \(5,\), "
                                              r"the model's embeddings have 8 values"):
        export_onnx_main(["--config", config_path, "--checkpoint", checkpoint,
                          "--output_model", str(output),
                          "--mean_vec", str(tmp_path / "mean_vec.npy")])
    assert not output.exists()


def test_missing_onnx_packages_give_a_clear_error(xvector, tmp_path, monkeypatch, capsys):
    config_path, checkpoint, network = xvector
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(onnx_export.importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnxruntime"
                        else real_find_spec(name, *args))
    with pytest.raises(ImportError, match="onnxruntime.*pip install onnx onnxruntime"):
        export_onnx(network, FEAT_DIM, str(tmp_path / "x.onnx"))
    assert run_main(export_onnx_main, ["--config", config_path, "--checkpoint", checkpoint,
                                       "--output_model", str(tmp_path / "x.onnx")]) == 2
    assert "pip install onnx onnxruntime" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


@needs_onnx
def test_a_graph_replaced_by_bin_export_onnx_loses_the_earlier_exports_mean_file(
        xvector, tmp_path):
    # `wespeaker-py export` leaves final.mean_vec.npy beside final.onnx; a graph written over
    # it that subtracts --mean_vec inside was then centred twice by a runtime following the docs
    config_path, checkpoint, _ = xvector
    graph, stale = tmp_path / "final.onnx", tmp_path / "final.mean_vec.npy"
    graph.write_bytes(b"an earlier graph")
    np.save(stale, np.ones(8, np.float32))
    mean = tmp_path / "mean.npy"
    np.save(mean, np.full(8, 0.5, np.float32))
    export_onnx_main(["--config", config_path, "--checkpoint", checkpoint, "--output_model",
                      str(graph), "--mean_vec", str(mean)])
    assert graph.read_bytes() != b"an earlier graph" and not stale.exists()


@needs_onnx
@pytest.mark.parametrize("opset, reason", [
    ("99", "must be between 7 and 20 (the opsets the exporter writes), got 99"),
    ("0", "must be between 7 and 20 (the opsets the exporter writes), got 0"),
    ("six", "expected an integer, got 'six'")])
def test_an_opset_the_exporter_cannot_write_is_a_usage_error(xvector, tmp_path, capsys, opset,
                                                             reason):
    # 99 and 0 were tracebacks from deep in torch's exporter (exit 1)
    config_path, checkpoint, _ = xvector
    with pytest.raises(SystemExit) as stop:
        export_onnx_main(["--config", config_path, "--checkpoint", checkpoint,
                          "--output_model", str(tmp_path / "x.onnx"), "--opset_version", opset])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"argument --opset_version/--opset-version: {reason}")
    assert not (tmp_path / "x.onnx").exists()


@needs_onnx
def test_an_operator_the_opset_cannot_express_is_one_line_naming_the_flag(
        xvector, tmp_path, capsys, monkeypatch):
    # CAM++ at opset 11 ended in a traceback of 2,109 lines (torch: "Please try opset 13")
    config_path, checkpoint, _ = xvector

    def refuse(*_, **kwargs):
        raise torch.onnx.OnnxExporterError(f"Unsupported: ONNX export of repeat_interleave "
                                           f"in opset {kwargs['opset_version']}.\nmore")
    monkeypatch.setattr(torch.onnx, "export", refuse)
    assert run_main(export_onnx_main, ["--config", config_path, "--checkpoint", checkpoint,
                                       "--output_model", str(tmp_path / "x.onnx"),
                                       "--opset_version", "11"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].endswith(
        "error: --opset_version: opset 11: Unsupported: ONNX export of repeat_interleave in "
        "opset 11.")
    assert "Traceback" not in err and not (tmp_path / "x.onnx").exists()


@needs_onnx
def test_an_operator_the_opset_cannot_express_prints_no_graph_dump(tmp_path, capfd):
    # torch's exporter printed the traced graph (2,023 lines for this CAM++) on the standard
    # output above the one-line error
    config_path, checkpoint, _ = make_experiment(str(tmp_path), "CAMPPlus",
                                                 {"feat_dim": FEAT_DIM, "embed_dim": 16})
    capfd.readouterr()
    assert run_main(export_onnx_main, ["--config", config_path, "--checkpoint", checkpoint,
                                       "--output_model", str(tmp_path / "x.onnx"),
                                       "--opset_version", "11"]) == 2
    out, err = capfd.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err[:2000]
    assert "error: --opset_version: opset 11: Unsupported: ONNX export of repeat_interleave" in err
    assert not (tmp_path / "x.onnx").exists()


def test_held_back_output_is_passed_on_unless_the_block_fails(capfd):
    with output_held_back():
        os.write(1, b"kept out\n")
        os.write(2, b"kept err\n")
    with pytest.raises(RuntimeError):
        with output_held_back():
            os.write(1, b"dropped out\n")
            os.write(2, b"dropped err\n")
            raise RuntimeError("the export failed")
    assert capfd.readouterr() == ("kept out\n", "kept err\n")


def _open_files():
    """``(device, inode)`` of the files that fds 1 and 2 are open on."""
    return [(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in (1, 2)]


@pytest.fixture
def standard_fds_kept():
    """Puts fds 1 and 2 back after the test, whatever it did to them."""
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    yield
    for fd, copy in saved.items():
        os.dup2(copy, fd)
        os.close(copy)


def test_a_failing_pass_on_restores_both_fds_and_still_writes_the_other(
        capfd, monkeypatch, standard_fds_kept):
    write_all = checks._write_all

    def closed_stdout(fd, data):
        if fd == 1:
            raise BrokenPipeError(32, "Broken pipe")
        write_all(fd, data)
    monkeypatch.setattr(checks, "_write_all", closed_stdout)
    before = _open_files()
    with pytest.raises(BrokenPipeError):
        with output_held_back():
            os.write(1, b"lost out\n")
            os.write(2, b"kept err\n")
    assert _open_files() == before
    os.write(2, b"after\n")
    assert capfd.readouterr() == ("", "kept err\nafter\n")


def test_a_failed_blocks_outputs_are_logged_once_each_after_both_fds_are_restored(
        capfd, caplog, standard_fds_kept):
    # a handler on fd 2 itself (not on pytest's sys.stderr): what it logs while fd 2 is
    # still held back would land in fd 2's output and be logged again inside it
    stream = open(2, "w", closefd=False)
    handler = logging.StreamHandler(stream)
    checks.logger.addHandler(handler)
    caplog.set_level(logging.DEBUG, logger=checks.logger.name)
    before = _open_files()
    try:
        with pytest.raises(RuntimeError):
            with output_held_back():
                os.write(1, b"dropped out\n")
                os.write(2, b"dropped err\n")
                raise RuntimeError("the export failed")
    finally:
        checks.logger.removeHandler(handler)
        stream.close()
    assert _open_files() == before
    assert [record.getMessage() for record in caplog.records] == [
        "output of the failed export (fd 1):\ndropped out\n",
        "output of the failed export (fd 2):\ndropped err\n"]
    assert capfd.readouterr().err == ("output of the failed export (fd 1):\ndropped out\n\n"
                                      "output of the failed export (fd 2):\ndropped err\n\n")


def _onnx_metadata(path):
    """``(kind, info)`` of an exported graph's metadata."""
    import onnx
    return read_onnx_info({entry.key: entry.value for entry in onnx.load(path).metadata_props},
                          path)


def test_onnx_info_is_read_back_and_a_broken_record_is_named():
    assert read_onnx_info({"wespeaker_py_kind": "feature_embedding",
                           "wespeaker_py_info": '{"model": "XVEC"}'}, "m.onnx") == (
        "feature_embedding", {"model": "XVEC"})
    assert read_onnx_info({"producer": "other"}, "m.onnx") == (None, {})
    for info, problem in ((None, "has no 'wespeaker_py_info' entry"),
                          ("{", "'wespeaker_py_info' is not valid JSON"),
                          ("[1]", "'wespeaker_py_info' is a JSON list, not an object")):
        props = {"wespeaker_py_kind": "waveform_embedding"}
        if info is not None:
            props["wespeaker_py_info"] = info
        with pytest.raises(ValueError, match="^m.onnx: ONNX metadata .*" + re.escape(problem)):
            read_onnx_info(props, "m.onnx")


def test_a_graph_without_a_recorded_kind_is_refused_as_such():
    session = SimpleNamespace(
        get_modelmeta=lambda: SimpleNamespace(custom_metadata_map={}),
        get_inputs=lambda: [SimpleNamespace(name="wavs")])
    with pytest.raises(ValueError, match=re.escape(
            "m.onnx is an ONNX model of another kind (no wespeaker_py kind recorded, "
            "inputs ['wavs'])")):
        waveform_onnx.read_waveform_onnx_info(session, "m.onnx")


@needs_onnx
@pytest.mark.parametrize("subtracts", [False, True])
def test_bin_export_onnx_records_the_model_its_config_and_checkpoint_make(xvector, tmp_path,
                                                                          subtracts):
    config_path, checkpoint, network = xvector
    np.save(tmp_path / "mean.npy", np.linspace(-1, 1, 8).astype(np.float32))
    output = str(tmp_path / "final.onnx")
    export_onnx_main(["--config", config_path, "--checkpoint", checkpoint, "--output_model",
                      output] + (["--mean_vec", str(tmp_path / "mean.npy")] if subtracts else []))
    kind, info = _onnx_metadata(output)
    embedder = load_exportable_embedder(load_model_config(config_path), checkpoint)
    assert kind == "feature_embedding"
    assert info == {"model": "XVEC", "sample_rate": 16000, "num_mel_bins": FEAT_DIM,
                    "frame_length": 25, "frame_shift": 10, "cmn": True,
                    "identity": embedder.identity, "frontend": "FbankFeatures",
                    "params_millions": info["params_millions"], "embed_dim": 8,
                    "mean_subtracted": subtracts,
                    "min_frames": min_valid_frames(network, FEAT_DIM, torch.device("cpu"))}
    assert info["params_millions"] == round(sum(p.numel() for p in network.parameters()) / 1e6,
                                            3) > 0


def test_torchscript_files_record_the_model_and_which_copy_they_hold(xvector, tmp_path):
    _, _, network = xvector
    info = model_info("XVEC", FbankFeatures(num_mel_bins=FEAT_DIM), network, "ab" * 32)
    output, quantised = str(tmp_path / "final.zip"), str(tmp_path / "final_quant.zip")
    export_torchscript(network, FEAT_DIM, output, quantised, info=info)
    for path, is_quantised in ((output, False), (quantised, True)):
        extra = {TORCHSCRIPT_INFO_FILE: ""}
        torch.jit.load(path, _extra_files=extra)
        assert json.loads(extra[TORCHSCRIPT_INFO_FILE]) == dict(
            info, embed_dim=8, mean_subtracted=False, quantized=is_quantised,
            min_frames=min_valid_frames(network, FEAT_DIM, torch.device("cpu")))


def test_bin_export_jit_records_the_model_its_config_and_checkpoint_make(xvector, tmp_path):
    config_path, checkpoint, network = xvector
    output = str(tmp_path / "final.zip")
    export_jit_main(["--config", config_path, "--checkpoint", checkpoint,
                     "--output_file", output])
    extra = {TORCHSCRIPT_INFO_FILE: ""}
    torch.jit.load(output, _extra_files=extra)
    info = json.loads(extra[TORCHSCRIPT_INFO_FILE])
    embedder = load_exportable_embedder(load_model_config(config_path), checkpoint)
    assert info == dict(model_info("XVEC", embedder.frontend, network, embedder.identity),
                        embed_dim=8, mean_subtracted=False, quantized=False,
                        min_frames=min_valid_frames(network, FEAT_DIM, torch.device("cpu")))
    assert info["model"] == "XVEC" and info["identity"] == embedder.identity


class RoundedOutput(nn.Module):
    """``model`` with its output passed through ``(y + offset) - offset``: float32 rounds
    every value to a multiple of about ``offset * 1.2e-7`` (a deep model's rounding, made
    big), float64 keeps it."""

    def __init__(self, model, offset):
        super().__init__()
        self.model = model
        self.register_buffer("offset", torch.tensor(offset))

    def forward(self, feats):
        return (self.model(feats) + self.offset) - self.offset


@needs_onnx
def test_a_waveform_graph_within_eager_float32s_own_rounding_is_taken_and_a_wrong_one_is_not(
        xvector, tmp_path, monkeypatch):
    # Gemini_DF_ResNet183/237 with random weights were refused at the fixed tolerance though
    # their graphs were right: the eager path in float32 was as far from float64
    _, _, network = xvector
    features = FbankFeatures(num_mel_bins=FEAT_DIM)
    model = RoundedOutput(network, 1e4).eval()   # eager float32 2e-4 to 5e-4 from float64
    opened = waveform_onnx.open_onnx_session

    def graph_output_changed_by(change):
        def open_session(path):
            session = opened(path)

            def run(names, feed):
                return [change(output) for output in session.run(names, feed)]
            return SimpleNamespace(run=run)
        monkeypatch.setattr(waveform_onnx, "open_onnx_session", open_session)

    graph_output_changed_by(lambda output: output + np.float32(1e-4))
    taken = tmp_path / "taken.onnx"
    worst = waveform_onnx.export_waveform_onnx(features, model, str(taken), {}, 4000,
                                               tolerance=1e-5)
    assert worst == pytest.approx(1e-4, rel=0.01) and taken.exists()
    graph_output_changed_by(lambda output: output * np.float32(1.01))
    refused = tmp_path / "refused.onnx"
    with pytest.raises(ExportMismatchError, match=r"samples: exported output differs from eager "
                                                  r"by 0\.00\d+, more than 1e-05 and 4 times "
                                                  r"eager float32's own error \(0\.000\d+, "
                                                  r"against float64\)$"):
        waveform_onnx.export_waveform_onnx(features, model, str(refused), {}, 4000,
                                           tolerance=1e-5)
    assert not refused.exists()


# A ReDimNet2 narrow enough to export in seconds: WeSpeaker's B0 with C=4 and two one-block
# stages, the 2-D output head of B6, on conf/redimnet2.yaml's 72-bin TFMel front-end.
TINY_REDIMNET2_ARGS = {"feat_dim": 72, "C": 4, "embed_dim": 8, "pooling_func": "ASTP",
                       "stages_setup": [[[2, 1], 1, 2, [[3, 3]], 36],
                                        [[1, 2], 1, 1, [[3, 3]], 18]],
                       "return_2d_output": True, "out_channels": 8}


@pytest.fixture(scope="module")
def tiny_redimnet2(tmp_path_factory):
    """A WeSpeaker-layout ReDimNet2 folder (TFMel state under ``frontend.``), a speech file
    in it and its samples."""
    root = str(tmp_path_factory.mktemp("redimnet2"))
    with open(REDIMNET2_CONF) as handle:
        config = yaml.safe_load(handle)
    config.update(model="ReDimNet2B0", model_args=TINY_REDIMNET2_ARGS)
    with open(os.path.join(root, "config.yaml"), "w") as handle:
        yaml.safe_dump(config, handle)
    torch.manual_seed(0)
    network = get_model("ReDimNet2B0", **TINY_REDIMNET2_ARGS)
    randomise_batchnorm(network)
    state = {f"frontend.{key}": value
             for key, value in build_frontend(config["dataset_args"]).state_dict().items()}
    state.update(network.state_dict())
    state["projection.weight"] = torch.randn(5, TINY_REDIMNET2_ARGS["embed_dim"])
    torch.save(state, os.path.join(root, "avg_model.pt"))
    wav = os.path.join(root, "speech.wav")
    write_wav(wav, 27000, seed=3)
    return root, wav, sf.read(wav, dtype="int16")[0]


@needs_onnx
def test_tfmel_model_exports_its_features_input_graph(tiny_redimnet2, tmp_path):
    folder, _, samples = tiny_redimnet2
    output = str(tmp_path / "redimnet2.onnx")
    export_onnx_main(["--config", f"{folder}/config.yaml", "--checkpoint",
                      f"{folder}/avg_model.pt", "--output_model", output])
    embedder = load_exportable_embedder(load_model_config(f"{folder}/config.yaml"),
                                        f"{folder}/avg_model.pt")
    session = _onnx_session(output)
    assert session.get_inputs()[0].shape[2] == 72
    with torch.no_grad():
        wavs = torch.from_numpy(samples.astype(np.float32)).repeat(2, 1)
        wavs[1] = wavs[1].flip(0)
        feats = embedder.frontend(wavs)
        expected = embedder.model(feats)
    got = torch.from_numpy(session.run(None, {"feats": feats.numpy()})[0])
    torch.testing.assert_close(got, expected, atol=1e-4 * max(1.0, float(expected.abs().max())),
                               rtol=0)


@needs_onnx
def test_tfmel_model_exports_with_its_front_end_and_embeds_as_eager(tiny_redimnet2, tmp_path,
                                                                    capsys):
    folder, wav, _ = tiny_redimnet2
    graph = str(tmp_path / "redimnet2_wav.onnx")
    with pytest.raises(SystemExit) as done:
        cli_main(["export", "--model", folder, "--device", "cpu", "--onnx", graph,
                  "--with_frontend"])
    assert done.value.code == 0, capsys.readouterr().err
    exported = wespeaker_py.load_model(graph)
    assert exported.info()["engine"] == "onnxruntime (CPU)"
    expected = wespeaker_py.load_model(folder, device="cpu").embed(wav)
    got = exported.embed(wav)
    np.testing.assert_allclose(got, expected, rtol=0,
                               atol=1e-4 * max(1.0, float(np.abs(expected).max())))
    # its graph has no band_fill input, and says why narrow-band audio is not filled
    assert not exported.backend.takes_band_fills
    assert (exported.backend.missing_band_fill(8000)
            == "a TFMelFeatures front-end takes no band fill")
