"""``wespeaker-py`` export and info: the model itself, written as an ONNX graph or
described."""
from __future__ import annotations

import argparse
import os

from wespeaker_py.cli.checks import refuse_over_inputs
from wespeaker_py.cli.common import UsageError, add_flag
from wespeaker_py.cli.model_files import files_beside, refuse_over_model_files
from wespeaker_py.cli.model_subcommand import add_model_subcommand, load_model_of, print_json

EXAMPLES = {
    "export": """examples:
  wespeaker-py export --model exp/ResNet34 --onnx resnet34.onnx --with_frontend
  wespeaker-py export --model exp/ResNet34 --onnx out/ --with_frontend   # out/model.onnx
  wespeaker-py export --model exp/ResNet34 --onnx resnet34_feats.onnx

--with_frontend: the graph maps float32 waveforms [B, samples] in [-1, 1] at
the model's sample rate to embeddings (fbank + CMN inside; dynamic batch and
length); it is checked against the eager model before it is written. The
model's files go beside it under the graph's name (resnet34.mean_vec.npy,
.calibration.json, .window_lda*.npz, .band_fill_<HZ>hz.npz), where load_model and
every subcommand find them; a band fill reaches the graph through its optional
band_fill input. Without --with_frontend the graph takes fbank features
[B, T, F], as WeSpeaker's export does. Either graph gives the embeddings before
mean subtraction: the model's mean vector goes beside it (resnet34_feats.mean_vec.npy),
to subtract before cosine scoring. Such files of an earlier export to the same name
that this export does not write (without --with_frontend: all but the mean vector)
are removed as the new graph replaces the earlier one.""",
    "info": """examples:
  wespeaker-py info --model exp/ResNet34 [--json]""",
}


def cmd_export(args: argparse.Namespace) -> int:
    """``wespeaker-py export``: the model as an ONNX graph, its files beside it."""
    from wespeaker_py.utils.atomic_files import require_writable
    # --onnx may name a folder to write model.onnx in
    require_writable(args.onnx, folder_ok=True)
    from wespeaker_py.api.exporting import onnx_target
    graph = onnx_target(args.onnx)
    refuse_over_inputs(args, {"--onnx": graph}, {})
    model = load_model_of(args)
    if model.backend.kind != "torch":
        raise UsageError(f"export: {args.model} is already an ONNX model")
    # the model's files go beside the graph under its name, replacing (or removing) those
    # of an earlier export there: a graph named as the model's checkpoint would take its own
    from wespeaker_py.api.companion_files import companion_prefix
    beside_graph = companion_prefix(graph)
    carried = {**files_beside(model), **model.companion_files()}   # a --calibration's too
    refuse_over_model_files(args, model, {
        "--onnx": graph, **{f"--onnx {graph}'s {name}": beside_graph + name
                            for name in carried}})
    from wespeaker_py.api.exporting import export_feats_onnx, export_waveform_graph
    export = export_waveform_graph if args.with_frontend else export_feats_onnx
    written = export(model, args.onnx)
    beside = ", ".join(os.path.basename(path) for path in written[1:])
    print(f"wrote {written[0]}" + (f" with {beside} beside it" if beside else ""))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``wespeaker-py info``: the model's name, size, rate, front-end and files in use."""
    details = load_model_of(args).info()
    if args.json:
        print_json(details)
    else:
        width = max(len(key) for key in details)
        for key, value in details.items():
            print(f"{key:<{width}}  {value}")
    return 0


def add_model_commands(commands) -> None:
    """Add export and info to ``commands``."""
    sub = add_model_subcommand(commands, "export", cmd_export, "export the model to ONNX",
                               EXAMPLES["export"], reads_audio=False)
    sub.add_argument("--onnx", required=True,
                     help="output .onnx file (a folder: model.onnx inside it); the model's "
                          "files go beside it")
    add_flag(sub, "with_frontend", action="store_true",
             help="waveform input: put fbank + CMN inside the graph")

    sub = add_model_subcommand(commands, "info", cmd_info,
                               "model name, size, sample rate and front-end settings",
                               EXAMPLES["info"], reads_audio=False)
    sub.add_argument("--json", action="store_true", help="print as JSON")
