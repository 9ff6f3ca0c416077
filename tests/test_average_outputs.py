"""average_model's --dst_model and --src_path are checked before any checkpoint is loaded."""
import os

import pytest
import torch

from wespeaker_py.bin import average_model
from wespeaker_py.cli.common import run_main
from wespeaker_py.train import average


def _write_run(models, epochs=(1, 2, 3)):
    """Tiny training checkpoints model_<epoch>.pt and final_model.pt -> the last one."""
    models.mkdir(parents=True, exist_ok=True)
    for epoch in epochs:
        torch.manual_seed(epoch)
        state = {"linear.weight": torch.randn(3, 2), "linear.bias": torch.randn(3)}
        torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []},
                    "epoch": epoch}, models / f"model_{epoch}.pt")
    os.symlink(f"model_{epochs[-1]}.pt", models / "final_model.pt")
    return models


def _bytes_of(models):
    return {name: (models / name).read_bytes() for name in sorted(os.listdir(models))}


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if a checkpoint is averaged (loaded) at all."""
    def refuse(paths):
        raise AssertionError(f"checkpoints were loaded: {paths}")
    monkeypatch.setattr(average, "average_state_dicts", refuse)


def _run(capsys, src, dst, num=2):
    status = run_main(average_model.main, ["--src_path", str(src), "--num", str(num),
                                           "--dst_model", str(dst)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return status, err


@pytest.mark.parametrize("name", ["model_3.pt", "final_model.pt"])
def test_an_averaged_checkpoint_is_not_overwritten(tmp_path, capsys, no_loading, name):
    models = _write_run(tmp_path / "models")
    before = _bytes_of(models)
    status, err = _run(capsys, models, models / name)
    assert status == 2
    assert f"--dst_model {models / name}" in err and "one of the checkpoints being averaged" in err
    assert _bytes_of(models) == before
    assert os.path.islink(models / "final_model.pt")


def test_a_training_checkpoint_name_is_refused(tmp_path, capsys, no_loading):
    models = _write_run(tmp_path / "models")
    # model_1.pt is not among the 2 averaged; elsewhere, a new model_9.pt is refused as well
    for dst in (models / "model_1.pt", tmp_path / "out" / "model_9.pt"):
        status, err = _run(capsys, models, dst)
        assert status == 2
        assert f"--dst_model {dst}" in err and "named like a training checkpoint" in err
    assert not (tmp_path / "out").exists()


def test_a_file_holding_a_training_checkpoint_is_refused(tmp_path, capsys, no_loading):
    models = _write_run(tmp_path / "models")
    kept = tmp_path / "best.pt"
    kept.write_bytes((models / "model_1.pt").read_bytes())
    before = kept.read_bytes()
    status, err = _run(capsys, models, kept)
    assert status == 2 and f"--dst_model {kept}" in err and "holds a training checkpoint" in err
    assert kept.read_bytes() == before


def test_a_training_checkpoint_in_torchs_old_format_is_refused_too(tmp_path, capsys, no_loading):
    # the check maps the file's tensors instead of reading them; a file saved before torch
    # 1.6's zip format cannot be mapped and is read whole
    models = _write_run(tmp_path / "models")
    kept = tmp_path / "old.pt"
    torch.save(torch.load(models / "model_1.pt"), kept, _use_new_zipfile_serialization=False)
    with pytest.raises(RuntimeError, match="mmap can only be used"):
        torch.load(kept, mmap=True, weights_only=False)
    status, err = _run(capsys, models, kept)
    assert status == 2 and "holds a training checkpoint" in err


def test_a_folder_as_dst_model_fails_before_averaging(tmp_path, capsys, no_loading):
    models = _write_run(tmp_path / "models")
    status, err = _run(capsys, models, models)
    assert status == 2 and f"{models} is a folder" in err


def test_an_earlier_average_is_replaced(tmp_path):
    models = _write_run(tmp_path / "models")
    dst = models / "avg_model.pt"
    torch.save({"linear.weight": torch.zeros(3, 2), "linear.bias": torch.zeros(3)}, dst)
    average_model.main(["--src_path", str(models), "--num", "2", "--dst_model", str(dst)])
    states = [torch.load(models / f"model_{epoch}.pt")["model"] for epoch in (2, 3)]
    expected = (states[0]["linear.weight"] + states[1]["linear.weight"]) / 2
    assert torch.allclose(torch.load(dst)["linear.weight"], expected)


def test_a_checkpoint_file_as_src_path_names_its_folder(tmp_path, capsys):
    models = _write_run(tmp_path / "models")
    status, err = _run(capsys, models / "model_3.pt", tmp_path / "avg.pt")
    assert status == 2
    assert f"{models / 'model_3.pt'} is a file, not a folder" in err and str(models) in err
    assert "does not exist" not in err
    assert not (tmp_path / "avg.pt").exists()


def test_the_destination_check_maps_an_existing_file_and_reads_it_where_torch_cannot(
        tmp_path, capsys, no_loading, monkeypatch):
    models = _write_run(tmp_path / "models")
    kept = tmp_path / "best.pt"
    kept.write_bytes((models / "model_1.pt").read_bytes())
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("mmap", False))
        return real_load(*args, **kwargs)
    monkeypatch.setattr(torch, "load", recording_load)
    status, err = _run(capsys, models, kept)
    assert status == 2 and "holds a training checkpoint" in err and calls == [True]

    def load_without_mmap(*args, mmap=None, **kwargs):   # a torch before 2.1
        if mmap is not None:
            raise TypeError("'mmap' is an invalid keyword argument for Unpickler()")
        return real_load(*args, **kwargs)
    monkeypatch.setattr(torch, "load", load_without_mmap)
    status, err = _run(capsys, models, kept)
    assert status == 2 and "holds a training checkpoint" in err
