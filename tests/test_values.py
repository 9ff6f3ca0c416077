import numpy as np
import pytest

from wespeaker_py.utils.values import is_whole_number


@pytest.mark.parametrize("value", [0, 8000, -1, np.int64(16000), np.int16(3)])
def test_python_and_numpy_integers_are_whole_numbers(value):
    assert is_whole_number(value)


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 8000.0, np.float32(2), "8000",
                                   None])
def test_bools_floats_and_text_are_not(value):
    assert not is_whole_number(value)
