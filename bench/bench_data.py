"""Data path: the package's in-memory batches against torchvision's per-sample Fashion-MNIST path.

Target: ``LeNetDataModule``'s batches, normalised as the model sees them, come >= 20x faster in
images/s than torchvision's per-sample path, with no DataLoader workers. Over the Fashion-MNIST
training set, for each batch size (``--batch-sizes``, default 50 and 128), in this one process:

  torchvision, 0 workers   ``torchvision.datasets.FashionMNIST`` over the Debian files decompressed
                           into torchvision's layout (``<tmp>/FashionMNIST/raw/...``) with
                           ``Compose([ToTensor(), Normalize(mean, std)])`` and ``DataLoader(batch_size,
                           shuffle=True, num_workers=0)``: a PIL image and two transforms per sample,
                           then a collate per batch. The usual tutorial path.
  torchvision, 2 workers   the same with ``num_workers=2``, for reference; each pass starts its
                           workers (``persistent_workers`` is off by default), so that is timed too.
  LeNetDataModule          ``train_dataloader()`` after ``setup("fit")`` (``TensorBatchLoader``: one
                           gather per batch from a uint8 tensor) and ``normalize_images``, the float
                           batch the model standardises its inputs to.

Each run draws ``--images`` images in whole batches from the start of one shuffled epoch (at most
55,000, the datamodule's training split; torchvision's has 60,000). ``mean`` and ``std`` are the
datamodule's, so both paths give the same kind of tensors. Decoding the files (the datasets' constructors and ``setup``)
is a one-off cost, timed once and reported apart. Runs interleave, ``--repeats`` times, the order
reversed on odd repeats; the table gives medians and the ratio of medians to the 0-worker path.

Usage::

    python bench/bench_data.py                       # about 3 minutes on 2 cores
    python bench/bench_data.py --threads 1 --images 20000
    python bench/bench_data.py --dry-run             # a smoke check in seconds
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_framework import (  # also puts the repo on sys.path
    FASHION_DIR,
    HelpFormatter,
    machine_summary,
    parse_batch_sizes,
)
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from lenet_lightning.data import LeNetDataModule
from lenet_lightning.model import normalize_images

TORCHVISION_0, TORCHVISION_2, IN_MEMORY = "torchvision, 0 workers", "torchvision, 2 workers", "LeNetDataModule"
TRAIN_IMAGES = 55_000  # LeNetDataModule's training split: 60,000 less the 5,000 held out for validation
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def torchvision_layout(source: Path, root: Path) -> Path:
    """Decompresses the four gzipped idx files into ``root/FashionMNIST/raw``; returns ``root``.

    torchvision checks md5 sums only when it downloads, so the files just have to be there.
    """
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        with gzip.open(source / f"{name}.gz", "rb") as packed, open(raw / name, "wb") as unpacked:
            shutil.copyfileobj(packed, unpacked)
    return root


def torchvision_seconds(dataset: datasets.FashionMNIST, batch_size: int, num_batches: int, num_workers: int) -> float:
    """Seconds from starting an epoch (and its workers) to holding its ``num_batches``-th batch."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers)
    start = time.perf_counter()
    batches = iter(loader)
    for _ in range(num_batches):
        next(batches)  # (B, 1, 28, 28) float images, normalised; (B,) int64 labels
    seconds = time.perf_counter() - start
    del batches  # stops the workers, outside the clock
    return seconds


def in_memory_seconds(datamodule: LeNetDataModule, batch_size: int, num_batches: int) -> float:
    """Seconds for ``num_batches`` training batches from the datamodule, normalised as the model gets them."""
    datamodule.batch_size = batch_size
    batches = iter(datamodule.train_dataloader())
    start = time.perf_counter()
    for _ in range(num_batches):
        images, _ = next(batches)  # (B, 1, 28, 28) uint8
        normalize_images(images, datamodule.mean, datamodule.std)  # (B, 1, 28, 28) float, as the model makes it
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--batch-sizes", type=parse_batch_sizes, default="50,128",
                        help="comma-separated batch sizes")
    parser.add_argument("--images", type=int, default=50_000,
                        help=f"images drawn per run, in whole batches; at most {TRAIN_IMAGES}")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (medians reported)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the reference run; 0 skips it")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; None: torch's own choice")
    parser.add_argument("--data-dir", type=Path, default=Path(FASHION_DIR), help="folder with the gzipped idx files")
    parser.add_argument("--dry-run", action="store_true", help="1 repeat of 2,000 images: checks the script runs")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.images, args.repeats = 2_000, 1
    for name, minimum in (("images", max(args.batch_sizes)), ("repeats", 1), ("workers", 0), ("threads", 1)):
        value = getattr(args, name)
        if value is not None and value < minimum:
            parser.error(f"expected --{name} to be at least {minimum}, but got {value}")
    if args.images > TRAIN_IMAGES:
        parser.error(f"expected --images to be at most {TRAIN_IMAGES} (one epoch of both), but got {args.images}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine_summary(torch.device('cpu'))}")

    start = time.perf_counter()
    datamodule = LeNetDataModule("fashion_mnist", data_dir=str(args.data_dir), download=False)
    datamodule.setup("fit")
    setup_seconds = time.perf_counter() - start
    normalize = transforms.Compose([transforms.ToTensor(), transforms.Normalize((datamodule.mean,), (datamodule.std,))])
    variants = [TORCHVISION_0, IN_MEMORY] + ([TORCHVISION_2] if args.workers else [])
    rates: dict[tuple[int, str], list[float]] = {(bs, v): [] for bs in args.batch_sizes for v in variants}
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        root = torchvision_layout(args.data_dir, Path(tmp))
        start = time.perf_counter()
        dataset = datasets.FashionMNIST(str(root), train=True, transform=normalize)
        load_seconds = time.perf_counter() - start
        for repeat in range(args.repeats):
            for batch_size in args.batch_sizes:
                num_batches = args.images // batch_size
                for variant in variants if repeat % 2 == 0 else variants[::-1]:
                    if variant == IN_MEMORY:
                        seconds = in_memory_seconds(datamodule, batch_size, num_batches)
                    else:
                        workers = 0 if variant == TORCHVISION_0 else args.workers
                        seconds = torchvision_seconds(dataset, batch_size, num_batches, workers)
                    rates[batch_size, variant].append(num_batches * batch_size / seconds)
                    print(f"[repeat {repeat + 1}/{args.repeats}] batch {batch_size:>4} {variant:<24} "
                          f"{rates[batch_size, variant][-1]:10.0f} images/s", flush=True)

    print()
    print(f"Data path, Fashion-MNIST training set: {args.images} images per run, median of {args.repeats} "
          f"interleaved repeats; target LeNetDataModule >= 20x torchvision with 0 workers.")
    print(f"machine: {machine_summary(torch.device('cpu'))}")
    print(f"one-off decode: LeNetDataModule.setup('fit') {setup_seconds:.2f} s (from .gz, with the split and "
          f"mean/std), FashionMNIST(...) {load_seconds:.2f} s (from decompressed files)")
    if args.workers:
        variants[1:] = [TORCHVISION_2, IN_MEMORY]  # the reference next to the path it refers to
    header = f"{'batch':>5}  {'variant':<24} {'images/s':>10} {'x torchvision 0w':>17}  each repeat (images/s)"
    print(header)
    print("-" * len(header))
    for batch_size in args.batch_sizes:
        base = statistics.median(rates[batch_size, TORCHVISION_0])
        for variant in variants:
            runs = rates[batch_size, variant]
            ratio = statistics.median(runs) / base
            verdict = ("  meets" if ratio >= 20 else "  misses") if variant == IN_MEMORY else ""
            print(f"{batch_size:>5}  {variant:<24} {statistics.median(runs):>10.0f} {ratio:>16.1f}x  "
                  f"{' '.join(f'{r:.0f}' for r in runs)}{verdict}")


if __name__ == "__main__":
    main()
