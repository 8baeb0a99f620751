"""Benchmarks the projector's t-SNE: the notebook's settings, scikit-learn's defaults, our warm start.

Builds a realistic series of captures: trains :class:`lenet_lightning.model.LeNet` on real images
(Fashion-MNIST from ``/usr/share/datasets/fashion-mnist`` when present, else scikit-learn's
bundled digits upsampled to 28x28) with Adam, snapshotting the ``fc2`` logits of a fixed,
class-stratified probe set every ``--every`` steps. Then, for the last capture, it runs

  (a) the notebook: ``TSNE(perplexity=50, init='pca', max_iter=5000)`` (``--skip-notebook``),
  (b) scikit-learn's defaults (perplexity 30, PCA init, 1,000 iterations),
  (c) :func:`lenet_lightning.tsne.embed_2d` warm-started from the previous capture's layout, the
      layouts before it chained the same way from a full run on the first capture, as the
      callback does,

and prints CPU seconds (``time.process_time``, all threads), wall seconds, ``knn_acc_2d`` and
``trustworthiness`` side by side, and the ratios (c)/(b) and (c)/(a); also (d), ``embed_2d``'s full run
of the first capture, on the last capture's points.

``--part scores`` instead compares :func:`lenet_lightning.tsne.separation_scores` with
scikit-learn's ``silhouette_score`` plus ``trustworthiness`` on clustered 10-d logits of
``--score-points`` sizes: CPU seconds (one thread) and peak numpy memory (tracemalloc) side by
side, the ratios, and the largest difference in the values.

Usage::

    python bench/bench_tsne.py                      # about 2 minutes on 2 cores
    python bench/bench_tsne.py --skip-notebook --repeats 3 --cache /tmp/captures.npz
    python bench/bench_tsne.py --threads 0          # every t-SNE on all cores
    python bench/bench_tsne.py --part scores        # scores at 2,000 and 10,000 points, about 30 s
    python bench/bench_tsne.py --dry-run            # a smoke check of both parts
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.manifold import TSNE, trustworthiness
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

try:
    from lenet_lightning.model import LeNet
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lenet_lightning.model import LeNet
from lenet_lightning import tsne
from lenet_lightning.scores import separation_scores
from lenet_lightning.tsne import embed_2d

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """Reads a gzipped idx file (the MNIST format): magic, big-endian dims, then the data."""
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    with gzip.open(path, "rb") as file:
        raw = file.read()
    if raw[:2] != b"\x00\x00" or raw[2] not in dtypes:
        raise ValueError(f"Expected an idx file, but {path} starts with {raw[:4]!r}.")
    n_dims = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=n_dims, offset=4))
    return np.frombuffer(raw, dtype=dtypes[raw[2]], offset=4 + 4 * n_dims).reshape(shape)


def load_images() -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Returns ``(name, train_x, train_y, test_x, test_y)`` with images ``(N, 1, 28, 28)`` in [0, 1]."""
    if (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        splits = [
            read_idx(FASHION_DIR / f"{split}-{kind}-idx{dims}-ubyte.gz")
            for split in ("train", "t10k")
            for kind, dims in (("images", 3), ("labels", 1))
        ]
        train_x, train_y, test_x, test_y = splits
        train_x, test_x = (x[:, None].astype(np.float32) / 255.0 for x in (train_x, test_x))
        return "fashion-mnist", train_x, train_y.astype(np.int64), test_x, test_y.astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images[:, None].astype(np.float32) / 16.0)
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False).numpy()
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    images, labels = images[order], labels[order]
    split = len(labels) // 2  # half to train, half to probe
    return "digits (upsampled)", images[:split], labels[:split], images[split:], labels[split:]


def stratified_probe(labels: np.ndarray, n_points: int, seed: int) -> np.ndarray:
    """Indices of ``n_points`` items with every class equally represented (as far as it goes)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = n_points // len(classes)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    return np.sort(np.concatenate(picked))


def train_captures(args: argparse.Namespace) -> tuple[str, list[int], np.ndarray, np.ndarray]:
    """Trains LeNet and returns ``(dataset, steps, captures (T, N, 10), probe labels (N,))``."""
    name, train_x, train_y, test_x, test_y = load_images()
    probe = stratified_probe(test_y, args.points, args.seed)
    probe_x, probe_y = torch.from_numpy(test_x[probe]), test_y[probe]
    torch.manual_seed(args.seed)
    model = LeNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(args.seed)
    steps, captures = [], []

    def capture(step: int) -> None:
        model.eval()
        with torch.no_grad():
            captures.append(torch.cat([model(chunk) for chunk in probe_x.split(500)]).numpy())  # (N, 10)
        model.train()
        steps.append(step)

    capture(0)
    for step in range(1, args.steps + 1):
        batch = rng.integers(0, len(train_y), size=args.batch_size)
        loss = F.cross_entropy(model(torch.from_numpy(train_x[batch])), torch.from_numpy(train_y[batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            capture(step)
    return name, steps, np.stack(captures), probe_y


def timed(fn: Callable[[], np.ndarray], repeats: int) -> tuple[np.ndarray, float, float]:
    """Runs ``fn`` ``repeats`` times; returns its last result and the median CPU and wall seconds."""
    cpu, wall = [], []
    for _ in range(repeats):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = fn()
        cpu.append(time.process_time() - cpu0)
        wall.append(time.perf_counter() - wall0)
    return result, float(np.median(cpu)), float(np.median(wall))


def frame_change(before: np.ndarray, after: np.ndarray) -> float:
    """How much a map moved between captures: squared distance of the centred, unit-norm layouts.

    No rotation is factored out (unlike Procrustes), because a reader of the evolution figure
    sees a flipped or rotated map as a change. 0 is identical, 4 is the most.
    """
    a, b = (x - x.mean(axis=0) for x in (before.astype(np.float64), after.astype(np.float64)))
    return float(((a / np.linalg.norm(a) - b / np.linalg.norm(b)) ** 2).sum())


def bench_scores(sizes: list[int], seed: int, repeats: int) -> None:
    """Prints ``separation_scores`` against scikit-learn's scores: CPU s, peak MB, largest difference."""

    def reference(features: np.ndarray, layout: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return {"silhouette": silhouette_score(features, labels),
                "trustworthiness": trustworthiness(features, layout, n_neighbors=5)}

    def ours(features: np.ndarray, layout: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return separation_scores(features, layout, labels)

    print(f"{'scores':28s} {'CPU s':>7s} {'peak MB':>8s} {'silhouette':>11s} {'trust':>7s}")
    for n_points in sizes:
        rng = np.random.default_rng(seed)
        labels = np.arange(n_points) % 10
        features = (4.0 * rng.normal(size=(10, 10))[labels] + rng.normal(size=(n_points, 10))).astype(np.float32)
        layout = features[:, :2] + 0.3 * rng.normal(size=(n_points, 2))
        rows = {}
        for name, fn in (("scikit-learn", reference), ("separation_scores", ours)):
            with threadpool_limits(limits=1):
                values, cpu, _ = timed(partial(fn, features, layout, labels), repeats)
                tracemalloc.start()
                fn(features, layout, labels)
                peak = tracemalloc.get_traced_memory()[1] / 2**20
                tracemalloc.stop()
            rows[name] = (values, cpu, peak)
            print(f"N={n_points:<6d} {name:21s} {cpu:7.3f} {peak:8.1f} {values['silhouette']:11.7f} "
                  f"{values['trustworthiness']:7.5f}")
        (old, old_cpu, old_peak), (new, new_cpu, new_peak) = rows.values()
        difference = max(abs(old[key] - new[key]) for key in old)
        print(f"N={n_points:<6d} separation_scores / scikit-learn: CPU x{new_cpu / old_cpu:.3f}, "
              f"peak x{new_peak / old_peak:.3f}, largest difference {difference:.1e}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=2000, help="probe set size")
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--every", type=int, default=50, help="capture every this many steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="timing repeats (median reported)")
    parser.add_argument("--device", default="",
                        help="also time the exact torch t-SNE the callback runs on a GPU there (e.g. cuda)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OpenMP threads and n_jobs of every t-SNE (embed_2d's default 1; 0: all cores)")
    parser.add_argument("--skip-notebook", action="store_true", help="skip (a), 5000 iterations")
    parser.add_argument("--cache", type=Path, default=None, help=".npz to reuse captures from (or save to)")
    parser.add_argument("--part", choices=("tsne", "scores"), default="tsne",
                        help="tsne: (a)-(c) above; scores: separation_scores against scikit-learn's")
    parser.add_argument("--score-points", type=int, nargs="+", default=[2000, 10000],
                        help="sizes for --part scores")
    parser.add_argument("--dry-run", action="store_true",
                        help="both parts at 100-200 points, 20 steps, no notebook run: checks the script runs")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.points, args.steps, args.every, args.repeats, args.skip_notebook = 100, 20, 10, 1, True
        args.device = args.device or "cpu"  # the exact torch path too, on the CPU
        bench_scores([101, 200], args.seed, args.repeats)
    elif args.part == "scores":
        bench_scores(args.score_points, args.seed, args.repeats)
        return

    t0 = time.perf_counter()
    if args.cache is not None and args.cache.exists():
        saved = np.load(args.cache, allow_pickle=False)
        name, steps = str(saved["name"]), saved["steps"].tolist()
        captures, labels = saved["captures"], saved["labels"]
    else:
        name, steps, captures, labels = train_captures(args)
        if args.cache is not None:
            np.savez(args.cache, name=name, steps=steps, captures=captures, labels=labels)
    print(f"{name}: {len(steps)} captures of {captures.shape[1:]} at steps {steps} "
          f"({time.perf_counter() - t0:.0f} s)")

    threads = args.threads or None
    limits = threadpool_limits(limits=threads, user_api="openmp") if threads else None
    last = captures[-1]
    rows: dict[str, tuple[np.ndarray, float, float]] = {}
    if not args.skip_notebook:
        notebook = TSNE(perplexity=50, init="pca", max_iter=5000, random_state=args.seed, n_jobs=threads)
        rows["(a) notebook p50 5000 it"] = timed(lambda: notebook.fit_transform(last), args.repeats)
    default = TSNE(random_state=args.seed, n_jobs=threads)
    rows["(b) sklearn defaults"] = timed(lambda: default.fit_transform(last), args.repeats)

    # (c): the callback's chain; only the last, warm-started step is timed.
    layout = embed_2d(captures[0], seed=args.seed, n_threads=threads)
    chain_cpu, chain_change = [], []
    for features in captures[1:-1]:
        cpu0 = time.process_time()
        new_layout = embed_2d(features, init=layout, seed=args.seed, n_threads=threads)
        chain_cpu.append(time.process_time() - cpu0)
        chain_change.append(frame_change(layout, new_layout))
        layout = new_layout
    previous = layout
    warm = "(c) warm start"
    rows[warm] = timed(lambda: embed_2d(last, init=previous, seed=args.seed, n_threads=threads), args.repeats)
    rows["(d) first capture (cold)"] = timed(lambda: embed_2d(last, seed=args.seed, n_threads=threads),
                                             args.repeats)
    if args.device:  # the callback's GPU path: exact t-SNE in torch, warm from the same layout, and cold
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        rows[f"(e) exact warm, {args.device}"] = timed(
            lambda: (embed_2d(last, init=previous, seed=args.seed, device=args.device), sync())[0], args.repeats)
        rows[f"(e) exact cold, {args.device}"] = timed(
            lambda: (embed_2d(last, seed=args.seed, device=args.device), sync())[0], args.repeats)
    chain_change.append(frame_change(previous, rows[warm][0]))
    if limits is not None:
        limits.restore_original_limits()

    print(f"capture at step {steps[-1]}, threads={threads or 'all'}, median of {args.repeats}; (c): "
          f"{tsne.WARM_ITERATIONS} iterations ({tsne.WARM_ITERATIONS_LARGE} above {tsne.LARGE_MAP} points), "
          f"init_std={tsne.WARM_INIT_STD}; (d): {tsne.COLD_ITERATIONS} iterations")
    print(f"{'':26s} {'CPU s':>7s} {'wall s':>7s} {'knn_acc_2d':>11s} {'trust':>7s} {'silhouette':>11s}")
    scores = {}
    for label, (result, cpu, wall) in rows.items():
        scores[label] = separation_scores(last, result, labels)
        s = scores[label]
        print(f"{label:26s} {cpu:7.2f} {wall:7.2f} {s['knn_acc_2d']:11.4f} {s['trustworthiness']:7.4f} "
              f"{s['silhouette']:11.4f}")
    print(f"(c) CPU s of the earlier warm steps: {' '.join(f'{c:.2f}' for c in chain_cpu)}")
    print(f"(c) frame-to-frame change, each step: {' '.join(f'{c:.3f}' for c in chain_change)}")
    ours = [warm, "(d) first capture (cold)", *[label for label in rows if label.startswith("(e)")]]
    for mine in ours:
        for base in [label for label in rows if label not in ours]:
            knn = scores[mine]["knn_acc_2d"] - scores[base]["knn_acc_2d"]
            trust = scores[mine]["trustworthiness"] - scores[base]["trustworthiness"]
            print(f"{mine} / {base}: CPU x{rows[mine][1] / rows[base][1]:.3f}, "
                  f"wall x{rows[mine][2] / rows[base][2]:.3f}, knn_acc_2d {knn:+.4f}, trustworthiness {trust:+.4f} "
                  f"(equal quality, both within 0.01: {'yes' if min(knn, trust) >= -0.01 else 'NO'})")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
