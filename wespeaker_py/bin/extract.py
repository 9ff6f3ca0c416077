"""Extract speaker embeddings into a Kaldi ark/scp (stage 4 of the recipe).

    python -m wespeaker_py.bin.extract --config EXP/config.yaml \\
        --model_path EXP/models/avg_model.pt --data_type raw \\
        --data_list data/vox1/raw.list --embed_ark EXP/embeddings/vox1/xvector.ark \\
        [--batch-size 16 --num-workers 4 --nj 4 --gpus "[0,1]"] \\
        [--random_chunk True [--num_frms 200] [--seed 42]] \\
        [--spk2utt data/vox2_dev/spk2utt] [--mean_vec True]

By default every utterance is embedded whole. --random_chunk True embeds one
random chunk of --num_frms frames (default: the config's dataset_args.num_frms)
of each utterance instead, repeated to that length when the utterance is
shorter, as WeSpeaker's extraction does for its back-end set (vox2_dev); the
chunk of an utterance depends only on --seed and its key. Of multi-channel
audio the first channel is used, as in training, unless --channel says
otherwise (mean, loudest, or a channel number).

Writes xvector.ark and xvector.scp (the scp beside the ark), atomically. Batches
only group utterances of equal length, so every embedding equals the one the
utterance gets alone. With --nj N the list is split into N jobs (on the GPUs of
--gpus round-robin, or on the CPU) and the parts are merged. --spk2utt also
writes per-speaker means (spk_xvector.ark/scp; the utterances extraction skipped,
within --max_fail_fraction, are left out of them), --mean_vec True the mean of the
set (mean_vec.npy), both beside the ark; a new ark removes the earlier ones first.
Band fills beside the config (band_fill_<HZ>hz.npz, see 'wespeaker-py band-fill')
fill the empty top mel bins of files that come at HZ.

Until the ark appears, finished embeddings wait in ``.extract_jobs.<ark name>/``
beside it; after a kill, the same command continues from them. An empty list, a
list with a key given twice, an output folder that cannot be written, or a run in
which every utterance, or more than --max_fail_fraction of them, was skipped, exits
non-zero and writes nothing; the run ends with "N done, M skipped (reasons)". With
a shard list, --expected_utterances N counts the utterances no shard delivered (a shard
lost or cut short) as skipped too.
Each job computes with --num_threads threads (default: half the cores, at most 4,
shared among the --nj jobs; $OMP_NUM_THREADS when set).
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from wespeaker_py.cli.common import (add_bool_flag, add_channel_flag, add_fail_fraction_flag,
                                     add_flag, bin_parser, int_between, positive_int, run_main)
from wespeaker_py.defaults import DEFAULT_BUFFER_MB
from wespeaker_py.utils.logging_utils import setup_logging
from wespeaker_py.utils.paths import refuse_output_over_input


def gpus_flag(text: str) -> List[int]:
    """``--gpus`` as the config's ``gpus`` is read (:func:`wespeaker_py.config.parse_gpus`):
    ``"[0,1]"``, ``"0,1"`` -> ``[0, 1]``; ``"[]"``, ``""`` or ``"-1"`` -> ``[]`` (CPU)."""
    from wespeaker_py.config.gpus import parse_gpus
    from wespeaker_py.config.fields import ConfigError
    try:
        return parse_gpus(text, "--gpus")
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__)
    add_flag(parser, "config", required=True, help="the experiment's config.yaml")
    add_flag(parser, "model_path", required=True, help="checkpoint (e.g. avg_model.pt)")
    add_flag(parser, "data_type", default="shard", choices=("raw", "shard"),
             help="kind of data list")
    add_flag(parser, "data_list", required=True, help="raw.list or shard.list")
    add_flag(parser, "embed_ark", required=True, help="output .ark; the .scp goes beside it")
    add_flag(parser, "batch_size", type=positive_int, default=1,
             help="most utterances (all of equal length) in one forward pass")
    add_flag(parser, "num_workers", type=int_between(0), default=1,
             help="DataLoader workers per job")
    add_flag(parser, "nj", type=positive_int, default=1, help="number of parallel jobs")
    add_flag(parser, "gpus", type=gpus_flag, default=None,
             help="GPUs for the jobs, e.g. [0,1] (default: all visible; [] for CPU)")
    add_flag(parser, "device", default=None,
             help="device of a single job: cpu, cuda, cuda:N (default: first of --gpus)")
    add_bool_flag(parser, "random_chunk", default=False,
                  help="embed one random chunk of --num_frms frames of each utterance")
    add_flag(parser, "num_frms", type=positive_int, default=None,
             help="frames of a chunk (default: the config's dataset_args.num_frms)")
    add_flag(parser, "seed", type=int_between(0), default=42,
             help="seed of the chunk positions")
    add_channel_flag(parser)
    add_flag(parser, "buffer_mb", type=int, default=DEFAULT_BUFFER_MB,
             help="memory for features waiting for a batch of their length")
    add_flag(parser, "spk2utt", default=None,
             help="also write per-speaker mean embeddings spk_xvector.ark/scp")
    add_bool_flag(parser, "mean_vec", default=False,
                  help="also write the set's mean embedding mean_vec.npy")
    add_flag(parser, "expected_utterances", type=positive_int, default=None,
             help="utterances the shard list holds (e.g. lines of wav.scp): those never "
                  "delivered (a lost or truncated shard) count as skipped, and the progress "
                  "bar gets a total")
    add_fail_fraction_flag(parser)
    # WeSpeaker's tools/extract_embedding.sh passes these; augmentation at
    # extraction time is not supported, so only aug_prob 0 is accepted.
    add_flag(parser, "reverb_data", default=None, help="accepted for compatibility")
    add_flag(parser, "noise_data", default=None, help="accepted for compatibility")
    add_flag(parser, "aug_prob", type=float, default=0.0, help="must be 0")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    from wespeaker_py.inference.extract_set import extract_set, side_files
    from wespeaker_py.io.ark import scp_path_for
    if args.aug_prob != 0.0:
        parser.error("--aug_prob: augmenting utterances at extraction is not supported")
    if args.expected_utterances is not None and args.data_type == "raw":
        parser.error("--expected_utterances is for a shard list: a raw list names each of "
                     "its utterances")
    if args.device is not None and args.nj > 1:
        parser.error("--device sets the device of a single job; with --nj > 1 give the jobs' "
                     "GPUs with --gpus")
    if args.num_frms is not None and not args.random_chunk:
        parser.error("--num_frms sets the chunk of --random_chunk True")
    try:
        scp_path_for(args.embed_ark)
    except ValueError as error:
        parser.error(f"--embed_ark: {error}")
    outputs = {"--embed_ark": args.embed_ark,
               f"--embed_ark {args.embed_ark}'s .scp": scp_path_for(args.embed_ark),
               **side_files(args.embed_ark, bool(args.spk2utt), args.mean_vec)}
    refuse_output_over_input(outputs, {"--data_list": args.data_list, "--config": args.config,
                                       "--model_path": args.model_path,
                                       "--spk2utt": args.spk2utt})
    setup_logging()
    extract_set(args.config, args.model_path, args.data_type, args.data_list, args.embed_ark,
                num_jobs=args.nj, gpus=args.gpus, device=args.device,
                batch_size=args.batch_size, num_workers=args.num_workers,
                buffer_mb=args.buffer_mb, random_chunk=args.random_chunk,
                num_frms=args.num_frms, chunk_seed=args.seed, channel=args.channel,
                max_fail_fraction=args.max_fail_fraction,
                expected_utterances=args.expected_utterances, spk2utt=args.spk2utt,
                mean_vec=args.mean_vec)


if __name__ == "__main__":
    sys.exit(run_main(main))
