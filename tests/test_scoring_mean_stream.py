"""The mean of an embedding set read vector by vector: the bytes of the mean of the loaded
matrix, and the refusals (file, line, key) of the loader."""
import kaldiio
import numpy as np
import pytest

from wespeaker_py.io import ark
from wespeaker_py.io.ark import iter_embedding_blocks, load_embeddings, write_embeddings
from scoring_helpers import compute_mean_vector
from wespeaker_py.scoring.embeddings import mean_of_embeddings
from wespeaker_py.utils.tables import DataFormatError


@pytest.mark.parametrize("suffix", [".scp", ".ark"])
def test_streamed_mean_is_the_table_mean_bit_for_bit(tmp_path, monkeypatch, suffix):
    monkeypatch.setattr(ark, "BLOCK_ROWS", 7)   # several blocks, the last one short
    rng = np.random.default_rng(4)
    # magnitudes over eight decades: float64 sums in another order would differ
    matrix = (rng.standard_normal((60, 33)) * 10.0 ** rng.integers(-4, 5, (60, 1))
              ).astype(np.float32)
    matrix[:, 0] = -0.0   # a column of negative zeros: numpy's sum starts at +0.0
    # 1 + 2**60 - 2**60 is 0 in file order, 1 when the 1 is summed apart (another block)
    matrix[:, 1] = 0.0
    matrix[6:9, 1] = [1.0, 2.0 ** 60, -2.0 ** 60]
    scp = write_embeddings(str(tmp_path / "x.ark"), [f"u{i}" for i in range(60)], matrix)
    path = scp if suffix == ".scp" else str(tmp_path / "x.ark")
    streamed = mean_of_embeddings(path)
    expected = compute_mean_vector(load_embeddings(path))
    assert streamed.dtype == np.float32 and streamed.tobytes() == expected.tobytes()


def bad_sets(tmp_path):
    """name -> scp path of a set the loader refuses."""
    sets = {}
    ones = np.ones((6, 4), dtype=np.float32)
    for name, row, value in (("nan", 2, np.nan), ("inf", 5, -np.inf), ("zero", 3, 0.0)):
        matrix = ones.copy()
        if name == "zero":
            matrix[row] = value
        else:
            matrix[row, 1] = value
        sets[name] = write_embeddings(str(tmp_path / f"{name}.ark"),
                                      [f"k{i}" for i in range(6)], matrix)
    # a zero vector before a NaN: the NaN is named (the loader checks values first)
    matrix = ones.copy()
    matrix[1] = 0.0
    matrix[4, 0] = np.nan
    sets["zero then nan"] = write_embeddings(str(tmp_path / "both.ark"),
                                             [f"k{i}" for i in range(6)], matrix)
    # a NaN before a repeated key: the repeat is named (found while reading)
    lines = (tmp_path / "nan.scp").read_text().splitlines()
    (tmp_path / "repeat.scp").write_text("\n".join(lines + [lines[0]]) + "\n")
    sets["nan then repeat"] = str(tmp_path / "repeat.scp")
    kaldiio.save_ark(str(tmp_path / "dims.ark"),
                     {"a": np.ones(4, np.float32), "b": np.ones(5, np.float32)},
                     scp=str(tmp_path / "dims.scp"))
    sets["dimension"] = str(tmp_path / "dims.scp")
    (tmp_path / "empty.scp").write_text("\n")
    sets["empty"] = str(tmp_path / "empty.scp")
    return sets


def error_of(read, path):
    with pytest.raises(DataFormatError) as error:
        read(path)
    return str(error.value), error.value.line_no


EXPECTED = {"nan": "embedding 'k2' contains NaN or inf", "inf": "embedding 'k5' contains NaN",
            "zero": "embedding 'k3' has zero length", "zero then nan": "embedding 'k4' contains",
            "nan then repeat": "embedding 'k0' appears twice",
            "dimension": "embedding 'b' has dimension 5, the others have 4",
            "empty": "holds no embeddings"}


@pytest.mark.parametrize("rows", [1, 2, 4])
def test_a_refused_set_is_refused_for_the_same_fault_whatever_the_block_size(tmp_path,
                                                                             monkeypatch, rows):
    sets = bad_sets(tmp_path)
    whole = {name: error_of(lambda p: list(iter_embedding_blocks(p, block_rows=10 ** 6)), path)
             for name, path in sets.items()}
    for name, (message, _) in whole.items():
        assert EXPECTED[name] in message, name
    monkeypatch.setattr(ark, "BLOCK_ROWS", rows)
    for name, path in sets.items():
        assert error_of(mean_of_embeddings, path) == whole[name], name
        assert error_of(load_embeddings, path) == whole[name], name
