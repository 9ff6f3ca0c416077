"""Command-line review fixes: both flag spellings, one-line errors through run_main, the
``embed --output`` suffixes and ``--device`` of an ONNX model."""
import ast
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from wespeaker_py.api import load_model
from wespeaker_py.bin import (adapt_plda, average_model, compute_metrics, export_onnx,
                              extract, merge_lora, model_summary, plot_training, train)
from wespeaker_py.cli.common import run_main
from wespeaker_py.cli.main import main as cli_main
from wespeaker_py.errors import ModelSourceError
from wespeaker_py.export import onnx_export
from wespeaker_py.utils.device import DeviceUnavailableError, resolve_device

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")


def run(capsys, main, *argv):
    """(exit status, stdout, stderr) of ``main`` run as its console script runs it."""
    try:
        status = run_main(main, [str(arg) for arg in argv])
    except SystemExit as stopped:   # argparse, and wespeaker-py's main, exit themselves
        status = stopped.code
    out, err = capsys.readouterr()
    return status, out, err


# -- both spellings of every flag ---------------------------------------------------------------

@pytest.mark.parametrize("module, argv", [
    (average_model, ["--src_path", "m", "--dst_model", "a.pt", "--num", "3", "--min_epoch", "1",
                     "--max_epoch", "9"]),
    (merge_lora, ["--config", "c.yaml", "--checkpoint_in", "i.pt", "--checkpoint_out", "o.pt"]),
    (model_summary, ["--models", "XVEC", "ResNet34", "--frames", "100", "--feat_dim", "40"]),
    (adapt_plda, ["--adp_scp", "a.scp", "--across_class_scale", "0.3", "--within_class_scale",
                  "0.7", "--mdl_org", "plda", "--mdl_adp", "adapted", "--mdl_format", "kaldi"]),
    (plot_training, ["exp/a", "--output", "a.png"]),
])
def test_every_flag_takes_its_hyphenated_spelling_too(module, argv):
    underscored = module.build_parser().parse_args(argv)
    hyphenated = module.build_parser().parse_args(
        [arg.replace("_", "-") if arg.startswith("--") else arg for arg in argv])
    assert vars(hyphenated) == vars(underscored)


def test_train_takes_both_spellings_of_its_named_keys_and_keeps_dotted_overrides():
    argv = ["--config", "c.yaml", "--exp_dir", "exp/x", "--train_data", "raw.list",
            "--num_avg", "2", "--model_args.embed_dim", "8"]
    args, rest = train.build_parser().parse_known_args(argv)
    hyphenated, rest_too = train.build_parser().parse_known_args(
        ["--config", "c.yaml", "--exp-dir", "exp/x", "--train-data", "raw.list",
         "--num-avg", "2", "--model_args.embed_dim", "8"])
    assert vars(hyphenated) == vars(args) and args.exp_dir == "exp/x"
    assert rest == rest_too == ["--model_args.embed_dim", "8"]


def test_adapt_plda_keeps_wespeakers_short_options():
    args = adapt_plda.build_parser().parse_args(
        ["-ad", "a.scp", "-as", "0.3", "-ws", "0.7", "-mo", "plda", "-ma", "out", "-mf", "kaldi"])
    assert (args.adp_scp, args.across_class_scale, args.within_class_scale, args.mdl_org,
            args.mdl_adp, args.mdl_format) == ("a.scp", 0.3, 0.7, "plda", "out", "kaldi")


def test_plot_training_runs_stay_positional():
    args = plot_training.build_parser().parse_args(["exp/a", "exp/b"])
    assert args.runs == ["exp/a", "exp/b"] and args.output is None


# -- one line and exit status 2, through run_main ------------------------------------------------

def test_average_model_errors_are_one_line_through_run_main(tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    torch.save({"w": torch.zeros(2)}, models / "model_1.pt")
    status, _, err = run(capsys, average_model.main, "--src-path", models, "--num", "3",
                         "--dst-model", tmp_path / "avg.pt")
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "holds 1 checkpoints" in err
    status, _, err = run(capsys, average_model.main, "--src_path", tmp_path / "none",
                         "--dst_model", tmp_path / "avg.pt")
    assert status == 2 and f"{tmp_path / 'none'} does not exist" in err
    status, _, err = run(capsys, average_model.main, "--src_path", models, "--num", "0",
                         "--dst_model", tmp_path / "avg.pt")
    assert status == 2 and "argument --num: must be at least 1, got 0" in err
    assert not (tmp_path / "avg.pt").exists()


def test_train_config_errors_are_one_line_through_run_main(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model: XVEC\n")
    status, _, err = run(capsys, train.main, "--config", config, "--exp-dir", tmp_path / "exp",
                         "--dataset_args.num_frmz", "8")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "unknown config key 'dataset_args.num_frmz'; did you mean 'num_frms'?" in err


def test_export_onnx_without_its_packages_is_one_line_through_run_main(tmp_path, capsys,
                                                                       monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(onnx_export.importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnx"
                        else real_find_spec(name, *args))
    # returned by run_main, not a SystemExit of main's own
    status = run_main(export_onnx.main, ["--config", str(tmp_path / "c.yaml"), "--checkpoint",
                                         str(tmp_path / "m.pt"), "--output-model",
                                         str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "ONNX export needs the package(s) onnx" in err


@pytest.mark.parametrize("flag", ["--batch_size", "--nj"])
def test_extract_counts_are_checked_by_their_type(flag, capsys):
    argv = ["--config", "c.yaml", "--model_path", "m.pt", "--data_list", "l", "--embed_ark",
            "x.ark", flag, "0"]
    with pytest.raises(SystemExit) as stopped:
        extract.build_parser().parse_args(argv)
    assert stopped.value.code == 2
    spelled = flag.replace("_", "-")
    expected = f"argument {flag}/{spelled}" if spelled != flag else f"argument {flag}"
    assert f"{expected}: must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["1.5", "0", "1", "x"])
def test_compute_metrics_refuses_a_prior_outside_0_1_in_one_line(tmp_path, capsys, value):
    scores = tmp_path / "s.score"
    scores.write_text("a b 0.9 target\na c 0.1 nontarget\n")
    status, out, err = run(capsys, compute_metrics.main, "--p_target", value, scores)
    assert status == 2 and out == "" and "Traceback" not in err
    assert "argument --p_target/--p-target:" in err


def _tool_main_calls_run_main(path: str) -> bool:
    """Whether the ``if __name__ == "__main__"`` block of ``path`` runs ``run_main(main)``."""
    for node in ast.parse(open(path).read()).body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return "run_main(main)" in ast.unparse(node)
    return False


@pytest.mark.parametrize("name", sorted(name for name in os.listdir(TOOLS)
                                        if name.endswith(".py")))
def test_every_tool_runs_its_main_through_run_main(name):
    assert _tool_main_calls_run_main(os.path.join(TOOLS, name)), name


def _tool(name, *argv, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    return subprocess.run([sys.executable, os.path.join(TOOLS, name), *map(str, argv)],
                          capture_output=True, text=True, cwd=cwd, env=env)


@pytest.mark.parametrize("name, argv, named", [
    ("make_trials.py", ["--utt2spk", "{bad}", "{out}"], "{bad}:2: expected '<key> <value>'"),
    ("make_trials.py", ["--utt2spk", "{good}", "--all_pairs", "--num_trials", "4", "{out}"],
     "--all_pairs writes every pair of utterances"),
    ("make_trials.py", ["--utt2spk", "{one}", "{out}"],
     "{one}: need at least two speakers, one with two utterances"),
    ("vector_mean.py", ["--spk2utt", "{missing}", "--xvector_scp", "{missing}",
                        "--spk_xvector_ark", "{out}"], "{missing}"),
])
def test_a_tool_reports_bad_input_in_one_line_with_status_2(tmp_path, name, argv, named):
    paths = dict(bad=tmp_path / "bad", good=tmp_path / "good", one=tmp_path / "one",
                 missing=tmp_path / "missing", out=tmp_path / "out")
    paths["bad"].write_text("a1 a\nbroken\n")
    paths["good"].write_text("a1 a\na2 a\nb1 b\n")
    paths["one"].write_text("a1 a\na2 a\n")
    done = _tool(name, *[arg.format(**paths) for arg in argv], cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert named.format(**paths) in done.stderr
    assert not paths["out"].exists()


# -- embed --output ---------------------------------------------------------------------------

@pytest.mark.parametrize("output", ["vec.npz", "vec", "vec.csv"])
def test_embed_of_one_file_refuses_an_output_neither_npy_nor_txt(tmp_path, capsys, output):
    status, out, err = run(capsys, cli_main, "embed", "--model", tmp_path / "no_model",
                           tmp_path / "a.wav", "--output", tmp_path / output)
    assert status == 2 and out == ""
    assert f"--output {tmp_path / output}: one audio file's vector goes to FILE.npy or " \
           f"FILE.txt" in err
    assert not (tmp_path / output).exists()


@pytest.mark.parametrize("output", ["vec.npy", "vec.txt"])
def test_embed_takes_npy_and_txt_outputs(tmp_path, capsys, output):
    status, _, err = run(capsys, cli_main, "embed", "--model", tmp_path / "no_model",
                         tmp_path / "a.wav", "--output", tmp_path / output)
    # gets past the output check, to the audio file that is not there
    assert status == 2 and "a.wav does not exist" in err


# -- --device of an ONNX model ----------------------------------------------------------------

@pytest.fixture
def not_a_graph(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"not a graph")
    return str(path)


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "meta"])
def test_an_onnx_model_refuses_any_device_but_the_cpu(not_a_graph, device):
    with pytest.raises(ModelSourceError, match=rf"m\.onnx: an ONNX model runs on the CPU; "
                                               rf"device='{device}' \(--device\)"):
        load_model(not_a_graph, device=device)


@pytest.mark.parametrize("device", [None, "auto", "cpu", "cpu:0"])
def test_an_onnx_model_loads_on_the_cpu(not_a_graph, device):
    # past the device check: the file itself is what is wrong
    with pytest.raises(ModelSourceError, match="not a readable ONNX model"):
        load_model(not_a_graph, device=device)


def test_an_onnx_model_without_onnxruntime_says_how_to_install_it(not_a_graph, monkeypatch):
    from wespeaker_py.errors import MissingPackagesError
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingPackagesError, match="running an ONNX speaker model needs the "
                                                   "package onnxruntime: pip install"):
        load_model(not_a_graph)


def test_a_device_name_torch_does_not_know_is_named_for_every_model(not_a_graph, tmp_path):
    with pytest.raises(DeviceUnavailableError, match=r"device='gpu' \(--device\) is not a "
                                                     r"device"):
        load_model(not_a_graph, device="gpu")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.yaml").write_text("")
    (folder / "avg_model.pt").write_bytes(b"")
    with pytest.raises(DeviceUnavailableError, match=r"device='gpu' \(--device\)"):
        load_model(str(folder), device="gpu")   # before the model's files are read


def test_wespeaker_py_embed_with_an_onnx_model_and_a_gpu_device_exits_2(tmp_path, capsys,
                                                                        not_a_graph):
    audio = tmp_path / "a.wav"
    sf.write(audio, np.random.default_rng(0).normal(0, 0.1, 16000), 16000)
    status, out, err = run(capsys, cli_main, "embed", "--model", not_a_graph, "--device",
                           "cuda:7", audio)
    assert status == 2 and out == ""
    assert f"{not_a_graph}: an ONNX model runs on the CPU; device='cuda:7' (--device)" in err


@pytest.mark.parametrize("name", ["gpu", "gpu:1", "tpu0"])
def test_every_device_choice_names_a_device_torch_does_not_know(name):
    # extraction and scoring resolve --device here too, not only load_model
    with pytest.raises(DeviceUnavailableError, match=rf"device='{name}' \(--device\) is not"):
        resolve_device(name)


def test_an_abbreviated_flag_matching_both_spellings_of_one_flag_is_not_ambiguous():
    # argparse's prefix matching, which WeSpeaker's own parsers allow, worked before the
    # hyphenated spellings; a prefix of two different flags stays ambiguous
    args = average_model.build_parser().parse_args(["--src", "a", "--dst", "b", "--min", "1"])
    assert (args.src_path, args.dst_model, args.min_epoch) == ("a", "b", 1)
    with pytest.raises(SystemExit):
        average_model.build_parser().parse_args(["--src", "a", "--dst", "b", "--m", "1"])


@pytest.mark.parametrize("name", sorted(name for name in os.listdir(TOOLS)
                                        if name.endswith(".py")))
def test_every_tool_flag_takes_its_hyphenated_spelling_too(name):
    source = open(os.path.join(TOOLS, name)).read()
    tree = ast.parse(source)
    named = [node.args[1].value for node in ast.walk(tree)
             if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "add_flag"]
    assert "add_argument(\"--" not in source, name   # every named flag through add_flag
    done = _tool(name, "--help", cwd=REPO)
    assert done.returncode == 0, done.stderr
    for flag in (flag for flag in named if "_" in flag):
        assert f"--{flag.replace('_', '-')}" in done.stdout, (name, flag)


def test_a_tool_takes_an_abbreviation_of_both_spellings_of_one_flag(tmp_path):
    (tmp_path / "utt2spk").write_text("a1 a\na2 a\nb1 b\nb2 b\n")
    done = _tool("make_trials.py", "--utt2", tmp_path / "utt2spk", "--num-tr", "4",
                 tmp_path / "trials", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "trials").read_text().splitlines()) == 4


def test_a_command_whose_reader_goes_away_stops_quietly():
    # `wespeaker-py ... | head`: the reader closes the pipe after one line
    script = ("import sys\n"
              "from wespeaker_py.cli.common import run_main\n"
              "def main(args):\n"
              "    for _ in range(200000):\n"
              "        print('a line of output to a reader that stops early')\n"
              "sys.exit(run_main(main, []))\n")
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    assert writer.stdout.readline().startswith(b"a line")
    writer.stdout.close()
    stderr = writer.stderr.read().decode()
    assert writer.wait(timeout=120) == 141
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


def test_a_broken_pipe_that_is_not_standard_output_is_not_swallowed():
    # a pipe of the command's own (a worker's, say) breaks while stdout is fine
    script = ("import multiprocessing, sys\n"
              "from wespeaker_py.cli.common import run_main\n"
              "def main(args):\n"
              "    reader, writer = multiprocessing.Pipe(duplex=False)\n"
              "    reader.close()\n"
              "    writer.send(b'x' * 100000)\n"
              "sys.exit(run_main(main, []))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode not in (0, 141)
    assert "BrokenPipeError" in run.stderr


def test_standard_output_on_a_full_disk_is_one_line_and_the_files_stay_whole(tmp_path):
    # `cmd > out` on a full disk (/dev/full refuses every write); the command's own file
    # was written before it printed
    script = ("import sys\n"
              "from wespeaker_py.cli.common import run_main\n"
              "def main(args):\n"
              f"    open({str(tmp_path / 'made')!r}, 'w').write('whole')\n"
              "    print('done: the file is made')\n"
              "sys.exit(run_main(main, [], prog='tool'))\n")
    with open("/dev/full", "w") as full:
        run = subprocess.run([sys.executable, "-c", script], stdout=full,
                             stderr=subprocess.PIPE, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.splitlines() == [
        "tool: error: cannot write standard output (No space left on device); what the "
        "command printed is lost (run with --debug for the traceback)"]
    assert (tmp_path / "made").read_text() == "whole"
