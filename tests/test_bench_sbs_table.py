"""bench/sbs_table.py reads both codes' training logs as wespeaker_py.train.curves does: an
epoch redone by a resume counts once, an epoch whose loss is NaN still counts, and
WeSpeaker's table gives each epoch's last row."""
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import sbs_table  # noqa: E402

PREFIX = "2026-12-05 10:00:00,000 INFO [wespeaker_py.train.trainer] "
WS_PREFIX = "[ INFO : 2024-01-01 10:00:00 ] - "
WS_HEADER = f"{WS_PREFIX}|     Epoch|     Batch|        Lr|    Margin|      Loss|       Acc|\n"


def our_epoch(epoch, loss, acc):
    return (f"{PREFIX}epoch {epoch} done: loss {loss} acc {acc:.2f} lr 1.000e-03 margin 0.000 "
            f"(4 batches over all ranks, 0 skipped)\n")


def wespeaker_row(epoch, batch, acc):
    return f"{WS_PREFIX}|{epoch:>10}|{batch:>10}|{0.001:>10}|{0:>10}|{5.5:>10}|{acc:>10}|\n"


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def test_the_table_reads_the_logs_as_the_training_curves_do(tmp_path, monkeypatch, capsys):
    sbs = str(tmp_path)
    ours_log = os.path.join(sbs, "ours", "examples", "mini", "exp", "sbs-s{}", "train.log")
    # seed 1: a resume from epoch 2 redoes it; seed 2: epoch 2's loss is NaN
    write(ours_log.format(1), f"{PREFIX}training epochs 1 to 3\n" + our_epoch(1, 6.5, 20.0)
          + our_epoch(2, 5.5, 40.0) + f"{PREFIX}training epochs 2 to 3\n"
          + our_epoch(2, 5.4, 41.0) + our_epoch(3, 4.5, 60.0))
    write(ours_log.format(2), our_epoch(1, 6.5, 21.0) + our_epoch(2, "nan", 31.0)
          + our_epoch(3, 4.5, 61.0))
    for tag, accuracies in (("ref-s1", (35.5, 55.7, 70.1)), ("ws-s2", (36.5, 56.7, 71.1))):
        rows = "".join(wespeaker_row(epoch, batch, accuracy - (batch == 100))
                       for epoch, accuracy in enumerate(accuracies, 1) for batch in (100, 200))
        write(os.path.join(sbs, "refexp", f"train_{tag}.err"), WS_HEADER + rows)
    for tag, eers in (("ours-s1", (3.0, 3.5)), ("ref-s1", (3.2, 3.1)),
                      ("ours-s2", (3.4, 3.3)), ("ws-s2", (3.6, 3.9))):
        write(os.path.join(sbs, "scores", tag, "metrics.txt"),
              "".join(f"EER = {eer:.3f}\nminDCF = 0.300\n" for eer in eers))
    monkeypatch.setenv("SBS_DIR", sbs)
    sbs_table.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:4] == [
        "| 1 | 3.00 | 3.20 | -0.20 | 3.50 | 3.10 | 20.0, 41.0, 60.0 | 35.5, 55.7, 70.1 |",
        "| 2 | 3.40 | 3.60 | -0.20 | 3.30 | 3.90 | 21.0, 31.0, 61.0 | 36.5, 56.7, 71.1 |"]
    assert lines[-1].endswith("final accuracy: -10.10 ± 0.00 points; 2 seeds.")
