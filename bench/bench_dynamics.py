"""What the representation-dynamics numbers cost: per capture, and at the end of a series.

Per capture, the two calls the series recorder makes for every capture after the first:
:func:`lenet_lightning.scores.change_scores` (linear CKA to the previous and the first capture,
10-NN overlap with the previous) and :func:`lenet_lightning.scores.class_geometry` (NC1,
equinorm, equiangle, NCC agreement with predictions that are the labels with a tenth redrawn
at random, and self-duality for ``fc1``-like features, which feed a 10-way class layer). CPU
seconds (``time.process_time``, one BLAS thread, as the callback's background analysis runs),
the median of ``--repeats``, and peak numpy memory (tracemalloc) of one call, at 2,000 and
10,000 points for ``fc2``-like (10-d) and ``fc1``-like (1,024-d, ReLU) features, against the
issue's targets at 2,000 points (0.1 s for ``fc2``, 1 s for ``fc1``).
At the end of a series: :func:`lenet_lightning.scores.cka_matrix` over 20 and 60 captures
(2,000 points, 10-d; and 20 captures of 1,024-d), :func:`~lenet_lightning.scores.settled_step`
on its last row, and drawing plus rendering the two figures at 60 captures.

The features are synthetic, not a trained LeNet's: 10 Gaussian classes whose means drift and
separate from capture to capture while each point's own noise moves slowly, so neighbourhoods
and CKA change as in training. The cost of these functions depends on the shapes, not on the
values (bar the k-d tree used up to 32-d, which is faster on clustered points like these).

Usage::

    python bench/bench_dynamics.py               # about a minute on 2 cores
    python bench/bench_dynamics.py --repeats 5 --points 2000 10000
    python bench/bench_dynamics.py --dry-run     # a smoke check: small sizes, a few seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

try:
    from lenet_lightning import scores
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lenet_lightning import scores
from lenet_lightning import plots

NUM_CLASSES = 10
TARGETS = {10: 0.1, 1024: 1.0}  # CPU s per capture at 2,000 points, from issue 18


def synthetic_series(n_points: int, dim: int, n_captures: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``n_captures`` float32 ``(N, dim)`` captures of the same points and their ``(N,)`` labels.

    Class means drift and grow apart over the series; each point's noise is an AR(1) process
    (correlation 0.9 from capture to capture). 1,024-d features go through a ReLU, as ``fc1``'s.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n_points) % NUM_CLASSES
    means = rng.normal(size=(NUM_CLASSES, dim))
    noise = rng.normal(size=(n_points, dim))
    captures = []
    for index in range(n_captures):
        means = means + 0.3 * rng.normal(size=means.shape)
        noise = 0.9 * noise + np.sqrt(1 - 0.9**2) * rng.normal(size=noise.shape)
        features = (1.0 + index) ** 0.5 * means[labels] + noise  # (N, dim)
        if dim > 100:
            features = np.maximum(features, 0.0)
        captures.append(features.astype(np.float32))
    return captures, labels


def measure(fn: Callable[[], Any], repeats: int) -> tuple[Any, float, float]:
    """Runs ``fn`` ``repeats`` times on one BLAS thread; returns its result, the median CPU seconds
    and the peak traced memory (MB) of one more, traced, call."""
    with threadpool_limits(limits=1):
        cpu = []
        for _ in range(repeats):
            start = time.process_time()
            result = fn()
            cpu.append(time.process_time() - start)
        tracemalloc.start()
        try:
            fn()
            peak = tracemalloc.get_traced_memory()[1] / 2**20
        finally:
            tracemalloc.stop()
    return result, float(np.median(cpu)), peak


def bench_per_capture(sizes: list[int], dims: list[int], repeats: int, seed: int) -> None:
    """Prints the CPU s and peak MB of ``change_scores`` and ``class_geometry`` for one capture."""
    print(f"{'per capture':16s} {'N':>6s} {'D':>5s} {'CPU s':>7s} {'peak MB':>8s} {'target':>7s}  values")
    for n_points in sizes:
        for dim in dims:
            (first, previous, current), labels = synthetic_series(n_points, dim, 3, seed)
            rng = np.random.default_rng(seed)
            weight = rng.normal(size=(NUM_CLASSES, dim)) if dim > NUM_CLASSES else None  # fc2.weight-like
            predictions = np.where(rng.uniform(size=n_points) < 0.1, rng.integers(0, NUM_CLASSES, n_points), labels)
            change, change_cpu, change_peak = measure(
                lambda current=current, previous=previous, first=first: scores.change_scores(
                    current, previous=previous, first=first), repeats)
            geometry, geometry_cpu, geometry_peak = measure(
                lambda current=current, labels=labels, weight=weight, predictions=predictions: scores.class_geometry(
                    current, labels, NUM_CLASSES, class_weight=weight, predictions=predictions), repeats)
            total = change_cpu + geometry_cpu
            target = TARGETS.get(dim) if n_points == 2000 else None
            verdict = "" if target is None else f"{target:7.2f} {'ok' if total <= target else 'OVER'}"
            shown = {**change, **geometry}
            print(f"{'change_scores':16s} {n_points:6d} {dim:5d} {change_cpu:7.3f} {change_peak:8.1f} {'':7s}  "
                  + " ".join(f"{key} {value:.3f}" for key, value in change.items()))
            print(f"{'class_geometry':16s} {n_points:6d} {dim:5d} {geometry_cpu:7.3f} {geometry_peak:8.1f} {'':7s}  "
                  + " ".join(f"{key} {value:.3g}" for key, value in geometry.items()))
            print(f"{'both':16s} {n_points:6d} {dim:5d} {total:7.3f} {max(change_peak, geometry_peak):8.1f} "
                  f"{verdict}  ({len(shown)} numbers; an N x N float64 matrix would be "
                  f"{8 * n_points**2 / 2**20:.0f} MB)")


def bench_end_of_series(n_points: int, series: list[tuple[int, int]], repeats: int, seed: int) -> None:
    """Prints the CPU s and peak MB of ``cka_matrix`` and ``settled_step`` over whole series."""
    print(f"{'end of series':16s} {'N':>6s} {'D':>5s} {'C':>4s} {'CPU s':>7s} {'peak MB':>8s}  result")
    for dim, n_captures in series:
        captures, _ = synthetic_series(n_points, dim, n_captures, seed)
        matrix, cpu, peak = measure(lambda captures=captures: scores.cka_matrix(captures), repeats)
        steps = [100 * index for index in range(n_captures)]
        settled, settled_cpu, _ = measure(lambda steps=steps, row=matrix[-1]: scores.settled_step(steps, row), repeats)
        inputs = sum(capture.nbytes for capture in captures) / 2**20
        print(f"{'cka_matrix':16s} {n_points:6d} {dim:5d} {n_captures:4d} {cpu:7.3f} {peak:8.1f}  "
              f"CKA first-final {matrix[0, -1]:.3f}, settled at step {settled} "
              f"(settled_step {settled_cpu * 1e3:.2f} ms; the captures themselves {inputs:.0f} MB)")


def bench_figures(n_points: int, n_captures: int, seed: int) -> None:
    """Prints the CPU s of drawing and rendering (100 dpi) the CKA heatmap and the dynamics figure."""
    captures, labels = synthetic_series(n_points, NUM_CLASSES, n_captures, seed)
    matrix = scores.cka_matrix(captures)
    steps = [100 * index for index in range(n_captures)]
    columns: dict[str, list[float | None]] = {"cka_prev": [None], "knn_overlap_prev": [None], "nc1": []}
    for index, capture in enumerate(captures):
        if index:
            change = scores.change_scores(capture, previous=captures[index - 1], first=captures[0])
            columns["cka_prev"].append(change["cka_prev"])
            columns["knn_overlap_prev"].append(change["knn_overlap_prev"])
        columns["nc1"].append(scores.class_geometry(capture, labels, NUM_CLASSES)["nc1"])
    columns["cka_final"] = list(matrix[-1])
    settled = scores.settled_step(steps, matrix[-1])
    for name, draw in (("plot_cka_matrix", lambda: plots.plot_cka_matrix(steps, matrix)),
                       ("plot_dynamics", lambda: plots.plot_dynamics(steps, columns, settled))):
        start = time.process_time()
        image = plots.render_figure(draw())
        print(f"{name:16s} {n_captures:4d} captures: {time.process_time() - start:6.3f} CPU s to draw and render "
              f"a {image.shape[1]}x{image.shape[0]} image")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[2000, 10000], help="probe set sizes")
    parser.add_argument("--dims", type=int, nargs="+", default=[10, 1024], help="feature dimensions")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="small sizes, one repeat: checks the script runs")
    args = parser.parse_args(argv)
    end_points, series, figure_captures = 2000, [(10, 20), (10, 60), (1024, 20)], 60
    if args.dry_run:
        args.points, args.dims, args.repeats = [200], [10, 64], 1
        end_points, series, figure_captures = 200, [(10, 5), (64, 5)], 5
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, numpy {np.__version__}, "
          f"one BLAS thread, median of {args.repeats}; synthetic clustered features, not a trained LeNet")
    bench_per_capture(args.points, args.dims, args.repeats, args.seed)
    bench_end_of_series(end_points, series, args.repeats, args.seed)
    bench_figures(end_points, figure_captures, args.seed)


if __name__ == "__main__":
    main()
