"""Extraction throughput on the mini test set: ``bin.extract`` and ``SpeakerModel.embed_many``.

    flock -x /tmp/wsp_cpu.lock python bench/bench_extract.py [--rounds 3 --threads 2]
        [--paths bin.extract,embed_many]

The mini recipe's model (examples/mini/conf/ecapa_tdnn.yaml: ECAPA_TDNN_c512,
80-dim fbank, 192-dim embedding; random weights, as speed does not depend on
them) embeds every utterance of the mini corpus's test speakers (test_spk), whole,
as stage 4 of the recipe does: ``python -m wespeaker_py.bin.extract`` with
``--batch_size 16 --num_workers 1 --device cpu`` (run in-process), then the same
files through ``load_model(folder).embed_many(wav.scp, batch_size=16)``. Each
figure is the wall time of the whole call (reading, fbank, model, writing),
best and median of ``--rounds`` runs with the two calls alternating, as utterances
and seconds of audio per second, and the CPU time of the call (this process and
its reaped DataLoader workers), which a loaded machine disturbs far less than
the wall time. The first round
also imports the extraction code (as a user's command does), so it is shown
on its own. The code timed is the ``wespeaker_py`` on
``PYTHONPATH`` (printed), so two trees can be compared by alternating runs.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import resource
import shutil
import statistics
import tempfile
import time

import torch
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO, "examples", "mini", "data", "librispeech_tc100")
CONFIG = os.path.join(REPO, "examples", "mini", "conf", "ecapa_tdnn.yaml")


def read_table(path: str) -> dict:
    with open(path) as handle:
        return dict(line.split(maxsplit=1) for line in handle.read().splitlines() if line)


def test_set() -> dict:
    """``{key: absolute wav path}`` of the test speakers' utterances."""
    with open(os.path.join(CORPUS, "test_spk")) as handle:
        speakers = set(handle.read().split())
    return {key: os.path.join(CORPUS, path.strip())
            for key, path in read_table(os.path.join(CORPUS, "wav.scp")).items()
            if key.split("-")[0] in speakers}


def write_model_folder(folder: str) -> None:
    """config.yaml (the mini recipe's) + avg_model.pt with seeded random weights."""
    from wespeaker_py.models import get_model
    with open(CONFIG) as handle:
        config = yaml.safe_load(handle)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.yaml"), "w") as handle:
        yaml.safe_dump(config, handle)
    torch.manual_seed(0)
    model = get_model(config["model"], **config["model_args"]).eval()
    torch.save(model.state_dict(), os.path.join(folder, "avg_model.pt"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--paths", default="bin.extract,embed_many",
                        help="which of bin.extract, embed_many to time (comma-separated)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import wespeaker_py
    from wespeaker_py import load_model

    utterances = test_set()
    durations = read_table(os.path.join(CORPUS, "utt2dur"))
    audio_seconds = sum(float(durations[key]) for key in utterances)
    work = tempfile.mkdtemp(prefix="bench_extract_")
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    folder = os.path.join(work, "model")
    write_model_folder(folder)
    raw_list = os.path.join(work, "raw.list")
    wav_scp = os.path.join(work, "wav.scp")
    with open(raw_list, "w") as raw, open(wav_scp, "w") as scp:
        for key, path in utterances.items():
            raw.write(json.dumps({"key": key, "wav": path, "spk": key.split("-")[0]}) + "\n")
            scp.write(f"{key} {path}\n")
    timings = {name: [] for name in args.paths.split(",")}
    cpu_times = {name: [] for name in timings}
    for round_index in range(args.rounds):
        if "bin.extract" in timings:
            with cpu_timer(cpu_times["bin.extract"]):
                time_extract(timings["bin.extract"], folder, raw_list,
                             os.path.join(work, f"emb{round_index}", "xvector.ark"),
                             args.batch_size)
        if "embed_many" in timings:
            with cpu_timer(cpu_times["embed_many"]):
                start = time.perf_counter()
                model = load_model(folder, device="cpu")
                results = model.embed_many(wav_scp, batch_size=args.batch_size,
                                           progress=False)
                timings["embed_many"].append(time.perf_counter() - start)
            assert len(results.embeddings) == len(utterances)
    print(f"{len(utterances)} utterances, {audio_seconds:.1f} s of audio, batch "
          f"{args.batch_size}, {args.threads} threads, wespeaker_py from "
          f"{os.path.dirname(os.path.dirname(wespeaker_py.__file__))}, load {os.getloadavg()}")
    print("| path | first s | best s | median s | utt/s (best) | audio s/s (best) "
          "| CPU s first | CPU s best |")
    print("|---|---|---|---|---|---|---|---|")
    for name, seconds in timings.items():
        best = min(seconds)
        cpu = cpu_times[name]
        print(f"| {name} | {seconds[0]:.2f} | {best:.2f} | {statistics.median(seconds):.2f} | "
              f"{len(utterances) / best:.1f} | {audio_seconds / best:.1f} | "
              f"{cpu[0]:.2f} | {min(cpu):.2f} |")


@contextlib.contextmanager
def cpu_timer(cpu_times: list):
    """Append the CPU seconds (user + system) of this process and its reaped children
    spent inside the block."""
    def used() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    start = used()
    yield
    cpu_times.append(used() - start)


def time_extract(timings: list, folder: str, raw_list: str, ark: str, batch_size: int) -> None:
    """Append the wall time of one in-process ``bin.extract`` run."""
    from wespeaker_py.bin import extract
    start = time.perf_counter()
    extract.main(["--config", os.path.join(folder, "config.yaml"),
                  "--model_path", os.path.join(folder, "avg_model.pt"),
                  "--data_type", "raw", "--data_list", raw_list, "--embed_ark", ark,
                  "--batch_size", str(batch_size), "--num_workers", "1", "--device", "cpu"])
    timings.append(time.perf_counter() - start)


if __name__ == "__main__":
    main()
