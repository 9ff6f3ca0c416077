"""Diarization clustering: WeSpeaker's spectral rule, NME-SC, UMAP+HDBSCAN, AHC, refinements."""
import importlib.util

import numpy as np
import pytest

from wespeaker_py.diarization.clustering import ClusterOptions, cluster, cluster_windows
from wespeaker_py.diarization.density import (agglomerative_labels,
                                              cosine_distances_with_zero_rows)
from wespeaker_py.diarization.options import (DEFAULT_EDGE_WEIGHTS, DEFAULT_GAP_RATIO,
                                              ClusteringOptionError)
from wespeaker_py.diarization.graph import (MIN_EDGE_WEIGHT, laplacian, neighbour_graph,
                                            smallest_eigenpairs, strongest_neighbours)
from wespeaker_py.diarization.refine import (attach_unassigned, fold_small_clusters,
                                             merge_close_clusters)
from wespeaker_py.diarization.spectral import (NME_MIN_WINDOWS, eigengap_count, nme_candidates,
                                               nme_spectral_cluster, spectral_cluster,
                                               wespeaker_keep)
from wespeaker_py.diarization.turns import frames_to_turns
from wespeaker_py.utils.vectors import unit_rows

HAVE_UMAP = importlib.util.find_spec("umap") is not None
METHODS = ["spectral", "spectral-norm", "nme-sc", "agglomerative",
           pytest.param("umap-hdbscan", marks=pytest.mark.skipif(
               not HAVE_UMAP, reason="umap-learn is not installed (the diar-umap extra)"))]


def blobs(counts, dim=32, spread=0.15, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(counts), dim))
    points = [c + spread * rng.standard_normal((n, dim)) for c, n in zip(centres, counts)]
    truth = np.repeat(np.arange(len(counts)), counts)
    order = rng.permutation(truth.size)
    return np.concatenate(points)[order], truth[order]


def same_partition(labels, truth):
    pairs = set(zip(labels.tolist(), truth.tolist()))
    return len(pairs) == len(set(labels.tolist())) == len(set(truth.tolist()))


def documented_pruned_graph(embeddings, p=0.01):
    """WeSpeaker's documented rule, written out row by row: (cos+1)/2, the lowest
    ``max(N-10, 2)`` (``int((1-p)N)`` from 1,000 rows) entries of each row -> 0, the
    rest -> 1, then ``(M + M^T) / 2`` and a zero diagonal."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    affinity = 0.5 * (1.0 + unit @ unit.T)
    count = len(affinity)
    lowest = max(count - 10, 2) if count < 1000 else int((1.0 - p) * count)
    pruned = np.empty_like(affinity)
    for row in range(count):
        order = np.argsort(affinity[row], kind="stable")
        pruned[row, order[:lowest]] = 0.0
        pruned[row, order[lowest:]] = 1.0
    pruned = 0.5 * (pruned + pruned.T)
    np.fill_diagonal(pruned, 0.0)
    return pruned


# ------------------------------------------------------------ WeSpeaker's spectral rule

def test_keep_rule_is_ten_under_1000_windows_then_one_percent():
    assert wespeaker_keep(50) == 10
    assert wespeaker_keep(999) == 10
    assert wespeaker_keep(11) == 9      # at least two entries per row are pruned
    assert wespeaker_keep(1000) == 10
    assert wespeaker_keep(5000) == 50
    assert wespeaker_keep(19000) == 190


@pytest.mark.parametrize("count", [40, 1200])
def test_binarised_graph_matches_the_documented_rule_dense_and_sparse(count):
    embeddings, _ = blobs([count // 2, count - count // 2], spread=0.6, seed=count)
    expected = documented_pruned_graph(embeddings)
    indices, _ = strongest_neighbours(unit_rows(embeddings), wespeaker_keep(count), block=97)
    dense = neighbour_graph(indices, count, dense=True)
    sparse = neighbour_graph(indices, count, dense=False)
    np.testing.assert_array_equal(dense, expected)
    np.testing.assert_array_equal(sparse.toarray(), expected)
    lap = laplacian(sparse).toarray()
    np.testing.assert_allclose(lap, np.diag(expected.sum(axis=1)) - expected)


@pytest.mark.parametrize("count", [40, 1200])
def test_cosine_weighted_graph_keeps_the_same_neighbours_weighted_by_cosine(count):
    embeddings, _ = blobs([count // 2, count - count // 2], spread=3.0, seed=count)
    unit = unit_rows(embeddings)
    indices, cosines = strongest_neighbours(unit, wespeaker_keep(count), block=97)
    kept = documented_pruned_graph(embeddings) > 0           # where the binary graph has edges
    one_way = np.zeros((count, count))
    for row in range(count):                                  # written out row by row
        for col in indices[row]:
            one_way[row, col] = max(MIN_EDGE_WEIGHT, float(unit[row] @ unit[col]))
    expected = 0.5 * (one_way + one_way.T)
    np.fill_diagonal(expected, 0.0)
    dense = neighbour_graph(indices, count, dense=True, cosines=cosines)
    sparse = neighbour_graph(indices, count, dense=False, cosines=cosines)
    np.testing.assert_allclose(dense, expected, atol=1e-12)
    np.testing.assert_allclose(sparse.toarray(), expected, atol=1e-12)
    assert not (dense[~kept]).any() and (dense[kept] > 0).all()   # the binary graph's links


@pytest.mark.parametrize("dense", [True, False])
def test_cosine_weighted_graph_keeps_a_negative_cosine_as_its_least_weight(dense):
    indices = np.array([[1, 0], [2, 1], [0, 2]])          # each row: a neighbour, then itself
    cosines = np.array([[0.6, 1.0], [-0.4, 1.0], [0.2, 1.0]])
    graph = neighbour_graph(indices, 3, dense=dense, cosines=cosines)
    graph = graph if dense else graph.toarray()
    low = 0.5 * MIN_EDGE_WEIGHT      # window 1's only neighbour, 2, stays linked
    np.testing.assert_allclose(graph, [[0.0, 0.3, 0.1], [0.3, 0.0, low], [0.1, low, 0.0]])


def small_speaker_near_a_big_one(seed, windows=5, mix=0.3, dim=32, spread=0.35):
    """Two speakers of 40 windows and one of ``windows`` whose centre leans towards the
    first (its windows are closer to it than to the second)."""
    rng = np.random.default_rng(seed)
    first, second, own = rng.standard_normal((3, dim))
    centres = [first, second, mix * first + (1 - mix) * own]
    counts = [40, 40, windows]
    points = [c + spread * rng.standard_normal((n, dim)) for c, n in zip(centres, counts)]
    return np.concatenate(points), np.repeat(np.arange(3), counts)


def test_cosine_edges_count_a_few_window_speaker_that_binary_edges_merge():
    binary_found, cosine_found = [], []
    for seed in range(10):
        embeddings, truth = small_speaker_near_a_big_one(seed)
        binary = cluster_windows(embeddings, ClusterOptions("spectral-norm",
                                                            edge_weights="binary"))
        cosine = cluster_windows(embeddings, ClusterOptions("spectral-norm"))
        binary_found.append(binary.found)
        cosine_found.append(cosine.found)
        if cosine.found == 3:        # then the few windows are a cluster of their own
            assert len(set(cosine.labels[truth == 2].tolist())) == 1
            assert same_partition(cosine.labels, truth)
    assert all(c >= b for b, c in zip(binary_found, cosine_found))
    assert binary_found.count(3) <= 1 and cosine_found.count(3) >= 5


def test_cosine_edges_keep_one_speaker_whole():
    for seed in range(5):
        embeddings, _ = blobs([60], spread=0.5, seed=seed)
        assert cluster_windows(embeddings, ClusterOptions("spectral-norm")).num_speakers == 1


def test_edge_weights_defaults_and_refusals():
    assert ClusterOptions("spectral-norm").resolved_edge_weights() == DEFAULT_EDGE_WEIGHTS
    assert DEFAULT_EDGE_WEIGHTS == "cosine"
    assert ClusterOptions("spectral").resolved_edge_weights() == "binary"   # WeSpeaker's
    assert ClusterOptions("nme-sc").resolved_edge_weights() == "binary"     # NeMo's
    assert ClusterOptions("spectral", edge_weights="cosine").resolved_edge_weights() == "cosine"
    embeddings, _ = blobs([10, 10])
    with pytest.raises(ValueError, match=r"edge_weights must be one of \['binary', "
                                         r"'cosine'\], got 'gauss'"):
        cluster_windows(embeddings, ClusterOptions("spectral-norm", edge_weights="gauss"))
    with pytest.raises(ValueError, match="edge_weights applies to .* not to agglomerative"):
        cluster_windows(embeddings, ClusterOptions("agglomerative", edge_weights="cosine"))


@pytest.mark.parametrize("method", ["spectral", "nme-sc"])
def test_cosine_edges_apply_to_the_other_spectral_methods(method):
    embeddings, truth = blobs([30, 25, 20], spread=0.6, seed=3)
    weighted = cluster_windows(embeddings, ClusterOptions(method, edge_weights="cosine"))
    assert weighted.found == 3 and same_partition(weighted.labels, truth)


@pytest.mark.parametrize("dense", [True, False])
def test_normalised_laplacian_is_symmetric_normalised(dense):
    embeddings, _ = blobs([30, 25], spread=0.6, seed=4)
    indices, _ = strongest_neighbours(unit_rows(embeddings), 10)
    graph = neighbour_graph(indices, 55, dense=dense)
    graph = graph if dense else graph.tolil()
    graph[0, :] = 0.0                                    # a window without edges
    graph[:, 0] = 0.0
    graph = graph if dense else graph.tocsr()
    lap = laplacian(graph, normalised=True)
    lap = lap if dense else lap.toarray()
    adjacency = graph if dense else graph.toarray()
    degrees = adjacency.sum(axis=1)
    scale = np.where(degrees > 0, 1.0 / np.sqrt(np.where(degrees > 0, degrees, 1.0)), 0.0)
    expected = np.diag(degrees > 0).astype(float) - scale[:, None] * adjacency * scale[None, :]
    np.testing.assert_allclose(lap, expected, atol=1e-12)
    assert not lap[0].any()
    values = np.linalg.eigvalsh(lap)
    assert values.min() > -1e-9 and values.max() < 2.0 + 1e-9
    # D^1/2 1 spans a null space
    np.testing.assert_allclose(lap @ np.sqrt(degrees), 0.0, atol=1e-12)


def test_eigengap_looks_at_the_first_max_plus_one_eigenvalues_only():
    eigenvalues = np.array([0.0, 0.0, 0.0, 5.0, 5.1, 9.0, 20.0])
    assert eigengap_count(eigenvalues, 10) == 6   # gap 11 after the sixth
    assert eigengap_count(eigenvalues, 4) == 3    # first five: gap 5 after the third
    assert eigengap_count(eigenvalues, 1) == 1
    assert eigengap_count(np.array([0.0]), 5) == 1


def test_gap_ratio_takes_the_last_gap_nearly_as_large_as_the_largest():
    eigenvalues = np.array([0.0, 0.01, 0.5, 0.52, 0.9, 0.95])   # gaps .01 .49 .02 .38 .05
    assert eigengap_count(eigenvalues, 10) == 2
    assert eigengap_count(eigenvalues, 10, gap_ratio=1.0) == 2
    assert eigengap_count(eigenvalues, 10, gap_ratio=0.8) == 2    # .38 < .8 * .49
    assert eigengap_count(eigenvalues, 10, gap_ratio=0.7) == 4    # .38 >= .7 * .49
    assert eigengap_count(eigenvalues, 2, gap_ratio=0.1) == 2     # only the first max+1


def test_spectral_norm_default_ratio_counts_a_speaker_with_few_windows():
    embeddings, truth = blobs([40, 40, 5], seed=0)
    # binary edges: the ratio's own effect (cosine edges find these five windows either way)
    largest_gap = cluster_windows(embeddings, ClusterOptions("spectral-norm", gap_ratio=1.0,
                                                             edge_weights="binary"))
    assert largest_gap.found == 2                   # the five windows join a big speaker
    default = cluster_windows(embeddings, ClusterOptions("spectral-norm", edge_weights="binary"))
    assert ClusterOptions("spectral-norm").resolved_gap_ratio() == DEFAULT_GAP_RATIO < 1.0
    assert default.found == default.num_speakers == 3
    small = set(default.labels[truth == 2].tolist())
    majorities = {int(np.bincount(default.labels[truth == big]).argmax()) for big in (0, 1)}
    assert len(small) == 1 and len(majorities) == 2 and not small & majorities


def test_gap_ratio_defaults_and_refusals():
    assert ClusterOptions("spectral").resolved_gap_ratio() == 1.0      # WeSpeaker's rule
    assert ClusterOptions("nme-sc").resolved_gap_ratio() == 1.0
    assert ClusterOptions("spectral", gap_ratio=0.5).resolved_gap_ratio() == 0.5
    embeddings, _ = blobs([10, 10])
    with pytest.raises(ValueError, match="gap_ratio must be above 0 and at most 1"):
        cluster_windows(embeddings, ClusterOptions("spectral-norm", gap_ratio=1.5))
    with pytest.raises(ValueError, match="gap_ratio applies to .* not to agglomerative"):
        cluster_windows(embeddings, ClusterOptions("agglomerative", gap_ratio=0.8))


@pytest.mark.parametrize("counts", [[40, 25, 30], [60, 12], [20, 20, 20, 20]])
def test_spectral_finds_constructed_speakers(counts):
    embeddings, truth = blobs(counts)
    outcome = spectral_cluster(embeddings, max_speakers=20)
    assert outcome.estimated == len(counts)
    assert outcome.neighbours == 10
    assert same_partition(outcome.labels, truth)


def test_spectral_count_rules():
    embeddings, truth = blobs([30, 30, 30])
    assert len(set(spectral_cluster(embeddings, num_speakers=2).labels)) == 2
    assert len(set(spectral_cluster(embeddings, min_speakers=5).labels)) == 5
    # three groups, at most two allowed: two clusters, and the three found are reported
    capped = spectral_cluster(embeddings, max_speakers=2)
    assert capped.estimated == 3 and len(set(capped.labels)) == 2
    assert spectral_cluster(embeddings[:2]).labels.tolist() == [0, 0]


def test_sparse_path_gives_the_same_clusters_as_dense(monkeypatch):
    embeddings, truth = blobs([150, 100, 120], spread=0.3, seed=5)
    dense = spectral_cluster(embeddings)
    monkeypatch.setattr("wespeaker_py.diarization.spectral.DENSE_LIMIT", 100)
    sparse = spectral_cluster(embeddings)
    assert sparse.estimated == dense.estimated == 3
    assert same_partition(sparse.labels, truth) and same_partition(dense.labels, truth)


def test_smallest_eigenpairs_sparse_equal_dense():
    embeddings, _ = blobs([80, 70], spread=0.8, seed=2)
    indices, _ = strongest_neighbours(unit_rows(embeddings), 10)
    sparse_lap = laplacian(neighbour_graph(indices, 150, dense=False))
    dense_values, _ = smallest_eigenpairs(sparse_lap.toarray(), 5)
    sparse_values, vectors = smallest_eigenpairs(sparse_lap, 5)
    np.testing.assert_allclose(sparse_values, dense_values, atol=1e-6)
    np.testing.assert_allclose(sparse_lap @ vectors, vectors * sparse_values, atol=1e-5)


# ------------------------------------------------------------ NME-SC and the others

def test_nme_candidates_and_clusters():
    candidates = nme_candidates(200)
    assert candidates[0] == 2 and candidates[-1] == 50 and len(candidates) == 30
    embeddings, truth = blobs([50, 40, 30], spread=0.3, seed=4)
    outcome = nme_spectral_cluster(embeddings)
    assert outcome.estimated == 3 and same_partition(outcome.labels, truth)
    assert outcome.neighbours in nme_candidates(120)
    capped = nme_candidates(19200, volume=10, max_neighbours=750)
    assert capped[-1] == 750 and len(capped) == 10


def test_nme_above_the_dense_limit_keeps_its_candidates_bounded(monkeypatch):
    """Above the dense limit the candidates stop at SPARSE_MAX_NEIGHBOURS, not N/4."""
    embeddings, truth = blobs([150, 100, 120], spread=0.3, seed=5)
    monkeypatch.setattr("wespeaker_py.diarization.spectral.DENSE_LIMIT", 100)
    monkeypatch.setattr("wespeaker_py.diarization.spectral.SPARSE_MAX_NEIGHBOURS", 40)
    widest = []
    original = nme_spectral_cluster.__globals__["strongest_neighbours"]

    def recording(unit, keep, *args, **kwargs):
        widest.append(keep)
        return original(unit, keep, *args, **kwargs)

    monkeypatch.setattr("wespeaker_py.diarization.spectral.strongest_neighbours", recording)
    outcome = nme_spectral_cluster(embeddings)
    assert widest == [40] and outcome.neighbours <= 40
    assert outcome.estimated == 3 and same_partition(outcome.labels, truth)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_recovers_separated_speakers(method):
    embeddings, truth = blobs([30, 20, 25], seed=3)
    result = cluster_windows(embeddings, ClusterOptions(method))
    assert same_partition(result.labels, truth)
    assert result.found == 3 and not result.capped
    assert len(set(cluster(embeddings, method, num_speakers=2))) == 2
    assert len(set(cluster(embeddings, method, num_speakers=4))) == 4


@pytest.mark.parametrize("method", METHODS)
def test_more_speakers_than_max_is_capped_and_reported(method):
    embeddings, _ = blobs([15] * 6, seed=9)
    result = cluster_windows(embeddings, ClusterOptions(method), max_speakers=3)
    assert result.num_speakers == 3 and result.capped and result.found >= 4


@pytest.mark.parametrize("method", ["spectral", "spectral-norm", "nme-sc"])
def test_far_more_speakers_than_max_is_capped_not_counted_as_one(method):
    # 123 speakers of 13 windows (a 32-minute reading), 16 neighbours kept each: one
    # connected graph whose first 22 eigenvalues are near-equal, so the largest gap falls at 1
    embeddings, _ = blobs([13] * 123, spread=0.3, seed=4)
    result = cluster_windows(embeddings, ClusterOptions(method), max_speakers=10)
    assert result.capped and result.num_speakers == 10 and result.found > 10
    embeddings, truth = blobs([200, 150, 250], seed=4)
    result = cluster_windows(embeddings, ClusterOptions(method), max_speakers=10)
    assert result.found == 3 and not result.capped and same_partition(result.labels, truth)


def test_degenerate_inputs_and_bad_options():
    embeddings, _ = blobs([10, 10, 10])
    assert cluster(np.ones((1, 8))).tolist() == [0]
    assert cluster(np.zeros((0, 8))).tolist() == []
    assert len(set(cluster(embeddings[:3], num_speakers=5))) == 3
    assert len(set(cluster(embeddings, min_speakers=4, max_speakers=5))) >= 4
    with pytest.raises(ValueError, match="min_speakers"):
        cluster(embeddings, min_speakers=3, max_speakers=2)
    with pytest.raises(ValueError, match="unknown clustering"):
        cluster(embeddings, "kmeans")


# ------------------------------------------------------------ refinements

def test_merge_and_fold_as_3d_speaker():
    embeddings, truth = blobs([30, 30], seed=1)
    split = truth.copy()
    split[np.flatnonzero(truth == 0)[:15]] = 2            # speaker 0 cut in two
    merged = merge_close_clusters(embeddings, split, threshold=0.8)
    assert same_partition(merged, truth)
    assert len(set(merge_close_clusters(embeddings, split, threshold=0.999))) == 3
    assert len(set(merge_close_clusters(embeddings, split, 0.999, max_clusters=1))) == 1
    tiny = truth.copy()
    tiny[np.flatnonzero(truth == 1)[:3]] = 7              # three windows mislabelled apart
    assert same_partition(fold_small_clusters(embeddings, tiny, min_size=4), truth)
    assert len(set(fold_small_clusters(embeddings, tiny, min_size=2))) == 3


def test_noise_attaches_to_the_nearest_cluster_but_clusters_stay_apart():
    embeddings, truth = blobs([20, 20], spread=0.3, seed=6)
    noisy = truth.copy()
    noisy[[0, 5, 9]] = -1
    attached = attach_unassigned(embeddings, noisy)
    assert same_partition(attached, truth)
    # two HDBSCAN clusters are never joined, however close
    close = blobs([21], seed=6)[0]
    labels = np.repeat([0, 1], 10)
    assert len(set(attach_unassigned(close[:20], labels).tolist())) == 2
    # nor after one of them took in a noise window (WeSpeaker's PAHC: a merged
    # cluster's cost to another HDBSCAN cluster stays -inf)
    with_noise = attach_unassigned(close, np.append(labels, -1))
    assert len(set(with_noise.tolist())) == 2
    assert same_partition(with_noise[:20], labels)


# ------------------------------------------------------------ finer turns

def test_frames_move_a_change_toward_the_evidence():
    c0, c1 = np.eye(4)[0], np.eye(4)[1]
    windows = [(0.0, 1.5), (0.75, 2.25), (1.5, 3.0), (2.25, 3.75)]
    labels = [0, 1, 1, 1]

    def change(straddler):
        turns = frames_to_turns(windows, labels, np.stack([c0, straddler, c1, c1]), 0.1)
        assert [t.speaker for t in turns] == ["spk0", "spk1"]
        assert turns[0].start == 0.0 and turns[-1].end == pytest.approx(3.75)  # exact window end
        assert turns[0].end == turns[1].start
        return turns[0].end

    clean = change(c1)
    mixed = change(0.8 * c0 + 0.6 * c1)
    assert 0.7 <= clean < mixed <= 1.6
    assert frames_to_turns([], [], np.zeros((0, 4))) == []
    gap = frames_to_turns([(0.0, 1.0), (2.0, 3.03)], [0, 0], np.stack([c0, c0]), 0.1)
    assert [(t.start, t.end) for t in gap] == [(0.0, 1.0), (2.0, 3.03)]


# ------------------------------------------------------------ counts past max_speakers, few windows

def separate_speakers(count, windows, seed, dim=64, spread=0.2):
    """``count`` speakers of ``windows`` windows each, far enough apart that every window's
    10 nearest (WeSpeaker's graph) are its own speaker's: no edge between speakers."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((count, dim))
    points = [c + spread * rng.standard_normal((windows, dim)) for c in centres]
    return np.concatenate(points), np.repeat(np.arange(count), windows)


@pytest.mark.parametrize("method", ["spectral", "spectral-norm", "nme-sc"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_more_separate_speakers_than_max_are_capped_and_reported(method, seed):
    # 9 speakers, max 3: all of the first 4 (or 8) eigenvalues are 0, and their gaps
    # once picked 1-3 speakers from rounding noise, not reported as capped
    embeddings, truth = separate_speakers(9, 12, seed)
    result = cluster_windows(embeddings, ClusterOptions(method), max_speakers=3)
    assert result.num_speakers == 3 and result.capped
    assert result.found == 9 and result.at_least
    # the speakers are joined whole, none split between clusters
    assert all(len(set(result.labels[truth == speaker].tolist())) == 1 for speaker in range(9))


def test_more_separate_speakers_than_the_default_max_are_capped():
    embeddings, _ = separate_speakers(25, 10, seed=0)
    result = cluster_windows(embeddings, ClusterOptions())
    assert (result.num_speakers, result.found, result.capped) == (10, 25, True)


def test_spectral_caps_a_graph_of_more_groups_than_max_by_joining_the_closest():
    embeddings, truth = separate_speakers(5, 12, seed=3)
    # 4 moved near 3: still apart (windows of one speaker lie about 2.3 apart, these 5)
    shift = np.random.default_rng(5).standard_normal(64)
    embeddings[truth == 4] = embeddings[truth == 3] + 5.0 * shift / np.linalg.norm(shift)
    outcome = spectral_cluster(embeddings, max_speakers=4)
    assert outcome.estimated == 5 and outcome.at_least
    labels = outcome.labels
    assert len(set(labels.tolist())) == 4 and labels[truth == 3][0] == labels[truth == 4][0]


@pytest.mark.parametrize("windows", [6, 10, 14, 18, 22])
def test_nme_sc_does_not_split_a_short_recording_into_nearest_neighbour_pairs(windows):
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((2, 32))
    embeddings = np.concatenate([c + 0.1 * rng.standard_normal((windows // 2, 32))
                                 for c in centres])
    result = cluster_windows(embeddings, ClusterOptions("nme-sc"))
    assert 1 <= result.num_speakers <= 2 and not result.capped   # was 4-10 speakers
    one = centres[0] + 0.1 * rng.standard_normal((windows, 32))
    assert cluster_windows(one, ClusterOptions("nme-sc")).num_speakers == 1


def test_nme_sc_below_its_window_minimum_uses_wespeakers_pruning():
    embeddings, _ = blobs([6, 7, 5], spread=0.5, seed=8)
    assert len(embeddings) < NME_MIN_WINDOWS
    nme = nme_spectral_cluster(embeddings, max_speakers=10)
    fixed = spectral_cluster(embeddings, max_speakers=10)
    assert nme.neighbours == fixed.neighbours == wespeaker_keep(len(embeddings))
    assert nme.labels.tolist() == fixed.labels.tolist() and nme.estimated == fixed.estimated


def test_nme_sc_passes_over_graphs_made_of_groups_no_larger_than_their_pruning():
    # every window's nearest is its twin: the p = 2 graph is 15 closed pairs
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((2, 32))
    base = np.concatenate([c + 0.3 * rng.standard_normal((15, 32)) for c in centres])
    embeddings = np.concatenate([base, base + 1e-3 * rng.standard_normal(base.shape)])
    outcome = nme_spectral_cluster(embeddings, max_speakers=20)
    assert outcome.neighbours > 2 and outcome.estimated == 2


def two_and_one(order):
    a, b = np.eye(4)[0], np.eye(4)[1]
    rows = {"a": a, "a'": a + 0.01 * b, "b": b}
    return np.stack([rows[name] for name in order])


@pytest.mark.parametrize("method", ["spectral", "spectral-norm", "nme-sc"])
def test_two_or_three_windows_follow_a_given_count_by_their_embeddings(method):
    options = ClusterOptions(method)
    pair = two_and_one(["a", "b"])
    assert cluster_windows(pair, options, num_speakers=2).labels.tolist() == [0, 1]
    assert cluster_windows(pair, options, min_speakers=2, max_speakers=3).num_speakers == 2
    assert cluster_windows(pair, options).labels.tolist() == [0, 0]     # estimated: one
    for order, expected in ((["a", "a'", "b"], [0, 0, 1]), (["a", "b", "a'"], [0, 1, 0]),
                            (["b", "a", "a'"], [0, 1, 1])):
        assert cluster_windows(two_and_one(order), options,
                               num_speakers=2).labels.tolist() == expected
        assert cluster_windows(two_and_one(order), options, min_speakers=2,
                               max_speakers=3).labels.tolist() == expected
    assert cluster_windows(two_and_one(["a", "a'", "b"]), options,
                           num_speakers=3).labels.tolist() == [0, 1, 2]


# ------------------------------------------------------------ silent windows, eigenpairs

def test_agglomerative_takes_zero_rows_and_keeps_the_others_clusters():
    embeddings, truth = blobs([12, 10], spread=0.4, seed=2)
    silent = np.concatenate([embeddings, np.zeros((3, embeddings.shape[1]))])
    plain = agglomerative_labels(embeddings, 0.6)
    with_silence = agglomerative_labels(silent, 0.6)              # sklearn's cosine refused
    assert with_silence[:len(embeddings)].tolist() == plain.tolist()
    assert len(set(with_silence[len(embeddings):].tolist())) == 1
    assert with_silence[-1] not in set(plain.tolist())
    assert len(set(agglomerative_labels(silent, num_clusters=2).tolist())) == 2
    result = cluster_windows(silent, ClusterOptions("agglomerative"))
    assert same_partition(result.labels[:len(embeddings)], truth)


def test_precomputed_distances_give_sklearns_cosine_clusters_on_nonzero_rows():
    from sklearn.cluster import AgglomerativeClustering
    embeddings, _ = blobs([15, 12, 9], spread=0.9, seed=5)
    unit = unit_rows(embeddings)
    for cut in (dict(n_clusters=None, distance_threshold=0.6), dict(n_clusters=3)):
        cosine = AgglomerativeClustering(metric="cosine", linkage="average", **cut)
        precomputed = AgglomerativeClustering(metric="precomputed", linkage="average", **cut)
        assert (precomputed.fit_predict(cosine_distances_with_zero_rows(unit)).tolist()
                == cosine.fit_predict(unit).tolist())


def test_sparse_eigenpairs_above_the_dense_limit_never_go_dense(monkeypatch):
    embeddings, _ = blobs([80, 70], spread=0.8, seed=2)
    indices, _ = strongest_neighbours(unit_rows(embeddings), 10)
    lap = laplacian(neighbour_graph(indices, 150, dense=False))
    values, _ = smallest_eigenpairs(lap, 40)        # a fifth or more, under the limit: dense
    np.testing.assert_allclose(values, np.linalg.eigvalsh(lap.toarray())[:40], atol=1e-9)
    monkeypatch.setattr("wespeaker_py.diarization.graph.DENSE_LIMIT", 100)
    with pytest.raises(ClusteringOptionError, match="40 eigenvectors of 150 windows"):
        smallest_eigenpairs(lap, 40)
    assert len(smallest_eigenpairs(lap, 5)[0]) == 5


def test_eigenpairs_of_a_spectrum_with_a_run_of_equal_values_at_the_cut():
    # each of 24 windows linked to its nearest: LAPACK's dsyevr failed ("Internal
    # Error") asked for the 11 smallest, which end inside a run of four equal values
    nearest = [1, 0, 3, 2, 3, 7, 7, 5, 9, 11, 11, 9, 14, 20, 12, 12, 17, 19, 19, 17, 17,
               23, 23, 21]
    indices = np.stack([nearest, np.arange(24)], axis=1)
    lap = laplacian(neighbour_graph(indices, 24, dense=True))
    values, vectors = smallest_eigenpairs(lap, 11)
    np.testing.assert_allclose(values, np.linalg.eigvalsh(lap)[:11], atol=1e-9)
    np.testing.assert_allclose(lap @ vectors, vectors * values, atol=1e-9)


# ------------------------------------------------------------ noise attachment at scale

def greedy_attachment(embeddings, labels, merge_cutoff=0.3, min_size=3, absorb_cutoff=0.0):
    """The module doc's rule written out plainly: every pair's average cosine recomputed
    from the members at each step (slow; a reference for small inputs)."""
    unit = unit_rows(embeddings)
    found = sorted({int(x) for x in labels if x >= 0})
    clusters = [list(np.flatnonzero(labels == name)) for name in found]
    clusters += [[index] for index in np.flatnonzero(labels < 0)]
    fixed = [index < len(found) for index in range(len(clusters))]

    def average(a, b):
        return float(np.mean(unit[clusters[a]] @ unit[clusters[b]].T))
    while True:
        pairs = [(average(a, b), a, b) for a in range(len(clusters))
                 for b in range(a + 1, len(clusters)) if not (fixed[a] and fixed[b])]
        if not pairs or max(pairs)[0] < merge_cutoff:
            break
        _, a, b = max(pairs, key=lambda pair: pair[0])
        clusters[a] += clusters.pop(b)
        fixed[a] = fixed[a] or fixed.pop(b)
    large = [index for index, members in enumerate(clusters) if len(members) >= min_size]
    result = np.empty(len(labels), dtype=np.int64)
    for index, members in enumerate(clusters):
        target = index
        if len(members) < min_size and large:
            scores = [average(index, other) for other in large]
            if max(scores) >= absorb_cutoff:
                target = large[int(np.argmax(scores))]
        result[members] = target
    return result


def test_noise_attachment_joins_what_the_greedy_rule_joins():
    for seed in range(40):
        rng = np.random.default_rng(seed)
        embeddings, truth = blobs([int(n) for n in rng.integers(4, 15, 3)],
                                  spread=float(rng.uniform(0.3, 1.5)), seed=seed)
        labels = truth.copy()
        labels[rng.random(len(labels)) < rng.uniform(0.2, 0.9)] = -1
        cutoff, absorb = float(rng.uniform(0.0, 0.5)), float(rng.uniform(-0.2, 0.2))
        expected = greedy_attachment(embeddings, labels, cutoff, 3, absorb)
        found = attach_unassigned(embeddings, labels, cutoff, 3, absorb)
        assert same_partition(found, expected), seed


def test_noise_attachment_holds_no_square_matrix_of_the_noise_windows():
    import tracemalloc
    rng = np.random.default_rng(0)
    count = 1500
    centres = rng.standard_normal((4, 32))
    embeddings = centres[rng.integers(0, 4, count)] + rng.standard_normal((count, 32))
    labels = np.full(count, -1)
    labels[:40] = 0                       # HDBSCAN found one cluster, the rest is noise
    tracemalloc.start()
    try:
        attached = attach_unassigned(embeddings, labels)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < count * count * 8 / 4   # a quarter of one [noise, noise] float64 matrix
    assert len(set(attached.tolist())) < 40
