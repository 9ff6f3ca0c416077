"""What the speaker API's speech rules (wespeaker_py/audio/speech_rules.py) do to scores.

    flock -x /tmp/wsp_cpu.lock python bench/bench_speech_rules.py --model EXP \\
        [--data ../shared/data/librispeech_tc100] [--rules zeros,all]

``EXP`` is a trained model folder (the mini recipe's ``exp/<name>``, whose
``embeddings/backend/mean_vec.npy`` is used when present). For each rule set of
``--rules`` (``zeros``: digital silence only, the rule before the near-silent edges
and the no-speech check; ``all``: the three rules as shipped) it prints:

* **padding**: the first 20 nontarget trials of ``DATA/trials``, each recording padded
  with noise split before and after it (exact zeros, +-1 LSB dither, white noise at
  -70, -60, -50 dBFS; 1 or 2 s in all, and 20 to 60 s, far longer than the speech):
  how many of the 20 score above 0.5, and the median score;
* **EER** over all of ``DATA/trials`` on the clean audio and with white noise added at
  10 and 5 dB SNR (seeded by utterance), so that a rule that helps padded audio but
  hurts noisy audio shows.

Nothing is written; everything is printed as Markdown table rows.
"""
from __future__ import annotations

import argparse
import logging
import os
import zlib
from typing import Dict, List, Sequence

import numpy as np
import soundfile as sf

import wespeaker_py
import wespeaker_py.api.model as api_model
from wespeaker_py.audio.speech_rules import SpeechLog, SpeechRules

RATE = 16000
RULES = {"zeros": SpeechRules(edge_below_db=float("inf"), min_level_range_db=0.0),
         "all": SpeechRules()}
PADDINGS = [("zeros", 1.0), ("dither", 1.0), ("dither", 2.0), (-70, 2.0), (-60, 2.0),
            (-50, 2.0), (-70, 20.0), (-70, 40.0), (-60, 20.0), ("dither", 60.0)]


def read_list(path: str) -> Dict[str, str]:
    """``key path`` lines, paths relative to the list's folder made absolute."""
    folder = os.path.dirname(path)
    pairs = (line.split(None, 1) for line in open(path) if line.strip())
    return {key: os.path.join(folder, value.strip()) for key, value in pairs}


def eer(scores: Sequence[float], targets: Sequence[bool]) -> float:
    """Equal error rate in percent (the closest point of the two error curves)."""
    order = np.argsort(-np.asarray(scores))
    labels = np.asarray(targets, dtype=float)[order]
    hits = np.cumsum(labels) / labels.sum()
    false_alarms = np.cumsum(1 - labels) / (1 - labels).sum()
    index = int(np.argmin(np.abs((1 - hits) - false_alarms)))
    return 100 * ((1 - hits[index]) + false_alarms[index]) / 2


def padding(kind, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` int16 samples of ``kind``: zeros, +-1 LSB dither, or white noise at dBFS."""
    if kind == "zeros":
        return np.zeros(count, np.int16)
    if kind == "dither":
        return rng.integers(-1, 2, count).astype(np.int16)
    return np.round(rng.normal(0, 32768 * 10 ** (kind / 20), count)).astype(np.int16)


def with_noise(samples: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """``samples`` plus white noise ``snr_db`` below their mean power, as int16."""
    signal = samples.astype(np.float64)
    noise = np.random.default_rng(seed).normal(0, np.sqrt(np.mean(signal ** 2))
                                               / 10 ** (snr_db / 20), signal.size)
    return np.clip(np.round(signal + noise), -32768, 32767).astype(np.int16)


def run(model, data: str, name: str) -> List[str]:
    """The table rows of one rule set."""
    rows = []
    wav = read_list(os.path.join(data, "wav.scp"))
    trials = [line.split() for line in open(os.path.join(data, "trials")) if line.strip()]
    nontargets = [trial for trial in trials if trial[2] == "nontarget"][:20]
    audio = {key: sf.read(wav[key], dtype="int16")[0] for trial in trials for key in trial[:2]}
    rng = np.random.default_rng(7)
    for kind, seconds in PADDINGS:
        scores = []
        for first, second, _ in nontargets:
            units = []
            for key in (first, second):
                pad = padding(kind, int(seconds * RATE), rng)
                padded = np.concatenate([pad[:pad.size // 2], audio[key], pad[pad.size // 2:]])
                units.append(model.unit(model.embed(padded, sample_rate=RATE)))
            scores.append(float(units[0] @ units[1]))
        label = kind if isinstance(kind, str) else f"{kind} dBFS noise"
        rows.append(f"| {name} | padding: {label}, {seconds:g} s | "
                    f"{int(np.sum(np.asarray(scores) > 0.5))} of 20 above 0.5, median "
                    f"{np.median(scores):.3f} |")
    for snr in (None, 10, 5):
        items = {key: samples if snr is None else with_noise(samples, snr, zlib.crc32(key.encode()))
                 for key, samples in audio.items()}
        result = model.embed_many(items, sample_rate=RATE, progress=False)
        units = {key: model.unit(vector) for key, vector in result.embeddings.items()}
        scored = [(float(units[a] @ units[b]), label == "target") for a, b, label in trials
                  if a in units and b in units]
        what = "clean" if snr is None else f"white noise at {snr} dB SNR"
        rows.append(f"| {name} | EER, {len(scored)} trials, {what} | "
                    f"{eer(*zip(*scored)):.3f} % ({len(result.skipped)} skipped) |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                       "shared", "data", "librispeech_tc100"))
    parser.add_argument("--rules", default="zeros,all")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    mean = os.path.join(args.model, "embeddings", "backend", "mean_vec.npy")
    model = wespeaker_py.load_model(args.model, mean_vec=mean if os.path.exists(mean) else None)
    print("| rules | measure | result |\n|---|---|---|")
    for name in args.rules.split(","):
        api_model.SpeechLog = lambda rules=RULES[name]: SpeechLog(rules)
        for row in run(model, args.data, name):
            print(row, flush=True)


if __name__ == "__main__":
    main()
