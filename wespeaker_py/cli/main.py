"""``wespeaker-py``: use a trained speaker model from the shell.

Subcommands: embed, similarity, verify, enroll, identify, calibrate, diarize, window-lda,
band-fill, export, info, finetune (``wespeaker-py SUBCOMMAND --help`` for each). MODEL is
an experiment directory, a WeSpeaker-style model folder (config.yaml + avg_model.pt), a
checkpoint (with --config, or config.yaml beside it or one folder up) or an .onnx file from
``wespeaker-py export --onnx --with_frontend``.

Only argument parsing happens at import time; torch and the model load when a
subcommand runs, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from wespeaker_py.cli.common import (FlagParser, UsageError, add_channel_flag, add_common_flags,
                                     add_fail_fraction_flag, add_flag, open_probability,
                                     positive_int, run_main)

PROG = "wespeaker-py"
VECTOR_SUFFIXES = (".npy", ".txt")   # 'embed --output' of one audio file: binary or text
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
  wespeaker-py verify --model exp/ResNet34 a.wav b.wav --operating_point fa1 --json
  wespeaker-py verify --model exp/ResNet34 a.wav b.wav --prior 0.01

Uses MODEL's calibration.json (see 'wespeaker-py calibrate'): the decision
compares the score with its threshold at --operating_point (the EER point by
default), or with --prior follows the Bayes rule (same speaker when
P(same | prior) > 0.5); the output says which rule decided. Without a calibration
the decision compares the raw cosine with --threshold (default 0.5) and says so;
--prior and --operating_point need one.
Exit status 0 either way; the decision is in the output.""",
    "enroll": """examples:
  wespeaker-py enroll --model exp/ResNet34 --gallery speakers.npz alice a1.wav a2.wav
  wespeaker-py enroll --model exp/ResNet34 --gallery speakers.npz alice a3.wav --append

The gallery records MODEL's identity; enrolling into a gallery of another model is
an error unless --force. A name already enrolled needs --replace or --append;
--append to a speaker enrolled from low-rate (8 kHz) audio before MODEL's band fill
for that rate was learnt or changed is an error unless --force (use --replace).""",
    "identify": """examples:
  wespeaker-py identify --model exp/ResNet34 --gallery speakers.npz who.wav --top_k 3

A gallery enrolled with another model, or with speakers enrolled from low-rate audio
through another band fill than MODEL has now, is an error unless --force.""",
    "calibrate": """examples:
  wespeaker-py calibrate --model exp/ResNet34 --trials data/dev/trials \\
      --wav_scp data/dev/wav.scp

Embeds the trials' utterances, scores the trials by cosine, fits a logistic
score-to-LLR map and writes MODEL/calibration.json (<stem>.calibration.json beside
a checkpoint or .onnx file; or --output):
its parameters, the trial set's EER and the thresholds at the EER point and at
1% false acceptance, MODEL's identity, and the band fill any low-rate (8 kHz)
audio went through. 'verify' then uses it (with another model, or once that fill
has changed, only with --force). Needs at least 10 target and 10 nontarget trials.""",
    "diarize": """examples:
  wespeaker-py diarize --model exp/ResNet34 meeting.wav                # RTTM on stdout
  wespeaker-py diarize --model exp/ResNet34 meeting.wav --num_speakers 3 -o meeting.rttm
  wespeaker-py diarize --model exp/ResNet34 meeting.wav -o meeting.rttm --plot meeting.png
  wespeaker-py diarize --model exp/ResNet34 --wav_scp data/wav.scp -o exp/diar/sys.rttm
  wespeaker-py diarize --model exp/ResNet34 --wav_scp data/wav.scp -o sys.rttm \\
      --reco2num_spk data/ref.rttm --cluster_method nme-sc --resolution 0.1

Speech from Silero VAD (--vad energy: a simple energy detector), 1.5 s windows
every 0.75 s embedded with MODEL (and projected by MODEL's window_lda.npz when it
has one, see 'window-lda'), spectral clustering with the number of speakers from
the eigen-gap (or --num_speakers / --reco2num_spk), turns written as RTTM. Of
multi-channel audio the first channel is used (--channel chooses another). Every
setting below is checked before the model loads.
Needs: pip install 'wespeaker_py[diar]'.""",
    "window-lda": """examples:
  wespeaker-py window-lda --model exp/ResNet34 --data data/train
  wespeaker-py window-lda --model exp/ResNet34 --data data/train data/backend --dim 32
  wespeaker-py window-lda --model exp/ResNet34 --data data/train --heard_rate 8000

Cuts every utterance of the data directories (wav.scp + utt2spk: speakers the
diarization will not meet, e.g. the model's training speakers) into diarization
windows, embeds them with MODEL and fits an LDA that keeps the directions telling
those speakers apart. It is written to MODEL/window_lda.npz (<stem>.window_lda.npz
beside a checkpoint or .onnx file; or --output)
with MODEL's identity; 'diarize' then projects the windows with it before
clustering (--window_lda off: not). With --heard_rate HZ the utterances are
embedded both narrow-banded to HZ and as they are, and the LDA goes to
window_lda_<HZ>hz.npz, which 'diarize' uses instead for recordings at or below HZ \
(8 kHz calls); when MODEL has an fbank
front-end and no band_fill_<HZ>hz.npz yet, one is learnt first from the same data
(see 'band-fill'). Unreadable utterances are skipped and counted.""",
    "band-fill": """examples:
  wespeaker-py band-fill --model exp/ResNet34 --data data/train --heard_rate 8000

Audio that comes at a rate below MODEL's (8 kHz calls to a 16 kHz model) leaves the
top mel bins empty. This learns, from wide-band speech (wav.scp; the model's
training data; an utterance that came below the model's rate has no wide band and
is skipped and counted), a linear estimate of those bins from the ones below, and
writes it to MODEL/band_fill_<HZ>hz.npz (<stem>.band_fill_<HZ>hz.npz beside a
checkpoint; or to --output, where MODEL does not look).
From then on every command that embeds audio ('embed', with --wav_scp too,
'verify', 'enroll', 'identify', 'calibrate', 'diarize', and the recipes'
bin.extract) fills the bins of audio that comes at HZ before the model sees
them. On the mini recipe's trials at 8 kHz it took the 16 kHz model's EER from
16.1% to 6.5%. Needs a torch model with an fbank front-end.""",
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


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "model", required=True, metavar="MODEL",
             help="experiment dir, model folder, checkpoint or .onnx file")
    add_flag(parser, "config", default=None,
             help="config.yaml for a checkpoint (default: beside it or one folder up)")
    add_flag(parser, "device", default=None,
             help="cpu, cuda or cuda:N (default: the first GPU if any; an .onnx MODEL runs "
                  "on the CPU only)")
    add_flag(parser, "calibration", default=None,
             help="calibration.json to use or write (default: MODEL/calibration.json "
                  "for a folder, <stem>.calibration.json beside a checkpoint or .onnx "
                  "file)")
    add_flag(parser, "mean_vec", default=None,
             help="mean embedding (.npy) to subtract before cosine "
                  "(default, if present: MODEL/mean_vec.npy for a folder, "
                  "<stem>.mean_vec.npy beside a checkpoint or .onnx file)")
    add_common_flags(parser)


def _add_force_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--force", action="store_true",
                        help=f"use {what} made with another model, or through another band "
                             f"fill than the model has now (a warning, not an error)")


def _check_before_compute(audio: Sequence[Optional[str]] = (),
                          inputs: Sequence[Optional[str]] = (),
                          wav_scp: Optional[str] = None,
                          outputs: Sequence[Optional[str]] = (),
                          max_fail_fraction: float = 1.0) -> None:
    """Everything that can fail before the (slow) model load and the compute, checked first.

    Audio files and other input files exist and are not empty; a ``wav_scp`` is
    read whole (a malformed line, or a key given twice, names its lines) and its
    files that do not exist must not fail the run by themselves
    (:func:`~wespeaker_py.utils.list_jobs.check_missing_inputs`); every output's
    folder is writable. None entries are passed over.
    """
    from wespeaker_py.errors import AudioInputError
    from wespeaker_py.utils.file_utils import (read_wav_scp, require_input_file,
                                               require_writable)
    for path in filter(None, audio):
        if not os.path.exists(path):
            raise AudioInputError(f"{path} does not exist")
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise AudioInputError(f"{path} is empty")
    for path in filter(None, inputs):
        require_input_file(path)
    if wav_scp is not None:
        from wespeaker_py.audio import is_pipe
        from wespeaker_py.utils.list_jobs import check_missing_inputs
        table = read_wav_scp(wav_scp)
        missing = [wav for wav in table.values() if not is_pipe(wav) and not os.path.exists(wav)]
        check_missing_inputs(wav_scp, len(table), missing, max_fail_fraction)
    for path in filter(None, outputs):
        require_writable(path)


def _refuse_over_inputs(args: argparse.Namespace, outputs: Mapping[str, Optional[str]],
                        inputs: Mapping[str, Optional[str]]) -> None:
    """Refuse, before any work, an output that is one of ``inputs`` or of MODEL's files given
    on the command line (--model, --config, --mean_vec); maps of flag -> path."""
    from wespeaker_py.utils.file_utils import refuse_output_over_input
    model_files = {"--model": args.model, "--config": args.config, "--mean_vec": args.mean_vec}
    refuse_output_over_input(outputs, {**inputs, **model_files})


def _audio_arguments(paths: Sequence[Optional[str]]) -> Dict[str, Optional[str]]:
    """The audio arguments as :func:`_refuse_over_inputs` names them."""
    if len(paths) == 1:
        return {"the audio argument": paths[0]}
    return {f"audio argument {number}": path for number, path in enumerate(paths, 1)}


def _load(args: argparse.Namespace):
    from wespeaker_py.api import load_model
    from wespeaker_py.utils.threads import num_threads_in_use
    return load_model(args.model, device=args.device, config=args.config,
                      mean_vec=args.mean_vec, calibration=args.calibration,
                      force=getattr(args, "force", False), num_threads=num_threads_in_use())


def _existing_gallery(path: str):
    """The gallery at ``path`` when the file exists (read before the model loads, so that a
    broken file fails at once), else None."""
    from wespeaker_py.api.gallery import read_gallery
    return read_gallery(path) if os.path.exists(path) else None


def _write_vector(path: str, vector) -> None:
    """``vector`` to ``path``: NumPy's .npy format, or one text line for .txt."""
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
    if args.audio is not None and args.output and not args.output.endswith(VECTOR_SUFFIXES):
        raise UsageError(f"embed: --output {args.output}: one audio file's vector goes to "
                         f"FILE.npy or FILE.txt; Kaldi ark/scp are written for --wav_scp")
    from wespeaker_py.io.ark import open_embedding_writer, scp_path_for
    index = scp_path_for(args.output) if args.wav_scp is not None else None
    _refuse_over_inputs(args, {"--output": args.output, f"--output {args.output}'s .scp": index},
                        {**_audio_arguments([args.audio]), "--wav_scp": args.wav_scp})
    _check_before_compute(audio=[args.audio], wav_scp=args.wav_scp, outputs=[args.output],
                          max_fail_fraction=args.max_fail_fraction)
    model = _load(args)
    if args.audio is not None:
        vector = model.embed(args.audio, channel=args.channel)
        if args.output:
            _write_vector(args.output, vector)
        else:
            print(" ".join(f"{value:.6g}" for value in vector))
        return 0
    from wespeaker_py.utils.list_jobs import JobTally
    results = model.embed_many(args.wav_scp, batch_size=args.batch_size,
                               progress=True, channel=args.channel)
    tally = JobTally.of(len(results.embeddings), results.reasons)
    print(tally.describe(), file=sys.stderr)
    tally.check(args.wav_scp, args.max_fail_fraction, f"{args.output} was not written")
    with open_embedding_writer(args.output) as writer:
        for key, vector in results.embeddings.items():
            writer.write(key, vector)
    print(f"{len(results.embeddings)} embeddings in {args.output} and "
          f"{scp_path_for(args.output)}", file=sys.stderr)
    return 0


def cmd_similarity(args: argparse.Namespace) -> int:
    _check_before_compute(audio=[args.first, args.second])
    print(f"{_load(args).similarity(args.first, args.second, channel=args.channel):.6f}")
    return 0


def _print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, sort_keys=True, default=str))


def cmd_verify(args: argparse.Namespace) -> int:
    from dataclasses import asdict
    _check_before_compute(audio=[args.first, args.second])
    result = _load(args).verify(args.first, args.second, prior=args.prior,
                                operating_point=args.operating_point, threshold=args.threshold,
                                channel=args.channel)
    if args.json:
        _print_json(asdict(result))
    else:
        print(result.describe())
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    _refuse_over_inputs(args, {"--gallery": args.gallery}, _audio_arguments(args.audio))
    _check_before_compute(audio=args.audio, outputs=[args.gallery])
    speakers = _existing_gallery(args.gallery)
    if speakers is not None:
        speakers.check_enrollment(args.name, args.replace, args.append)
    size = _load(args).enroll(args.name, *args.audio, gallery=args.gallery,
                              replace=args.replace, append=args.append, force=args.force,
                              channel=args.channel)
    gallery = _existing_gallery(args.gallery)
    total = int(gallery.counts[gallery.names.index(args.name)])
    in_all = f", {total} in all" if total != len(args.audio) else ""
    added = f"{len(args.audio)} recording(s){in_all}"
    print(f"enrolled {args.name} ({added}); {args.gallery} holds {size} speaker(s)")
    return 0


def cmd_identify(args: argparse.Namespace) -> int:
    _existing_gallery(args.gallery)  # a broken gallery: its own message, before all else
    _check_before_compute(audio=[args.audio], inputs=[args.gallery])
    ranking = _load(args).identify(args.audio, gallery=args.gallery, top_k=args.top_k,
                                   force=args.force, channel=args.channel)
    if args.json:
        _print_json([{"speaker": name, "score": score} for name, score in ranking])
    else:
        for name, score in ranking:
            print(f"{name} {score:.6f}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    # without --output the calibration goes to --calibration (or MODEL's own)
    written = {"--output": args.output} if args.output else {"--calibration": args.calibration}
    _refuse_over_inputs(args, written, {"--trials": args.trials, "--wav_scp": args.wav_scp})
    _check_before_compute(inputs=[args.trials], wav_scp=args.wav_scp, outputs=[args.output])
    model = _load(args)
    calibration = model.calibrate(args.trials, args.wav_scp, output=args.output,
                                  batch_size=args.batch_size, progress=True,
                                  channel=args.channel)
    eer_point = calibration.operating_points["eer"]
    fa_point = calibration.operating_points["fa1"]
    print(f"calibration written to {args.output or model.calibration_path}: "
          f"{calibration.num_target} target and {calibration.num_nontarget} nontarget trials, "
          f"EER {100 * calibration.eer:.2f}%, Cllr {calibration.cllr:.3f}; thresholds "
          f"{eer_point.threshold:.4f} (EER point), {fa_point.threshold:.4f} (1% false accept)")
    return 0


# DiarizationOptions fields that the diarize command sets from flags of the same name
DIARIZE_SETTINGS = ("vad_threshold", "min_speech", "min_silence", "window", "shift",
                    "dither", "ahc_threshold", "min_cluster_size", "merge_threshold", "gap_ratio",
                    "edge_weights", "resolution", "window_lda")


def _check_plot_path(path: str) -> None:
    """``--plot`` must name an image file matplotlib writes (its extension picks the format)."""
    from wespeaker_py.utils.plotting import image_format, image_formats
    if image_format(path) is None:
        raise UsageError(f"diarize: --plot {path}: the time line is drawn as an image, in "
                         f"the format its extension names; give a file ending in one of "
                         f"{', '.join('.' + kind for kind in image_formats())} (e.g. .png)")


def _refuse_diarize_over_inputs(args: argparse.Namespace, audio: Optional[str]) -> None:
    """diarize's -o/--output and --plot must not be one of its inputs (``audio``: the audio
    argument as given, a wav.scp too)."""
    lda_file = args.window_lda if args.window_lda not in ("auto", "off") else None
    _refuse_over_inputs(args, {"-o/--output": args.output, "--plot": args.plot},
                        {**_audio_arguments([audio]), "--wav_scp": args.wav_scp,
                         "--reco2num_spk": args.reco2num_spk, "--window_lda": lda_file})


def cmd_diarize(args: argparse.Namespace) -> int:
    _refuse_diarize_over_inputs(args, args.audio)
    wav_scp = args.wav_scp
    if args.audio is not None and args.audio.endswith(".scp") and wav_scp is None:
        wav_scp, args.audio = args.audio, None
    if (args.audio is None) == (wav_scp is None):
        raise UsageError("diarize: give one audio file or --wav_scp")
    if wav_scp is not None and args.output is None:
        raise UsageError("diarize: with --wav_scp give --output FILE.rttm")
    if args.reco2num_spk is not None and (wav_scp is None or args.num_speakers is not None):
        raise UsageError("diarize: --reco2num_spk goes with --wav_scp, without --num_speakers")
    if args.plot is not None and wav_scp is not None:
        raise UsageError("diarize: --plot draws one audio file; for a wav.scp, draw each "
                         "recording against its reference with score_diarization --plot_dir")
    if args.plot is not None:
        _check_plot_path(args.plot)
    from wespeaker_py.diarization.options import DiarizationOptions
    settings = {name: getattr(args, name) for name in DIARIZE_SETTINGS}
    # every setting is checked before the (slow) model load
    checked = DiarizationOptions.from_settings(vad=args.vad, cluster_method=args.cluster_method,
                                               num_speakers=args.num_speakers,
                                               min_speakers=args.min_speakers,
                                               max_speakers=args.max_speakers, **settings)
    if args.reco2num_spk is not None:
        from wespeaker_py.diarization.options import refuse_bounds_with_count
        given = f"--reco2num_spk {args.reco2num_spk}"
        checked.cluster_options().check_count_given(given)
        refuse_bounds_with_count(args.min_speakers, args.max_speakers, given)
    _check_before_compute(audio=[args.audio], inputs=[args.reco2num_spk], wav_scp=wav_scp,
                          outputs=[args.output, args.plot],
                          max_fail_fraction=args.max_fail_fraction)
    counts = recording = None
    if args.reco2num_spk is not None:
        from wespeaker_py.diarization.rttm import read_speaker_counts
        counts = read_speaker_counts(args.reco2num_spk)
    if args.audio is not None:
        from wespeaker_py.diarization.rttm import recording_id
        recording = recording_id(args.audio)
        if recording != os.path.splitext(os.path.basename(args.audio))[0]:
            print(f"{args.audio}: recording id {recording!r} in the RTTM (RTTM ids cannot "
                  f"hold spaces)", file=sys.stderr)
    model = _load(args)
    options = dict(num_speakers=args.num_speakers, min_speakers=args.min_speakers,
                   max_speakers=args.max_speakers, vad=args.vad,
                   cluster_method=args.cluster_method, batch_size=args.batch_size,
                   channel=args.channel, **settings)
    if wav_scp is not None:
        summary = model.diarize_many(wav_scp, args.output, progress=True,
                                     max_fail_fraction=args.max_fail_fraction,
                                     speaker_counts=counts, **options)
        print(f"{summary.describe()}; turns in {args.output}", file=sys.stderr)
        return 0
    from wespeaker_py.diarization import write_rttm
    from wespeaker_py.diarization.rttm import format_rttm_line
    result = model.diarize(args.audio, **options)
    if not result.turns:
        why = f" ({result.silence})" if result.silence else ""
        print(f"{args.audio}: no speech found{why}; the RTTM is empty", file=sys.stderr)
    if args.output:
        write_rttm(args.output, {recording: result.turns})
        print(f"{result.num_speakers} speakers, {len(result.turns)} turns in {args.output}",
              file=sys.stderr)
    else:
        for turn in result.turns:
            print(format_rttm_line(recording, turn))
    if args.plot:
        from wespeaker_py.diarization.plot import plot_timeline
        plot_timeline(None, result.turns, args.plot, recording)
        print(f"time line in {args.plot}", file=sys.stderr)
    return 0


def _check_data_folders(folders: Sequence[str]) -> None:
    """Each ``--data`` must be a Kaldi data folder (a file given there used to be named
    as ``FILE/utt2spk does not exist``)."""
    for folder in folders:
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise UsageError(f"--data {folder} is a file: give a Kaldi data folder (one "
                             f"holding wav.scp and utt2spk)")


def _data_files(folders: Sequence[str], *tables: str) -> Dict[str, str]:
    """The wav.scp (and ``tables``) of each ``--data`` folder, named for
    :func:`_refuse_over_inputs`."""
    return {f"--data {folder}'s {name}": os.path.join(folder, name)
            for folder in folders for name in ("wav.scp", *tables)}


def cmd_window_lda(args: argparse.Namespace) -> int:
    _check_data_folders(args.data)
    for folder in args.data:
        _check_before_compute(inputs=[os.path.join(folder, "utt2spk")],
                              wav_scp=os.path.join(folder, "wav.scp"),
                              max_fail_fraction=args.max_fail_fraction)
    _refuse_over_inputs(args, {"--output": args.output}, _data_files(args.data, "utt2spk"))
    _check_before_compute(outputs=[args.output])
    model = _load(args)
    lda = model.train_window_lda(args.data, output=args.output, dim=args.dim,
                                 batch_size=args.batch_size, progress=True,
                                 max_fail_fraction=args.max_fail_fraction,
                                 heard_rate=args.heard_rate)
    print(f"window LDA written to {model.window_lda_output(args.output, args.heard_rate)}: "
          f"{lda.describe()}", file=sys.stderr)
    return 0


def cmd_band_fill(args: argparse.Namespace) -> int:
    _check_data_folders(args.data)
    for folder in args.data:
        _check_before_compute(wav_scp=os.path.join(folder, "wav.scp"),
                              max_fail_fraction=args.max_fail_fraction)
    _refuse_over_inputs(args, {"--output": args.output}, _data_files(args.data))
    _check_before_compute(outputs=[args.output])
    model = _load(args)
    fill = model.train_band_fill(args.data, args.heard_rate, output=args.output,
                                 progress=True,
                                 max_fail_fraction=args.max_fail_fraction)
    print(f"band fill written to {args.output or model.band_fill_file(args.heard_rate)}: "
          f"{fill.describe()}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from wespeaker_py.utils.file_utils import require_writable
    # --onnx may name a folder to write model.onnx in
    require_writable(args.onnx, folder_ok=True)
    from wespeaker_py.api.exporting import onnx_target
    _refuse_over_inputs(args, {"--onnx": onnx_target(args.onnx)}, {})
    model = _load(args)
    if model.backend.kind != "torch":
        raise UsageError(f"export: {args.model} is already an ONNX model")
    from wespeaker_py.api.exporting import (export_feats_onnx, export_waveform_graph,
                                            onnx_output_path)
    export = export_waveform_graph if args.with_frontend else export_feats_onnx
    written = export(model, onnx_output_path(args.onnx))
    beside = ", ".join(os.path.basename(path) for path in written[1:])
    print(f"wrote {written[0]}" + (f" with {beside} beside it" if beside else ""))
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
    from wespeaker_py.diarization.options import (CLUSTER_METHODS, DEFAULT_AHC_THRESHOLD,
                                                  DEFAULT_EDGE_WEIGHTS, DEFAULT_GAP_RATIO,
                                                  DEFAULT_MAX_SPEAKERS, DEFAULT_MIN_SPEAKERS,
                                                  DEFAULT_VAD_THRESHOLD, EDGE_WEIGHTS,
                                                  DiarizationOptions)
    defaults = DiarizationOptions()
    sub.add_argument("audio", nargs="?", help="an audio file (or a wav.scp ending in .scp)")
    add_flag(sub, "wav_scp", default=None, help="diarize every recording of this wav.scp")
    sub.add_argument("-o", "--output", default=None,
                     help="RTTM file to write (default for one file: stdout)")
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
    from wespeaker_py.finetune.config import FEW_SPEAKERS, FREEZE_CHOICES, FinetuneOptions
    defaults = FinetuneOptions()
    summary = "fine-tune a model on your own speakers: a new model folder with calibration"
    sub = commands.add_parser("finetune", help=summary, description=summary,
                              epilog=FINETUNE_EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.set_defaults(handler=cmd_finetune, subcommand_parser=sub)
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
                  f"body (all but the new head), none, or auto (body below {FEW_SPEAKERS} "
                  f"training speakers, else none); default {defaults.freeze}")
    add_flag(sub, "freeze_epochs", type=int, default=None,
             help=f"default {defaults.freeze_epochs}")
    add_flag(sub, "sample_rate", type=int, default=None,
             help="the new model's rate (default: the data's)")
    add_flag(sub, "dev_speakers", type=int, default=None,
             help="speakers held out for the dev EER and calibration (default: a fifth)")
    add_flag(sub, "batch_size", type=int, default=None,
             help="utterances per batch, at least 2; default: the source config's")
    add_flag(sub, "num_workers", type=int, default=None, help="data loader workers, 0 or more")
    add_flag(sub, "num_avg", type=int, default=None,
             help=f"last checkpoints averaged, default {defaults.num_avg}")
    add_flag(sub, "seed", type=int, default=None, help=f"default {defaults.seed}")
    add_flag(sub, "device", default=None, help="cpu, cuda or cuda:N (default: a GPU if any)")
    sub.add_argument("--overwrite", action="store_true",
                     help="replace OUT when it holds another run")
    add_common_flags(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = FlagParser(prog=PROG, description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(parser)
    commands = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    handlers: Dict[str, Callable[[argparse.Namespace], int]] = {}

    def command(name: str, handler, summary: str,
                reads_audio: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary,
                                  epilog=EXAMPLES[name],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_model_flags(sub)
        if reads_audio:
            add_channel_flag(sub)
        sub.set_defaults(handler=handler, subcommand_parser=sub)
        handlers[name] = handler
        return sub

    sub = command("embed", cmd_embed, "embed one file (.npy or text) or a wav.scp (ark/scp)")
    sub.add_argument("audio", nargs="?", help="an audio file")
    add_flag(sub, "wav_scp", default=None, help="embed every utterance of this wav.scp")
    add_flag(sub, "output", default=None,
             help="FILE.npy or FILE.txt for one file; FILE.ark for a wav.scp")
    add_flag(sub, "batch_size", type=positive_int, default=16,
             help="utterances per batch (wav.scp)")
    add_fail_fraction_flag(sub)

    for name, handler, summary in (
            ("similarity", cmd_similarity, "cosine similarity of two recordings"),
            ("verify", cmd_verify, "same speaker? score, calibrated LLR, probability, "
                                   "decision")):
        sub = command(name, handler, summary)
        sub.add_argument("first", help="audio file")
        sub.add_argument("second", help="audio file")
    sub.add_argument("--prior", type=open_probability, default=None,
                     help="prior probability of the same speaker, 0 < p < 1 (needs a "
                          "calibration): decide by the Bayes rule (same speaker when "
                          "P(same | prior) > 0.5) instead of a threshold (default: none; "
                          "P(same) is shown at 0.5)")
    add_flag(sub, "operating_point", default=None, choices=("eer", "fa1"),
             help="the calibration's threshold to decide with (needs a calibration): its "
                  "EER point or 1%% false acceptance (default eer, unless --prior)")
    sub.add_argument("--threshold", type=float, default=None,
                     help="decide with this cosine threshold instead")
    sub.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_force_flag(sub, "a calibration.json")

    sub = command("enroll", cmd_enroll, "add recordings of a speaker to a gallery file")
    sub.add_argument("--gallery", required=True, help="gallery file (.npz), created if missing")
    sub.add_argument("name", help="speaker name")
    sub.add_argument("audio", nargs="+", help="audio files of the speaker")
    existing = sub.add_mutually_exclusive_group()
    existing.add_argument("--replace", action="store_true",
                          help="the name is enrolled already: drop its recordings, use these")
    existing.add_argument("--append", action="store_true",
                          help="the name is enrolled already: add these recordings to it")
    _add_force_flag(sub, "a gallery")

    sub = command("identify", cmd_identify, "the enrolled speakers closest to a recording")
    sub.add_argument("--gallery", required=True, help="gallery file written by 'enroll'")
    sub.add_argument("audio", help="audio file")
    add_flag(sub, "top_k", type=positive_int, default=5,
             help="how many speakers to list, at least 1 (default 5)")
    sub.add_argument("--json", action="store_true", help="print the ranking as JSON")
    _add_force_flag(sub, "a gallery")

    sub = command("calibrate", cmd_calibrate, "fit score calibration on labelled trials")
    sub.add_argument("--trials", required=True,
                     help="trial list: 'enroll test target|nontarget' per line")
    add_flag(sub, "wav_scp", required=True, help="wav.scp of the trials' utterances")
    sub.add_argument("--output", default=None,
                     help="where to write calibration.json (default: --calibration, else "
                          "MODEL/calibration.json for a folder, <stem>.calibration.json "
                          "beside a checkpoint or .onnx file)")
    add_flag(sub, "batch_size", type=positive_int, default=16, help="utterances per batch")

    sub = command("diarize", cmd_diarize, "who spoke when: speaker turns of a recording as RTTM")
    _add_diarize_flags(sub)
    add_fail_fraction_flag(sub)
    _add_force_flag(sub, "a window LDA")

    sub = command("window-lda", cmd_window_lda, "learn a window LDA for diarization from "
                  "labelled speakers", reads_audio=False)
    add_flag(sub, "data", required=True, nargs="+", metavar="DIR",
             help="data directories with wav.scp and utt2spk")
    sub.add_argument("--output", default=None,
                     help="where to write the LDA (default: MODEL/window_lda.npz for a "
                          "folder, <stem>.window_lda.npz beside a checkpoint or .onnx file)")
    add_flag(sub, "dim", type=positive_int, default=None,
             help="dimensions kept (default 32; at most one less than the speakers)")
    add_flag(sub, "heard_rate", type=int, default=0, metavar="HZ",
             help="learn it for audio heard at this rate (e.g. 8000 for 8 kHz calls to a "
                  "16 kHz model), from the utterances narrow-banded to it and as they are; "
                  "written to MODEL/window_lda_<HZ>hz.npz (<stem>.window_lda_<HZ>hz.npz "
                  "beside a checkpoint or .onnx file), which diarize uses for recordings "
                  "that come at or below HZ")
    add_flag(sub, "batch_size", type=positive_int, default=32, help="windows per forward pass")
    add_fail_fraction_flag(sub)

    sub = command("band-fill", cmd_band_fill, "learn to fill the mel bins that narrow-band "
                  "audio leaves empty", reads_audio=False)
    add_flag(sub, "data", required=True, nargs="+", metavar="DIR",
             help="data directories with wav.scp (wide-band speech)")
    add_flag(sub, "heard_rate", type=positive_int, required=True, metavar="HZ",
             help="the low rate (e.g. 8000 for 8 kHz calls to a 16 kHz model)")
    sub.add_argument("--output", default=None,
                     help="where to write it (default: MODEL/band_fill_<HZ>hz.npz for a "
                          "folder, <stem>.band_fill_<HZ>hz.npz beside a checkpoint; the one "
                          "place the model finds it)")
    add_fail_fraction_flag(sub)

    sub = command("export", cmd_export, "export the model to ONNX", reads_audio=False)
    sub.add_argument("--onnx", required=True,
                     help="output .onnx file (a folder: model.onnx inside it); the model's "
                          "files go beside it")
    add_flag(sub, "with_frontend", action="store_true",
             help="waveform input: put fbank + CMN inside the graph")

    sub = command("info", cmd_info, "model name, size, sample rate and front-end settings",
                  reads_audio=False)
    sub.add_argument("--json", action="store_true", help="print as JSON")

    _add_finetune_command(commands)
    return parser


def _main(argv: List[str]) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:   # the subcommand's usage, not the top level's, says what it takes
        args.subcommand_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args.handler(args)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point (``wespeaker-py``)."""
    sys.exit(run_main(_main, argv, prog=PROG))


if __name__ == "__main__":
    main()
