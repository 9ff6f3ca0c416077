"""A SpeakerModel copied, deep-copied or pickled (as a spawn or process-pool worker receives
it) is a whole model of its own: it embeds once the original is gone, and its files follow
its own paths; a model dropped is freed at once, without the cycle collector."""
import copy
import gc
import os
import pickle
import weakref

import numpy as np
import pytest

import wespeaker_py
from api_helpers import mini_speech, wespeaker_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root, _ = wespeaker_folder(str(tmp_path_factory.mktemp("copy") / "model"))
    return root


@pytest.fixture(scope="module")
def audio():
    return mini_speech(1)[0]


@pytest.fixture(scope="module")
def expected(folder, audio):
    """The embedding of ``audio`` by a freshly loaded model."""
    return wespeaker_py.load_model(folder, device="cpu").embed(audio)


def embedding_by(model, audio):
    results = model.embed_many([audio], progress=False)
    assert not results.skipped, results.skipped
    return results.embeddings[audio]


def test_a_copy_embeds_once_the_original_is_gone(folder, audio, expected):
    model = wespeaker_py.load_model(folder, device="cpu")
    copied = copy.copy(model)
    del model
    gc.collect()
    np.testing.assert_allclose(embedding_by(copied, audio), expected, rtol=1e-5, atol=1e-6)
    assert copied.band_fill_file(8000) == os.path.join(folder, "band_fill_8000hz.npz")


def test_a_pickled_model_embeds(folder, audio, expected):
    model = wespeaker_py.load_model(folder, device="cpu")
    received = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(embedding_by(received, audio), expected, rtol=1e-5, atol=1e-6)
    assert received.window_lda_file(8000) == os.path.join(folder, "window_lda_8000hz.npz")


@pytest.mark.parametrize("make_copy", [copy.copy, copy.deepcopy])
def test_a_copys_files_follow_its_own_window_lda_path(folder, tmp_path, make_copy):
    model = wespeaker_py.load_model(folder, device="cpu")
    copied = make_copy(model)
    copied.window_lda_path = str(tmp_path / "window_lda.npz")
    assert copied.band_fill_file(8000) == str(tmp_path / "band_fill_8000hz.npz")
    assert copied.window_lda_file(8000) == str(tmp_path / "window_lda_8000hz.npz")
    assert model.band_fill_file(8000) == os.path.join(folder, "band_fill_8000hz.npz")


def test_a_dropped_model_is_freed_without_the_cycle_collector(folder, audio):
    # a reference cycle would leave the model (and an onnxruntime session of its backend) to
    # the collector, which may run in a forked worker (see conftest.py)
    model = wespeaker_py.load_model(folder, device="cpu")
    embedding_by(model, audio)
    model.info()
    model.companion_files()
    gc.collect()
    gc.disable()
    try:
        alive = weakref.ref(model)
        del model
        assert alive() is None
    finally:
        gc.enable()
