"""``wespeaker-py``: use a trained speaker model from the shell.

Subcommands: embed, similarity, verify, enroll, identify, calibrate, diarize, export, info
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
  wespeaker-py diarize --model exp/ResNet34 --wav_scp data/wav.scp -o sys.rttm \
      --reco2num_spk data/ref.rttm --cluster_method nme-sc --resolution 0.1

Speech from Silero VAD (--vad energy: a simple energy detector), 1.5 s windows
every 0.75 s embedded with MODEL, spectral clustering with the number of
speakers from the eigen-gap (or --num_speakers / --reco2num_spk), turns written
as RTTM. Of multi-channel audio the first channel is used. Every setting below
is checked before the model loads. Needs: pip install 'wespeaker_py[diar]'.""",
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


# DiarizationOptions fields that the diarize command sets from flags of the same name
DIARIZE_SETTINGS = ("vad_threshold", "min_speech", "min_silence", "window", "shift",
                    "ahc_threshold", "min_cluster_size", "merge_threshold", "resolution")


def cmd_diarize(args: argparse.Namespace) -> int:
    wav_scp = args.wav_scp
    if args.audio is not None and args.audio.endswith(".scp") and wav_scp is None:
        wav_scp, args.audio = args.audio, None
    if (args.audio is None) == (wav_scp is None):
        raise UsageError("diarize: give one audio file or --wav_scp")
    if wav_scp is not None and args.output is None:
        raise UsageError("diarize: with --wav_scp give --output FILE.rttm")
    if args.reco2num_spk is not None and (wav_scp is None or args.num_speakers is not None):
        raise UsageError("diarize: --reco2num_spk goes with --wav_scp, without --num_speakers")
    from wespeaker_py.diarization.options import DiarizationOptions
    settings = {name: getattr(args, name) for name in DIARIZE_SETTINGS}
    # every setting is checked before the (slow) model load
    DiarizationOptions.from_settings(vad=args.vad, cluster_method=args.cluster_method,
                                     num_speakers=args.num_speakers,
                                     min_speakers=args.min_speakers,
                                     max_speakers=args.max_speakers, **settings)
    _require_files(*[path for path in (wav_scp or args.audio, args.reco2num_spk) if path])
    counts = None
    if args.reco2num_spk is not None:
        from wespeaker_py.diarization.rttm import read_speaker_counts
        counts = read_speaker_counts(args.reco2num_spk)
    model = _load(args)
    options = dict(num_speakers=args.num_speakers, min_speakers=args.min_speakers,
                   max_speakers=args.max_speakers, vad=args.vad,
                   cluster_method=args.cluster_method, batch_size=args.batch_size, **settings)
    if wav_scp is not None:
        summary = model.diarize_many(wav_scp, args.output, progress=sys.stderr.isatty(),
                                     speaker_counts=counts, **options)
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


def _add_diarize_flags(sub: argparse.ArgumentParser) -> None:
    """The diarize command's inputs, and a flag per setting of DiarizationOptions (its defaults)."""
    from wespeaker_py.diarization.options import CLUSTER_METHODS, DiarizationOptions
    defaults = DiarizationOptions()
    sub.add_argument("audio", nargs="?", help="an audio file (or a wav.scp ending in .scp)")
    add_flag(sub, "wav_scp", default=None, help="diarize every recording of this wav.scp")
    sub.add_argument("-o", "--output", default=None,
                     help="RTTM file to write (default for one file: stdout)")
    add_flag(sub, "batch_size", type=int, default=32, help="windows per forward pass")

    group = sub.add_argument_group("number of speakers")
    add_flag(group, "num_speakers", type=int, default=None,
             help="number of speakers, if known (default: estimated)")
    add_flag(group, "reco2num_spk", default=None,
             help="with --wav_scp: each recording's known number of speakers, from a Kaldi "
                  "reco2num_spk file ('<recording> <count>') or a reference .rttm")
    add_flag(group, "min_speakers", type=int, default=defaults.min_speakers,
             help=f"fewest speakers to estimate (default {defaults.min_speakers})")
    add_flag(group, "max_speakers", type=int, default=defaults.max_speakers,
             help=f"most speakers to estimate (default {defaults.max_speakers}); more are "
                  "capped and the command says so")

    group = sub.add_argument_group("speech detection")
    group.add_argument("--vad", default=defaults.vad, choices=("silero", "energy"),
                       help=f"speech detector (default {defaults.vad})")
    add_flag(group, "vad_threshold", type=float, default=defaults.vad_threshold,
             help=f"Silero speech probability that starts speech (default "
                  f"{defaults.vad_threshold:g})")
    add_flag(group, "min_speech", type=float, default=defaults.min_speech,
             help=f"seconds; shorter speech is dropped (default {defaults.min_speech:g})")
    add_flag(group, "min_silence", type=float, default=defaults.min_silence,
             help=f"seconds; shorter pauses are bridged (default {defaults.min_silence:g})")
    add_flag(group, "window", type=float, default=defaults.window,
             help=f"seconds per embedding window (default {defaults.window:g})")
    add_flag(group, "shift", type=float, default=defaults.shift,
             help=f"seconds between window starts (default {defaults.shift:g})")

    group = sub.add_argument_group("clustering")
    add_flag(group, "cluster_method", default=defaults.cluster_method,
             help=f"{', '.join(CLUSTER_METHODS)} (default {defaults.cluster_method}: "
                  "WeSpeaker's; umap-hdbscan needs the diar-umap extra); checked before the "
                  "model loads")
    add_flag(group, "ahc_threshold", type=float, default=defaults.ahc_threshold,
             help=f"agglomerative: cosine distance at which clusters stop merging (default "
                  f"{defaults.ahc_threshold:g})")
    add_flag(group, "min_cluster_size", type=int, default=defaults.min_cluster_size,
             help="refine an estimated count (3D-Speaker): fold clusters of at most this many "
                  f"windows into the nearest larger one (default {defaults.min_cluster_size}: "
                  "off)")
    add_flag(group, "merge_threshold", type=float, default=defaults.merge_threshold,
             help="refine an estimated count (3D-Speaker): join clusters whose centroids have "
                  "at least this cosine (default: off)")
    add_flag(group, "resolution", type=float, default=defaults.resolution,
             help="seconds per frame of the turns, each frame given to the best-matching "
                  "speaker of the windows covering it (default: WeSpeaker's window halves)")


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
    _add_diarize_flags(sub)

    sub = command("export", cmd_export, "export the model to ONNX")
    sub.add_argument("--onnx", required=True, help="output .onnx file")
    add_flag(sub, "with_frontend", action="store_true",
             help="waveform input: put fbank + CMN inside the graph")

    sub = command("info", cmd_info, "model name, size, sample rate and front-end settings")
    sub.add_argument("--json", action="store_true", help="print as JSON")
    return parser


def _main(argv: List[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point (``wespeaker-py``)."""
    sys.exit(run_main(_main, argv, prog=PROG))


if __name__ == "__main__":
    main()
