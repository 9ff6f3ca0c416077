"""``wespeaker-py diarize``: who spoke when, as RTTM, with a flag for every setting of
:class:`~wespeaker_py.diarization.options.DiarizationOptions`."""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple

from wespeaker_py.cli.checks import audio_arguments, check_before_compute, refuse_over_inputs
from wespeaker_py.cli.common import UsageError, add_fail_fraction_flag, add_flag, positive_int
from wespeaker_py.cli.model_files import refuse_over_model_files
from wespeaker_py.cli.model_subcommand import add_force_flag, add_model_subcommand, load_model_of

if TYPE_CHECKING:
    from wespeaker_py.diarization.turns import Turn

EXAMPLES = """examples:
  wespeaker-py diarize --model exp/ResNet34 meeting.wav                # RTTM on stdout
  wespeaker-py diarize --model exp/ResNet34 meeting.wav --num_speakers 3 -o meeting.rttm
  wespeaker-py diarize --model exp/ResNet34 meeting.wav -o meeting.rttm --plot meeting.png
  wespeaker-py diarize --model exp/ResNet34 --wav_scp data/wav.scp -o exp/diar/sys.rttm
  wespeaker-py diarize --model exp/ResNet34 meetings/ calls/a.wav -o rttm/  # one RTTM each
  wespeaker-py diarize --model exp/ResNet34 --wav_scp data/wav.scp -o sys.rttm \\
      --reco2num_spk data/ref.rttm --cluster_method nme-sc --resolution 0.1

Speech from Silero VAD (--vad energy: a simple energy detector), 1.5 s windows
every 0.75 s embedded with MODEL (and projected by MODEL's window_lda.npz when it
has one, see 'window-lda'), spectral clustering with the number of speakers from
the eigen-gap (or --num_speakers / --reco2num_spk), turns written as RTTM. Of
multi-channel audio the first channel is used (--channel chooses another; the
RTTM's channel field is --channel N plus 1, NIST counting from 1). Every setting
below is checked before the model loads.

Many recordings (--wav_scp, several audio files, folders searched at any depth for
audio, each recording named by its path below the folder) go into one RTTM
(-o FILE.rttm) or one per recording (-o DIR/, an empty one for no speech). Each
recording is kept as soon as it is done: after an interruption the same command
continues where it stopped. A second run into the same output is refused while the
first runs; a DIR/ holding another run's RTTMs is refused unless --force starts over.
Needs: pip install 'wespeaker_py[diar]'."""


def _check_plot_path(path: str) -> None:
    """``--plot`` must name an image file matplotlib writes (its extension picks the format)."""
    from wespeaker_py.utils.plotting import image_format, image_formats
    if image_format(path) is None:
        raise UsageError(f"diarize: --plot {path}: the time line is drawn as an image, in "
                         f"the format its extension names; give a file ending in one of "
                         f"{', '.join('.' + kind for kind in image_formats())} (e.g. .png)")


def _outputs(args: argparse.Namespace) -> Dict[str, Optional[str]]:
    """diarize's outputs, by flag."""
    return {"-o/--output": args.output, "--plot": args.plot}


def _input_files(args: argparse.Namespace) -> Dict[str, Optional[str]]:
    """diarize's input files besides the audio and the wav.scp, by flag."""
    from wespeaker_py.diarization.options import window_lda_file
    return {"--reco2num_spk": args.reco2num_spk,
            "--window_lda": window_lda_file(args.window_lda)}


def _refuse_diarize_over_inputs(args: argparse.Namespace) -> None:
    """diarize's -o/--output and --plot must not be one of its inputs (the audio arguments as
    given, a wav.scp too)."""
    refuse_over_inputs(args, _outputs(args),
                       {**audio_arguments(args.audio), "--wav_scp": args.wav_scp,
                        **_input_files(args)})


def _check_inputs(args: argparse.Namespace) -> Tuple[Optional[str], bool]:
    """The wav.scp to diarize (the flag's, or a lone audio argument ending in .scp), and
    whether the run is one audio file diarized on its own (stdout or one RTTM; one audio
    file into -o DIR/ is a run of one recording); a combination that cannot work is a
    :class:`UsageError`."""
    from wespeaker_py.diarization.batch import writes_folder
    wav_scp, audio = args.wav_scp, args.audio
    if wav_scp is None and len(audio) == 1 and audio[0].endswith(".scp"):
        wav_scp, audio = audio[0], []
    if bool(audio) == (wav_scp is not None):
        raise UsageError("diarize: give audio files or folders, or --wav_scp")
    lone_file = wav_scp is None and len(audio) == 1 and not os.path.isdir(audio[0])
    one_file = lone_file and not (args.output is not None and writes_folder(args.output))
    if not one_file and args.output is None:
        raise UsageError("diarize: with --wav_scp, several audio files or a folder give -o "
                         "FILE.rttm (one RTTM) or -o DIR/ (one RTTM per recording)")
    if args.reco2num_spk is not None and (one_file or args.num_speakers is not None):
        raise UsageError("diarize: --reco2num_spk goes with --wav_scp (or several recordings), "
                         "without --num_speakers")
    if args.plot is not None and not lone_file:
        raise UsageError("diarize: --plot draws one audio file; for many recordings, draw each "
                         "against its reference with score_diarization --plot_dir")
    return wav_scp, one_file


def cmd_diarize(args: argparse.Namespace) -> int:
    """``wespeaker-py diarize``: the speaker turns of one recording or of many."""
    _refuse_diarize_over_inputs(args)
    wav_scp, one_file = _check_inputs(args)
    if args.plot is not None:
        _check_plot_path(args.plot)
    from wespeaker_py.diarization.options import DiarizationOptions
    # each DiarizationOptions field has a flag of its name (_add_diarize_flags); every
    # setting is checked before the (slow) model load
    settings = {item.name: getattr(args, item.name) for item in fields(DiarizationOptions)}
    checked = DiarizationOptions.from_settings(**settings)
    if args.reco2num_spk is not None:
        checked.check_count_given(f"--reco2num_spk {args.reco2num_spk}", args.min_speakers,
                                  args.max_speakers)
    audio = [] if wav_scp is not None else args.audio
    check_before_compute(audio=audio, inputs=_input_files(args), wav_scp=wav_scp,
                         outputs=[args.output if one_file else None, args.plot],
                         max_fail_fraction=args.max_fail_fraction)
    counts = recordings = None
    if args.reco2num_spk is not None:
        from wespeaker_py.diarization.rttm import read_speaker_counts
        counts = read_speaker_counts(args.reco2num_spk)
    if not one_file:
        from wespeaker_py.diarization.batch import check_output
        from wespeaker_py.diarization.recordings import recordings_of
        check_output(args.output)
        recordings = wav_scp if wav_scp is not None else recordings_of(audio)
    model = load_model_of(args)
    refuse_over_model_files(args, model, _outputs(args))
    _say_window_ldas(args.window_lda, model)
    options = dict(settings, batch_size=args.batch_size, channel=args.channel)
    if recordings is not None:
        summary = model.diarize_many(recordings, args.output, progress=True,
                                     max_fail_fraction=args.max_fail_fraction,
                                     speaker_counts=counts, overwrite=args.force, **options)
        print(f"{summary.describe()}; turns in {args.output}", file=sys.stderr)
        if args.plot:
            _plot_from_folder(args, recordings)
        return 0
    _diarize_one_file(args, model, options)
    return 0


def _say_window_ldas(choice: str, model) -> None:
    """Name on stderr the window LDAs that ``--window_lda choice`` projects with (the log's
    line is below the command line's WARNING level)."""
    from wespeaker_py.diarization.options import window_lda_file
    named = window_lda_file(choice)
    if named is not None:
        print(f"window LDA {named} for every recording", file=sys.stderr)
        return
    if choice != "auto":   # off or none
        return
    in_use = model.window_ldas_in_use()
    if isinstance(in_use, str):   # why they cannot be used: diarizing says it as an error
        return
    for rate, path in sorted(in_use.items()):
        where = ("" if rate == model.sample_rate
                 else f" for recordings at or below {rate} Hz")
        print(f"window LDA{where}: {path}", file=sys.stderr)


def _diarize_one_file(args: argparse.Namespace, model, options: Dict[str, Any]) -> None:
    """One audio file: its RTTM on stdout or in -o, its time line in --plot."""
    from wespeaker_py.diarization import write_rttm
    from wespeaker_py.diarization.rttm import recording_id, rttm_channel, rttm_lines
    audio = args.audio[0]
    recording = recording_id(audio)
    if recording != os.path.splitext(os.path.basename(audio))[0]:
        print(f"{audio}: recording id {recording!r} in the RTTM (RTTM ids cannot hold "
              f"spaces)", file=sys.stderr)
    channel = rttm_channel(args.channel)
    result = model.diarize(audio, **options)
    if not result.turns:
        why = f" ({result.silence})" if result.silence else ""
        print(f"{audio}: no speech found{why}; the RTTM is empty", file=sys.stderr)
    if args.output:
        write_rttm(args.output, {recording: result.turns}, channel)
        print(f"{result.num_speakers} speakers, {len(result.turns)} turns in {args.output}",
              file=sys.stderr)
    else:
        for line in rttm_lines(recording, result.turns, channel):
            print(line)
    if args.plot:
        _draw_time_line(args.plot, audio, recording, result.turns)


def _plot_from_folder(args: argparse.Namespace, recordings: Dict[str, str]) -> None:
    """One audio file diarized into -o DIR/: draw the turns its RTTM there holds (written
    now, or by the earlier run of the same work that this one continued)."""
    from wespeaker_py.diarization.rttm import read_rttm
    (recording, audio), = recordings.items()
    turns = read_rttm(os.path.join(args.output, recording + ".rttm")).get(recording, [])
    _draw_time_line(args.plot, audio, recording, turns)


def _draw_time_line(image: str, audio: str, recording: str, turns: Sequence[Turn]) -> None:
    """Draw ``turns`` of the file ``audio`` over its length (when its header tells it)."""
    from wespeaker_py.audio.files import audio_duration
    from wespeaker_py.diarization.plot import plot_timeline
    from wespeaker_py.errors import WespeakerError
    try:
        duration: Optional[float] = audio_duration(audio)
    except (WespeakerError, OSError):   # the turns alone then set the axis
        duration = None
    plot_timeline(None, turns, image, recording, duration=duration)
    print(f"time line in {image}", file=sys.stderr)


def _add_diarize_flags(sub: argparse.ArgumentParser) -> None:
    """The diarize command's inputs, and a flag per setting of DiarizationOptions (its defaults)."""
    from wespeaker_py.diarization.options import (CLUSTER_METHODS, DEFAULT_AHC_THRESHOLD,
                                                  DEFAULT_EDGE_WEIGHTS, DEFAULT_GAP_RATIO,
                                                  DEFAULT_MAX_SPEAKERS, DEFAULT_MIN_SPEAKERS,
                                                  DEFAULT_VAD_THRESHOLD, EDGE_WEIGHTS,
                                                  DiarizationOptions)
    defaults = DiarizationOptions()
    sub.add_argument("audio", nargs="*",
                     help="audio files, and folders of them (searched at any depth); or a "
                          "wav.scp ending in .scp")
    add_flag(sub, "wav_scp", default=None, help="diarize every recording of this wav.scp")
    sub.add_argument("-o", "--output", default=None,
                     help="RTTM file to write (default for one audio file: stdout), or DIR/ "
                          "(ending in /, or an existing folder) for DIR/<recording>.rttm each")
    add_flag(sub, "plot", default=None,
             help="one audio file: also draw its speakers' turns on a time line, an image "
                  "in the format of the extension (.png, .pdf, .svg, ...)")
    add_flag(sub, "batch_size", type=positive_int, default=32, help="windows per forward pass")

    group = sub.add_argument_group("number of speakers")
    add_flag(group, "num_speakers", type=int, default=None,
             help="number of speakers, if known (default: estimated)")
    add_flag(group, "reco2num_spk", default=None,
             help="with --wav_scp: each recording's known number of speakers, from a Kaldi "
                  "reco2num_spk file ('<recording> <count>') or a reference .rttm")
    add_flag(group, "min_speakers", type=int, default=defaults.min_speakers,
             help=f"fewest speakers to estimate (default {DEFAULT_MIN_SPEAKERS}; not with a "
                  "count given)")
    add_flag(group, "max_speakers", type=int, default=defaults.max_speakers,
             help=f"most speakers to estimate (default {DEFAULT_MAX_SPEAKERS}); more are "
                  "capped and the command says so (not with a count given)")

    group = sub.add_argument_group("speech detection")
    group.add_argument("--vad", default=defaults.vad, choices=("silero", "energy"),
                       help=f"speech detector (default {defaults.vad})")
    add_flag(group, "vad_threshold", type=float, default=defaults.vad_threshold,
             help=f"Silero speech probability that starts speech (default "
                  f"{DEFAULT_VAD_THRESHOLD:g}; the energy VAD takes none)")
    add_flag(group, "min_speech", type=float, default=defaults.min_speech,
             help=f"seconds; shorter speech is dropped (default {defaults.min_speech:g})")
    add_flag(group, "min_silence", type=float, default=defaults.min_silence,
             help=f"seconds; shorter pauses are bridged (default {defaults.min_silence:g})")
    add_flag(group, "window", type=float, default=defaults.window,
             help=f"seconds per embedding window (default {defaults.window:g})")
    add_flag(group, "shift", type=float, default=defaults.shift,
             help=f"seconds between window starts (default {defaults.shift:g})")
    add_flag(group, "dither", type=float, default=defaults.dither,
             help="noise floor added to every window, in 16-bit steps, so digital silence "
                  f"does not distort embeddings (default {defaults.dither:g}; 0: off)")

    group = sub.add_argument_group("clustering")
    add_flag(group, "cluster_method", default=defaults.cluster_method,
             help=f"{', '.join(CLUSTER_METHODS)} (default {defaults.cluster_method}: "
                  "WeSpeaker's spectral clustering with cosine-weighted edges and the "
                  "normalised Laplacian; spectral: WeSpeaker's exactly; umap-hdbscan needs the "
                  "diar-umap extra); checked before the model loads")
    add_flag(group, "ahc_threshold", type=float, default=defaults.ahc_threshold,
             help=f"agglomerative: cosine distance at which clusters stop merging (default "
                  f"{DEFAULT_AHC_THRESHOLD:g}; other methods take none)")
    add_flag(group, "min_cluster_size", type=int, default=defaults.min_cluster_size,
             help="refine an estimated count (3D-Speaker): fold clusters of at most this many "
                  f"windows into the nearest larger one (default {defaults.min_cluster_size}: "
                  "off)")
    add_flag(group, "merge_threshold", type=float, default=defaults.merge_threshold,
             help="refine an estimated count (3D-Speaker): join clusters whose centroids have "
                  "at least this cosine (default: off)")
    add_flag(group, "gap_ratio", type=float, default=defaults.gap_ratio,
             help="spectral methods: count up to the last eigengap at least this share of "
                  f"the largest (default: {DEFAULT_GAP_RATIO:g} for spectral-norm, 1 (the "
                  "largest gap) for spectral and nme-sc)")
    add_flag(group, "edge_weights", choices=EDGE_WEIGHTS, default=defaults.edge_weights,
             help="spectral methods: each kept neighbour's edge is 1 (binary, WeSpeaker's) "
                  f"or its cosine (default: {DEFAULT_EDGE_WEIGHTS} for spectral-norm, binary "
                  "for spectral and nme-sc)")
    add_flag(group, "window_lda", default=defaults.window_lda, metavar="auto|off|FILE",
             help="project the windows with a window LDA before clustering: auto (default) "
                  "uses MODEL's window_lda.npz when it has one (see 'window-lda'), and its "
                  "window_lda_<HZ>hz.npz for recordings at or below HZ; off: none; FILE: that "
                  "one for every recording")
    add_flag(group, "resolution", type=float, default=defaults.resolution,
             help="seconds per frame of the turns, each frame given to the best-matching "
                  "speaker of the windows covering it (default: WeSpeaker's window halves)")


def add_diarize_command(commands) -> None:
    """Add diarize to ``commands``."""
    sub = add_model_subcommand(commands, "diarize", cmd_diarize,
                               "who spoke when: speaker turns of a recording as RTTM", EXAMPLES)
    _add_diarize_flags(sub)
    add_fail_fraction_flag(sub)
    add_force_flag(sub, "a window LDA", "; with -o DIR/: start over in a folder holding the "
                                        "RTTMs of another run")
