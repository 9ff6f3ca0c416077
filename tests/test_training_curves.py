"""Training curves read back from train.log (ours and WeSpeaker's) and drawn."""
import math
import os

import pytest

from wespeaker_py.bin import plot_training
from wespeaker_py.train.curves import plot_training_curves, read_training_curves
from wespeaker_py.utils.tables import DataFormatError

PREFIX = "2026-12-05 10:00:00,000 INFO [wespeaker_py.train.loop] "


def _ours(epoch, batch, total, loss, lr=1e-3, margin=0.0, acc=50.0):
    return (f"{PREFIX}epoch {epoch} batch {batch}/{total} lr {lr:.3e} margin {margin:.3f} "
            f"loss {loss:.4f} acc {acc:.2f}\n")


def _done(epoch, loss, acc):
    return (f"{PREFIX}epoch {epoch} done: loss {loss:.4f} acc {acc:.2f} lr 1.000e-03 "
            f"margin 0.000 (4 batches over all ranks, 0 skipped)\n")


def test_a_resume_replaces_what_the_cut_run_logged_from_its_first_epoch(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        f"{PREFIX}training epochs 1 to 3\n"
        + _ours(1, 2, 4, 5.0) + _ours(1, 4, 4, 4.0) + _done(1, 4.5, 20.0)
        + _ours(2, 2, 4, 9.9) + "a line of something else\n"      # cut short in epoch 2
        + f"{PREFIX}training epochs 2 to 3\n"
        + _ours(2, 2, 4, 3.0) + _ours(2, 4, 4, 2.5, lr=5e-4) + _done(2, 2.8, 40.0)
        + _ours(3, 2, 4, float("nan")))
    curves = read_training_curves(str(log))
    assert sorted(curves.batches) == [(1, 2), (1, 4), (2, 2), (2, 4), (3, 2)]
    assert curves.batches[(2, 2)][2] == 3.0        # the resumed run's, not the cut one's
    assert curves.epochs == {1: (4.5, 20.0), 2: (2.8, 40.0)}
    xs, values = curves.series()
    assert xs == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert values[3][0] == pytest.approx(5e-4) and math.isnan(values[4][2])
    png = tmp_path / "curves.png"
    plot_training_curves(curves, str(png), title="run")   # a NaN loss is drawn as a gap
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wespeaker_table_rows_are_read_and_a_new_header_starts_a_run(tmp_path):
    header = ("[ INFO : 2024-01-01 10:00:00 ] - |     Epoch|     Batch|        Lr|    Margin|"
              "      Loss|       Acc|\n")
    rule = "[ INFO : 2024-01-01 10:00:00 ] - +----------+----------+----------+\n"

    def row(epoch, batch, lr, loss):
        return (f"[ INFO : 2024-01-01 10:00:00 ] - |{epoch:>10}|{batch:>10}|{lr:>10}|"
                f"{0:>10}|{loss:>10}|{50.5:>10}|\n")

    log = tmp_path / "train.log"
    log.write_text(rule + header + rule + row(1, 100, "0.00041667", "12.346")
                   + row(1, 200, "0.0005", "11.5") + row(2, 100, "0.0004", "99")
                   + rule + header + rule + row(2, 100, "1.2e-05", "10.25")
                   + row(2, 200, "1e-05", "9.5"))
    curves = read_training_curves(str(log))
    assert sorted(curves.batches) == [(1, 100), (1, 200), (2, 100), (2, 200)]
    assert curves.batches[(1, 100)] == (0.00041667, 0.0, 12.346, 50.5)
    assert curves.batches[(2, 100)] == (1.2e-05, 0.0, 10.25, 50.5)
    assert curves.series()[0] == [0.5, 1.0, 1.5, 2.0]
    assert curves.epochs == {}
    assert curves.last_points() == {1: (0.0005, 0.0, 11.5, 50.5), 2: (1e-05, 0.0, 9.5, 50.5)}


def test_the_command_draws_each_run_and_names_a_log_without_progress(tmp_path, capsys):
    run = tmp_path / "exp"
    run.mkdir()
    (run / "train.log").write_text(_ours(1, 4, 4, 3.0) + _done(1, 3.0, 10.0))
    assert plot_training.main([str(run)]) == [str(run / "train_curves.png")]
    assert (run / "train_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "1 log points, 1 epochs" in capsys.readouterr().out
    other = tmp_path / "other.png"
    assert plot_training.main([str(run / "train.log"), "--output", str(other)]) == [str(other)]
    empty = tmp_path / "empty.log"
    empty.write_text("nothing here\n")
    with pytest.raises(DataFormatError, match=f"{empty}: no training progress lines"):
        plot_training.main([str(empty)])
    assert not os.path.exists(tmp_path / "empty.png")
