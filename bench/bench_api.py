"""Real-time factor of ``SpeakerModel.embed`` on one CPU thread: torch eager vs onnxruntime.

    flock -x /tmp/wsp_cpu.lock python bench/bench_api.py [--seconds 10 --repeats 10]

For ResNet34, ECAPA_TDNN_GLOB_c512, CAMPPlus (the model_args of conf/*.yaml) and
ReDimNet2B0/B2/B6 (conf/redimnet2.yaml with the model swapped; TFMel front-end), with
random weights (speed does not depend on them), a model folder is written, loaded
with ``wespeaker_py.load_model`` and timed on a ``--seconds`` long WAV file; then
the same model is exported with ``export --onnx --with_frontend`` and the ONNX
file is loaded and timed the same way. Every figure is the whole ``embed(path)``
call (file reading, fbank + CMN, model) on one thread, median of ``--repeats``
runs after two untimed ones, divided by the audio duration (RTF; lower is faster).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import soundfile as sf
import torch
import yaml

import wespeaker_py
from wespeaker_py.api.exporting import export_waveform_graph
from wespeaker_py.frontend.factory import build_frontend
from wespeaker_py.models import get_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"ResNet34": "resnet34.yaml", "ECAPA_TDNN_GLOB_c512": "ecapa_tdnn_c512.yaml",
           "CAMPPlus": "campplus.yaml", "ReDimNet2B0": "redimnet2.yaml",
           "ReDimNet2B2": "redimnet2.yaml", "ReDimNet2B6": "redimnet2.yaml"}
# WeSpeaker's published ONNX RTFs (one Xeon thread) for the same models
WESPEAKER_ONNX_RTF = {"ResNet34": 0.061, "ECAPA_TDNN_GLOB_c512": 0.018, "CAMPPlus": 0.023}


def write_model_folder(folder: str, conf_name: str, name: str) -> None:
    """config.yaml (the recipe's, model ``name``) + avg_model.pt with random weights.

    A TFMel model's checkpoint holds the front-end's constant kernels under
    ``frontend.``, as WeSpeaker saves them.
    """
    with open(os.path.join(REPO, "conf", conf_name)) as handle:
        config = yaml.safe_load(handle)
    config["model"] = name
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.yaml"), "w") as handle:
        yaml.safe_dump(config, handle)
    torch.manual_seed(0)
    state = get_model(name, **config["model_args"]).eval().state_dict()
    frontend = build_frontend(config["dataset_args"])
    state.update({f"frontend.{key}": value for key, value in frontend.state_dict().items()})
    torch.save(state, os.path.join(folder, "avg_model.pt"))


def median_rtf(model, path: str, seconds: float, repeats: int) -> float:
    for _ in range(2):
        model.embed(path)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.embed(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the test file")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per figure")
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:
        wav = os.path.join(work, "speech.wav")
        rng = np.random.default_rng(0)
        samples = int(args.seconds * 16000)
        time_axis = np.arange(samples) / 16000
        signal = 0.3 * np.sin(2 * np.pi * 180 * time_axis) + 0.05 * rng.standard_normal(samples)
        sf.write(wav, signal.astype(np.float32), 16000, subtype="PCM_16")
        print("| model | torch eager RTF | onnxruntime (front-end inside) RTF | "
              "WeSpeaker ONNX RTF |")
        print("|:--|--:|--:|--:|")
        for name in args.models:
            folder = os.path.join(work, name)
            write_model_folder(folder, CONFIGS[name], name)
            eager = wespeaker_py.load_model(folder, device="cpu")
            eager_rtf = median_rtf(eager, wav, args.seconds, args.repeats)
            graph_path = os.path.join(work, name + ".onnx")
            export_waveform_graph(eager, graph_path)
            graph = wespeaker_py.load_model(graph_path, num_threads=1)
            onnx_rtf = median_rtf(graph, wav, args.seconds, args.repeats)
            print(f"| {name} | {eager_rtf:.4f} | {onnx_rtf:.4f} | "
                  f"{WESPEAKER_ONNX_RTF.get(name, '-')} |", flush=True)


if __name__ == "__main__":
    main()
