"""``wespeaker-py`` window-lda and band-fill: the files a model learns from labelled or
wide-band speech and keeps beside it (a window LDA for diarization, a band fill for
low-rate audio)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, Sequence

from wespeaker_py.cli.checks import check_before_compute, refuse_over_inputs
from wespeaker_py.cli.common import UsageError, add_fail_fraction_flag, add_flag, positive_int
from wespeaker_py.cli.model_files import refuse_over_model_files
from wespeaker_py.cli.model_subcommand import add_model_subcommand, load_model_of

EXAMPLES = {
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
top mel bins empty. This learns, from wide-band speech at MODEL's rate (wav.scp;
e.g. the model's training data), a linear estimate of those bins from the ones
below, and writes it to MODEL/band_fill_<HZ>hz.npz (<stem>.band_fill_<HZ>hz.npz
beside a checkpoint; or to --output, where MODEL does not look). The 8 kHz audio
itself cannot teach it: an utterance that came below MODEL's rate has no wide band
and is skipped, counted in the last line and not against --max_fail_fraction (data
holding only such utterances is an error).
From then on every command that embeds audio ('embed', with --wav_scp too,
'verify', 'enroll', 'identify', 'calibrate', 'diarize', and the recipes'
bin.extract) fills the bins of audio that comes at HZ before the model sees
them. On the mini recipe's trials at 8 kHz it took the 16 kHz model's EER from
16.1% to 6.5%. Needs a torch model with an fbank front-end.""",
}


def _check_data_folders(folders: Sequence[str]) -> None:
    """Each ``--data`` must be a Kaldi data folder (a file given there used to be named
    as ``FILE/utt2spk does not exist``)."""
    for folder in folders:
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise UsageError(f"--data {folder} is a file: give a Kaldi data folder (one "
                             f"holding wav.scp and utt2spk)")


def _data_files(folders: Sequence[str], *tables: str) -> Dict[str, str]:
    """The wav.scp (and ``tables``) of each ``--data`` folder, named for
    :func:`~wespeaker_py.cli.checks.refuse_over_inputs`."""
    return {f"--data {folder}'s {name}": os.path.join(folder, name)
            for folder in folders for name in ("wav.scp", *tables)}


def cmd_window_lda(args: argparse.Namespace) -> int:
    """``wespeaker-py window-lda``: learn the model's window LDA from labelled speakers."""
    from wespeaker_py.api.companion_files import learnt_file_target
    from wespeaker_py.diarization.options import window_lda_name
    _check_data_folders(args.data)
    for folder in args.data:
        check_before_compute(inputs=[os.path.join(folder, "utt2spk")],
                             wav_scp=os.path.join(folder, "wav.scp"),
                             max_fail_fraction=args.max_fail_fraction)
    outputs = {"--output": args.output}
    refuse_over_inputs(args, outputs, _data_files(args.data, "utt2spk"))
    check_before_compute(outputs=[args.output])
    model = load_model_of(args)
    refuse_over_model_files(args, model, outputs, writes=[window_lda_name(args.heard_rate)])
    lda = model.train_window_lda(args.data, output=args.output, dim=args.dim,
                                 batch_size=args.batch_size, progress=True,
                                 max_fail_fraction=args.max_fail_fraction,
                                 heard_rate=args.heard_rate)
    written = learnt_file_target(args.output, model.window_lda_file(args.heard_rate))
    print(f"window LDA written to {written}: {lda.describe()}", file=sys.stderr)
    return 0


def cmd_band_fill(args: argparse.Namespace) -> int:
    """``wespeaker-py band-fill``: learn the model's band fill for audio heard at a low
    rate."""
    from wespeaker_py.api.companion_files import learnt_file_target
    from wespeaker_py.frontend.band_fill import band_fill_name
    _check_data_folders(args.data)
    for folder in args.data:
        check_before_compute(wav_scp=os.path.join(folder, "wav.scp"),
                             max_fail_fraction=args.max_fail_fraction)
    outputs = {"--output": args.output}
    refuse_over_inputs(args, outputs, _data_files(args.data))
    check_before_compute(outputs=[args.output])
    model = load_model_of(args)
    refuse_over_model_files(args, model, outputs, writes=[band_fill_name(args.heard_rate)])
    fill = model.train_band_fill(args.data, args.heard_rate, output=args.output,
                                 progress=True,
                                 max_fail_fraction=args.max_fail_fraction)
    written = learnt_file_target(args.output, model.band_fill_file(args.heard_rate))
    print(f"band fill written to {written}: {fill.describe()}", file=sys.stderr)
    return 0


def add_companion_commands(commands) -> None:
    """Add window-lda and band-fill to ``commands``."""
    sub = add_model_subcommand(commands, "window-lda", cmd_window_lda,
                               "learn a window LDA for diarization from labelled speakers",
                               EXAMPLES["window-lda"], reads_audio=False)
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

    sub = add_model_subcommand(commands, "band-fill", cmd_band_fill,
                               "learn to fill the mel bins that narrow-band audio leaves empty",
                               EXAMPLES["band-fill"], reads_audio=False)
    add_flag(sub, "data", required=True, nargs="+", metavar="DIR",
             help="data directories with wav.scp (wide-band speech)")
    add_flag(sub, "heard_rate", type=positive_int, required=True, metavar="HZ",
             help="the low rate (e.g. 8000 for 8 kHz calls to a 16 kHz model)")
    sub.add_argument("--output", default=None,
                     help="where to write it (default: MODEL/band_fill_<HZ>hz.npz for a "
                          "folder, <stem>.band_fill_<HZ>hz.npz beside a checkpoint; the one "
                          "place the model finds it)")
    add_fail_fraction_flag(sub)
