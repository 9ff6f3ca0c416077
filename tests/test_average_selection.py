"""Which checkpoints average_model chooses, and the warning for unevenly spaced ones."""
import logging

import pytest
import torch

from wespeaker_py.bin import average_model
from wespeaker_py.train.average import select_checkpoints
from wespeaker_py.train.checkpoint import epoch_from_name


def _write_epochs(models, epochs):
    models.mkdir(parents=True, exist_ok=True)
    for epoch in epochs:
        torch.save({"w": torch.full((2,), float(epoch))}, models / f"model_{epoch}.pt")
    return str(models)


def _chosen_and_warnings(caplog, src, num, **bounds):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wespeaker_py.train.average"):
        chosen = [epoch_from_name(path) for path in select_checkpoints(src, num, **bounds)]
    return chosen, [record.getMessage() for record in caplog.records
                    if record.levelno == logging.WARNING]


@pytest.mark.parametrize("epochs, num, chosen, gaps", [
    # a 17-epoch run saving every 5th epoch and its last 2, averaged over 4: epoch 10 is in
    ((5, 10, 15, 16, 17), 4, [10, 15, 16, 17], "10 -> 15"),
    # an every-5th run missing model_25.pt
    ((5, 10, 15, 20, 30), 2, [20, 30], "20 -> 30"),
    # a consecutive run missing one checkpoint
    ((1, 2, 3, 5, 6), 4, [2, 3, 5, 6], "3 -> 5"),
])
def test_unevenly_spaced_checkpoints_are_averaged_with_a_warning_naming_them(
        tmp_path, caplog, epochs, num, chosen, gaps):
    src = _write_epochs(tmp_path / "models", epochs)
    taken, warnings = _chosen_and_warnings(caplog, src, num)
    assert taken == chosen   # the choice is WeSpeaker's: the latest num, as before
    assert len(warnings) == 1, warnings
    listed = ", ".join(map(str, chosen))
    assert f"{src}: averaging epochs {listed}, which are not evenly spaced" in warnings[0]
    assert gaps in warnings[0] and "--max_epoch" in warnings[0]

    # a finished run's last epochs, and a run saved only every 5th epoch, are silent
    for name, run, num in (("finished", (5, 10, 15, 16, 17), 2),
                           ("every_5th", (5, 10, 15, 20, 25, 30), 3)):
        src = _write_epochs(tmp_path / name, run)
        assert _chosen_and_warnings(caplog, src, num)[1] == [], name
    # the bounds decide the candidates the spacing is read from: model_0.pt is not one
    src = _write_epochs(tmp_path / "with_init", (0, 5, 10, 15))
    assert _chosen_and_warnings(caplog, src, 3, min_epoch=1) == ([5, 10, 15], [])


def test_average_model_warns_on_stderr_and_still_averages(tmp_path, capsys):
    src = _write_epochs(tmp_path / "models", (5, 10, 15, 16, 17))
    dst = tmp_path / "avg_model.pt"
    average_model.main(["--src_path", src, "--num", "4", "--dst_model", str(dst)])
    err = capsys.readouterr().err
    assert "WARNING" in err and "averaging epochs 10, 15, 16, 17" in err
    assert torch.load(dst)["w"].tolist() == [14.5, 14.5]
