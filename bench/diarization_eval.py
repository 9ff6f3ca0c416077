"""Diarization clustering, turn and VAD choices, measured on cached window embeddings.

Stage ``embed`` runs the Silero VAD and the speaker model once per recording of
a set (``wav.scp`` + ``ref.rttm``) and caches, per recording, the VAD's frame
probabilities, the speech regions, the windows and their embeddings
(``CACHE/<id>.npz``). Stage ``score`` then clusters those embeddings with each
candidate and scores DER/JER and the speaker count against ``ref.rttm``;
stage ``vad`` scores VAD settings on the cached probabilities (missed and
false-alarm speech); stage ``pairs`` asks whether the windows can be told apart
at all: the EER of same- against different-speaker window pairs, by kind of
pair. Nothing but the VAD and the model reads audio, so every clustering
candidate sees exactly the same windows.

    # a set of synthetic conversations (examples/diarization/tools/make_synthetic_conversations.py)
    python bench/diarization_eval.py embed --data DIR --model MODEL --cache CACHE
    python bench/diarization_eval.py score --data DIR --cache CACHE [--calibration CAL_DIR
        --calibration_cache CAL_CACHE] [--window_lda MODEL/window_lda.npz] --output results.md
    python bench/diarization_eval.py vad --data DIR --cache CACHE
    python bench/diarization_eval.py pairs --data DIR --cache CACHE
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from wespeaker_py.audio import INT16_SCALE, heard_rate_of, load_audio_with_rate
from wespeaker_py.diarization.clustering import ClusterOptions, cluster_windows
from wespeaker_py.diarization.metrics import merge_regions
from wespeaker_py.diarization.report import score_system
from wespeaker_py.diarization.rttm import read_rttm
from wespeaker_py.diarization.turns import Turn, frames_to_turns, windows_to_turns
from wespeaker_py.diarization.vad import RegionRules, SileroVAD, probabilities_to_regions
from wespeaker_py.scoring.metrics import compute_eer
from wespeaker_py.utils.atomic_files import atomic_open
from wespeaker_py.utils.tables import read_key_value

Cached = Dict[str, np.ndarray]


def embed(args: argparse.Namespace) -> None:
    from wespeaker_py import load_model
    import torch
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    diarizer = model.diarizer()
    rate = model.sample_rate
    silero = SileroVAD()
    os.makedirs(args.cache, exist_ok=True)
    for key, path in sorted(read_key_value(os.path.join(args.data, "wav.scp")).items()):
        out = os.path.join(args.cache, f"{key}.npz")
        if os.path.exists(out):
            continue
        clock = time.perf_counter()
        # model samples (int16 scale) at the model's rate, and the rate the file came at
        samples, source_rate = load_audio_with_rate(path, rate)
        audio = samples / np.float32(INT16_SCALE)
        probs = silero.speech_probabilities(audio, rate)
        hop = SileroVAD.RATES[rate][0] / rate
        speech = probabilities_to_regions(probs, hop, audio.size / rate, RegionRules())
        windows, embeddings = diarizer.window_embeddings(samples, speech,
                                                         heard_rate_of(source_rate, rate))
        with atomic_open(out, "wb") as handle:
            np.savez(handle, probs=probs, hop=hop, duration=audio.size / rate,
                     speech=np.asarray(speech).reshape(-1, 2),
                     windows=np.asarray(windows).reshape(-1, 2), embeddings=embeddings)
        print(f"{key}: {len(windows)} windows in {time.perf_counter() - clock:.1f} s",
              flush=True)


def load_set(data: str, cache: str, window_lda: Optional[str] = None
             ) -> Tuple[Dict[str, List[Turn]], Dict[str, Cached]]:
    """A set's reference turns and cached windows; ``window_lda``: embeddings projected by it."""
    refs = read_rttm(os.path.join(data, "ref.rttm"))
    cached = {key: dict(np.load(os.path.join(cache, f"{key}.npz"))) for key in sorted(refs)}
    if window_lda:
        from wespeaker_py.diarization.projection import WindowLDA
        lda = WindowLDA.load(window_lda)
        for item in cached.values():
            item["embeddings"] = lda.project(item["embeddings"])
    return refs, cached


def true_window_labels(ref: Sequence[Turn], windows: np.ndarray) -> np.ndarray:
    """Each window's reference speaker: the one speaking longest inside it (nearest if none)."""
    names = sorted({turn.speaker for turn in ref})
    talk = speaker_talk(ref, windows)
    labels = np.zeros(len(windows), dtype=np.int64)
    for index, (start, end) in enumerate(windows):
        if talk[index].max() > 0:
            labels[index] = int(np.argmax(talk[index]))
            continue
        distance = np.full(len(names), np.inf)
        for turn in ref:
            speaker = names.index(turn.speaker)
            distance[speaker] = min(distance[speaker], abs(0.5 * (start + end)
                                                           - 0.5 * (turn.start + turn.end)))
        labels[index] = int(np.argmin(distance))
    return labels


def to_turns(windows: np.ndarray, labels: np.ndarray, embeddings: np.ndarray,
             resolution: Optional[float]) -> List[Turn]:
    pairs = [tuple(w) for w in windows]
    if resolution is None:
        return windows_to_turns(pairs, labels)
    return frames_to_turns(pairs, labels, embeddings, resolution)


def evaluate(refs, cached, labeller, resolution: Optional[float] = None) -> Dict[str, float]:
    """DER/JER (collar 0 and 0.25 s, overlap scored) and count accuracy of one labelling rule."""
    sys_turns, right_count, seconds = {}, 0, 0.0
    counts = []
    for key, item in cached.items():
        clock = time.perf_counter()
        labels = labeller(key, item)
        seconds += time.perf_counter() - clock
        sys_turns[key] = to_turns(item["windows"], labels, item["embeddings"], resolution)
        found = len(np.unique(labels)) if len(labels) else 0
        truth = len({turn.speaker for turn in refs[key]})
        right_count += found == truth
        counts.append(f"{found}/{truth}")
    row = {"count_acc": 100.0 * right_count / len(cached), "seconds": seconds,
           "counts": " ".join(counts)}
    score = score_system(refs, sys_turns, (0.0, 0.25))
    for collar, der in score.der_by_collar.items():
        row[f"der{collar}"] = der
        row[f"jer{collar}"] = score.jer   # the same for each collar: JER ignores it
    return row


def cluster_labeller(options: ClusterOptions, oracle_count: bool = False, max_speakers: int = 10):
    if oracle_count:  # what refines an estimated count, or stops merging, has no say here
        defaults = ClusterOptions()
        options = dataclasses.replace(options, ahc_threshold=None,
                                      min_cluster_size=defaults.min_cluster_size,
                                      merge_threshold=defaults.merge_threshold)

    def label(key, item):
        truth = item.get("_truth_count") if oracle_count else None
        bound = None if truth is not None else max_speakers   # a count comes without bounds
        return cluster_windows(item["embeddings"], options, truth,
                               max_speakers=bound).labels
    return label


def attach_truth(refs, cached) -> None:
    for key, item in cached.items():
        item["_truth_count"] = len({turn.speaker for turn in refs[key]})
        item["_truth_labels"] = true_window_labels(refs[key], item["windows"])


def calibrate_threshold(refs, cached, grid: Sequence[float], build) -> Tuple[float, str]:
    """The grid value with the lowest DER (then the best count accuracy) on a calibration set."""
    best, notes = None, []
    for value in grid:
        row = evaluate(refs, cached, cluster_labeller(build(value)))
        notes.append(f"{value:g}: {row['count_acc']:.0f}% / {row['der0.0']:.1f}")
        key = (-round(row["der0.0"], 1), row["count_acc"])
        if best is None or key > best[0]:
            best = (key, value)
    return best[1], "; ".join(notes)


def lone_speakers_whole(cached, options: ClusterOptions, min_windows: int = 8) -> Tuple[int, int]:
    """Of each reference speaker's windows clustered alone (those with ``min_windows`` or
    more), how many come out as one cluster: a count rule's false splits."""
    whole = total = 0
    for item in cached.values():
        for speaker in np.unique(item["_truth_labels"]):
            alone = item["embeddings"][item["_truth_labels"] == speaker]
            if len(alone) >= min_windows:
                total += 1
                whole += cluster_windows(alone, options).num_speakers == 1
    return whole, total


def lost_speakers(refs, cached, options: ClusterOptions, few: int = 5) -> str:
    """Which reference speakers a rule loses (they are the majority of no cluster), told
    apart by how many windows they have (at most ``few``, or more), and by name: how
    often each lost speaker is lost, with their windows and seconds of speech."""
    lost, sizes = [], []
    seen: Dict[str, List[Tuple[int, float]]] = {}   # speaker -> (windows, seconds) per conversation
    missed: Dict[str, int] = {}
    for key, item in cached.items():
        truth = item["_truth_labels"]
        names = sorted({turn.speaker for turn in refs[key]})
        counts = np.bincount(truth, minlength=len(names))
        labels = cluster_windows(item["embeddings"], options).labels
        owners = {int(np.bincount(truth[labels == label], minlength=len(counts)).argmax())
                  for label in np.unique(labels)}
        sizes += counts.tolist()
        for speaker, name in enumerate(names):
            talk = sum(turn.duration for turn in refs[key] if turn.speaker == name)
            seen.setdefault(name, []).append((int(counts[speaker]), talk))
            if speaker not in owners:
                lost.append(int(counts[speaker]))
                missed[name] = missed.get(name, 0) + 1
    sizes_arr, lost_arr = np.array(sizes), np.array(lost, dtype=np.int64)
    small = int((sizes_arr <= few).sum())
    by_speaker = []
    for name in sorted(missed, key=lambda n: (-missed[n], n)):
        windows = [w for w, _ in seen[name]]
        seconds = [t for _, t in seen[name]]
        by_speaker.append(f"{name} in {missed[name]} of its {len(seen[name])} conversations "
                          f"({_span(windows, '{:d}')} windows, {_span(seconds, '{:.1f}')} s "
                          f"of speech)")
    return (f"{len(lost)} of {len(sizes)} speakers own no cluster: "
            f"{int((lost_arr <= few).sum())} of the {small} with at most {few} windows, "
            f"{int((lost_arr > few).sum())} of the {len(sizes) - small} with more "
            f"(windows of each: {' '.join(map(str, sorted(lost)))}); by speaker: "
            f"{'; '.join(by_speaker) or 'none'}")


def _span(values: Sequence, form: str) -> str:
    """``low-high`` in ``form``, or one value when they agree."""
    low, high = form.format(min(values)), form.format(max(values))
    return low if low == high else f"{low}-{high}"


def calibrate_gap_ratio(refs, cached, grid: Sequence[float]) -> Tuple[float, str]:
    """The ``spectral-norm`` gap ratio, going down from 1, just before a lone speaker splits."""
    chosen, splits, notes = 1.0, False, []
    for value in sorted(grid, reverse=True):
        options = ClusterOptions("spectral-norm", gap_ratio=float(value))
        row = evaluate(refs, cached, cluster_labeller(options))
        whole, total = lone_speakers_whole(cached, options)
        notes.append(f"{value:g}: {row['count_acc']:.0f}% / {row['der0.0']:.1f} / "
                     f"{whole} of {total} whole")
        splits = splits or whole < total
        if not splits:
            chosen = float(value)
    return chosen, "; ".join(notes)


HEADER = ("| method | DER | DER c0.25 | JER | JER c0.25 | right count | seconds | found/true |\n"
          "|---|---|---|---|---|---|---|---|\n")


def format_row(name: str, row: Dict[str, float]) -> str:
    return (f"| {name} | {row['der0.0']:.1f} | {row['der0.25']:.1f} | {row['jer0.0']:.1f} | "
            f"{row['jer0.25']:.1f} | {row['count_acc']:.0f}% | {row['seconds']:.2f} | "
            f"{row['counts']} |\n")


def candidates(ahc: float, merge: float, with_umap: bool):
    yield "spectral (WeSpeaker)", ClusterOptions("spectral")
    yield "spectral + 3D-Speaker post", ClusterOptions("spectral", min_cluster_size=4,
                                                       merge_threshold=merge)
    yield "spectral-norm (the default: cosine edges, gap ratio 0.8)", ClusterOptions(
        "spectral-norm")
    yield "spectral-norm, binary edges", ClusterOptions("spectral-norm", edge_weights="binary")
    yield "spectral-norm, largest gap (gap_ratio 1)", ClusterOptions("spectral-norm",
                                                                     gap_ratio=1.0)
    yield "nme-sc", ClusterOptions("nme-sc")
    yield "nme-sc + 3D-Speaker post", ClusterOptions("nme-sc", min_cluster_size=4,
                                                     merge_threshold=merge)
    if with_umap:
        yield "umap-hdbscan", ClusterOptions("umap-hdbscan")
        yield "umap-hdbscan + 3D-Speaker merge", ClusterOptions("umap-hdbscan",
                                                                merge_threshold=merge)
    yield f"agglomerative (threshold {ahc:g}, calibrated)", ClusterOptions(
        "agglomerative", ahc_threshold=ahc)
    yield "agglomerative + 3D-Speaker post", ClusterOptions("agglomerative", ahc_threshold=ahc,
                                                            min_cluster_size=4,
                                                            merge_threshold=merge)


def score(args: argparse.Namespace) -> None:
    refs, cached = load_set(args.data, args.cache, args.window_lda)
    attach_truth(refs, cached)
    try:
        import umap  # noqa: F401
        with_umap = True
    except ImportError:
        with_umap = False
    ahc, merge, calibration = args.ahc_threshold, args.merge_threshold, ""
    if args.calibration:
        cal_refs, cal_cached = load_set(args.calibration, args.calibration_cache,
                                        args.window_lda)
        attach_truth(cal_refs, cal_cached)
        ahc, ahc_notes = calibrate_threshold(
            cal_refs, cal_cached, np.arange(0.3, 0.91, 0.05),
            lambda value: ClusterOptions("agglomerative", ahc_threshold=float(value)))
        merge, merge_notes = calibrate_threshold(
            cal_refs, cal_cached, np.arange(0.5, 0.96, 0.05),
            lambda value: ClusterOptions("spectral", min_cluster_size=4,
                                         merge_threshold=float(value)))
        gap, gap_notes = calibrate_gap_ratio(cal_refs, cal_cached, (1.0, 0.9, 0.8, 0.7, 0.6))
        calibration = (f"Calibration set {args.calibration} (count accuracy / DER per value):\n"
                       f"- agglomerative threshold: {ahc_notes} -> {ahc:g}\n"
                       f"- 3D-Speaker merge cosine (spectral): {merge_notes} -> {merge:g}\n"
                       f"- spectral-norm gap ratio (and lone speakers kept whole): {gap_notes}"
                       f" -> {gap:g} (reported only: the rows use the package default)\n\n")
    lines = [HEADER]
    for resolution in ((None, 0.1) if args.resolutions else (None,)):
        truth_row = evaluate(refs, cached, lambda key, item: item["_truth_labels"], resolution)
        lines.append(format_row("reference: true window labels (the floor)"
                                + (", turns on 0.1 s frames" if resolution else ""), truth_row))
    for name, options in candidates(ahc, merge, with_umap):
        if name.startswith(("nme", "spectral (", "spectral-norm (", "agglomerative (")):
            oracle = evaluate(refs, cached, cluster_labeller(options, oracle_count=True))
            lines.append(format_row(f"reference: {name.split(' (')[0]}, true count", oracle))
        for resolution in ((None, 0.1) if args.resolutions else (None,)):
            row = evaluate(refs, cached, cluster_labeller(options), resolution)
            label = name if resolution is None else f"{name}, turns on 0.1 s frames"
            lines.append(format_row(label, row))
            print(lines[-1], end="", flush=True)
    lines.append(f"\nSpeakers lost by the default ({ClusterOptions().method}): "
                 f"{lost_speakers(refs, cached, ClusterOptions())}\n")
    text = calibration + "".join(lines)
    if args.output:
        with atomic_open(args.output) as handle:
            handle.write(text)
    print(text)


def vad(args: argparse.Namespace) -> None:
    """Missed and false-alarm speech of VAD settings (a VAD's share of DER)."""
    refs, cached = load_set(args.data, args.cache)
    total_ref = sum(sum(t.duration for t in merge_regions_turns(refs[k])) for k in cached)
    print("| threshold | min speech | min silence | missed % | false alarm % | sum % |")
    print("|---|---|---|---|---|---|")
    for threshold in (0.2, 0.3, 0.4, 0.5, 0.6):
        for min_speech in (0.1, 0.25):
            for min_silence in (0.1, 0.3, 0.5):
                rules = RegionRules(threshold=threshold,
                                    offset_threshold=max(0.01, threshold - 0.15),
                                    min_speech=min_speech, min_silence=min_silence)
                missed = false_alarm = 0.0
                for key, item in cached.items():
                    speech = probabilities_to_regions(item["probs"], float(item["hop"]),
                                                      float(item["duration"]), rules)
                    ref = [(t.start, t.end) for t in merge_regions_turns(refs[key])]
                    both = overlap_seconds(ref, speech)
                    missed += sum(b - a for a, b in ref) - both
                    false_alarm += sum(b - a for a, b in speech) - both
                print(f"| {threshold} | {min_speech} | {min_silence} | "
                      f"{100 * missed / total_ref:.1f} | {100 * false_alarm / total_ref:.1f} | "
                      f"{100 * (missed + false_alarm) / total_ref:.1f} |")


def pairs(args: argparse.Namespace) -> None:
    """Cosine EER of window pairs (same vs different true speaker), by kind of pair.

    Only pairs of windows that share no audio count. A window is "full" when it
    spans the whole window length (not a region's short tail, repeated to fill
    it) and "pure" when one speaker talks in at least 90% of it and nobody else.
    "Across regions" pairs come from different VAD regions, usually different
    turns: the pairs a speaker count depends on.
    """
    refs, cached = load_set(args.data, args.cache)
    attach_truth(refs, cached)
    kinds = ("all", "full and pure", "full and pure, across regions", "short (both)")
    scores: Dict[str, List[np.ndarray]] = {kind: [] for kind in kinds}
    same: Dict[str, List[np.ndarray]] = {kind: [] for kind in kinds}
    for key, item in cached.items():
        windows, labels = item["windows"], item["_truth_labels"]
        units = item["embeddings"] / np.linalg.norm(item["embeddings"], axis=1, keepdims=True)
        lengths = windows[:, 1] - windows[:, 0]
        talk = speaker_talk(refs[key], windows)
        full = lengths >= args.window - 0.01
        main_talk = talk.max(axis=1) if len(windows) else np.zeros(0)
        pure = (main_talk >= 0.9 * lengths) & (talk.sum(axis=1) - main_talk < 0.05)
        region = np.searchsorted(item["speech"][:, 0], windows.mean(axis=1))
        first, second = np.triu_indices(len(windows), 1)
        apart = windows[second, 0] >= windows[first, 1] - 1e-6
        good = full & pure
        masks = {"all": apart,
                 "full and pure": apart & good[first] & good[second],
                 "full and pure, across regions": (apart & good[first] & good[second]
                                                   & (region[first] != region[second])),
                 "short (both)": apart & ~full[first] & ~full[second]}
        cosine = np.sum(units[first] * units[second], axis=1)
        for kind, mask in masks.items():
            scores[kind].append(cosine[mask])
            same[kind].append(labels[first][mask] == labels[second][mask])
    print("| window pairs | EER % | mean cosine, same | mean cosine, different "
          "| pairs same / different |")
    print("|---|---|---|---|---|")
    for kind in kinds:
        score, target = np.concatenate(scores[kind]), np.concatenate(same[kind])
        if target.all() or not target.any():
            print(f"| {kind} | - | | | {target.sum()} / {(~target).sum()} |")
            continue
        print(f"| {kind} | {100 * compute_eer(score, target.astype(int)):.1f} | "
              f"{score[target].mean():.2f} | {score[~target].mean():.2f} | "
              f"{target.sum()} / {(~target).sum()} |")


def speaker_talk(ref: Sequence[Turn], windows: np.ndarray) -> np.ndarray:
    """Seconds each reference speaker talks inside each window, ``[windows, speakers]``."""
    names = sorted({turn.speaker for turn in ref})
    talk = np.zeros((len(windows), len(names)))
    for turn in ref:
        column = names.index(turn.speaker)
        talk[:, column] += np.clip(np.minimum(windows[:, 1], turn.end)
                                   - np.maximum(windows[:, 0], turn.start), 0.0, None)
    return talk


def merge_regions_turns(turns: Sequence[Turn]) -> List[Turn]:
    return [Turn(a, b, "speech") for a, b in merge_regions([(t.start, t.end) for t in turns])]


def overlap_seconds(first: Sequence[Tuple[float, float]],
                    second: Sequence[Tuple[float, float]]) -> float:
    return sum(max(0.0, min(b, d) - max(a, c)) for a, b in first for c, d in second)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=("embed", "score", "vad", "pairs"))
    parser.add_argument("--data", required=True, help="directory with wav.scp and ref.rttm")
    parser.add_argument("--cache", required=True, help="directory of <id>.npz")
    parser.add_argument("--model", help="speaker model (stage embed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration", help="labelled set to calibrate thresholds on")
    parser.add_argument("--calibration_cache")
    parser.add_argument("--ahc_threshold", type=float, default=0.6)
    parser.add_argument("--merge_threshold", type=float, default=0.8)
    parser.add_argument("--resolutions", action="store_true",
                        help="also score turns on 0.1 s frames")
    parser.add_argument("--output", help="markdown table (stage score)")
    parser.add_argument("--window_lda", help="project the cached embeddings with this "
                        "window_lda.npz first (stage score)")
    parser.add_argument("--window", type=float, default=1.5,
                        help="window length of the cache, seconds (stage pairs)")
    args = parser.parse_args(argv)
    {"embed": embed, "score": score, "vad": vad, "pairs": pairs}[args.stage](args)


if __name__ == "__main__":
    sys.exit(main())
