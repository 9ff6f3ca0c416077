"""Range checks of flags by the shared argparse types of wespeaker_py.cli.common: the
refusal comes from argparse, naming the flag, before anything runs."""
import argparse

import pytest

from wespeaker_py.bin import extract
from wespeaker_py.cli.common import non_negative

REQUIRED = ["--config", "c.yaml", "--model_path", "m.pt", "--data_list", "l",
            "--embed_ark", "e.ark"]


@pytest.mark.parametrize("flag, value, message", [
    ("num_workers", "-1", "must be at least 0, got -1"),
    ("num_frms", "0", "must be at least 1, got 0"),
    ("seed", "-1", "must be at least 0, got -1"),
    ("seed", "x", "expected an integer, got 'x'"),
])
def test_extract_refuses_a_flag_out_of_range_naming_it(flag, value, message, capsys):
    with pytest.raises(SystemExit) as stop:
        extract.build_parser().parse_args(REQUIRED + ["--random_chunk", f"--{flag}", value])
    assert stop.value.code == 2
    spelling = f"--{flag}/--{flag.replace('_', '-')}" if "_" in flag else f"--{flag}"
    assert f"argument {spelling}: {message}" in capsys.readouterr().err


def test_extract_takes_the_least_value_of_each_ranged_flag():
    args = extract.build_parser().parse_args(
        REQUIRED + ["--random_chunk", "--num_workers", "0", "--num_frms", "1", "--seed", "0"])
    assert (args.num_workers, args.num_frms, args.seed) == (0, 1, 0)


@pytest.mark.parametrize("text, value", [("0", 0.0), ("0.25", 0.25), ("1e3", 1000.0)])
def test_non_negative_takes_finite_numbers_from_zero(text, value):
    assert non_negative(text) == value


@pytest.mark.parametrize("text, message", [
    ("-0.5", "must be a finite number >= 0, got -0.5"),
    ("inf", "must be a finite number >= 0, got inf"),
    ("nan", "must be a finite number >= 0, got nan"),
    ("x", "expected a number, got 'x'"),
])
def test_non_negative_refuses_negative_infinite_and_nan(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=f"^{message}$"):
        non_negative(text)
