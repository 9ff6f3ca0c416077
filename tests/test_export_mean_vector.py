"""An exported graph's mean vector is written by the one mean-vector writer
(scoring.embeddings.save_mean_vector), as any set's ``mean_vec.npy`` is."""
import os
from types import SimpleNamespace

import numpy as np

from wespeaker_py.api.exporting import companions
from wespeaker_py.api.companion_files import MEAN_NAME
from wespeaker_py.scoring.embeddings import load_mean_vector, save_mean_vector


def test_the_mean_vector_companion_is_written_as_every_mean_vector(tmp_path):
    mean_vec = np.linspace(-1.0, 1.0, 8)   # float64: a writer of its own would keep it
    model = SimpleNamespace(mean_vec=mean_vec, companion_files=dict, band_fills=dict)
    items = companions(model)
    assert list(items) == [MEAN_NAME]
    items[MEAN_NAME](str(tmp_path / "model.mean_vec.npy"))
    save_mean_vector(str(tmp_path / "reference.npy"), mean_vec)
    assert ((tmp_path / "model.mean_vec.npy").read_bytes()
            == (tmp_path / "reference.npy").read_bytes())
    assert np.array_equal(load_mean_vector(str(tmp_path / "model.mean_vec.npy"), dim=8),
                          mean_vec.astype(np.float32))
    assert sorted(os.listdir(tmp_path)) == ["model.mean_vec.npy", "reference.npy"]
    assert companions(SimpleNamespace(mean_vec=None, companion_files=dict,
                                      band_fills=dict)) == {}
