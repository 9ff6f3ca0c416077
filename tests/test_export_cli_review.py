"""The ONNX exports of a loaded model (CAM++ with its front-end, the fbank graph's mean
vector, an interrupted re-export), verify's decision rule, and one-line user errors of the
export and model commands."""
import argparse
import importlib
import importlib.util
import itertools
import json
import os
import pkgutil
import shutil

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

import wespeaker_py
import wespeaker_py.bin
from api_helpers import mini_speech, wespeaker_folder
from wespeaker_py.api import exporting
from wespeaker_py.api.calibration import Calibration, OperatingPoint, save_calibration
from wespeaker_py.bin import convert_checkpoint, export_jit, export_onnx, model_summary, score_norm
from wespeaker_py.cli.common import run_main
from wespeaker_py.cli.main import build_parser
from wespeaker_py.cli.main import main as cli_main
from wespeaker_py.export import waveform_onnx
from wespeaker_py.export.checks import ExportMismatchError
from wespeaker_py.export.metadata import read_onnx_info
from wespeaker_py.frontend.band_fill import BandFill, band_fill_name, split_bins
from wespeaker_py.models import complexity

needs_onnx = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime")),
    reason="onnx / onnxruntime not installed")
TINY_CAMPPLUS = {"feat_dim": 16, "embed_dim": 16}


def run(capsys, main, *argv):
    """Run a command's ``main`` as its console script does; (exit status, stdout, stderr).
    An error that is not a user error escapes as its exception (a traceback)."""
    try:
        status = run_main(main, [str(arg) for arg in argv])
    except SystemExit as stopped:   # wespeaker-py's main exits itself
        status = stopped.code
    out, err = capsys.readouterr()
    return status, out, err


def close(got, expected, scale=1e-3):
    np.testing.assert_allclose(got, expected, rtol=0,
                               atol=scale * max(1.0, float(np.abs(expected).max())))


@pytest.fixture(scope="module")
def speech():
    return mini_speech(2)


@pytest.fixture(scope="module")
def xvec_folder(tmp_path_factory):
    return wespeaker_folder(str(tmp_path_factory.mktemp("xvec") / "model"))[0]


# -- export --with_frontend of CAM++ -----------------------------------------------------------

@needs_onnx
def test_campplus_exports_with_its_front_end_and_embeds_as_torch(tmp_path, speech, capsys):
    folder, _ = wespeaker_folder(str(tmp_path / "campp"), "CAMPPlus", TINY_CAMPPLUS)
    kept, filled = split_bins(16000, 16, 25, 8000)
    weights = np.random.default_rng(3).normal(0.0, 1.0, (kept.size + 1, filled.size))
    BandFill(8000, 16000, 16, kept, filled, weights).save(
        os.path.join(folder, band_fill_name(8000)))
    graph = tmp_path / "campp.onnx"
    status, _, err = run(capsys, cli_main, "export", "--model", folder, "--device", "cpu",
                         "--onnx", graph, "--with_frontend")
    assert status == 0, err
    torch_model = wespeaker_py.load_model(folder, device="cpu")
    exported = wespeaker_py.load_model(str(graph))
    assert list(exported.band_fills()) == [8000]
    close(exported.embed(speech[0]), torch_model.embed(speech[0]))
    narrow = soxr.resample(sf.read(speech[1], dtype="float32")[0], 16000, 8000)
    filled = exported.embed(narrow, sample_rate=8000)   # through the graph's band_fill input
    close(filled, torch_model.embed(narrow, sample_rate=8000))
    os.remove(tmp_path / f"campp.{band_fill_name(8000)}")
    unfilled = wespeaker_py.load_model(str(graph)).embed(narrow, sample_rate=8000)
    assert np.abs(unfilled - filled).max() > 1e-2   # the fill took part


# -- the fbank graph and its mean vector ---------------------------------------------------------

@needs_onnx
def test_the_fbank_graph_leaves_the_mean_vector_beside_it(xvec_folder, tmp_path, speech, capsys):
    import onnxruntime
    folder = str(tmp_path / "model")
    shutil.copytree(xvec_folder, folder)
    mean = np.linspace(-1, 1, 8, dtype=np.float32)
    np.save(os.path.join(folder, "mean_vec.npy"), mean)
    graph = tmp_path / "out" / "feats.onnx"
    os.makedirs(graph.parent)
    status, out, err = run(capsys, cli_main, "export", "--model", folder, "--device", "cpu",
                           "--onnx", graph)
    assert status == 0, err
    assert out.strip() == f"wrote {graph} with feats.mean_vec.npy beside it"
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "feats.mean_vec.npy"), mean)
    embedder = wespeaker_py.load_model(folder, device="cpu").backend.embedder
    samples, _ = sf.read(speech[0], dtype="int16")
    with torch.no_grad():
        feats = embedder.frontend(torch.from_numpy(samples.astype(np.float32))[None])
        expected = embedder.model(feats).numpy()   # before mean subtraction
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    close(session.run(None, {"feats": feats.numpy()})[0], expected, 1e-4)


@needs_onnx
def test_the_fbank_graph_records_the_model_as_the_waveform_graph_does(xvec_folder, tmp_path):
    import onnx

    def metadata(path):
        return read_onnx_info({entry.key: entry.value
                               for entry in onnx.load(path).metadata_props}, path)

    model = wespeaker_py.load_model(xvec_folder, device="cpu")
    wave_kind, wave_info = metadata(exporting.export_waveform_graph(
        model, str(tmp_path / "wav.onnx"))[0])
    feats_kind, feats_info = metadata(exporting.export_feats_onnx(
        model, str(tmp_path / "feats.onnx"))[0])
    assert (wave_kind, feats_kind) == ("waveform_embedding", "feature_embedding")
    assert wave_info.pop("min_samples") == model.backend.min_samples
    assert feats_info.pop("min_frames") == model.backend.min_frames
    assert feats_info == wave_info
    assert (feats_info["model"], feats_info["identity"], feats_info["embed_dim"],
            feats_info["mean_subtracted"]) == ("XVEC", model.identity, model.embed_dim, False)


@needs_onnx
def test_loading_the_fbank_graph_is_refused_naming_the_kind_it_records(xvec_folder, tmp_path):
    model = wespeaker_py.load_model(xvec_folder, device="cpu")
    path = exporting.export_feats_onnx(model, str(tmp_path / "feats.onnx"))[0]
    with pytest.raises(wespeaker_py.ModelSourceError) as refused:
        wespeaker_py.load_model(path, device="cpu")
    assert str(refused.value).startswith(
        f"{path} is an ONNX model of another kind (a feature_embedding graph, inputs "
        f"['feats']); load_model takes the waveform graph")


# -- re-exporting over an earlier export ----------------------------------------------------------

def _earlier_export(source, graph):
    """An export of ``source`` with a mean vector to ``graph`` (``.../out/model.onnx``); the
    graph's bytes."""
    folder = str(graph.parent.parent / "with_mean")
    shutil.copytree(source, folder)
    np.save(os.path.join(folder, "mean_vec.npy"), np.ones(8, np.float32))
    exporting.export_waveform_graph(wespeaker_py.load_model(folder, device="cpu"), str(graph))
    assert (graph.parent / "model.mean_vec.npy").exists()
    return graph.read_bytes()


def _files(folder):
    """``{name: bytes}`` of the files in ``folder``."""
    return {name: (folder / name).read_bytes() for name in os.listdir(folder)}


def _stop_at_change(monkeypatch, folder, number):
    """Make the ``number``-th (from 0) rename of a file into ``folder``, or removal of one
    there, raise KeyboardInterrupt instead: the process stopped at that point. Temporary
    files (``.tmp_*``) do not count."""
    changes = itertools.count()
    replace, remove = os.replace, os.remove

    def stops(path):
        counted = (os.path.dirname(os.path.abspath(path)) == str(folder)
                   and not os.path.basename(path).startswith(".tmp_"))
        return counted and next(changes) == number

    def stopping_replace(src, dst, **kwargs):
        if stops(dst):
            raise KeyboardInterrupt
        replace(src, dst, **kwargs)

    def stopping_remove(path, **kwargs):
        if stops(path):
            raise KeyboardInterrupt
        remove(path, **kwargs)

    monkeypatch.setattr(os, "replace", stopping_replace)
    monkeypatch.setattr(os, "remove", stopping_remove)


@needs_onnx
def test_a_re_export_stopped_anywhere_leaves_one_export_whole_and_the_mean_vector_last(
        tmp_path, monkeypatch):
    """Stopped at each change in its folder, a re-export leaves the earlier export whole or
    the new graph with all its files; in between, only the earlier graph with the new
    export's files, its own mean vector kept until the last change before the graph's."""
    first, _ = wespeaker_folder(str(tmp_path / "first"))
    second, _ = wespeaker_folder(str(tmp_path / "second"), seed=1)
    np.save(os.path.join(second, "mean_vec.npy"), np.full(8, 2.0, np.float32))
    earlier = tmp_path / "earlier"
    os.makedirs(earlier)
    _earlier_export(first, earlier / "model.onnx")   # a mean vector of ones
    (earlier / "model.calibration.json").write_text("{}")   # a file the new export lacks
    old = _files(earlier)
    model = wespeaker_py.load_model(second, device="cpu")
    stopped = []
    for number in itertools.count():
        out = tmp_path / f"stop_{number}"
        shutil.copytree(earlier, out)
        with monkeypatch.context() as patch:
            _stop_at_change(patch, out, number)
            try:
                exporting.export_waveform_graph(model, str(out / "model.onnx"))
                break
            except KeyboardInterrupt:
                stopped.append(_files(out))
    new = _files(out)
    assert sorted(new) == ["model.mean_vec.npy", "model.onnx"]
    exported = wespeaker_py.load_model(str(out / "model.onnx"))
    assert exported.identity == model.identity
    np.testing.assert_array_equal(exported.mean_vec, np.full(8, 2.0, np.float32))
    new_files = {name: data for name, data in new.items() if name != "model.onnx"}
    assert stopped[0] == old and len(stopped) >= 3
    for state in stopped:
        if state["model.onnx"] != old["model.onnx"]:
            assert state == new   # the new graph with all its files
            continue
        beside = {name: data for name, data in state.items() if name != "model.onnx"}
        # the earlier graph: with its own mean vector, or with all the new export's files
        assert (beside.get("model.mean_vec.npy") == old["model.mean_vec.npy"]
                or beside == new_files), sorted(state)
    assert {n: d for n, d in stopped[-1].items() if n != "model.onnx"} == new_files


@needs_onnx
def test_a_re_export_names_the_files_it_removes_as_not_its_own(calibrated, tmp_path, caplog):
    graph = tmp_path / "model.onnx"
    model = wespeaker_py.load_model(calibrated, device="cpu")
    exporting.export_waveform_graph(model, str(graph))
    assert sorted(os.listdir(tmp_path)) == ["model.calibration.json", "model.onnx"]
    exporting.export_feats_onnx(model, str(graph))   # the fbank graph: no calibration beside
    assert os.listdir(tmp_path) == ["model.onnx"]
    assert (f"removed {tmp_path}/model.calibration.json: an earlier export's, not written by "
            f"this export") in caplog.text


@needs_onnx
def test_an_export_that_fails_its_check_leaves_the_earlier_export_whole(tmp_path, monkeypatch):
    first, _ = wespeaker_folder(str(tmp_path / "first"))
    graph = tmp_path / "out" / "model.onnx"
    os.makedirs(graph.parent)
    before = _earlier_export(first, graph)

    def mismatch(*args):
        raise ExportMismatchError("differs")

    monkeypatch.setattr(waveform_onnx, "_check", mismatch)
    with pytest.raises(ExportMismatchError):
        exporting.export_waveform_graph(wespeaker_py.load_model(first, device="cpu"),
                                        str(graph))
    assert sorted(os.listdir(graph.parent)) == ["model.mean_vec.npy", "model.onnx"]
    assert graph.read_bytes() == before


# -- verify: the rule that decides ----------------------------------------------------------------

@pytest.fixture(scope="module")
def calibrated(xvec_folder, tmp_path_factory):
    """The model with a calibration whose LLR is 1 for every score and whose EER threshold
    accepts every score: a threshold says "same", a prior of 0.01 makes "different" likelier."""
    folder = str(tmp_path_factory.mktemp("calibrated") / "model")
    shutil.copytree(xvec_folder, folder)
    identity = wespeaker_py.load_model(folder, device="cpu").identity
    points = {name: OperatingPoint(-1.0, 0.5, 0.5) for name in ("eer", "fa1")}
    save_calibration(os.path.join(folder, "calibration.json"),
                     Calibration(weight=0.0, bias=1.0, eer=0.5, cllr=1.0, num_target=10,
                                 num_nontarget=10, operating_points=points, identity=identity))
    return folder


def test_verify_with_a_prior_decides_by_the_bayes_rule(calibrated, speech, capsys):
    common = ["verify", "--model", calibrated, "--device", "cpu", speech[0], speech[1]]
    status, out, _ = run(capsys, cli_main, *common, "--prior", "0.01", "--json")
    result = json.loads(out)
    assert status == 0 and result["probability"] == pytest.approx(1 / (1 + 99 / np.e))
    assert (result["rule"], result["decision"]) == ("bayes", False)
    status, out, _ = run(capsys, cli_main, *common, "--prior", "0.01")
    assert out.strip().endswith("P(same | prior 0.01) = 0.027: different speakers (Bayes rule "
                                "at prior 0.01: same speaker when P(same) > 0.5, i.e. LLR > "
                                "4.595)")
    status, out, _ = run(capsys, cli_main, *common)   # no prior: the calibration's threshold
    assert out.strip().endswith("same speaker (threshold rule: score > -1.0000, the eer "
                                "operating point)")
    model = wespeaker_py.load_model(calibrated, device="cpu")
    assert model.decide(0.3, prior=0.9).decision   # P(same) = 0.96
    status, _, err = run(capsys, cli_main, *common, "--prior", "0.01",
                         "--operating_point", "fa1")
    assert status == 2 and "give one of them" in err and len(err.strip().splitlines()) == 1


# -- user errors: one line, exit 2, naming the flag or file ---------------------------------------

@pytest.fixture(scope="module")
def experiment(xvec_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "mean_vec.txt").write_text("0.1 0.2 0.3\n")
    return ["--config", f"{xvec_folder}/config.yaml", "--checkpoint",
            f"{xvec_folder}/avg_model.pt"], root


@pytest.mark.parametrize("command, argv, named", [
    ("export_onnx", ["--output_model", "{root}/x.onnx", "--mean_vec", "{root}/mean_vec.txt"],
     "{root}/mean_vec.txt: not a mean vector"),
    ("export_onnx", ["--output_model", "{root}/x.onnx", "--num_frames", "5"],
     "--num_frames: 5 frames are fewer than the 16 XVEC needs"),
    ("export_jit", ["--output_file", "{root}/x.zip", "--method", "script"],
     "does not compile with torch.jit.script"),
    ("model_summary", ["--models", "XVEC", "NoSuchModel"],
     "--models: no model is called NoSuchModel"),
    ("convert_checkpoint", ["wavlm", "--src", "{root}/missing.pt", "--dst", "{root}/hf"],
     "{root}/missing.pt does not exist"),
    ("convert_checkpoint", ["wavlm", "--src", "{speech}", "--dst", "{root}/hf"],
     "{speech}: not an original WavLM checkpoint (WavLM-Large.pt, the file s3prl's "
     "wavlm_large loads) (UnpicklingError"),
    ("convert_checkpoint", ["wavlm-export", "--src", "{root}/nope", "--dst", "{root}/x.pt"],
     "Hugging Face WavLM directory {root}/nope does not exist"),
    ("wespeaker-py", ["embed", "--model", "{model}", "{speech}", "--output", "{root}/e.ark"],
     "--output {root}/e.ark: one audio file's vector goes to FILE.npy or FILE.txt"),
])
def test_user_errors_exit_2_with_one_line_naming_the_flag_or_file(
        experiment, xvec_folder, speech, command, argv, named, capsys, monkeypatch):
    config_flags, root = experiment

    def built(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(complexity, "get_model", built)   # model_summary refuses before
    mains = {"export_onnx": export_onnx.main, "export_jit": export_jit.main,
             "model_summary": model_summary.main,
             "convert_checkpoint": convert_checkpoint.main, "wespeaker-py": cli_main}
    fill = dict(root=root, model=xvec_folder, speech=speech[0])
    argv = [arg.format(**fill) for arg in argv]
    if command in ("export_onnx", "export_jit"):
        argv = config_flags + argv
    status, out, err = run(capsys, mains[command], *argv)
    assert status == 2 and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and named.format(**fill) in err, err
    assert os.listdir(root) == ["mean_vec.txt"]   # nothing written


def test_convert_checkpoint_names_a_few_keys_of_a_speaker_model_given_as_wavlm(
        xvec_folder, tmp_path, capsys):
    # it listed every one of the state_dict's keys on one 8,762-character line
    src = os.path.join(xvec_folder, "avg_model.pt")
    keys = list(torch.load(src, map_location="cpu", weights_only=True))
    status, out, err = run(capsys, convert_checkpoint.main, "wavlm", "--src", src,
                           "--dst", tmp_path / "hf")
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert (f"{src}: not an original WavLM checkpoint (WavLM-Large.pt, the file s3prl's "
            f"wavlm_large loads), which holds 'cfg' and 'model'; it holds {len(keys)} keys: "
            f"{', '.join(keys[:5])} and {len(keys) - 5} more") in err
    assert keys[-1] not in err and os.listdir(tmp_path) == []


def test_model_summary_takes_wespeakers_generic_model_names(capsys):
    status, out, err = run(capsys, model_summary.main, "--models", "ReDimNet", "ECAPA_TDNN")
    assert status == 0, err
    assert "| ReDimNet | 72 |" in out and "| ECAPA_TDNN | 80 |" in out


def test_model_summary_refuses_a_generic_name_the_recipe_cannot_build(capsys):
    status, out, err = run(capsys, model_summary.main, "--models", "XVEC", "ResNet")
    assert status == 2 and "Traceback" not in err and out == ""
    assert "--models: ResNet cannot be built from the recipe's model_args" in err


def test_convert_checkpoint_names_a_config_json_that_is_no_json(tmp_path, capsys):
    pytest.importorskip("transformers")
    src = tmp_path / "hf"
    os.makedirs(src)
    (src / "config.json").write_text("{not json")
    (src / "model.safetensors").write_bytes(b"{}")
    status, out, err = run(capsys, convert_checkpoint.main, "wavlm-export", "--src", src,
                           "--dst", tmp_path / "wavlm.pt")
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"error: {src}/config.json: not a readable WavLM config" in err
    assert "not a valid JSON file" in err
    assert sorted(os.listdir(tmp_path)) == ["hf"]


def test_convert_checkpoint_names_damaged_weights(tmp_path, capsys):
    pytest.importorskip("transformers")
    from wespeaker_py.frontend.wavlm_random import tiny_wavlm_config, write_random_wavlm
    src = str(tmp_path / "hf")
    write_random_wavlm(src, tiny_wavlm_config(large_layout=True), seed=1)
    weights = [name for name in os.listdir(src) if name.startswith("model.")]
    for name in weights:
        with open(os.path.join(src, name), "r+b") as handle:
            handle.truncate(64)
    capsys.readouterr()   # the writer's progress bar
    status, out, err = run(capsys, convert_checkpoint.main, "wavlm-export", "--src", src,
                           "--dst", tmp_path / "wavlm.pt")
    assert weights and status == 2 and out == "" and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and "its WavLM weights cannot be read" in err


def _every_command_line_parser():
    """``(parser, argv before the flag's value)`` for ``--num_threads`` of every
    wespeaker-py subcommand and every ``python -m wespeaker_py.bin`` module."""
    main_parser = build_parser()
    commands = next(action for action in main_parser._actions
                    if isinstance(action, argparse._SubParsersAction))
    found = [(main_parser, [name, "--num_threads"]) for name in commands.choices]
    for module in pkgutil.iter_modules(wespeaker_py.bin.__path__):
        command = importlib.import_module(f"wespeaker_py.bin.{module.name}")
        found.append((command.build_parser(), ["--num_threads"]))
    return found


def test_every_whole_number_flag_refuses_alike(capsys):
    """--top_k of wespeaker-py, --num_threads of every command (each wespeaker-py
    subcommand and bin module) and --top_n of score_norm share one argparse type: the same
    words for the same mistake (argparse refuses before any model loads)."""
    parsers = [(build_parser(), ["identify", "--model", "m", "--gallery", "g", "a.wav",
                                 "--top_k"]),
               (score_norm.build_parser(), ["--top_n"])] + _every_command_line_parser()
    assert len(parsers) > 25
    for value, reason in (("0", "must be at least 1, got 0"),
                          ("two", "expected an integer, got 'two'")):
        for parser, argv in parsers:
            with pytest.raises(SystemExit):
                parser.parse_args(argv + [value])
            assert reason in capsys.readouterr().err.strip().splitlines()[-1], argv
