#!/usr/bin/env python3
"""Copy a Kaldi data folder (wav.scp, utt2spk) at another sample rate, for some speakers.

    python local/resample_data.py --rate 8000 --speakers CORPUS/train_spk CORPUS data/train_8k

Writes OUT/wav/<utt>.flac (16-bit), OUT/wav.scp (absolute paths) and OUT/utt2spk;
``--trials`` copies a trial list along. A second run with the files in place skips.
"""
import argparse
import os
import shutil

import soundfile as sf

from wespeaker_py.audio import load_audio
from wespeaker_py.utils.atomic_files import atomic_open
from wespeaker_py.utils.tables import read_key_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, required=True, help="sample rate of the copy")
    parser.add_argument("--speakers", default=None, help="keep these speakers (one a line)")
    parser.add_argument("--trials", default=None, help="a trial list to copy as OUT/trials")
    parser.add_argument("data_dir", help="wav.scp + utt2spk (paths relative to it allowed)")
    parser.add_argument("out_dir")
    args = parser.parse_args()
    wavs = read_key_value(os.path.join(args.data_dir, "wav.scp"))
    utt2spk = read_key_value(os.path.join(args.data_dir, "utt2spk"))
    keep = None
    if args.speakers:
        keep = set(open(args.speakers, encoding="utf-8").read().split())
    out_dir = os.path.abspath(args.out_dir)
    os.makedirs(os.path.join(out_dir, "wav"), exist_ok=True)
    lines = []
    for utt, spk in sorted(utt2spk.items()):
        if keep is not None and spk not in keep:
            continue
        target = os.path.join(out_dir, "wav", utt + ".flac")
        if not os.path.isfile(target):
            source = wavs[utt]
            if not os.path.isabs(source):
                source = os.path.join(args.data_dir, source)
            samples = load_audio(source, args.rate)
            with atomic_open(target, "wb") as handle:
                sf.write(handle, samples.round().clip(-32768, 32767).astype("int16"),
                         args.rate, format="FLAC", subtype="PCM_16")
        lines.append((utt, spk, target))
    with atomic_open(os.path.join(out_dir, "wav.scp"), "w", encoding="utf-8") as out:
        out.write("".join(f"{utt} {path}\n" for utt, _, path in lines))
    with atomic_open(os.path.join(out_dir, "utt2spk"), "w", encoding="utf-8") as out:
        out.write("".join(f"{utt} {spk}\n" for utt, spk, _ in lines))
    if args.trials:
        shutil.copyfile(args.trials, os.path.join(out_dir, "trials"))
    print(f"{out_dir}: {len(lines)} utterances of {len({s for _, s, _ in lines})} speakers "
          f"at {args.rate} Hz")


if __name__ == "__main__":
    main()
