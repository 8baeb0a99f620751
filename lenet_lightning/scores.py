"""Scores of one capture, numpy in and plain floats out: how well its points separate by class.

Pure functions with no Lightning and no torch, so the background analysis runs them in a thread,
the run-folder results (:mod:`lenet_lightning.results`) recompute them from the files a run wrote,
and the tests hold them against scikit-learn and against synthetic data with a known answer.
``python bench/bench_tsne.py --part scores`` measures them against scikit-learn's.
"""

from __future__ import annotations

import math
import warnings

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
