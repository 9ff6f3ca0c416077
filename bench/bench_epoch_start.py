"""Seconds from a new DataLoader iterator to its 4th batch, for each of three epochs.

    PYTHONPATH=<tree> python bench/bench_epoch_start.py DATA CONFIG

``DATA`` is a prepared data folder of the mini recipe (``train/raw.list``,
``train/utt2spk``, ``rirs/wav.scp``, ``musan/wav.scp``); ``CONFIG`` a training config whose
``dataset_args`` are used. The trainer makes a new iterator each epoch, so each worker
starts afresh: this measures what a worker pays before its first batches (imports, file
opens). One worker, batches of 16, ``prefetch_factor`` 4, one torch thread. Figures:
results_pipeline.md.
"""
import argparse
import time

import torch
import yaml
from torch.utils.data import DataLoader

import wespeaker_py
from wespeaker_py.dataset.collate import collate_train
from wespeaker_py.dataset.dataset import Dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("config")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with open(args.config) as handle:
        dataset_args = yaml.safe_load(handle)["dataset_args"]
    with open(f"{args.data}/train/utt2spk") as handle:
        speakers = sorted({line.split()[1] for line in handle if line.strip()})
    dataset = Dataset("raw", f"{args.data}/train/raw.list", dataset_args,
                      spk2id={speaker: index for index, speaker in enumerate(speakers)},
                      reverb_data=f"{args.data}/rirs/wav.scp",
                      noise_data=f"{args.data}/musan/wav.scp", repeat=True)
    times = []
    for epoch in range(1, 4):
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=16, num_workers=1, collate_fn=collate_train,
                            prefetch_factor=4)
        start = time.perf_counter()
        batches = iter(loader)
        for _ in range(4):
            next(batches)
        times.append(time.perf_counter() - start)
        del batches
    print(wespeaker_py.__file__.split("/wespeaker_py/")[0], [round(t, 2) for t in times])


if __name__ == "__main__":
    main()
