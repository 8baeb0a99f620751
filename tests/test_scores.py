import math
import tracemalloc

import numpy as np
import pytest
from helpers import blobs

from lenet_lightning import scores as scoring
from lenet_lightning.scores import separation_scores


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


# How the representation changes, and the geometry of its classes.

from lenet_lightning.scores import (  # noqa: E402
    change_scores,
    cka_matrix,
    class_geometry,
    knn_overlap,
    linear_cka,
    settled_step,
)


def hsic_cka(x, y):
    """Linear CKA the direct way (Kornblith et al. 2019, eq. 3 with HSIC of Gretton et al. 2005):
    kernels K = X X^T and L = Y Y^T, centring matrix H, HSIC(K, L) = tr(K H L H) / (n - 1)^2."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    gram_x, gram_y = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return hsic(gram_x, gram_y) / np.sqrt(hsic(gram_x, gram_x) * hsic(gram_y, gram_y))


# (N, D1, D2) of both forms of the Frobenius products: feature space (D x D) and Gram (N x N).
CKA_SHAPES = {"feature space": (60, 7, 4), "gram": (12, 40, 30)}


@pytest.mark.parametrize("block_bytes", [None, 200])  # 200 bytes: blocks of a few columns or a row
@pytest.mark.parametrize("form", sorted(CKA_SHAPES))
def test_linear_cka_equals_the_hsic_formula(form, block_bytes, monkeypatch):
    if block_bytes is not None:
        monkeypatch.setattr(scoring, "SCORE_BLOCK_BYTES", block_bytes)
    n, d1, d2 = CKA_SHAPES[form]
    for a, b in [(d1, d2), (d1, d1), (d2, d2)]:  # the cross product and both norms take this form
        assert scoring._uses_gram(n, a, b) == (form == "gram")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, d1)) + 3.0
    y = x[:, :d2] @ rng.normal(size=(d2, d2)) + rng.normal(size=(n, d2))  # related, not identical
    expected = hsic_cka(x, y)
    assert 0.1 < expected < 0.99
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-12)
    assert linear_cka(y, x) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("form", sorted(CKA_SHAPES))
def test_linear_cka_is_one_for_identical_features_and_invariant_to_rotation_scale_and_shift(form):
    n, d1, _ = CKA_SHAPES[form]
    rng = np.random.default_rng(2)
    x = rng.normal(size=(n, d1)).astype(np.float32)
    rotation = np.linalg.qr(rng.normal(size=(d1, d1)))[0]  # (D, D) orthogonal
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 5.0 * x @ rotation - 2.0) == pytest.approx(1.0, abs=1e-6)
    # Not invariant to a non-isotropic scaling: the test above could fail.
    assert linear_cka(x, x * np.geomspace(1.0, 100.0, d1)) < 0.9


def test_linear_cka_of_constant_features_is_nan():
    x = np.random.default_rng(0).normal(size=(20, 3))
    assert math.isnan(linear_cka(x, np.ones((20, 3))))
    assert math.isnan(linear_cka(np.zeros((20, 5)), x))


def test_linear_cka_treats_non_finite_values_as_zero_with_a_warning():
    x = np.random.default_rng(0).normal(size=(20, 3))
    broken = x.copy()
    broken[4, 1] = np.nan
    fixed = x.copy()
    fixed[4, 1] = 0.0
    with pytest.warns(UserWarning, match="1 of 20 rows of `y` hold NaN"):
        assert linear_cka(x, broken) == pytest.approx(hsic_cka(x, fixed), rel=1e-12)


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (np.zeros((10, 2)), np.zeros((9, 2)), r"`y`.*same 10 points.*got 9 rows"),
        (np.zeros(10), np.zeros((10, 2)), r"`x`.*2-D.*shape \(10,\)"),
        (np.zeros((1, 2)), np.zeros((1, 2)), r"`x`.*N >= 2.*\(1, 2\)"),
    ],
)
def test_linear_cka_rejects_bad_inputs(x, y, match):
    with pytest.raises(ValueError, match=match):
        linear_cka(x, y)


def knn_overlap_reference(x, y, k):
    """The overlap from full distance matrices and a full sort (no ties in random data)."""
    def neighbours(z):
        distances = np.linalg.norm(z[:, None] - z[None], axis=2)  # (N, N)
        np.fill_diagonal(distances, np.inf)
        return np.argsort(distances, axis=1)[:, :k]

    return np.mean([len(set(a) & set(b)) / k for a, b in zip(neighbours(x), neighbours(y), strict=True)])


@pytest.mark.parametrize("block_bytes", [None, 8 * 300 * 7])  # whole, or blocks of 7 rows (the last shorter)
@pytest.mark.parametrize("dim", [5, 50])  # k-d tree, blocked brute force
def test_knn_overlap_equals_a_full_distance_matrix_reference(dim, block_bytes, monkeypatch):
    assert (dim <= scoring.KDTREE_MAX_DIM) == (dim == 5)
    if block_bytes is not None:
        monkeypatch.setattr(scoring, "SCORE_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, dim))
    y = np.concatenate([x, 0.2 * rng.normal(size=(300, 3))], axis=1) + 0.1 * rng.normal(size=(300, dim + 3))
    for k in (1, 10):
        expected = knn_overlap_reference(x, y, k)
        assert 0.1 < expected < 0.9
        assert knn_overlap(x, y, k=k) == pytest.approx(expected, abs=1e-12)
        assert knn_overlap(y, x, k=k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("dim", [5, 50])
def test_knn_overlap_is_one_for_identical_features_and_near_k_over_n_for_a_shuffle(dim):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1000, dim)).astype(np.float32)
    assert knn_overlap(x, x) == 1.0
    assert knn_overlap(x, 3.0 * x + 1.0) == 1.0  # distances scaled: the same order
    shuffled = x[rng.permutation(len(x))]  # rows no longer correspond
    assert knn_overlap(x, shuffled) == pytest.approx(10 / 999, abs=0.005)


@pytest.mark.parametrize("dim", [2, 40])
def test_knn_overlap_with_duplicate_points_is_one_for_identical_features(dim):
    rng = np.random.default_rng(5)
    x = np.repeat(rng.normal(size=(30, dim)), 4, axis=0)  # every point four times: ties everywhere
    assert knn_overlap(x, x, k=3) == 1.0
    assert knn_overlap(x, x, k=5) == 1.0
    assert 0.0 <= knn_overlap(x, rng.normal(size=(120, dim)), k=3) <= 1.0


def test_knn_overlap_caps_k_for_tiny_sets():
    rng = np.random.default_rng(6)
    # 3 points: each one's neighbours are the other two, whatever the features.
    assert knn_overlap(rng.normal(size=(3, 4)), rng.normal(size=(3, 2)), k=10) == 1.0


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_knn_overlap_rejects_bad_k(k):
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="`k` to be a positive integer"):
        knn_overlap(x, x, k=k)


@pytest.mark.parametrize("dim", [10, 40])  # k-d tree, blocked brute force
def test_knn_overlap_memory_stays_far_below_a_distance_matrix(dim):
    # The N x N float64 distance matrix at N = 10,000 is 800 MB.
    rng = np.random.default_rng(7)
    n = 10_000
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = x + 0.1 * rng.normal(size=(n, dim)).astype(np.float32)
    tracemalloc.start()
    try:
        overlap = knn_overlap(x, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 0.3 < overlap < 1.0
    # Two float64 copies, one block of distances and its argpartition, small (N, k) arrays.
    assert peak < 2 * 8 * n * dim + 2.5 * scoring.SCORE_BLOCK_BYTES + 4 * 2**20
    assert peak < 8 * n * n / 20


def test_linear_cka_and_cka_matrix_in_gram_form_hold_one_block_not_the_gram(monkeypatch):
    # N < D: the Gram form. Its N x N Gram matrices are 8 MB each here; a block is 1 MB.
    monkeypatch.setattr(scoring, "SCORE_BLOCK_BYTES", 2**20)
    rng = np.random.default_rng(19)
    n, dim = 1000, 2500
    assert scoring._uses_gram(n, dim, dim)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = x + rng.normal(size=(n, dim)).astype(np.float32)
    expected = hsic_cka(x, y)
    for fn in (lambda: linear_cka(x, y), lambda: cka_matrix([x, y])[0, 1]):
        tracemalloc.start()
        try:
            value = fn()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert value == pytest.approx(expected, rel=1e-9)
        # The two float64 copies, isfinite's boolean mask, a block or two: no 8 MB Gram.
        assert peak < 2 * 8 * n * dim + n * dim + 3 * 2**20


def test_change_scores_reject_a_bad_k_without_a_previous_capture():
    with pytest.raises(ValueError, match="`k` to be a positive integer"):
        change_scores(np.zeros((5, 2)), k=0)


def nc1_reference(features, labels):
    """tr(S_W S_B^+) / K as in Papyan, Han and Donoho's code: S_W summed class by class, S_B from
    the centred means, its pseudo-inverse from the top K - 1 eigenpairs (scipy's svds)."""
    from scipy.sparse.linalg import svds

    classes = np.unique(labels)
    means = np.stack([features[labels == c].mean(axis=0) for c in classes])  # (K, D)
    global_mean = means.mean(axis=0)
    within = sum((features[labels == c] - means[i]).T @ (features[labels == c] - means[i])
                 for i, c in enumerate(classes)) / len(features)  # (D, D)
    centred = means - global_mean
    between = centred.T @ centred / len(classes)  # (D, D)
    vectors, values, _ = svds(between, k=len(classes) - 1)
    inverse = vectors @ np.diag(1.0 / values) @ vectors.T
    return np.trace(within @ inverse) / len(classes)


def test_class_geometry_nc1_equals_the_papers_formula_with_unbalanced_and_absent_classes():
    rng = np.random.default_rng(8)
    labels = rng.choice([0, 1, 2, 4, 5], size=400, p=[0.1, 0.3, 0.2, 0.25, 0.15])  # class 3 absent
    features = rng.normal(size=(7, 20))[labels] + rng.normal(size=(400, 20))
    geometry = class_geometry(features, labels, 7)  # classes 3 and 6 have no points
    assert set(geometry) == {"nc1", "equinorm", "equiangle"}
    assert geometry["nc1"] == pytest.approx(nc1_reference(features, labels), rel=1e-9)
    # Fewer dimensions than K - 1: S_B has full rank, and pinv is the inverse.
    low = features[:, :3]
    assert class_geometry(low, labels, 7)["nc1"] == pytest.approx(
        np.trace(_covariances(low, labels)[0] @ np.linalg.inv(_covariances(low, labels)[1])) / 5, rel=1e-9)


def _covariances(features, labels):
    """(S_W, S_B) with every point of class c replaced by its residual, the paper's definitions."""
    classes = np.unique(labels)
    means = np.stack([features[labels == c].mean(axis=0) for c in classes])
    residuals = features - means[np.searchsorted(classes, labels)]
    centred = means - means.mean(axis=0)
    return residuals.T @ residuals / len(features), centred.T @ centred / len(classes)


def test_class_geometry_nc1_goes_to_zero_as_points_collapse_on_their_class_means():
    rng = np.random.default_rng(9)
    labels = np.repeat(np.arange(10), 50)
    means = 5.0 * rng.normal(size=(10, 32))
    noise = rng.normal(size=(500, 32))
    noise -= np.stack([noise[labels == c].mean(axis=0) for c in range(10)])[labels]  # the means stay put
    nc1 = [class_geometry(means[labels] + spread * noise, labels, 10)["nc1"] for spread in (1.0, 0.1, 0.01, 0.0)]
    assert nc1[0] > nc1[1] > nc1[2] > nc1[3]
    assert nc1[1] == pytest.approx(nc1[0] / 100, rel=1e-9)  # S_W scales with the spread squared
    assert nc1[3] < 1e-20
    random_labels = rng.permutation(labels)  # the classes no longer differ: S_B near 0
    assert class_geometry(means[labels] + noise, random_labels, 10)["nc1"] > 100 * nc1[0]


def simplex_etf(n_classes, dim, rng, scale=3.0):
    """(K, D) vertices of a simplex equiangular tight frame, rotated into D dimensions at random."""
    frame = np.sqrt(n_classes / (n_classes - 1)) * (np.eye(n_classes) - 1.0 / n_classes)  # (K, K)
    basis = np.linalg.qr(rng.normal(size=(dim, n_classes)))[0]  # (D, K) orthonormal columns
    return scale * frame @ basis.T + rng.normal(size=dim)  # shifted: the global mean is removed


def test_class_geometry_of_a_simplex_etf_has_zero_equinorm_and_equiangle():
    rng = np.random.default_rng(10)
    labels = np.repeat(np.arange(10), 20)
    means = simplex_etf(10, 64, rng)
    geometry = class_geometry(means[labels] + 0.001 * rng.normal(size=(200, 64)), labels, 10)
    assert geometry["equinorm"] < 1e-3 and geometry["equiangle"] < 1e-3
    # Random means have neither equal norms nor the simplex's angles.
    random = class_geometry(rng.normal(size=(10, 64))[labels], labels, 10)
    assert random["equinorm"] > 0.03 and random["equiangle"] > 0.05


def test_class_geometry_equinorm_and_equiangle_equal_their_direct_formulas():
    rng = np.random.default_rng(11)
    labels = np.arange(120) % 6
    features = rng.normal(size=(6, 9))[labels] + 0.5 * rng.normal(size=(120, 9))
    geometry = class_geometry(features, labels, 6)
    means = np.stack([features[labels == c].mean(axis=0) for c in range(6)])
    centred = means - features.mean(axis=0)  # balanced: the mean of all points
    norms = np.linalg.norm(centred, axis=1)
    cosines = [centred[a] @ centred[b] / (norms[a] * norms[b]) for a in range(6) for b in range(6) if a != b]
    assert geometry["equinorm"] == pytest.approx(np.std(norms) / np.mean(norms), rel=1e-9)
    assert geometry["equiangle"] == pytest.approx(np.mean(np.abs(np.array(cosines) + 1 / 5)), rel=1e-9)


def test_class_geometry_counts_only_the_classes_present():
    rng = np.random.default_rng(12)
    labels = np.repeat([1, 4, 7], 30)  # 3 of 10 classes: their simplex has cosines -1/2
    means = np.zeros((10, 16))
    means[[1, 4, 7]] = simplex_etf(3, 16, rng)
    geometry = class_geometry(means[labels], labels, 10, class_weight=means, predictions=labels)
    assert geometry["nc1"] == pytest.approx(0.0, abs=1e-20)
    assert geometry["equinorm"] < 1e-12 and geometry["equiangle"] < 1e-12
    assert geometry["ncc_agreement"] == 1.0  # only present classes are candidates


def test_class_geometry_self_duality_is_zero_for_scaled_means_and_equals_its_formula():
    rng = np.random.default_rng(13)
    labels = np.arange(100) % 5
    features = rng.normal(size=(5, 12))[labels] + 0.3 * rng.normal(size=(100, 12))
    means = np.stack([features[labels == c].mean(axis=0) for c in range(5)])
    centred = means - means.mean(axis=0)
    assert class_geometry(features, labels, 5, class_weight=7.0 * centred)["self_duality"] == pytest.approx(
        0.0, abs=1e-12)
    assert class_geometry(features, labels, 5, class_weight=-centred)["self_duality"] == pytest.approx(4.0)
    weight = rng.normal(size=(5, 12))
    expected = np.sum((weight / np.linalg.norm(weight) - centred / np.linalg.norm(centred)) ** 2)
    assert class_geometry(features, labels, 5, class_weight=weight)["self_duality"] == pytest.approx(expected)


def test_class_geometry_ncc_agreement_counts_predictions_of_the_nearest_class_mean():
    rng = np.random.default_rng(14)
    labels = np.arange(200) % 4
    features = rng.normal(size=(4, 6))[labels] + 1.5 * rng.normal(size=(200, 6))
    means = np.stack([features[labels == c].mean(axis=0) for c in range(4)])
    nearest = np.argmin(np.linalg.norm(features[:, None] - means[None], axis=2), axis=1)  # (N,)
    assert (nearest != labels).sum() > 10  # overlapping classes: the NCC is not the label
    assert class_geometry(features, labels, 4, predictions=nearest)["ncc_agreement"] == 1.0
    flipped = nearest.copy()
    flipped[:50] = (flipped[:50] + 1) % 4
    assert class_geometry(features, labels, 4, predictions=flipped)["ncc_agreement"] == 0.75
    assert class_geometry(features, labels, 4, predictions=labels)["ncc_agreement"] == np.mean(nearest == labels)


def test_class_geometry_with_one_class_is_nan():
    rng = np.random.default_rng(15)
    features, labels = rng.normal(size=(20, 3)), np.full(20, 2)
    geometry = class_geometry(features, labels, 3, class_weight=rng.normal(size=(3, 3)), predictions=labels)
    assert all(math.isnan(geometry[key]) for key in ("nc1", "equinorm", "equiangle", "self_duality"))
    assert geometry["ncc_agreement"] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": np.zeros(9, dtype=int)}, r"`labels`.*\(10,\).*\(9,\)"),
        ({"labels": np.full(10, 3)}, r"`labels`.*\[0, 3\).*\[3, 3\]"),
        ({"labels": np.zeros(10)}, r"`labels`.*integer.*float64"),
        ({"num_classes": 0}, r"`num_classes`.*got 0"),
        ({"class_weight": np.zeros((3, 5))}, r"`class_weight`.*\(3, 4\).*\(3, 5\)"),
        ({"predictions": np.full(10, -1)}, r"`predictions`.*\[0, 3\)"),
    ],
)
def test_class_geometry_rejects_bad_inputs(kwargs, match):
    arguments = {"features": np.zeros((10, 4)), "labels": np.arange(10) % 3, "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        class_geometry(**arguments)


def test_change_scores_equal_the_single_scores_and_leave_out_missing_references():
    rng = np.random.default_rng(16)
    first = rng.normal(size=(150, 10))
    previous = first + 0.5 * rng.normal(size=(150, 10))
    now = previous + 0.2 * rng.normal(size=(150, 10))
    scores = change_scores(now, previous=previous, first=first, k=5)
    assert list(scores) == ["cka_prev", "cka_first", "knn_overlap_prev"]
    assert scores["cka_prev"] == pytest.approx(hsic_cka(now, previous), rel=1e-12)
    assert scores["cka_first"] == pytest.approx(hsic_cka(now, first), rel=1e-12)
    assert scores["knn_overlap_prev"] == pytest.approx(knn_overlap_reference(now, previous, 5), abs=1e-12)
    assert scores["cka_first"] < scores["cka_prev"] < 1.0
    assert list(change_scores(now, first=first)) == ["cka_first"]
    assert change_scores(now) == {}
    with pytest.raises(ValueError, match=r"`previous`.*150 points.*got 149 rows"):
        change_scores(now, previous=previous[1:])


@pytest.mark.parametrize("block_bytes", [None, 8 * 40 * 3 * 2])  # whole, or blocks of 2 rows of every Gram
@pytest.mark.parametrize("dim", [3, 60])  # feature-space form, Gram form
def test_cka_matrix_equals_pairwise_cka(dim, block_bytes, monkeypatch):
    if block_bytes is not None:
        monkeypatch.setattr(scoring, "SCORE_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(17)
    start = rng.normal(size=(40, dim))
    captures = [start, start + rng.normal(size=(40, dim)), rng.normal(size=(40, dim + 2))]  # D may differ
    matrix = cka_matrix(captures)
    expected = np.array([[hsic_cka(a, b) for b in captures] for a in captures])
    assert matrix.shape == (3, 3)
    np.testing.assert_allclose(matrix, expected, rtol=1e-10)
    np.testing.assert_array_equal(matrix, matrix.T)
    np.testing.assert_array_equal(np.diag(matrix), 1.0)


def test_cka_matrix_of_one_capture_and_of_a_constant_capture():
    x = np.random.default_rng(18).normal(size=(30, 4))
    np.testing.assert_array_equal(cka_matrix([x]), [[1.0]])
    matrix = cka_matrix([x, np.ones((30, 4)), 2.0 * x])
    assert np.isnan(matrix[1]).all() and np.isnan(matrix[:, 1]).all()
    assert matrix[0, 2] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one capture"):
        cka_matrix([])
    with pytest.raises(ValueError, match=r"`features\[1\]`.*30 points.*got 29 rows"):
        cka_matrix([x, x[1:]])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.1, 0.5, 0.96, 0.97, 0.99, 1.0], 200),  # settles at the third capture
        ([0.1, 0.3, 0.5, 0.7, 0.9, 1.0], None),  # still moving at the end: never settles
        ([0.2, 0.96, 0.98, 0.9, 0.95, 0.97, 1.0], 400),  # settles, drops, settles again: the last stretch
        ([0.99, 0.99, 0.99, 1.0], 0),  # settled from the start
        ([0.5, 0.94, 1.0], None),  # only the final capture is within the threshold
        ([0.5, 0.95, 1.0], 100),  # the threshold itself counts
        ([0.5, np.nan, 0.97, 1.0], 200),  # nan is not settled
        ([0.96, 0.97, np.nan], None),  # a constant final capture: nothing is settled
        ([1.0], None),  # one capture: nothing to compare
    ],
)
def test_settled_step_on_hand_made_sequences(values, expected):
    steps = [100 * i for i in range(len(values))]
    assert settled_step(steps, values) == expected


def test_settled_step_threshold_and_bad_inputs():
    assert settled_step([0, 10, 20], [0.5, 0.8, 1.0], threshold=0.75) == 10
    assert type(settled_step(np.array([0, 10, 20]), [0.9, 0.99, 1.0])) is int
    with pytest.raises(ValueError, match="one value per step"):
        settled_step([0, 10], [1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        settled_step([0, 10, 10], [0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"`threshold`.*\(0, 1\].*1.5"):
        settled_step([0, 10], [0.5, 1.0], threshold=1.5)
