"""Export a trained speaker model to ONNX (needs the onnx and onnxruntime packages).

    python -m wespeaker_py.bin.export_onnx --config EXP/config.yaml \\
        --checkpoint EXP/models/avg_model.pt --output_model EXP/models/final.onnx \\
        [--num_frames 200] [--mean_vec EXP/embeddings/vox2_dev/mean_vec.npy]

Input "feats" [B, T, F] fbank features, output "embs" [B, E]; B and T are
dynamic unless --num_frames fixes T. --mean_vec is subtracted inside the
graph. RepVGG models are fused into their deploy form first; the file is
checked with onnxruntime against the eager model before it is written. Its
metadata (wespeaker_py_kind "feature_embedding", wespeaker_py_info JSON) records
the model name and identity, sample rate, fbank settings, embedding size, fewest
frames and whether a mean vector is subtracted inside.
"""
from __future__ import annotations

import argparse
import functools
import sys
from typing import List, Optional

from wespeaker_py.cli.common import UsageError, add_flag, bin_parser, int_between, run_main
from wespeaker_py.defaults import DEFAULT_OPSET
from wespeaker_py.utils.logging_utils import setup_logging
from wespeaker_py.utils.paths import refuse_output_over_input

# the opsets torch's TorchScript-based exporter (the one used here) writes; a model may
# need more than the least (its error names the operator)
MIN_OPSET, MAX_OPSET = 7, 20


# an argparse ``type``: an ONNX opset the exporter can write
opset = int_between(MIN_OPSET, MAX_OPSET, "the opsets the exporter writes")


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__)
    add_flag(parser, "config", required=True, help="the experiment's config.yaml")
    add_flag(parser, "checkpoint", required=True, help="checkpoint (e.g. avg_model.pt)")
    add_flag(parser, "output_model", required=True, help="ONNX file to write")
    add_flag(parser, "num_frames", type=int, default=-1,
             help="fix the number of input frames, at least the fewest the model gives an "
                  "embedding for (default: dynamic)")
    add_flag(parser, "mean_vec", default=None, help="mean_vec.npy to subtract from embeddings")
    add_flag(parser, "opset_version", type=opset, default=DEFAULT_OPSET,
             help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET}, WeSpeaker's)")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    """Export; errors go to :func:`run_main` (one line, exit status 2)."""
    args = build_parser().parse_args(argv)
    refuse_output_over_input({"--output_model": args.output_model},
                             {"--config": args.config, "--checkpoint": args.checkpoint,
                              "--mean_vec": args.mean_vec})
    from wespeaker_py.config import load_model_config
    from wespeaker_py.export import (export_onnx, exportable_model, load_exportable_embedder,
                                     require_onnx_packages)
    from wespeaker_py.export.metadata import model_info
    from wespeaker_py.export.onnx_export import (MeanVectorMismatchError, OpsetError,
                                                 TooFewFramesError)
    from wespeaker_py.scoring.embeddings import load_mean_vector
    from wespeaker_py.utils.tables import DataFormatError
    require_onnx_packages()
    setup_logging()
    mean_vec = load_mean_vector(args.mean_vec) if args.mean_vec else None
    config = load_model_config(args.config)
    embedder = load_exportable_embedder(config, args.checkpoint)
    model, feat_dim = exportable_model(embedder, args.checkpoint)
    info = model_info(config.model, embedder.frontend, model, embedder.identity)
    # through the API's export: the files an earlier `wespeaker-py export` left beside the
    # graph (its mean vector, which this graph may subtract inside) go when it is replaced
    from wespeaker_py.api.exporting import export_with_companions
    try:
        export_with_companions(args.output_model, {}, functools.partial(
            export_onnx, model, feat_dim, args.output_model, args.num_frames, mean_vec,
            args.opset_version, info=info))
    except MeanVectorMismatchError as error:
        raise DataFormatError(args.mean_vec, None, str(error)) from None
    except TooFewFramesError as error:
        raise UsageError(f"--num_frames: {error}") from None
    except OpsetError as error:
        raise UsageError(f"--opset_version: {error}") from None


if __name__ == "__main__":
    sys.exit(run_main(main))
