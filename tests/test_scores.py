import math
import tracemalloc

import numpy as np
import pytest

from lenet_lightning import scores as scoring
from lenet_lightning.scores import separation_scores


def blobs(n_per_class=50, n_classes=4, dim=10, spread=0.5, seed=0):
    """Well-separated Gaussian blobs: (N, dim) features and (N,) labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    features = centres[labels] + rng.normal(scale=spread, size=(len(labels), dim))
    return features.astype(np.float32), labels




def test_separation_scores_high_for_separated_blobs():
    features, labels = blobs(dim=2)
    scores = separation_scores(features, features, labels)
    assert set(scores) == {"silhouette", "knn_acc_2d", "trustworthiness"}
    assert scores["silhouette"] > 0.8
    assert scores["knn_acc_2d"] == 1.0
    assert scores["trustworthiness"] > 0.99
    assert all(type(value) is float for value in scores.values())


def test_separation_scores_near_chance_for_random_labels():
    features, _ = blobs(n_per_class=100, dim=2)
    labels = np.random.default_rng(0).integers(0, 4, size=len(features))
    scores = separation_scores(features, features, labels)
    assert abs(scores["silhouette"]) < 0.1
    assert abs(scores["knn_acc_2d"] - 0.25) < 0.1


def test_separation_scores_without_layout_has_feature_space_scores_only():
    features, labels = blobs()
    assert set(separation_scores(features, None, labels)) == {"silhouette"}


def test_separation_scores_single_class_silhouette_is_nan():
    features, _ = blobs()
    scores = separation_scores(features, features[:, :2], np.zeros(len(features), dtype=int))
    assert math.isnan(scores["silhouette"])
    assert scores["knn_acc_2d"] == 1.0


def test_separation_scores_knn_leaves_each_point_out():
    # Pairs of coinciding points with different labels: each point's only neighbour (k=1) is
    # its twin, so leave-one-out accuracy is 0; counting the point itself would give >= 0.5.
    layout = np.repeat(np.arange(6.0)[:, None] * 10.0, 2, axis=0) @ np.ones((1, 2))  # (12, 2)
    labels = np.tile([0, 1], 6)
    scores = separation_scores(layout, layout, labels, n_neighbors=1)
    assert scores["knn_acc_2d"] == 0.0


def test_separation_scores_caps_neighbours_for_tiny_sets():
    features, labels = blobs(n_per_class=2, n_classes=3)  # 6 points: trustworthiness needs k < 3
    scores = separation_scores(features, features[:, :2], labels, n_neighbors=5)
    assert 0.0 <= scores["trustworthiness"] <= 1.0
    assert 0.0 <= scores["knn_acc_2d"] <= 1.0


@pytest.mark.parametrize(
    ("layout", "labels", "kwargs", "match"),
    [
        (np.zeros((200, 3)), np.zeros(200), {}, r"`layout`.*\(200, 2\).*shape \(200, 3\)"),
        (np.full((200, 2), np.nan), np.zeros(200), {}, r"`layout`.*finite"),
        (np.zeros((200, 2)), np.zeros(199), {}, r"`labels`.*\(200,\).*\(199,\)"),
        (np.zeros((200, 2)), np.zeros(200), {"n_neighbors": 0}, r"`n_neighbors`.*got 0"),
    ],
)
def test_separation_scores_rejects_bad_inputs(layout, labels, kwargs, match):
    features, _ = blobs()
    with pytest.raises(ValueError, match=match):
        separation_scores(features, layout, labels, **kwargs)


def scored_data(n_samples, kind, seed=0):
    """(N, 10) float32 features, an (N, 2) layout that keeps part of their neighbourhoods, (N,) labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_samples) % 2 if n_samples < 12 else rng.integers(0, 4, size=n_samples)
    features = rng.normal(size=(n_samples, 10))
    if kind == "clustered":
        features += 4.0 * rng.normal(size=(4, 10))[labels]
    elif kind == "singleton class" and n_samples > 3:  # silhouette is 0 for a point alone in its class
        labels[0] = 9
    features = features.astype(np.float32)
    layout = features[:, :2] + 0.5 * rng.normal(size=(n_samples, 2))
    return features, layout, labels


@pytest.mark.parametrize("kind", ["random", "clustered", "singleton class"])
@pytest.mark.parametrize(("n_samples", "block_rows"), [(3, 1), (5, 2), (12, 5), (300, 7), (1001, 100), (1000, None)])
def test_separation_scores_equal_scikit_learn(n_samples, block_rows, kind, monkeypatch):
    from sklearn.manifold import trustworthiness
    from sklearn.metrics import silhouette_score

    if block_rows is not None:  # blocks of this many rows, the last one shorter
        monkeypatch.setattr(scoring, "SCORE_BLOCK_BYTES", 8 * n_samples * block_rows)
    features, layout, labels = scored_data(n_samples, kind)
    scores = separation_scores(features, layout, labels)
    k = min(5, (n_samples - 1) // 2)
    assert scores["silhouette"] == pytest.approx(silhouette_score(features, labels), abs=1e-6)
    # No exact distance ties in random data, so the ranks are scikit-learn's exactly. Distances are
    # made in float64 here; scikit-learn >= 1.9 keeps float32 input in float32, so it gets float64.
    expected = trustworthiness(features.astype(np.float64), layout, n_neighbors=k)
    assert scores["trustworthiness"] == pytest.approx(expected, abs=1e-12)
    assert separation_scores(features, None, labels)["silhouette"] == scores["silhouette"]


def test_separation_scores_with_duplicate_points_match_scikit_learn(monkeypatch):
    from scipy.stats import rankdata
    from sklearn.manifold import trustworthiness
    from sklearn.metrics import silhouette_score

    monkeypatch.setattr(scoring, "SCORE_BLOCK_BYTES", 8 * 200 * 16)  # 13 blocks of 16 rows for 200 points
    features, layout, labels = scored_data(200, "clustered")
    features[100:150] = features[:50]  # 50 exact duplicates: distance 0 to a twin, tied distances to others
    scores = separation_scores(features, layout, labels)
    assert scores["silhouette"] == pytest.approx(silhouette_score(features, labels), abs=1e-6)
    # Tied points share the lowest rank here; scikit-learn's argsort orders them arbitrarily, so
    # its penalty is at least as large. The reference: ranks with method="min" on the full matrix.
    distances = np.linalg.norm(features[:, None].astype(np.float64) - features[None], axis=2)  # (N, N)
    np.fill_diagonal(distances, np.inf)
    ranks = rankdata(distances, method="min", axis=1)  # (N, N), 1 = nearest
    neighbours = np.argsort(np.linalg.norm(layout[:, None] - layout[None], axis=2) + np.diag([np.inf] * 200),
                            axis=1)[:, :5]
    penalty = np.clip(np.take_along_axis(ranks, neighbours, axis=1) - 5, 0, None).sum()
    assert penalty > 0
    expected = 1.0 - penalty * 2.0 / (200 * 5 * (2.0 * 200 - 3.0 * 5 - 1.0))
    assert scores["trustworthiness"] == pytest.approx(expected, abs=1e-12)
    assert scores["trustworthiness"] >= trustworthiness(features, layout, n_neighbors=5)


def test_separation_scores_memory_stays_far_below_a_distance_matrix():
    # scikit-learn's trustworthiness (and the old code) held the full N x N float64 matrix: 72 MB here.
    features, layout, labels = scored_data(3000, "clustered")
    tracemalloc.start()
    try:
        separation_scores(features, layout, labels)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * scoring.SCORE_BLOCK_BYTES + 2 * 2**20  # one block, its comparison buffer, small arrays
