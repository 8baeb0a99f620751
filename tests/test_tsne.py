import math
import tracemalloc
import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from lenet_lightning import tsne
from lenet_lightning.tsne import effective_perplexity, embed_2d, separation_scores


def blobs(n_per_class=50, n_classes=4, dim=10, spread=0.5, seed=0):
    """Well-separated Gaussian blobs: (N, dim) features and (N,) labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    features = centres[labels] + rng.normal(scale=spread, size=(len(labels), dim))
    return features.astype(np.float32), labels


def openmp_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"]


def test_effective_perplexity_keeps_a_value_that_fits():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert effective_perplexity(2000, 30.0) == 30.0
        assert effective_perplexity(31, 30) == 30.0


@pytest.mark.parametrize("n_samples", [2, 5, 30])
def test_effective_perplexity_too_large_warns_and_fits(n_samples):
    with pytest.warns(UserWarning, match=rf"perplexity 30\.0 .* {n_samples} points"):
        reduced = effective_perplexity(n_samples, 30.0)
    assert 0 < reduced < n_samples


@pytest.mark.parametrize(
    ("n_samples", "perplexity", "match"),
    [(1, 30.0, "`n_samples`.*got 1"), (0, 5.0, "`n_samples`.*got 0"), (10, 0.0, "`perplexity`.*got 0.0"),
     (10, -3.0, "`perplexity`.*got -3.0"), (10, math.nan, "`perplexity`.*got nan")],
)
def test_effective_perplexity_rejects_bad_inputs(n_samples, perplexity, match):
    with pytest.raises(ValueError, match=match):
        effective_perplexity(n_samples, perplexity)


def test_embed_2d_full_run_separates_blobs():
    features, labels = blobs()
    layout = embed_2d(features)
    assert layout.shape == (200, 2)
    assert layout.dtype == np.float32
    assert np.isfinite(layout).all()
    assert separation_scores(features, layout, labels)["knn_acc_2d"] >= 0.98


def test_embed_2d_warm_start_keeps_clusters_separated():
    features, labels = blobs()
    first = embed_2d(features)
    moved = features + np.random.default_rng(1).normal(scale=0.3, size=features.shape).astype(np.float32)
    warm = embed_2d(moved, init=first)
    assert warm.shape == first.shape
    assert warm.dtype == np.float32
    scores = separation_scores(moved, warm, labels)
    assert scores["knn_acc_2d"] >= 0.98
    assert scores["trustworthiness"] >= 0.9


def test_embed_2d_warm_start_follows_the_previous_layout():
    # The same features warm-started from a layout and from its 90-degree rotation give maps
    # that are rotated by 90 degrees too: the warm start keeps the orientation it is given.
    features, _ = blobs()
    first = embed_2d(features)
    rotation = np.array([[0.0, -1.0], [1.0, 0.0]], dtype=np.float32)
    plain = embed_2d(features, init=first)
    turned = embed_2d(features, init=first @ rotation.T)
    plain, turned = plain - plain.mean(0), turned - turned.mean(0)
    agreement = np.sum((plain @ rotation.T) * turned) / (np.linalg.norm(plain) * np.linalg.norm(turned))
    assert agreement > 0.9


def test_embed_2d_tiny_input_warns_and_works():
    features = np.random.default_rng(0).normal(size=(5, 10))
    with pytest.warns(UserWarning, match="perplexity 30.0"):
        first = embed_2d(features)
    with pytest.warns(UserWarning, match="perplexity 30.0"):
        warm = embed_2d(features, init=first)
    assert first.shape == warm.shape == (5, 2)
    assert np.isfinite(warm).all()


def test_embed_2d_non_finite_rows_warn_and_are_zeroed():
    features, _ = blobs(n_per_class=20)
    features[[3, 7], 2] = np.nan
    features[11, 0] = np.inf
    with pytest.warns(UserWarning, match="3 of 80 feature rows hold NaN or inf"):
        layout = embed_2d(features)
    assert layout.shape == (80, 2)
    assert np.isfinite(layout).all()


def test_embed_2d_constant_features_do_not_crash():
    layout = embed_2d(np.zeros((40, 10)))
    assert layout.shape == (40, 2)
    assert np.isfinite(layout).all()


def test_embed_2d_limits_threads_for_the_call_only():
    before = openmp_threads()
    features, _ = blobs(n_per_class=20)
    embed_2d(features, n_threads=1)
    assert openmp_threads() == before


@pytest.mark.parametrize(
    ("features", "kwargs", "match"),
    [
        (np.zeros(10), {}, r"`features`.*shape \(10,\)"),
        (np.zeros((1, 10)), {}, r"`features`.*shape \(1, 10\)"),
        (np.zeros((20, 0)), {}, r"`features`.*shape \(20, 0\)"),
        (np.ones((20, 3)), {"init": np.zeros((19, 2))}, r"`init`.*\(20, 2\).*shape \(19, 2\)"),
        (np.ones((20, 3)), {"init": np.full((20, 2), np.nan)}, r"`init`.*non-finite"),
        (np.ones((20, 3)), {"max_iter": 1}, r"`max_iter`.*at least 2.*got 1"),
        (np.ones((20, 3)), {"init": np.random.default_rng(0).normal(size=(20, 2)), "max_iter": 0},
         r"`max_iter`.*at least 1.*got 0"),
        (np.ones((20, 3)), {"n_threads": 0}, r"`n_threads`.*got 0"),
        (np.ones((20, 3)), {"perplexity": -1.0}, r"`perplexity`.*got -1.0"),
    ],
)
def test_embed_2d_rejects_bad_inputs(features, kwargs, match):
    with pytest.raises(ValueError, match=match):
        embed_2d(features, **kwargs)


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
        monkeypatch.setattr(tsne, "SCORE_BLOCK_BYTES", 8 * n_samples * block_rows)
    features, layout, labels = scored_data(n_samples, kind)
    scores = separation_scores(features, layout, labels)
    k = min(5, (n_samples - 1) // 2)
    assert scores["silhouette"] == pytest.approx(silhouette_score(features, labels), abs=1e-6)
    # No exact distance ties in random data, so the ranks are scikit-learn's exactly.
    assert scores["trustworthiness"] == pytest.approx(trustworthiness(features, layout, n_neighbors=k), abs=1e-12)
    assert separation_scores(features, None, labels)["silhouette"] == scores["silhouette"]


def test_separation_scores_with_duplicate_points_match_scikit_learn(monkeypatch):
    from scipy.stats import rankdata
    from sklearn.manifold import trustworthiness
    from sklearn.metrics import silhouette_score

    monkeypatch.setattr(tsne, "SCORE_BLOCK_BYTES", 8 * 200 * 16)  # 13 blocks of 16 rows for 200 points
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
    assert peak < 1.5 * tsne.SCORE_BLOCK_BYTES + 2 * 2**20  # one block, its comparison buffer, small arrays
