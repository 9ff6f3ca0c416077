"""Averaging maps the checkpoints instead of reading them (the optimizer state is never
read) and gives the average of the whole loaded checkpoints, bit for bit."""
import pytest
import torch

from wespeaker_py.train import average


def _write_checkpoints(folder, new_format=True):
    paths = []
    for epoch in range(1, 5):
        torch.manual_seed(epoch)
        scale = 10.0 ** torch.randint(-3, 4, (64, 1))
        model = {"conv.weight": torch.randn(64, 32) * scale,
                 "fc.weight": torch.randn(5, 7, dtype=torch.float64),
                 "bn.num_batches_tracked": torch.tensor(100 * epoch),
                 "half": torch.randn(9).to(torch.bfloat16)}
        optimizer = {"state": {0: {"exp_avg": torch.randn(64, 32),
                                   "exp_avg_sq": torch.rand(64, 32)}},
                     "param_groups": [{"lr": 0.1, "params": [0]}]}
        path = str(folder / f"model_{epoch}.pt")
        torch.save({"model": model, "optimizer": optimizer, "epoch": epoch}, path,
                   _use_new_zipfile_serialization=new_format)
        paths.append(path)
    return paths


def _eager_average(paths):
    """The average as the whole checkpoints give it: float64 sums in file order."""
    states = [torch.load(path, map_location="cpu", weights_only=False)["model"]
              for path in paths]
    averaged = {}
    for key, first in states[0].items():
        if not first.is_floating_point():
            averaged[key] = states[-1][key]
            continue
        total = first.double().clone()
        for state in states[1:]:
            total += state[key].double()
        averaged[key] = (total / len(paths)).to(first.dtype)
    return averaged


@pytest.mark.parametrize("new_format", [True, False])   # torch < 1.6's files cannot be mapped
def test_the_average_is_the_eager_average_bit_for_bit(tmp_path, monkeypatch, new_format):
    paths = _write_checkpoints(tmp_path, new_format)
    mapped = []
    load = torch.load

    def spying_load(path, *args, **kwargs):
        mapped.append(kwargs.get("mmap", False))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spying_load)
    averaged = average.average_state_dicts(paths)
    assert mapped[0] is True   # every checkpoint is first tried mapped
    monkeypatch.setattr(torch, "load", load)
    expected = _eager_average(paths)
    assert set(averaged) == set(expected)
    for key, value in expected.items():
        assert averaged[key].dtype == value.dtype and torch.equal(averaged[key], value), key
    assert averaged["bn.num_batches_tracked"].item() == 400
