"""``wespeaker-py``: use a trained speaker model from the shell.

Subcommands: embed, similarity, verify, enroll, identify, calibrate, diarize, export, info,
finetune
(``wespeaker-py SUBCOMMAND --help`` for each). MODEL is an experiment directory,
a WeSpeaker-style model folder (config.yaml + avg_model.pt), a checkpoint (with
--config, or config.yaml beside it) or an .onnx file from
``wespeaker-py export --onnx --with_frontend``.

Only argument parsing happens at import time; torch and the model load when a
subcommand runs, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional

from wespeaker_py.cli.common import UsageError, add_common_flags, add_flag, run_main

PROG = "wespeaker-py"
EXAMPLES = {
    "embed": """examples:
  wespeaker-py embed --model exp/ResNet34 a.wav                    # prints the vector
  wespeaker-py embed --model exp/ResNet34 a.wav --output a.npy     # or a.txt
  wespeaker-py embed --model exp/ResNet34 --wav_scp data/test/wav.scp \\
      --output emb/xvector.ark                                     # + emb/xvector.scp""",
    "similarity": """examples:
  wespeaker-py similarity --model exp/ResNet34 a.wav b.wav         # cosine in [-1, 1]""",
    "verify": """examples:
  wespeaker-py verify --model exp/ResNet34 a.wav b.wav
  wespeaker-py verify --model exp/ResNet34 a.wav b.wav --prior 0.1 \\
      --operating_point fa1 --json

Uses MODEL's calibration.json (see 'wespeaker-py calibrate'); without one the
decision compares the raw cosine with --threshold (default 0.5) and says so.
Exit status 0 either way; the decision is in the output.""",
    "enroll": """examples:
  wespeaker-py enroll --model exp/ResNet34 --gallery speakers.npz alice a1.wav a2.wav""",
    "identify": """examples:
  wespeaker-py identify --model exp/ResNet34 --gallery speakers.npz who.wav --top_k 3""",
    "calibrate": """examples:
  wespeaker-py calibrate --model exp/ResNet34 --trials data/dev/trials \\
      --wav_scp data/dev/wav.scp

Embeds the trials' utterances, scores the trials by cosine, fits a logistic
score-to-LLR map and writes calibration.json beside the model (or --output):
its parameters, the trial set's EER and the thresholds at the EER point and at
1% false acceptance. 'verify' then uses it.""",
    "diarize": """examples:
  wespeaker-py diarize --model exp/ResNet34 meeting.wav                # RTTM on stdout
  wespeaker-py diarize --model exp/ResNet34 meeting.wav --num_speakers 3 -o meeting.rttm
  wespeaker-py diarize --model exp/ResNet34 --wav_scp data/wav.scp -o exp/diar/sys.rttm

Speech from Silero VAD (--vad energy: a simple energy detector), 1.5 s windows
every 0.75 s embedded with MODEL, spectral clustering with the number of
speakers from the eigen-gap (or --num_speakers), turns written as RTTM.
Of multi-channel audio the first channel is used. Needs: pip install 'wespeaker_py[diar]'.""",
    "export": """examples:
  wespeaker-py export --model exp/ResNet34 --onnx resnet34.onnx --with_frontend
  wespeaker-py export --model exp/ResNet34 --onnx resnet34_feats.onnx

--with_frontend: the graph maps float32 waveforms [B, samples] in [-1, 1] at
the model's sample rate to embeddings (fbank + CMN inside; dynamic batch and
length); it is checked against the eager model before it is written. Without
it the graph takes fbank features [B, T, F], as WeSpeaker's export does.""",
    "info": """examples:
  wespeaker-py info --model exp/ResNet34 [--json]""",
}


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "model", required=True, metavar="MODEL",
             help="experiment dir, model folder, checkpoint or .onnx file")
    add_flag(parser, "config", default=None,
             help="config.yaml for a checkpoint (default: beside it or one folder up)")
    add_flag(parser, "device", default=None,
             help="cpu, cuda or cuda:N (default: the first GPU if any; ONNX runs on CPU)")
    add_flag(parser, "calibration", default=None,
             help="calibration.json to use or write (default: beside the model)")
    add_flag(parser, "mean_vec", default=None,
             help="mean embedding (.npy) to subtract before cosine "
                  "(default: mean_vec.npy beside the model, if present)")
    add_common_flags(parser)


def _require_files(*paths: str) -> None:
    """Fail before the (slow) model load when an input file is missing."""
    from wespeaker_py.errors import AudioInputError
    for path in paths:
        if not os.path.exists(path):
            raise AudioInputError(f"{path} does not exist")


def _load(args: argparse.Namespace):
    from wespeaker_py.api import load_model
    return load_model(args.model, device=args.device, config=args.config,
                      mean_vec=args.mean_vec, calibration=args.calibration)


def _write_vector(path: str, vector) -> None:
    import numpy as np

    from wespeaker_py.utils.file_utils import atomic_open, atomic_path
    if path.endswith(".npy"):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, vector)
    else:
        with atomic_open(path, "w", encoding="utf-8") as out:
            out.write(" ".join(f"{value:.6g}" for value in vector) + "\n")


def cmd_embed(args: argparse.Namespace) -> int:
    if (args.audio is None) == (args.wav_scp is None):
        raise UsageError("embed: give one audio file or --wav_scp")
    if args.wav_scp is not None and (args.output is None or not args.output.endswith(".ark")):
        raise UsageError("embed: with --wav_scp give --output ending in .ark "
                           "(its .scp is written beside it)")
    _require_files(*[path for path in (args.audio, args.wav_scp) if path])
    model = _load(args)
    if args.audio is not None:
        vector = model.embed(args.audio)
        if args.output:
            _write_vector(args.output, vector)
        else:
            print(" ".join(f"{value:.6g}" for value in vector))
        return 0
    from wespeaker_py.io.ark import open_embedding_writer, scp_path_for
    results = model.embed_many(args.wav_scp, batch_size=args.batch_size,
                               progress=sys.stderr.isatty())
    with open_embedding_writer(args.output) as writer:
        for key, vector in results.embeddings.items():
            writer.write(key, vector)
    print(f"{len(results.embeddings)} embeddings in {args.output} and "
          f"{scp_path_for(args.output)}; {len(results.skipped)} skipped", file=sys.stderr)
    return 0


def cmd_similarity(args: argparse.Namespace) -> int:
    _require_files(args.first, args.second)
    print(f"{_load(args).similarity(args.first, args.second):.6f}")
    return 0


def _print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, sort_keys=True, default=str))


def cmd_verify(args: argparse.Namespace) -> int:
    from dataclasses import asdict
    _require_files(args.first, args.second)
    result = _load(args).verify(args.first, args.second, prior=args.prior,
                                operating_point=args.operating_point, threshold=args.threshold)
    if args.json:
        _print_json(asdict(result))
    else:
        print(result.describe())
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    _require_files(*args.audio)
    size = _load(args).enroll(args.name, *args.audio, gallery=args.gallery)
    print(f"enrolled {args.name} ({len(args.audio)} recording(s)); {args.gallery} holds "
          f"{size} speaker(s)")
    return 0


def cmd_identify(args: argparse.Namespace) -> int:
    _require_files(args.audio, args.gallery)
    ranking = _load(args).identify(args.audio, gallery=args.gallery, top_k=args.top_k)
    if args.json:
        _print_json([{"speaker": name, "score": score} for name, score in ranking])
    else:
        for name, score in ranking:
            print(f"{name} {score:.6f}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    _require_files(args.trials, args.wav_scp)
    model = _load(args)
    calibration = model.calibrate(args.trials, args.wav_scp, output=args.output,
                                  batch_size=args.batch_size, progress=sys.stderr.isatty())
    eer_point = calibration.operating_points["eer"]
    fa_point = calibration.operating_points["fa1"]
    print(f"calibration written to {args.output or model.calibration_path}: "
          f"{calibration.num_target} target and {calibration.num_nontarget} nontarget trials, "
          f"EER {100 * calibration.eer:.2f}%, Cllr {calibration.cllr:.3f}; thresholds "
          f"{eer_point.threshold:.4f} (EER point), {fa_point.threshold:.4f} (1% false accept)")
    return 0


def cmd_diarize(args: argparse.Namespace) -> int:
    wav_scp = args.wav_scp
    if args.audio is not None and args.audio.endswith(".scp") and wav_scp is None:
        wav_scp, args.audio = args.audio, None
    if (args.audio is None) == (wav_scp is None):
        raise UsageError("diarize: give one audio file or --wav_scp")
    if wav_scp is not None and args.output is None:
        raise UsageError("diarize: with --wav_scp give --output FILE.rttm")
    from wespeaker_py.diarization.clustering import check_cluster_options
    check_cluster_options(args.cluster_method, args.num_speakers, args.min_speakers,
                          args.max_speakers)
    _require_files(wav_scp or args.audio)
    model = _load(args)
    options = dict(num_speakers=args.num_speakers, min_speakers=args.min_speakers,
                   max_speakers=args.max_speakers, vad=args.vad,
                   cluster_method=args.cluster_method, batch_size=args.batch_size)
    if wav_scp is not None:
        summary = model.diarize_many(wav_scp, args.output, progress=sys.stderr.isatty(),
                                     **options)
        print(f"{summary.describe()}; turns in {args.output}", file=sys.stderr)
        return 0
    from wespeaker_py.diarization import write_rttm
    from wespeaker_py.diarization.rttm import format_rttm_line
    result = model.diarize(args.audio, **options)
    recording = os.path.splitext(os.path.basename(args.audio))[0]
    if not result.turns:
        print(f"{args.audio}: no speech found; the RTTM is empty", file=sys.stderr)
    if args.output:
        write_rttm(args.output, {recording: result.turns})
        print(f"{result.num_speakers} speakers, {len(result.turns)} turns in {args.output}",
              file=sys.stderr)
    else:
        for turn in result.turns:
            print(format_rttm_line(recording, turn))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    model = _load(args)
    if model.backend.kind != "torch":
        raise UsageError(f"export: {args.model} is already an ONNX model")
    from wespeaker_py.api.exporting import export_feats_onnx, export_waveform_graph
    if args.with_frontend:
        export_waveform_graph(model, args.onnx)
    else:
        export_feats_onnx(model, args.onnx)
    print(f"wrote {args.onnx}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    details = _load(args).info()
    if args.json:
        _print_json(details)
    else:
        width = max(len(key) for key in details)
        for key, value in details.items():
            print(f"{key:<{width}}  {value}")
    return 0


# -- finetune ----------------------------------------------------------------------------------

FINETUNE_EXAMPLES = """examples:
  wespeaker-py finetune --model exp/ResNet34 --data data/calls --out exp/ResNet34-calls
  wespeaker-py finetune --model exp/ResNet34 --data data/calls --out exp/ResNet34-calls \\
      --epochs 8 --lr 5e-4 --freeze none --device cpu --num_threads 2

DIR: wav.scp + utt2spk (+ segments) at any rate. A speaker-disjoint dev part
(--dev_speakers) measures EER before and after and fits calibration.json. OUT
is a model folder (config.yaml, avg_model.pt, calibration.json, finetune.json);
run the same command again to resume a killed run. See docs/finetune.md."""


def cmd_finetune(args: argparse.Namespace) -> int:
    import logging

    from wespeaker_py.finetune import FinetuneOptions, finetune
    from wespeaker_py.utils.logging_utils import setup_logging
    if not logging.getLogger().handlers:  # training logs its progress; keep a caller's setup
        setup_logging()
    fields = FinetuneOptions.__dataclass_fields__
    options = FinetuneOptions(**{name: getattr(args, name) for name in fields
                                 if getattr(args, name) is not None})
    report = finetune(args.model, args.data, args.out, options, device=args.device,
                      num_threads=args.num_threads, overwrite=args.overwrite,
                      config=args.config, mix_data=args.mix_data)
    before, after = report["dev"]["before"], report["dev"]["after"]
    print(f"dev ({report['data']['dev_speakers']} speakers, {after['trials']} trials): "
          f"EER {100 * before['eer']:.2f}% before, {100 * after['eer']:.2f}% after; "
          f"minDCF {before['min_dcf']:.3f} before, {after['min_dcf']:.3f} after; "
          f"model in {args.out}")
    return 0


def _add_finetune_command(commands) -> None:
    from wespeaker_py.finetune.config import FREEZE_CHOICES, FinetuneOptions
    defaults = FinetuneOptions()
    summary = "fine-tune a model on your own speakers: a new model folder with calibration"
    sub = commands.add_parser("finetune", help=summary, description=summary,
                              epilog=FINETUNE_EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.set_defaults(handler=cmd_finetune)
    add_flag(sub, "model", required=True, metavar="SRC",
             help="experiment dir, model folder or checkpoint with PyTorch weights")
    add_flag(sub, "config", default=None, help="config.yaml for a checkpoint")
    add_flag(sub, "data", required=True, metavar="DIR", help="wav.scp + utt2spk (+ segments)")
    add_flag(sub, "out", required=True, metavar="OUT", help="the new model folder")
    add_flag(sub, "mix_data", default=None, metavar="DIR2",
             help="original-domain data (wav.scp + utt2spk) mixed into training")
    add_flag(sub, "epochs", type=int, default=None, help=f"default {defaults.epochs}")
    add_flag(sub, "lr", type=float, default=None,
             help=f"peak learning rate as applied (Adam), default {defaults.lr:g}")
    add_flag(sub, "margin", type=float, default=None,
             help=f"additive angular margin, default {defaults.margin:g}")
    add_flag(sub, "freeze", default=None, choices=FREEZE_CHOICES,
             help=f"what does not train in the first --freeze_epochs: front (the first layer), "
                  f"body (all but the new head) or none; default {defaults.freeze}")
    add_flag(sub, "freeze_epochs", type=int, default=None,
             help=f"default {defaults.freeze_epochs}")
    add_flag(sub, "sample_rate", type=int, default=None,
             help="the new model's rate (default: the data's)")
    add_flag(sub, "dev_speakers", type=int, default=None,
             help="speakers held out for the dev EER and calibration (default: a fifth)")
    add_flag(sub, "batch_size", type=int, default=None, help="default: the source config's")
    add_flag(sub, "num_workers", type=int, default=None, help="data loader workers")
    add_flag(sub, "num_avg", type=int, default=None,
             help=f"last checkpoints averaged, default {defaults.num_avg}")
    add_flag(sub, "seed", type=int, default=None, help=f"default {defaults.seed}")
    add_flag(sub, "device", default=None, help="cpu, cuda or cuda:N (default: a GPU if any)")
    add_flag(sub, "num_threads", type=int, default=None, help="torch CPU threads")
    sub.add_argument("--overwrite", action="store_true",
                     help="replace OUT when it holds another run")
    add_common_flags(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(parser)
    commands = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    handlers: Dict[str, Callable[[argparse.Namespace], int]] = {}

    def command(name: str, handler, summary: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary,
                                  epilog=EXAMPLES[name],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_model_flags(sub)
        sub.set_defaults(handler=handler)
        handlers[name] = handler
        return sub

    sub = command("embed", cmd_embed, "embed one file (.npy or text) or a wav.scp (ark/scp)")
    sub.add_argument("audio", nargs="?", help="an audio file")
    add_flag(sub, "wav_scp", default=None, help="embed every utterance of this wav.scp")
    add_flag(sub, "output", default=None,
             help="FILE.npy or FILE.txt for one file; FILE.ark for a wav.scp")
    add_flag(sub, "batch_size", type=int, default=16, help="utterances per batch (wav.scp)")

    for name, handler, summary in (
            ("similarity", cmd_similarity, "cosine similarity of two recordings"),
            ("verify", cmd_verify, "same speaker? score, calibrated LLR, probability, "
                                   "decision")):
        sub = command(name, handler, summary)
        sub.add_argument("first", help="audio file")
        sub.add_argument("second", help="audio file")
    sub.add_argument("--prior", type=float, default=0.5,
                     help="prior probability of the same speaker (default 0.5)")
    add_flag(sub, "operating_point", default="eer", choices=("eer", "fa1"),
             help="the calibration's threshold to decide with: its EER point or 1%% false "
                  "acceptance (default eer)")
    sub.add_argument("--threshold", type=float, default=None,
                     help="decide with this cosine threshold instead")
    sub.add_argument("--json", action="store_true", help="print the result as JSON")

    sub = command("enroll", cmd_enroll, "add recordings of a speaker to a gallery file")
    sub.add_argument("--gallery", required=True, help="gallery file (.npz), created if missing")
    sub.add_argument("name", help="speaker name")
    sub.add_argument("audio", nargs="+", help="audio files of the speaker")

    sub = command("identify", cmd_identify, "the enrolled speakers closest to a recording")
    sub.add_argument("--gallery", required=True, help="gallery file written by 'enroll'")
    sub.add_argument("audio", help="audio file")
    add_flag(sub, "top_k", type=int, default=5, help="how many speakers to list (default 5)")
    sub.add_argument("--json", action="store_true", help="print the ranking as JSON")

    sub = command("calibrate", cmd_calibrate, "fit score calibration on labelled trials")
    sub.add_argument("--trials", required=True,
                     help="trial list: 'enroll test target|nontarget' per line")
    add_flag(sub, "wav_scp", required=True, help="wav.scp of the trials' utterances")
    sub.add_argument("--output", default=None,
                     help="where to write calibration.json (default: beside the model)")
    add_flag(sub, "batch_size", type=int, default=16, help="utterances per batch")

    sub = command("diarize", cmd_diarize, "who spoke when: speaker turns of a recording as RTTM")
    sub.add_argument("audio", nargs="?", help="an audio file (or a wav.scp ending in .scp)")
    add_flag(sub, "wav_scp", default=None, help="diarize every recording of this wav.scp")
    sub.add_argument("-o", "--output", default=None,
                     help="RTTM file to write (default for one file: stdout)")
    add_flag(sub, "num_speakers", type=int, default=None,
             help="number of speakers, if known (default: estimated)")
    add_flag(sub, "min_speakers", type=int, default=1, help="fewest speakers to estimate")
    add_flag(sub, "max_speakers", type=int, default=10, help="most speakers to estimate")
    sub.add_argument("--vad", default="silero", choices=("silero", "energy"),
                     help="speech detector (default silero)")
    add_flag(sub, "cluster_method", default="spectral",
             help="clustering: spectral (WeSpeaker's, default), nme-sc, umap-hdbscan "
                  "(the diar-umap extra) or agglomerative; checked before the model loads")
    add_flag(sub, "batch_size", type=int, default=32, help="windows per forward pass")

    sub = command("export", cmd_export, "export the model to ONNX")
    sub.add_argument("--onnx", required=True, help="output .onnx file")
    add_flag(sub, "with_frontend", action="store_true",
             help="waveform input: put fbank + CMN inside the graph")

    sub = command("info", cmd_info, "model name, size, sample rate and front-end settings")
    sub.add_argument("--json", action="store_true", help="print as JSON")

    _add_finetune_command(commands)
    return parser


def _main(argv: List[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point (``wespeaker-py``)."""
    sys.exit(run_main(_main, argv, prog=PROG))


if __name__ == "__main__":
    main()
