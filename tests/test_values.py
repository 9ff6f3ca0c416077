import numpy as np
import pytest

from wespeaker_py.utils.values import is_real_number, is_whole_number


@pytest.mark.parametrize("value", [0, 8000, -1, np.int64(16000), np.int16(3)])
def test_python_and_numpy_integers_are_whole_numbers(value):
    assert is_whole_number(value)


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 8000.0, np.float32(2), "8000",
                                   None])
def test_bools_floats_and_text_are_not(value):
    assert not is_whole_number(value)


@pytest.mark.parametrize("value", [0, -2.5, 1e-3, np.float32(0.5), np.int64(7)])
def test_ints_floats_and_numpy_numbers_are_real_numbers(value):
    assert is_real_number(value)


@pytest.mark.parametrize("value", [True, np.bool_(False), "0.5", None, 1j])
def test_bools_text_and_complex_numbers_are_not(value):
    assert not is_real_number(value)
