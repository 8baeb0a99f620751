"""t-SNE layouts of ``fc2`` activations and numbers for how well they separate by class.

Pure functions, numpy in and numpy out, so the projector callback can run them in a background
thread and the tests can run them on synthetic blobs.

The callback embeds one capture every ``every_n_train_steps``: the same probe images in the same
order, whose activations move a little between captures. :func:`embed_2d` therefore has two modes:
a short full t-SNE from a PCA initialisation for the first capture (100 iterations with early
exaggeration, 100 without), and a *warm start* from the previous capture's layout for every later
one: the previous layout shrunk to the scale of a PCA initialisation (std 1e-4), no early
exaggeration (the clusters are already placed), 30 iterations (75 above 5,000 points, whose map
takes longer to unfold again). The optimiser is openTSNE's: Barnes-Hut below 10,000 points, FFT
interpolation from there (linear in N), any number of iterations (scikit-learn's is at least 250),
and an exact nearest-neighbour search, the fastest for these 10-d logits. On a GPU,
:mod:`lenet_lightning.tsne_torch` runs the same recipe with the exact gradient (``device=``).

Measured with ``bench/bench_tsne.py`` (and ``bench_embeddings.py --part capture``, which prints the
same check for its last capture) on this project's 2-core machine, one thread, Fashion-MNIST probe
images after 0-1,100 Adam steps, against scikit-learn's defaults (converged, 1,000 iterations) on
the same points: at 10,000 points a warm capture takes 2.8-3.8 CPU s (scikit-learn's warm start with
its minimum 250 iterations: 18 s; its defaults: 100-120 s), 5-NN accuracy in the map within 0.006 of
the defaults' and trustworthiness within 0.001; the first capture 8-10 s, within 0.003 and 0.0005.
At 2,000 points a warm capture takes about 0.5 CPU s (scikit-learn's warm start: 1.4 s), 5-NN
accuracy within 0.004 and trustworthiness within 0.002 (30 iterations; 50 cost 0.7 s for the same
numbers, 10 lost 3 points of 5-NN accuracy). Shrinking the previous layout matters: keeping its
scale lost up to 1.3 points of 5-NN accuracy at the same cost, and a cold run from PCA flips and
rotates the map between captures.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from openTSNE import TSNEEmbedding, affinity, initialization
from threadpoolctl import threadpool_limits

from lenet_lightning import tsne_torch
from lenet_lightning.scores import finite_features

# Settings chosen with bench/bench_tsne.py (numbers in the module docstring).
COLD_ITERATIONS = 200  # the first capture: half with early exaggeration, half without
COLD_EXAGGERATION = 12.0  # openTSNE's and scikit-learn's default
WARM_ITERATIONS = 30  # later captures, from the previous layout, no exaggeration
WARM_ITERATIONS_LARGE = 75  # the same above LARGE_MAP points, whose maps take longer to unfold
LARGE_MAP = 5000
WARM_INIT_STD = 1e-4  # the previous layout is shrunk to this std, the scale of a PCA initialisation


def effective_perplexity(n_samples: int, perplexity: float) -> float:
    """Returns a perplexity scikit-learn's t-SNE accepts for ``n_samples`` points.

    scikit-learn requires ``perplexity < n_samples``. When the requested value does not fit (a
    small probe set in a smoke run), this warns and returns ``max(1, (n_samples - 1) / 3)``, the
    value whose ``3 * perplexity`` nearest neighbours, the neighbourhood t-SNE uses, are all
    the other points.

    Args:
        n_samples: Number of points to embed, at least 2.
        perplexity: Requested perplexity, positive.

    Returns:
        ``perplexity`` itself when it fits, else the smaller value above.

    Raises:
        ValueError: If ``n_samples < 2`` or ``perplexity`` is not a positive finite number.

    Example:
        >>> effective_perplexity(2000, 30.0)
        30.0
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     effective_perplexity(10, 30.0)
        3.0
    """
    if n_samples < 2:
        raise ValueError(f"Expected `n_samples` to be at least 2, but got {n_samples}.")
    if not (perplexity > 0 and math.isfinite(perplexity)):
        raise ValueError(f"Expected `perplexity` to be a positive finite number, but got {perplexity}.")
    if perplexity < n_samples:
        return float(perplexity)
    reduced = max(1.0, (n_samples - 1) / 3)
    warnings.warn(
        f"t-SNE perplexity {perplexity} needs more than {n_samples} points; using {reduced:.3g} instead.",
        stacklevel=2,
    )
    return reduced


def embed_2d(
    features: np.ndarray,
    *,
    init: np.ndarray | None = None,
    perplexity: float = 30.0,
    seed: int = 0,
    max_iter: int | None = None,
    n_threads: int | None = 1,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Embeds ``(N, D)`` features in 2-D with openTSNE (Barnes-Hut below 10,000 points, FFT above), or
    with exact t-SNE in torch on ``device``.

    With ``init=None`` this is a full run: PCA initialisation, ``COLD_ITERATIONS`` iterations, the
    first half with early exaggeration 12. With ``init``, the previous capture's layout of the same
    points in the same order, it is a warm start (see the module docstring): a sixth of the CPU time
    at the same map quality, and the map keeps its orientation from capture to capture.

    Non-finite feature values are replaced by 0 with a warning, so one diverged capture does not
    stop the callback. Too large a perplexity for ``N`` is lowered by :func:`effective_perplexity`.

    Args:
        features: ``(N, D)`` activations, ``N >= 2``.
        init: ``(N, 2)`` layout to start from, or ``None`` for a full run.
        perplexity: t-SNE perplexity, roughly the number of neighbours each point attends to.
        seed: Random state.
        max_iter: Iterations, at least 2 for a full run (half of them exaggerated), 1 for a warm
            start; ``None`` for ``COLD_ITERATIONS`` or ``WARM_ITERATIONS`` (``WARM_ITERATIONS_LARGE``
            above ``LARGE_MAP`` points).
        n_threads: Threads for this call only (openTSNE's ``n_jobs``, and OpenMP/BLAS limited to it);
            ``None`` for all cores. The default 1 suits the callback's background thread: it leaves
            the other cores to training and costs the least CPU time.
        device: ``None`` for openTSNE on the CPU; a device (the GPU the model trains on) for
            :func:`lenet_lightning.tsne_torch.embed_2d_exact` there, same iterations and phases. If
            that fails (out of memory, say), this warns and uses openTSNE.

    Returns:
        ``(N, 2)`` float32 layout.

    Raises:
        ValueError: If ``features`` is not a 2-D array with at least 2 rows, ``init`` is not a
            finite ``(N, 2)`` array, ``max_iter`` is too small or ``n_threads < 1``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(100, 10))
        >>> first = embed_2d(x)
        >>> embed_2d(x + 0.01, init=first).shape
        (100, 2)
    """
    features = finite_features(features)
    n_samples = features.shape[0]
    if n_threads is not None and (isinstance(n_threads, bool) or n_threads < 1):
        raise ValueError(f"Expected `n_threads` to be a positive integer or None, but got {n_threads}.")
    start = None if init is None else _warm_start(init, n_samples)
    smallest = 2 if start is None else 1
    if max_iter is not None and max_iter < smallest:
        raise ValueError(f"Expected `max_iter` to be at least {smallest}, but got {max_iter}.")
    perplexity = effective_perplexity(n_samples, perplexity)
    phases: list[tuple[int, float | None]]  # (iterations, early exaggeration or None)
    jobs = -1 if n_threads is None else n_threads
    # OpenMP limits apply to the calling thread only, so they do not reach the training thread; BLAS
    # limits are process-wide, but training runs in torch, not in numpy's BLAS.
    with threadpool_limits(limits=n_threads):
        if start is None:
            # PCA of constant or 1-D features is undefined (zero variance); random init is the fallback.
            usable_pca = features.shape[1] >= 2 and bool(np.ptp(features, axis=0).max() > 0)
            start = (initialization.pca(features, random_state=seed) if usable_pca
                     else initialization.random(n_samples, random_state=seed))
            total = COLD_ITERATIONS if max_iter is None else max_iter
            phases = [(total // 2, COLD_EXAGGERATION), (total - total // 2, None)]
        else:
            warm = WARM_ITERATIONS_LARGE if n_samples > LARGE_MAP else WARM_ITERATIONS
            phases = [(warm if max_iter is None else max_iter, None)]
        if device is not None:
            try:
                return tsne_torch.embed_2d_exact(features, start, perplexity=perplexity, phases=phases, device=device)
            except RuntimeError as err:  # CUDA's out-of-memory error is one
                warnings.warn(f"t-SNE on {device} failed ({err}); using openTSNE on the CPU for this map.",
                              stacklevel=2)
        affinities = affinity.PerplexityBasedNN(features, perplexity=perplexity, method="exact", n_jobs=jobs,
                                                random_state=seed, verbose=False)
        embedding = TSNEEmbedding(start, affinities, n_jobs=jobs, random_state=seed, verbose=False)
        for iterations, exaggeration in phases:
            embedding = embedding.optimize(iterations, exaggeration=exaggeration,
                                           momentum=0.5 if exaggeration else 0.8)
    return np.asarray(embedding, dtype=np.float32)  # (N, 2)


def _warm_start(init: np.ndarray, n_samples: int) -> np.ndarray | None:
    """Centres the previous layout, shrunk to ``WARM_INIT_STD``; ``None`` if it collapsed to a point."""
    start = np.asarray(init, dtype=np.float64)
    if start.shape != (n_samples, 2) or not np.isfinite(start).all():
        detail = "" if start.size == 0 or np.isfinite(start).all() else " with non-finite values"
        raise ValueError(
            f"Expected `init` to be a finite ({n_samples}, 2) layout, but got shape {start.shape}{detail}."
        )
    start = start - start.mean(axis=0)
    scale = float(start.std())
    if scale == 0.0:
        return None
    return (start / scale * WARM_INIT_STD).astype(np.float32)
