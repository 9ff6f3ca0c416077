"""utils.vectors: the one NumPy unit-length form, its floor, and its torch twin."""
import subprocess
import sys

import numpy as np
import pytest

from wespeaker_py.utils.vectors import MIN_NORM, row_norms, unit_rows


def _rows(dtype=np.float32):
    rows = np.random.default_rng(3).standard_normal((6, 16)).astype(dtype) * 7
    rows[2] = 0.0
    return rows


def test_rows_become_unit_length_and_a_zero_row_stays_zero():
    unit = unit_rows(_rows())
    assert unit.dtype == np.float64 and unit.shape == (6, 16)
    lengths = np.linalg.norm(unit, axis=1)
    assert np.allclose(np.delete(lengths, 2), 1.0)
    assert not unit[2].any()


def test_a_row_shorter_than_the_floor_is_divided_by_the_floor():
    rows = np.zeros((2, 4))
    rows[0, 0], rows[1, 1] = MIN_NORM / 100, 3.0
    unit = unit_rows(rows)
    assert unit[0, 0] == pytest.approx(0.01)
    assert unit[1, 1] == 1.0


def test_dtype_none_computes_in_float32_as_given():
    # diarization's turns compare float32 similarities: computing them in float64
    # instead could flip a near tie, so float32 must stay float32 all the way
    rows = _rows(np.float32)
    unit = unit_rows(rows, dtype=None)
    assert unit.dtype == np.float32
    by_hand = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True),
                                np.float32(MIN_NORM))
    assert by_hand.dtype == np.float32
    assert np.array_equal(unit, by_hand)


def test_the_floor_keeps_float32_division_in_float32():
    # a NumPy float64 floor would promote float32 rows to float64 (NEP 50)
    assert type(MIN_NORM) is float
    assert (np.ones((1, 3), np.float32) / np.maximum(np.ones((1, 1), np.float32),
                                                     MIN_NORM)).dtype == np.float32


def test_one_vector_is_scaled_by_its_whole_norm():
    vector = np.random.default_rng(5).standard_normal(256) * 1e-3
    unit = unit_rows(vector)
    assert unit.shape == (256,)
    assert np.array_equal(unit, vector / np.linalg.norm(vector))
    assert row_norms(vector).shape == (1,)
    assert row_norms(_rows()).shape == (6, 1)


def test_more_than_two_axes_are_refused():
    with pytest.raises(ValueError, match=r"rows of shape \(2, 3, 4\): expected a vector or "
                                         r"a matrix"):
        unit_rows(np.ones((2, 3, 4)))


def test_the_torch_twin_agrees():
    from wespeaker_py.scoring.cosine import length_normalize
    rows = _rows(np.float32)
    twin = length_normalize(rows).numpy()
    assert twin.dtype == np.float32
    assert np.allclose(twin, unit_rows(rows, dtype=None), atol=1e-7)
    assert not twin[2].any()


def test_the_floor_is_still_importable_from_its_former_home():
    from wespeaker_py.io import ark
    from wespeaker_py.utils import vectors
    assert ark.MIN_NORM is vectors.MIN_NORM


def test_the_module_and_diarization_turns_import_no_torch_or_scipy():
    script = ("import sys, wespeaker_py.utils.vectors, wespeaker_py.diarization.turns; "
              "print([m for m in ('torch', 'scipy') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
