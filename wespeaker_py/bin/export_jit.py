"""Export a trained speaker model as TorchScript (stage 8 of the recipe).

    python -m wespeaker_py.bin.export_jit --config EXP/config.yaml \\
        --checkpoint EXP/models/avg_model.pt --output_file EXP/models/final.zip \\
        [--output_quant_file EXP/models/final_quant.zip]

The module maps fbank features [B, T, F] to embeddings [B, E]. RepVGG models
are fused into their deploy form first. The export is checked against the
eager model on several input shapes before it is written. The file holds what it
is (model name and identity, sample rate, fbank settings, embedding size, fewest
frames) as the JSON extra file wespeaker_py_info.json.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from wespeaker_py.cli.common import add_flag, bin_parser, run_main
from wespeaker_py.defaults import TORCHSCRIPT_METHODS
from wespeaker_py.utils.logging_utils import setup_logging
from wespeaker_py.utils.paths import refuse_output_over_input


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__)
    add_flag(parser, "config", required=True, help="the experiment's config.yaml")
    add_flag(parser, "checkpoint", required=True, help="checkpoint (e.g. avg_model.pt)")
    add_flag(parser, "output_file", required=True, help="TorchScript file to write")
    add_flag(parser, "output_quant_file", default=None,
             help="also write a copy with int8 dynamically quantised Linear layers")
    add_flag(parser, "method", default="auto", choices=TORCHSCRIPT_METHODS,
             help="torch.jit.script, torch.jit.trace, or script falling back to trace (none of "
                  "the model families scripts today, so auto traces and script is refused; "
                  "the trace is checked against the eager model)")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    refuse_output_over_input({"--output_file": args.output_file,
                              "--output_quant_file": args.output_quant_file},
                             {"--config": args.config, "--checkpoint": args.checkpoint})
    from wespeaker_py.config import load_model_config
    from wespeaker_py.export import export_torchscript, exportable_model, load_exportable_embedder
    from wespeaker_py.export.metadata import model_info
    setup_logging()
    config = load_model_config(args.config)
    embedder = load_exportable_embedder(config, args.checkpoint)
    model, feat_dim = exportable_model(embedder, args.checkpoint)
    export_torchscript(model, feat_dim, args.output_file, args.output_quant_file, args.method,
                       info=model_info(config.model, embedder.frontend, model,
                                       embedder.identity))


if __name__ == "__main__":
    sys.exit(run_main(main))
