"""The gallery's arithmetic on hand-made unit vectors, against cosines computed here."""
import numpy as np
import pytest

from wespeaker_py.api.gallery import Gallery

E1, E2, E3 = np.eye(3)


def _cosine_to_mean(probe, recordings):
    mean = np.mean(recordings, axis=0)
    return float(probe @ mean / np.linalg.norm(mean))


def test_rank_scores_are_cosines_to_each_speakers_normalised_mean():
    gallery = Gallery(model="m/emb3")
    gallery.add("alice", np.stack([E1, E2]))
    bob = np.array([0.6, 0.0, 0.8])
    gallery.add("bob", bob[None])
    ranked = gallery.rank(E1, top_k=2)
    assert [name for name, _ in ranked] == ["alice", "bob"]
    assert [score for _, score in ranked] == pytest.approx(
        [_cosine_to_mean(E1, [E1, E2]), _cosine_to_mean(E1, [bob])])
    np.testing.assert_allclose(np.linalg.norm(gallery.centroids(), axis=1), 1.0)


def test_replace_forgets_the_earlier_recordings_and_append_keeps_them():
    gallery = Gallery(model="m/emb3")
    gallery.add("alice", np.stack([E1, E2]))
    gallery.add("alice", E3[None], replace=True)
    [(_, score)] = gallery.rank(E3, top_k=1)
    assert score == pytest.approx(1.0) and gallery.counts.tolist() == [1]
    gallery.add("alice", E1[None], append=True)
    [(_, score)] = gallery.rank(E3, top_k=1)
    assert score == pytest.approx(_cosine_to_mean(E3, [E3, E1]))
