"""``wespeaker-py`` embed, similarity, verify, enroll, unenroll, identify and calibrate: a
model's embeddings and what is decided with them."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from wespeaker_py.cli.checks import audio_arguments, check_before_compute, refuse_over_inputs
from wespeaker_py.cli.common import (StandardOutputError, UsageError, add_common_flags,
                                     add_fail_fraction_flag, add_flag, open_probability,
                                     positive_int)
from wespeaker_py.cli.model_files import refuse_over_model_files
from wespeaker_py.cli.model_subcommand import (add_force_flag, add_model_subcommand,
                                               load_model_of, print_json)

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
for that rate was learnt or changed is an error unless --force (use --replace).
A file given twice (identical embeddings) counts once, with a warning, and so does
a file --append adds again to a speaker who holds it.""",
    "unenroll": """examples:
  wespeaker-py unenroll --gallery speakers.npz alice

Removes the speaker from the gallery file, rewritten atomically under the lock
'enroll' takes; no model is loaded. What the gallery records of the model that
made it is kept, so later enrolments and identifications check it as before.
Removing the last speaker leaves a gallery of none, which 'identify' refuses.""",
    "identify": """examples:
  wespeaker-py identify --model exp/ResNet34 --gallery speakers.npz who.wav --top_k 3
  wespeaker-py identify --model exp/ResNet34 --gallery speakers.npz who.wav --json

Prints 'name cosine' for each enrolled speaker closest to the recording, most
similar first. With MODEL's calibration.json each one also gets the decision
'verify' would make for the recording and that speaker, by the same rule
(--operating_point, --prior, --threshold; the EER point by default): a line on
stderr says which are decided the same speaker, or that none is (an unknown
speaker) and who is nearest; --json gives each one's LLR and decision. Without a
calibration the scores are uncalibrated cosines and nothing is decided, unless
--threshold is given. A calibration made with another model is left unused, with a
warning, unless a rule is given (then it is an error) or --force. A gallery enrolled
with another model, or with speakers enrolled from low-rate audio through another
band fill than MODEL has now, is an error unless --force.""",
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
}


def _existing_gallery(path: str):
    """The gallery at ``path`` when the file exists (read before the model loads, so that a
    broken file fails at once), else None."""
    from wespeaker_py.api.gallery import read_gallery
    return read_gallery(path) if os.path.exists(path) else None


def _write_vector(path: str, vector) -> None:
    """``vector`` to ``path``: NumPy's .npy format, or one text line for .txt."""
    import numpy as np

    from wespeaker_py.utils.atomic_files import atomic_open, atomic_path
    if path.endswith(".npy"):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, vector)
    else:
        with atomic_open(path, "w", encoding="utf-8") as out:
            out.write(" ".join(f"{value:.6g}" for value in vector) + "\n")


def cmd_embed(args: argparse.Namespace) -> int:
    """``wespeaker-py embed``: one file's vector, or a wav.scp's embeddings as ark/scp."""
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
    outputs = {"--output": args.output, f"--output {args.output}'s .scp": index}
    refuse_over_inputs(args, outputs, {**audio_arguments([args.audio]), "--wav_scp": args.wav_scp})
    check_before_compute(audio=[args.audio], wav_scp=args.wav_scp, outputs=[args.output],
                         max_fail_fraction=args.max_fail_fraction)
    model = load_model_of(args)
    refuse_over_model_files(args, model, outputs)
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
    tally.check(args.wav_scp, args.max_fail_fraction, f"{args.output} was not written",
                unit="utterances")
    with open_embedding_writer(args.output) as writer:
        for key, vector in results.embeddings.items():
            writer.write(key, vector)
    print(f"{len(results.embeddings)} embeddings in {args.output} and "
          f"{scp_path_for(args.output)}", file=sys.stderr)
    return 0


def cmd_similarity(args: argparse.Namespace) -> int:
    """``wespeaker-py similarity``: the cosine of two recordings."""
    check_before_compute(audio=[args.first, args.second])
    print(f"{load_model_of(args).similarity(args.first, args.second, channel=args.channel):.6f}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """``wespeaker-py verify``: same speaker? The score and the decision."""
    from dataclasses import asdict
    check_before_compute(audio=[args.first, args.second])
    result = load_model_of(args).verify(args.first, args.second, prior=args.prior,
                                        operating_point=args.operating_point,
                                        threshold=args.threshold, channel=args.channel)
    if args.json:
        print_json(asdict(result))
    else:
        print(result.describe())
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    """``wespeaker-py enroll``: a speaker's recordings into a gallery file."""
    outputs = {"--gallery": args.gallery}
    refuse_over_inputs(args, outputs, audio_arguments(args.audio))
    check_before_compute(audio=args.audio, outputs=[args.gallery])
    speakers = _existing_gallery(args.gallery)
    before = 0   # the recordings an --append adds to
    if speakers is not None:
        speakers.check_enrollment(args.name, args.replace, args.append)
        if args.append and args.name in speakers.names:
            before = int(speakers.counts[speakers.names.index(args.name)])
    model = load_model_of(args)
    refuse_over_model_files(args, model, outputs)
    size = model.enroll(args.name, *args.audio, gallery=args.gallery, replace=args.replace,
                        append=args.append, force=args.force, channel=args.channel)
    gallery = _existing_gallery(args.gallery)
    total = int(gallery.counts[gallery.names.index(args.name)])
    added = total - before   # not len(args.audio): a file given twice counts once
    in_all = f", {total} in all" if before else ""
    confirmation = (f"enrolled {args.name} ({added} recording(s){in_all}); {args.gallery} "
                    f"holds {size} speaker(s)")
    try:
        print(confirmation)
        sys.stdout.flush()   # buffered under `enroll > out`: a full disk shows only here
    except StandardOutputError as error:
        # the gallery is written: a message that only says the command failed sends the
        # user to enroll again, which the gallery then refuses
        raise StandardOutputError(f"{confirmation}, but standard output refused this "
                                  f"confirmation ({error.__cause__.strerror}): the "
                                  f"gallery is written, do not enroll again") from error
    return 0


def cmd_unenroll(args: argparse.Namespace) -> int:
    """``wespeaker-py unenroll``: remove a speaker from a gallery file (no model needed)."""
    from wespeaker_py.api.gallery import remove_speaker
    left = remove_speaker(args.gallery, args.name)
    held = (f"{left} speaker(s)" if left
            else "no speakers ('identify' refuses it until some are enrolled)")
    print(f"removed {args.name}; {args.gallery} holds {held}")
    return 0


def cmd_identify(args: argparse.Namespace) -> int:
    """``wespeaker-py identify``: the enrolled speakers closest to a recording, and which of
    them the model's calibration (or --threshold) decides are the same speaker."""
    from dataclasses import asdict
    # a broken or empty gallery: its own message, before all else
    speakers = _existing_gallery(args.gallery)
    if speakers is not None:
        speakers.check_has_speakers(args.gallery)
    check_before_compute(audio=[args.audio], inputs=[args.gallery])
    model = load_model_of(args)
    ranking = model.identify(args.audio, gallery=args.gallery, top_k=args.top_k,
                             force=args.force, channel=args.channel, prior=args.prior,
                             operating_point=args.operating_point, threshold=args.threshold)
    if args.json:
        print_json([{"speaker": candidate.speaker, "score": candidate.score,
                     **({} if candidate.verification is None
                        else asdict(candidate.verification))} for candidate in ranking])
        return 0
    # stdout holds 'name score' lines only, as scripts read it; the decision goes to stderr
    for candidate in ranking:
        print(f"{candidate.speaker} {candidate.score:.6f}")
    print(_identification_summary(ranking, args.model, model.calibration_path),
          file=sys.stderr)
    return 0


def _identification_summary(ranking, model: str, calibration_path: Optional[str]) -> str:
    """What ``identify`` decided of its ``ranking`` (by the model ``model``, as given, whose
    calibration is read from ``calibration_path``): which speakers are decided the same
    speaker, or that none is and who is nearest, with the rule that decided; or that no
    decision was made, and why."""
    nearest = ranking[0]
    if nearest.verification is None and calibration_path and os.path.isfile(calibration_path):
        # there, but not used: it does not fit the model (the warning above says how)
        return (f"{calibration_path} does not fit {model}, so no decision is made (fit it "
                f"again with 'wespeaker-py calibrate', or pass --force to use it anyway)")
    if nearest.verification is None:
        return (f"the scores are uncalibrated cosines, so no decision is made (fit the "
                f"calibration of {model} with 'wespeaker-py calibrate', or give --threshold)")
    rule = nearest.verification.describe_rule()
    same = [candidate.speaker for candidate in ranking if candidate.verification.decision]
    if not same:
        return (f"no enrolled speaker is decided the same speaker; nearest: "
                f"{nearest.speaker} (cosine {nearest.score:.4f}); {rule}")
    return (f"{len(same)} enrolled speaker(s) decided the same speaker: {', '.join(same)}; "
            f"{rule}")


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``wespeaker-py calibrate``: fit the model's calibration.json on labelled trials."""
    from wespeaker_py.io.layout import CALIBRATION_NAME
    # without --output the calibration goes to --calibration (or MODEL's own)
    written = {"--output": args.output} if args.output else {"--calibration": args.calibration}
    refuse_over_inputs(args, written, {"--trials": args.trials, "--wav_scp": args.wav_scp})
    check_before_compute(inputs=[args.trials], wav_scp=args.wav_scp, outputs=[args.output])
    model = load_model_of(args)
    refuse_over_model_files(args, model, written, writes=[CALIBRATION_NAME])
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


def _add_decision_flags(sub: argparse.ArgumentParser) -> None:
    """--prior, --operating_point and --threshold: the rule of a same-speaker decision (of
    'verify', and of each speaker 'identify' lists)."""
    sub.add_argument("--prior", type=open_probability, default=None,
                     help="prior probability of the same speaker, 0 < p < 1 (needs a "
                          "calibration): decide by the Bayes rule (same speaker when "
                          "P(same | prior) > 0.5) instead of a threshold (default: none; "
                          "P(same) is shown at 0.5)")
    # api.calibration.OPERATING_POINTS, spelt out: importing it imports torch, and --help
    # must not (tests/test_decision_rule.py holds the two equal)
    add_flag(sub, "operating_point", default=None, choices=("eer", "fa1"),
             help="the calibration's threshold to decide with (needs a calibration): its "
                  "EER point or 1%% false acceptance (default eer, unless --prior)")
    sub.add_argument("--threshold", type=float, default=None,
                     help="decide with this cosine threshold instead")


def add_speaker_commands(commands) -> None:
    """Add embed, similarity, verify, enroll, unenroll, identify and calibrate to
    ``commands``."""
    sub = add_model_subcommand(commands, "embed", cmd_embed,
                               "embed one file (.npy or text) or a wav.scp (ark/scp)",
                               EXAMPLES["embed"])
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
        sub = add_model_subcommand(commands, name, handler, summary, EXAMPLES[name])
        sub.add_argument("first", help="audio file")
        sub.add_argument("second", help="audio file")
    _add_decision_flags(sub)
    sub.add_argument("--json", action="store_true", help="print the result as JSON")
    add_force_flag(sub, "a calibration.json")

    sub = add_model_subcommand(commands, "enroll", cmd_enroll,
                               "add recordings of a speaker to a gallery file",
                               EXAMPLES["enroll"])
    sub.add_argument("--gallery", required=True, help="gallery file (.npz), created if missing")
    sub.add_argument("name", help="speaker name")
    sub.add_argument("audio", nargs="+", help="audio files of the speaker")
    existing = sub.add_mutually_exclusive_group()
    existing.add_argument("--replace", action="store_true",
                          help="the name is enrolled already: drop its recordings, use these")
    existing.add_argument("--append", action="store_true",
                          help="the name is enrolled already: add these recordings to it")
    add_force_flag(sub, "a gallery")

    summary = "remove a speaker from a gallery file (no model needed)"
    sub = commands.add_parser("unenroll", help=summary, description=summary,
                              epilog=EXAMPLES["unenroll"],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.set_defaults(handler=cmd_unenroll, subcommand_parser=sub)
    sub.add_argument("--gallery", required=True, help="gallery file written by 'enroll'")
    sub.add_argument("name", help="the speaker to remove")
    add_common_flags(sub)

    sub = add_model_subcommand(commands, "identify", cmd_identify,
                               "the enrolled speakers closest to a recording",
                               EXAMPLES["identify"])
    sub.add_argument("--gallery", required=True, help="gallery file written by 'enroll'")
    sub.add_argument("audio", help="audio file")
    add_flag(sub, "top_k", type=positive_int, default=5,
             help="how many speakers to list, at least 1 (default 5)")
    _add_decision_flags(sub)
    sub.add_argument("--json", action="store_true", help="print the ranking as JSON")
    add_force_flag(sub, "a gallery or calibration.json")

    sub = add_model_subcommand(commands, "calibrate", cmd_calibrate,
                               "fit score calibration on labelled trials", EXAMPLES["calibrate"])
    sub.add_argument("--trials", required=True,
                     help="trial list: 'enroll test target|nontarget' per line")
    add_flag(sub, "wav_scp", required=True, help="wav.scp of the trials' utterances")
    sub.add_argument("--output", default=None,
                     help="where to write calibration.json (default: --calibration, else "
                          "MODEL/calibration.json for a folder, <stem>.calibration.json "
                          "beside a checkpoint or .onnx file)")
    add_flag(sub, "batch_size", type=positive_int, default=16, help="utterances per batch")
