"""Scores of one capture, numpy in and plain floats out: how well its points separate by class.

Pure functions with no Lightning and no torch, so the background analysis runs them in a thread,
the run-folder results (:mod:`lenet_lightning.results`) recompute them from the files a run wrote,
and the tests hold them against scikit-learn and against synthetic data with a known answer.
``python bench/bench_tsne.py --part scores`` measures them against scikit-learn's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.neighbors import NearestNeighbors


def separation_scores(
    features: np.ndarray,
    layout: np.ndarray | None,
    labels: np.ndarray,
    *,
    n_neighbors: int = 5,
    silhouette: bool = True,
) -> dict[str, float]:
    """Numbers for how well one capture separates by class.

    * ``silhouette``: silhouette score of ``features`` in their own ``D``-dim space, in [-1, 1];
      ``nan`` when there are fewer than 2 classes or as many classes as points.
    * ``knn_acc_2d``: leave-one-out ``n_neighbors``-NN accuracy in the 2-D layout (each point is
      classified by the majority label of its neighbours, itself excluded; ties go to the class
      with the nearer neighbour). Chance is about the largest class's share.
    * ``trustworthiness``: scikit-learn's trustworthiness of the layout, in [0, 1]: 1 when every
      2-D neighbourhood holds only true ``D``-dim neighbours.

    The 2-D scores are left out when ``layout`` is ``None``. ``n_neighbors`` is capped at
    ``(N - 1) // 2``, as trustworthiness requires. Silhouette and trustworthiness equal
    scikit-learn's ``silhouette_score`` and ``trustworthiness`` (the latter barring exact distance
    ties), but come from one pass over the feature-space distances, a block of rows at a time, so
    memory stays small at any ``N`` (see :func:`_feature_space_scores`).

    Args:
        features: ``(N, D)`` activations; non-finite values count as 0 (with a warning).
        layout: ``(N, 2)`` t-SNE layout of ``features``, or ``None``.
        labels: ``(N,)`` class labels.
        n_neighbors: Neighbours for ``knn_acc_2d`` and ``trustworthiness``.
        silhouette: ``False`` leaves the silhouette out (a capture whose silhouette is known).

    Returns:
        ``{"silhouette": ...}`` plus ``knn_acc_2d`` and ``trustworthiness`` when ``layout`` is
        given, all plain floats.

    Raises:
        ValueError: If the shapes do not match or ``n_neighbors < 1``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> labels = np.repeat(np.arange(3), 20)
        >>> x = rng.normal(size=(60, 2)) + 10 * labels[:, None]
        >>> scores = separation_scores(x, x, labels)
        >>> scores["knn_acc_2d"], scores["trustworthiness"]
        (1.0, 1.0)
    """
    features = finite_features(features)
    n_samples = features.shape[0]
    labels = np.asarray(labels)
    if labels.shape != (n_samples,):
        raise ValueError(f"Expected `labels` to have shape ({n_samples},), but got {labels.shape}.")
    if n_neighbors < 1:
        raise ValueError(f"Expected `n_neighbors` to be a positive integer, but got {n_neighbors}.")
    _, classes = np.unique(labels, return_inverse=True)  # (N,) in 0..C-1
    n_classes = int(classes.max()) + 1
    with_silhouette = silhouette and 2 <= n_classes < n_samples  # scikit-learn's condition for a silhouette
    if layout is None:
        silhouette, _ = _feature_space_scores(features, classes if with_silhouette else None, None)
        return {"silhouette": silhouette}
    layout = np.asarray(layout, dtype=np.float64)
    if layout.shape != (n_samples, 2) or not np.isfinite(layout).all():
        raise ValueError(
            f"Expected `layout` to be a finite ({n_samples}, 2) array, but got shape {layout.shape}."
        )
    k = min(n_neighbors, (n_samples - 1) // 2)
    if k < 1:
        silhouette, _ = _feature_space_scores(features, classes if with_silhouette else None, None)
        return {"silhouette": silhouette, "knn_acc_2d": math.nan, "trustworthiness": math.nan}
    # kneighbors() without X leaves each point out of its own neighbours, duplicates included.
    neighbours = NearestNeighbors(n_neighbors=k).fit(layout).kneighbors(return_distance=False)  # (N, k)
    votes = np.zeros((n_samples, n_classes))
    # One vote per neighbour plus a tie-break below 1/2 in total that favours nearer neighbours.
    weights = 1.0 + (k - np.arange(k)) / (k * (k + 1))  # (k,)
    rows = np.arange(n_samples)[:, None]  # (N, 1), broadcast against (N, k)
    np.add.at(votes, (rows, classes[neighbours]), np.broadcast_to(weights, neighbours.shape))
    silhouette, trust = _feature_space_scores(features, classes if with_silhouette else None, neighbours)
    return {
        "silhouette": silhouette,
        "knn_acc_2d": float(np.mean(votes.argmax(axis=1) == classes)),
        "trustworthiness": trust,
    }


# Size of the one (rows, N) float64 block of feature-space distances _feature_space_scores holds at a
# time; the comparison buffer adds an eighth (see the function).
SCORE_BLOCK_BYTES = 8 * 2**20


def _feature_space_scores(
    features: np.ndarray, classes: np.ndarray | None, neighbours: np.ndarray | None
) -> tuple[float, float]:
    """Silhouette and trustworthiness from one pass over the feature-space distances.

    scikit-learn's ``trustworthiness`` builds the whole ``N x N`` distance matrix, its arg-sort and
    an ``N x N`` inverted index, and ``silhouette_score`` works in blocks of up to 1 GB
    (``working_memory``), so at N = 10,000 both hold the whole matrix. Here the Euclidean
    distances are made ``SCORE_BLOCK_BYTES`` of rows at a time, in float64 (scikit-learn before
    1.9 did so for float32 input too), into one reused buffer, and each block serves
    both scores:

    * silhouette: with the columns in class order, ``np.add.reduceat`` gives every row's summed
      distance to each class (what a matmul with a one-hot ``(N, C)`` matrix gives, at a seventh
      of the CPU time), from which scikit-learn's per-point ``(b - a) / max(a, b)`` follows (0
      for a point alone in its class);
    * trustworthiness: the rank of each 2-D neighbour in its point's feature-space order is one
      plus the number of points nearer than it (ties share the lowest rank; scikit-learn's
      arg-sort orders them arbitrarily), so no sort is needed.

    Peak memory is one block plus an eighth of it (the comparison buffer), whatever ``N``;
    ``python bench/bench_tsne.py --part scores`` measures CPU time and memory against scikit-learn.

    Args:
        features: ``(N, D)`` finite float32 features.
        classes: ``(N,)`` class indices in ``0..C-1``, every class present, ``2 <= C < N``; or
            ``None`` to skip the silhouette.
        neighbours: ``(N, k)`` indices of each point's nearest 2-D neighbours, itself excluded,
            ``k <= (N - 1) // 2``; or ``None`` to skip trustworthiness.

    Returns:
        ``(silhouette, trustworthiness)``, ``nan`` for each one skipped.
    """
    if classes is None and neighbours is None:
        return math.nan, math.nan
    x = features.astype(np.float64)  # (N, D)
    n_samples = x.shape[0]
    # Columns in class order, so each class is one contiguous run that np.add.reduceat sums.
    order = np.arange(n_samples) if classes is None else np.argsort(classes, kind="stable")  # (N,)
    column_of = np.empty(n_samples, dtype=np.intp)  # (N,) column of each point in a block
    column_of[order] = np.arange(n_samples)
    columns = x[order]  # (N, D)
    column_norms = np.einsum("ij,ij->i", columns, columns)  # (N,)
    block_rows = max(1, min(n_samples, SCORE_BLOCK_BYTES // (8 * n_samples)))
    if classes is not None:
        counts = np.bincount(classes)  # (C,)
        class_starts = np.concatenate(([0], np.cumsum(counts)[:-1]))  # (C,) first column of each class
        silhouette_sum = 0.0
    distances = np.empty((block_rows, n_samples))  # reused for every block: two would double the peak
    if neighbours is not None:
        k = neighbours.shape[1]
        nearer = np.empty((block_rows, n_samples), dtype=bool)  # reused comparison buffer
        penalty = 0
    for start in range(0, n_samples, block_rows):
        stop = min(start + block_rows, n_samples)
        local = np.arange(stop - start)  # (B,)
        itself = column_of[start:stop]  # (B,) column of each row's own point
        block = np.matmul(x[start:stop], columns.T, out=distances[: stop - start])  # (B, N), then in place:
        block *= -2.0
        block += np.einsum("ij,ij->i", x[start:stop], x[start:stop])[:, None]
        block += column_norms  # squared Euclidean distances
        np.maximum(block, 0.0, out=block)
        np.sqrt(block, out=block)
        block[local, itself] = 0.0  # exactly, as scikit-learn sets it
        if classes is not None:
            sums = np.add.reduceat(block, class_starts, axis=1)  # (B, C) summed distance to each class
            own = classes[start:stop]  # (B,)
            with np.errstate(divide="ignore", invalid="ignore"):
                intra = sums[local, own] / (counts[own] - 1)  # (B,) a; nan when alone in its class
                sums /= counts
                sums[local, own] = np.inf
                inter = sums.min(axis=1)  # (B,) b: mean distance to the nearest other class
                # nan (alone in its class, or a = b = 0) counts as 0, as in scikit-learn
                silhouette_sum += float(np.nansum((inter - intra) / np.maximum(intra, inter)))
        if neighbours is not None:
            block[local, itself] = np.inf  # a point is not its own neighbour
            limits = np.take_along_axis(block, column_of[neighbours[start:stop]], axis=1)  # (B, k)
            buffer = nearer[: stop - start]
            for limit in limits.T:  # one (B, N) comparison per neighbour, not one (B, k, N)
                np.less(block, limit[:, None], out=buffer)
                # bytes summed as int8 into int32: about half the CPU time of summing the booleans
                rank = buffer.view(np.int8).sum(axis=1, dtype=np.int32) + 1  # (B,) 1 = nearest
                penalty += int(np.clip(rank - k, 0, None).sum())
    silhouette = silhouette_sum / n_samples if classes is not None else math.nan
    if neighbours is None:
        return silhouette, math.nan
    return silhouette, 1.0 - penalty * 2.0 / (n_samples * k * (2.0 * n_samples - 3.0 * k - 1.0))


def finite_features(features: np.ndarray) -> np.ndarray:
    """Checks ``features`` is ``(N, D)`` with ``N >= 2`` and replaces non-finite values by 0."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] < 2 or features.shape[1] < 1:
        raise ValueError(
            f"Expected `features` to be a 2-D (N, D) array with N >= 2 and D >= 1, "
            f"but got shape {features.shape}."
        )
    finite = np.isfinite(features)
    if not finite.all():
        bad_rows = int((~finite).any(axis=1).sum())
        warnings.warn(
            f"{bad_rows} of {features.shape[0]} feature rows hold NaN or inf; treating those values as 0.",
            stacklevel=3,
        )
        features = np.where(finite, features, 0.0).astype(np.float32)
    return features


# How the representation changes between captures, and the geometry of its classes. The probe set
# holds the same points in the same order at every capture, so rows correspond across captures and
# each comparison below is well defined.


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) of two representations of the same ``N`` points.

    ``CKA = ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` with ``X_c``, ``Y_c`` the
    column-centred features; equivalently ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with
    the linear kernels ``K = X X^T``, ``L = Y Y^T``. In [0, 1]: 1 when ``y`` is ``x`` up to an
    orthogonal transform, an isotropic scaling and a translation. Every Frobenius product is
    taken in whichever form costs less, each accumulated in float64 and made a block at a time
    (see :func:`_frobenius_cross`): the ``D1 x D2`` feature-space form for small ``D`` (``fc2``:
    10 x 10), the ``N x N`` Gram form, a block of rows at a time, when ``D`` is large against
    ``N``. So no ``N x N`` matrix is ever held whole.

    Args:
        x: ``(N, D1)`` features; non-finite values count as 0 (with a warning).
        y: ``(N, D2)`` features of the same points, in the same order.

    Returns:
        The CKA as a plain float; ``nan`` when either representation is constant (all points
        equal: zero variance, so no similarity is defined).

    Raises:
        ValueError: If either is not ``(N, D)`` with ``N >= 2``, or their ``N`` differ.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(100, 10))
        >>> rotation = np.linalg.qr(rng.normal(size=(10, 10)))[0]
        >>> round(linear_cka(x, 3.0 * x @ rotation + 1.0), 12), linear_cka(x, x[::-1]) < 0.3
        (1.0, True)
    """
    x_c, y_c = _centred(x, "x"), _centred(y, "y")
    _check_rows(y_c, x_c.shape[0], "y")
    return _cka(x_c, y_c, _frobenius_cross(x_c, x_c), _frobenius_cross(y_c, y_c))


def knn_overlap(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """How much each point's neighbourhood is kept from ``x`` to ``y``, in [0, 1].

    The mean, over points, of the fraction of each point's ``k`` nearest neighbours in ``x``
    (Euclidean, itself excluded) that are among its ``k`` nearest in ``y``. 1 when every
    neighbourhood is kept; about ``k / (N - 1)`` when ``y``'s rows are a random shuffle of
    ``x``'s. Symmetric in ``x`` and ``y``. ``k`` is capped at ``N - 1``. Exact ties among
    distances (duplicate points) are broken arbitrarily but the same way for equal inputs.

    Neighbours come from a k-d tree (SciPy's) up to ``KDTREE_MAX_DIM`` dimensions, else from the
    squared distances ``SCORE_BLOCK_BYTES`` of rows at a time with ``np.argpartition``: memory
    stays at about two blocks whatever ``N``, never an ``N x N`` matrix.

    Args:
        x: ``(N, D1)`` features; non-finite values count as 0 (with a warning).
        y: ``(N, D2)`` features of the same points, in the same order.
        k: Neighbours per point.

    Returns:
        The mean overlap as a plain float.

    Raises:
        ValueError: If the shapes do not match or ``k < 1``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(200, 5))
        >>> knn_overlap(x, 2.0 * x + 1.0), knn_overlap(x, rng.permutation(x)) < 0.1
        (1.0, True)
    """
    x_c, y_c = _centred(x, "x"), _centred(y, "y")
    _check_rows(y_c, x_c.shape[0], "y")
    return _knn_overlap(x_c, y_c, k)


def class_geometry(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    class_weight: np.ndarray | None = None,
    predictions: np.ndarray | None = None,
) -> dict[str, float]:
    """Neural-collapse numbers of one capture (Papyan, Han and Donoho 2020).

    With ``mu_c`` the mean of class ``c``, ``mu_G`` the mean of the class means, the centred means
    ``M = [mu_c - mu_G]`` (``K x D``), ``S_W`` the within-class covariance (averaged over all
    points) and ``S_B = M^T M / K``:

    * ``nc1``: ``tr(S_W S_B^+) / K``, within-class variability against between-class
      variability; 0 when every point sits on its class mean, falling during training as the
      classes collapse. ``S_B^+`` is the pseudo-inverse over the (at most ``K - 1``) directions
      the means span, as in the paper's code. Computed in those directions only: no ``D x D``
      matrix.
    * ``equinorm``: ``std_c ||mu_c - mu_G|| / mean_c ||mu_c - mu_G||``, 0 when the centred means
      have equal lengths.
    * ``equiangle``: ``mean_{c != c'} |cos(mu_c - mu_G, mu_c' - mu_G) + 1 / (K - 1)|``, the
      paper's "maximal-angle equiangularity": 0 when the centred means are equiangular at the
      largest possible angle, ``arccos(-1 / (K - 1))``, as the vertices of a simplex (with
      ``equinorm`` 0 too: a simplex equiangular tight frame). The paper also plots the standard
      deviation of those cosines, 0 for any common angle; the distance from ``-1 / (K - 1)``
      says more and is the one kept here.
    * ``self_duality`` (only with ``class_weight``): ``|| W / ||W||_F - M / ||M||_F ||_F^2``,
      in [0, 4]; 0 when the class layer's rows are the centred class means up to scale.
    * ``ncc_agreement`` (only with ``predictions``): the fraction of points whose nearest class
      mean (Euclidean) is of the class the model predicts; 1 when the model has become a
      nearest-class-mean classifier.

    With a balanced probe set ``mu_G`` is the mean of all points, as in the paper; with an
    unbalanced one the mean of the class means keeps every class's weight equal (and ``M``'s
    rows summing to 0, as a simplex's). Classes absent from ``labels`` have no mean: ``K`` is the
    number of classes present, every number is over those (``class_weight``'s rows of absent
    classes are left out; a prediction of an absent class counts as a disagreement). With fewer
    than 2 classes present, or all class means equal, the numbers other than ``ncc_agreement``
    are ``nan``; so is ``self_duality`` for a zero or non-finite ``class_weight``.

    Args:
        features: ``(N, D)`` activations of the captured layer; non-finite values count as 0
            (with a warning).
        labels: ``(N,)`` integer class indices in ``[0, num_classes)``.
        num_classes: Number of classes ``K`` the model knows.
        class_weight: ``(num_classes, D)`` weight of the class layer that ``features`` feed (for
            ``fc1`` features, ``fc2.weight``), or ``None``.
        predictions: ``(N,)`` the model's predicted classes, or ``None``.

    Returns:
        ``{"nc1", "equinorm", "equiangle"}`` plus ``self_duality`` and ``ncc_agreement`` when
        their inputs are given, all plain floats.

    Raises:
        ValueError: If the shapes do not match, ``num_classes < 1`` or a label or prediction is
            not a class index.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> labels = np.repeat(np.arange(3), 50)
        >>> means = 10.0 * rng.normal(size=(3, 8))
        >>> geometry = class_geometry(means[labels] + 0.01 * rng.normal(size=(150, 8)), labels, 3,
        ...                           class_weight=means - means.mean(axis=0), predictions=labels)
        >>> geometry["nc1"] < 1e-4, round(geometry["self_duality"], 4), geometry["ncc_agreement"]
        (True, 0.0, 1.0)
    """
    x = _centred(features, "features")
    n_samples, dim = x.shape
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"Expected `num_classes` to be a positive integer, but got {num_classes!r}.")
    labels = _class_indices(labels, n_samples, num_classes, "labels")
    counts = np.bincount(labels, minlength=num_classes)  # (K_all,)
    present = np.flatnonzero(counts)  # (K,)
    n_present = len(present)
    slot = np.full(num_classes, -1)
    slot[present] = np.arange(n_present)
    point_class = slot[labels]  # (N,) in 0..K-1
    one_hot = np.zeros((n_present, n_samples))
    one_hot[point_class, np.arange(n_samples)] = 1.0
    means = one_hot @ x / counts[present, None]  # (K, D)
    centred_means = means - means.mean(axis=0)  # (K, D)
    norms = np.linalg.norm(centred_means, axis=1)  # (K,)
    spread = float(np.linalg.norm(centred_means))
    result = {"nc1": math.nan, "equinorm": math.nan, "equiangle": math.nan}
    if n_present >= 2 and spread > 0.0:
        _, singular, right = np.linalg.svd(centred_means, full_matrices=False)  # (r,), (r, D)
        kept = singular > singular[0] * max(n_present, dim) * np.finfo(np.float64).eps
        kept[n_present - 1 :] = False  # the centred means span at most K - 1 directions
        directions = right[kept].T  # (D, r)
        # v^T S_W v for each direction v, from the within-class residuals projected on it.
        projected = x @ directions - (means @ directions)[point_class]  # (N, r)
        within = np.einsum("ij,ij->j", projected, projected) / n_samples  # (r,)
        # S_B's eigenvalues are singular**2 / K, so tr(S_W S_B^+) / K = sum(within / singular**2).
        result["nc1"] = float(np.sum(within / singular[kept] ** 2))
        result["equinorm"] = float(norms.std() / norms.mean())
        if norms.min() > 0.0:
            unit = centred_means / norms[:, None]  # (K, D)
            cosine = unit @ unit.T  # (K, K)
            off_diagonal = cosine[~np.eye(n_present, dtype=bool)]  # (K (K - 1),)
            result["equiangle"] = float(np.mean(np.abs(off_diagonal + 1.0 / (n_present - 1))))
    if class_weight is not None:
        weight = np.asarray(class_weight, dtype=np.float64)
        if weight.shape != (num_classes, dim):
            raise ValueError(
                f"Expected `class_weight` to have shape ({num_classes}, {dim}), one row per class, "
                f"but got {weight.shape}."
            )
        weight = weight[present]  # (K, D)
        weight_norm = float(np.linalg.norm(weight))
        duality = math.nan
        if n_present >= 2 and spread > 0.0 and weight_norm > 0.0 and np.isfinite(weight_norm):
            duality = float(np.sum((weight / weight_norm - centred_means / spread) ** 2))
        result["self_duality"] = duality
    if predictions is not None:
        predictions = _class_indices(predictions, n_samples, num_classes, "predictions")
        # argmin_c ||h - mu_c||^2 = argmin_c (||mu_c||^2 - 2 h . mu_c): no (N, K, D) array.
        nearest = present[np.argmin(np.einsum("ij,ij->i", means, means) - 2.0 * x @ means.T, axis=1)]  # (N,)
        result["ncc_agreement"] = float(np.mean(nearest == predictions))
    return result


def change_scores(
    features: np.ndarray,
    *,
    previous: np.ndarray | None = None,
    first: np.ndarray | None = None,
    k: int = 10,
) -> dict[str, float]:
    """How one capture differs from the previous one and from the first, in its own space.

    * ``cka_prev``: :func:`linear_cka` against ``previous``; near 1 once the representation has
      stopped moving.
    * ``cka_first``: :func:`linear_cka` against ``first`` (step 0): how far training has taken
      the representation from where it started.
    * ``knn_overlap_prev``: :func:`knn_overlap` with ``k`` neighbours against ``previous``:
      the share of each point's neighbours that are still its neighbours.

    Equal to calling those functions, but ``features`` is centred and its own CKA norm computed
    once for both references.

    Args:
        features: ``(N, D)`` activations of this capture.
        previous: ``(N, D')`` activations of the same probe points at the previous capture, or
            ``None`` (the first capture).
        first: ``(N, D')`` activations at the first capture, or ``None``.
        k: Neighbours per point for ``knn_overlap_prev``.

    Returns:
        The keys whose reference is given, in the order ``cka_prev``, ``cka_first``,
        ``knn_overlap_prev``; plain floats (``nan`` for a CKA with constant features).

    Raises:
        ValueError: If a reference has another number of rows than ``features``, or ``k < 1``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> start = rng.normal(size=(100, 10))
        >>> now = start + 0.1 * rng.normal(size=(100, 10))
        >>> scores = change_scores(now, previous=now, first=start)
        >>> list(scores), scores["knn_overlap_prev"], scores["cka_first"] > 0.95
        (['cka_prev', 'cka_first', 'knn_overlap_prev'], 1.0, True)
    """
    _check_k(k)
    x = _centred(features, "features")
    own = _frobenius_cross(x, x)
    result: dict[str, float] = {}
    references = {"cka_prev": (previous, "previous"), "cka_first": (first, "first")}
    centred = {}
    for key, (reference, name) in references.items():
        if reference is not None:
            centred[name] = _centred(reference, name)
            _check_rows(centred[name], x.shape[0], name)
            result[key] = _cka(x, centred[name], own, _frobenius_cross(centred[name], centred[name]))
    if previous is not None:
        result["knn_overlap_prev"] = _knn_overlap(x, centred["previous"], k)
    return result


def cka_matrix(features: Sequence[np.ndarray]) -> np.ndarray:
    """Linear CKA between every pair of captures: the ``(C, C)`` matrix behind the heatmap.

    Each capture is centred once, in float64. Then, whichever costs less:

    * few dimensions (``fc2``): all captures side by side as one ``(N, sum D)`` matrix ``Z``, and
      ``Z^T Z``'s ``D_i x D_j`` blocks, one capture's rows of it at a time; about
      ``N (sum D)^2 / 2`` multiply-adds (60 captures of 10-d at 2,000 points: 0.4 G);
    * many (``fc1``): the Gram form, ``<X_i X_i^T, X_j X_j^T>`` over blocks of rows of the
      ``N x N`` Grams, never one whole; about ``N^2 (sum D + C^2 / 2)`` multiply-adds.

    Memory: the centred copies, ``8 N sum D`` bytes (60 captures of 1,024-d at 2,000 points:
    1 GB; read fewer captures for such a layer), plus blocks of ``SCORE_BLOCK_BYTES``.

    Args:
        features: ``C >= 1`` captures, each ``(N, D_i)`` for the same ``N`` points in the same
            order; non-finite values count as 0 (with a warning).

    Returns:
        ``(C, C)`` float64, symmetric, in [0, 1], with ones on the diagonal; the row and column
        of a constant capture are ``nan``.

    Raises:
        ValueError: If there are no captures or their shapes do not match.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(50, 4))
        >>> cka_matrix([x, 2.0 * x, rng.normal(size=(50, 3))]).round(1)
        array([[1. , 1. , 0.1],
               [1. , 1. , 0.1],
               [0.1, 0.1, 1. ]])
    """
    if len(features) == 0:
        raise ValueError("Expected `features` to hold at least one capture, but got none.")
    centred = [_centred(capture, f"features[{index}]") for index, capture in enumerate(features)]
    n_samples = centred[0].shape[0]
    for index, capture in enumerate(centred):
        _check_rows(capture, n_samples, f"features[{index}]")
    n_captures = len(centred)
    dims = np.array([capture.shape[1] for capture in centred])  # (C,)
    total = int(dims.sum())
    products = np.zeros((n_captures, n_captures))  # <K_i, K_j> = ||X_j^T X_i||_F^2
    if total * total / 2 <= n_samples * (total + n_captures**2 / 2):
        stacked = np.concatenate(centred, axis=1)  # (N, sum D)
        offsets = np.concatenate(([0], np.cumsum(dims)))  # (C + 1,)
        for i, capture in enumerate(centred):
            cross = capture.T @ stacked[:, offsets[i] :]  # (D_i, sum of D_j for j >= i)
            squares = np.einsum("ij,ij->j", cross, cross)  # (sum D_j,) per column of Z
            sums = np.add.reduceat(squares, offsets[i:-1] - offsets[i])  # (C - i,)
            products[i, i:] = sums
            products[i:, i] = sums
    else:
        block_rows = max(1, min(n_samples, SCORE_BLOCK_BYTES // (8 * n_samples * n_captures)))
        grams = np.empty((n_captures, block_rows, n_samples))  # reused: one block of every Gram
        for start in range(0, n_samples, block_rows):
            stop = min(start + block_rows, n_samples)
            block = grams[:, : stop - start]  # (C, B, N)
            for i, capture in enumerate(centred):
                np.matmul(capture[start:stop], capture.T, out=block[i])
            flat = block.reshape(n_captures, -1)  # (C, B N)
            products += flat @ flat.T
    diagonal = np.sqrt(np.diag(products))  # (C,)
    with np.errstate(divide="ignore", invalid="ignore"):
        matrix = products / np.outer(diagonal, diagonal)
    matrix[:, diagonal == 0.0] = np.nan
    matrix[diagonal == 0.0, :] = np.nan
    np.clip(matrix, 0.0, 1.0, out=matrix)
    np.fill_diagonal(matrix, np.where(diagonal > 0.0, 1.0, np.nan))
    return matrix


def settled_step(steps: Sequence[int], cka_to_final: Sequence[float], threshold: float = 0.95) -> int | None:
    """The step at which the representation settled: from there on, CKA to the final capture
    stays at or above ``threshold``.

    The first capture ``i`` with ``cka_to_final[j] >= threshold`` for every ``j >= i``. The
    final capture always has CKA 1 with itself, so it alone proves nothing: a representation
    counts as settled only when at least the capture before the final one is already within
    the threshold, i.e. when it stopped moving while still being watched. So ``None`` ("not
    settled") when the last-but-one capture is below the threshold (the representation still
    moved at the end), for a single capture (nothing to compare), and when a value is ``nan``
    at or after the last drop below the threshold (``nan`` never counts as settled). A series
    that settles, drops, and settles again settles at the start of its last settled stretch.

    Args:
        steps: Training step of each capture, strictly increasing.
        cka_to_final: Linear CKA of each capture with the final one (``cka_matrix(...)[-1]``),
            aligned with ``steps``.
        threshold: Smallest CKA to the final capture that counts as settled, in (0, 1].

    Returns:
        The settled step as an int, or ``None``.

    Raises:
        ValueError: If the lengths differ, ``steps`` does not increase, or ``threshold`` is not
            in (0, 1].

    Example:
        >>> settled_step([0, 100, 200, 300, 400], [0.2, 0.97, 0.9, 0.96, 1.0])
        300
        >>> settled_step([0, 100, 200], [0.2, 0.5, 1.0]) is None
        True
    """
    values = np.asarray(cka_to_final, dtype=np.float64)
    step_array = np.asarray(steps)
    if values.ndim != 1 or step_array.shape != values.shape:
        raise ValueError(
            f"Expected `cka_to_final` to have one value per step ({step_array.shape[0] if step_array.ndim else 0}), "
            f"but got shape {values.shape}."
        )
    if np.any(np.diff(step_array) <= 0):
        raise ValueError(f"Expected `steps` to be strictly increasing, but got {list(step_array)}.")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"Expected `threshold` to be in (0, 1], but got {threshold!r}.")
    below = np.flatnonzero(~(values >= threshold))  # nan counts as below
    first_settled = int(below[-1]) + 1 if below.size else 0
    if first_settled > len(values) - 2:  # the final capture alone (or none) is not settling
        return None
    return int(step_array[first_settled])


# Above this many dimensions knn_overlap finds neighbours by blocked brute force, not a k-d tree:
# at 2,000 and 10,000 clustered points a SciPy cKDTree query is faster up to about 32-d.
KDTREE_MAX_DIM = 32


def _centred(features: np.ndarray, name: str) -> np.ndarray:
    """A float64, column-centred copy of ``(N, D)`` ``features`` with ``N >= 2``; non-finite values
    count as 0 (with a warning)."""
    x = np.array(features, dtype=np.float64)  # always a copy: centred in place below
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(
            f"Expected `{name}` to be a 2-D (N, D) array with N >= 2 and D >= 1, but got shape {x.shape}."
        )
    finite = np.isfinite(x)
    if not finite.all():
        warnings.warn(
            f"{int((~finite).any(axis=1).sum())} of {x.shape[0]} rows of `{name}` hold NaN or inf; "
            f"treating those values as 0.",
            stacklevel=3,
        )
        x[~finite] = 0.0
    x -= x.mean(axis=0)
    return x


def _check_rows(features: np.ndarray, n_samples: int, name: str) -> None:
    if features.shape[0] != n_samples:
        raise ValueError(
            f"Expected `{name}` to hold the same {n_samples} points as the features it is compared with, "
            f"but got {features.shape[0]} rows."
        )


def _class_indices(values: np.ndarray, n_samples: int, num_classes: int, name: str) -> np.ndarray:
    """Checks ``values`` is ``(N,)`` integer class indices in ``[0, num_classes)``; returns them as intp."""
    values = np.asarray(values)
    if values.shape != (n_samples,):
        raise ValueError(f"Expected `{name}` to have shape ({n_samples},), but got {values.shape}.")
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"Expected `{name}` to be integer class indices, but got dtype {values.dtype}.")
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(
            f"Expected `{name}` to be in [0, {num_classes}), but got values in [{values.min()}, {values.max()}]."
        )
    return values.astype(np.intp)


def _cka(x: np.ndarray, y: np.ndarray, x_norm: float, y_norm: float) -> float:
    """CKA of centred ``x`` and ``y`` given ``||X^T X||_F^2`` and ``||Y^T Y||_F^2``."""
    if x_norm <= 0.0 or y_norm <= 0.0:
        return math.nan
    return min(1.0, _frobenius_cross(x, y) / math.sqrt(x_norm * y_norm))  # <= 1 but for rounding


def _uses_gram(n_samples: int, dim_a: int, dim_b: int) -> bool:
    """Whether ``||B^T A||_F^2`` costs less as ``<A A^T, B B^T>`` (``N^2 (D_a + D_b)``
    multiply-adds) than in feature space (``N D_a D_b``)."""
    return dim_a * dim_b > n_samples * (dim_a + dim_b)


def _frobenius_cross(a: np.ndarray, b: np.ndarray) -> float:
    """``||B^T A||_F^2 = <A A^T, B B^T>_F`` of ``(N, D_a)`` and ``(N, D_b)`` float64 arrays, in
    the cheaper form (:func:`_uses_gram`), ``SCORE_BLOCK_BYTES`` at a time.

    Feature space: ``B^T A`` a block of ``A``'s columns at a time (one ``A^T A`` when ``b is a``
    and it fits, which BLAS makes as a symmetric product at half the cost). Gram form: ``A A^T``
    and ``B B^T`` a block of rows at a time, their element-wise products summed.
    """
    n_samples, dim_a = a.shape
    dim_b = b.shape[1]
    if not _uses_gram(n_samples, dim_a, dim_b):
        if b is a and 8 * dim_a * dim_a <= SCORE_BLOCK_BYTES:
            gram = a.T @ a  # (D, D)
            return float(np.einsum("ij,ij->", gram, gram))
        columns = max(1, SCORE_BLOCK_BYTES // (8 * dim_b))
        total = 0.0
        for start in range(0, dim_a, columns):
            cross = b.T @ a[:, start : start + columns]  # (D_b, columns)
            total += float(np.einsum("ij,ij->", cross, cross))
        return total
    rows = max(1, SCORE_BLOCK_BYTES // (16 * n_samples))  # two (rows, N) blocks
    total = 0.0
    for start in range(0, n_samples, rows):
        gram_a = a[start : start + rows] @ a.T  # (rows, N)
        gram_b = gram_a if b is a else b[start : start + rows] @ b.T
        total += float(np.einsum("ij,ij->", gram_a, gram_b))
    return total


def _knn_overlap(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """:func:`knn_overlap` of centred float64 ``x`` and ``y`` with the same ``N``."""
    k = min(_check_k(k), x.shape[0] - 1)
    ours, theirs = _neighbours(x, k), np.sort(_neighbours(y, k), axis=1)  # (N, k) each
    # Each row's shared indices: is each index of `ours` in the same row of `theirs` (sorted)?
    rows = np.arange(len(ours))[:, None]  # (N, 1)
    position = np.minimum(_searchsorted_rows(theirs, ours), k - 1)  # (N, k)
    shared = theirs[rows, position] == ours  # (N, k)
    return float(shared.sum() / shared.size)


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"Expected `k` to be a positive integer, but got {k!r}.")
    return int(k)


def _searchsorted_rows(sorted_rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``np.searchsorted`` row by row, for ``(N, k)`` arrays of indices below ``N``, in one call:
    row ``i`` is offset by ``i * N`` so every row's values sort after the previous row's."""
    n_rows = len(sorted_rows)
    offset = (np.arange(n_rows) * n_rows)[:, None]  # (N, 1)
    flat = np.searchsorted((sorted_rows + offset).ravel(), (values + offset).ravel())  # (N k,)
    return flat.reshape(values.shape) - np.arange(n_rows)[:, None] * sorted_rows.shape[1]


def _neighbours(x: np.ndarray, k: int) -> np.ndarray:
    """``(N, k)`` indices of each point's ``k < N`` nearest neighbours in ``x``, itself excluded."""
    n_samples, dim = x.shape
    if dim <= KDTREE_MAX_DIM:
        from scipy.spatial import cKDTree

        _, found = cKDTree(x).query(x, k=k + 1)  # (N, k + 1), usually itself first
        itself = found == np.arange(n_samples)[:, None]  # (N, k + 1)
        # A duplicate of a point can come before it, or push it out: then drop the farthest instead.
        itself[~itself.any(axis=1), -1] = True
        return found[~itself].reshape(n_samples, k)
    squared = np.einsum("ij,ij->i", x, x)  # (N,)
    block_rows = max(1, min(n_samples, SCORE_BLOCK_BYTES // (8 * n_samples)))
    distances = np.empty((block_rows, n_samples))  # reused for every block
    found = np.empty((n_samples, k), dtype=np.intp)
    for start in range(0, n_samples, block_rows):
        stop = min(start + block_rows, n_samples)
        # ||x_i - x_j||^2 less the row's own ||x_i||^2, which leaves each row's order as it is.
        block = np.matmul(x[start:stop], x.T, out=distances[: stop - start])  # (B, N)
        block *= -2.0
        block += squared
        block[np.arange(stop - start), np.arange(start, stop)] = np.inf  # not its own neighbour
        found[start:stop] = np.argpartition(block, k - 1, axis=1)[:, :k]
    return found
