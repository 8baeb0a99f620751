"""Framework cost: ``cli.py fit`` against a plain PyTorch loop over the same LeNet, data and batch size.

Target: the real CLI with the projector callback switched off trains at >= 0.95x the images/s of a
plain loop, i.e. Lightning's per-step bookkeeping is lost in the step's own compute. For each batch
size (``--batch-sizes``, default 50 and 128) it runs, in this one process:

  plain loop       ``LeNet()`` in train mode, ``Adam(lr=1e-3, fused=True)`` (the package's optimizer),
                   ``F.cross_entropy`` on the logits;
                   batches from the package's own ``TensorBatchLoader`` over the datamodule's
                   training split, standardised by ``normalize_images``: the very tensors the
                   trainer receives.
  cli.py fit       ``cli_main(["fit", ...])``: same dataset, batch size and lr, ``--embeddings.enabled
                   false``, no validation, no checkpointing, ``--trainer.accelerator cpu``, and
                   Lightning's defaults otherwise (progress bar, TensorBoard logger under a temporary
                   ``default_root_dir``), because that is what users run.
  cli.py fit, no bar   the same with ``--trainer.enable_progress_bar false`` (``--bar`` picks).

Timing: every run takes ``--warmup`` untimed steps, then ``--steps`` timed ones. Inside the fit,
:class:`StepTimer` (a callback added through ``--trainer.callbacks``) reads the clock at the end of
optimizer step W and at the end of step W+N, so fit start-up (parsing, decoding the dataset, building
the trainer) and teardown are out and every hook, ``self.log`` and progress-bar refresh of the N
steps is in; the plain loop is clocked at the same two points. The default N of 50 equals Lightning's
``log_every_n_steps``, so the window holds one logger write, the share a long run pays.

The machine is shared and noisy, so runs interleave (plain, cli, no bar, then the reverse order, ...)
``--repeats`` times, and the table gives the median images/s of each, the ratio of medians, and the
per-step overhead: median seconds per step of the fit minus the plain loop's, in microseconds (that is
``(1 / cli_rate - 1 / plain_rate) * batch_size`` when every batch is full).

Usage::

    python bench/bench_framework.py                     # 10 minutes on 2 busy cores (2.5 with --threads 1)
    python bench/bench_framework.py --threads 1 --repeats 5
    python bench/bench_framework.py --dry-run           # a smoke check in well under a minute
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import lightning
import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

try:
    from lenet_lightning.cli import cli_main
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lenet_lightning.cli import cli_main
from lenet_lightning.data import EpochShuffle, LeNetDataModule, TensorBatchLoader
from lenet_lightning.model import LeNet, normalize_images

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
LR = 1e-3
PLAIN, CLI, CLI_NO_BAR = "plain PyTorch loop", "cli.py fit", "cli.py fit, no bar"


@dataclass(frozen=True)
class Timing:
    """One run's timed window: ``steps`` optimizer steps over ``images`` images in ``seconds``."""

    steps: int
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def step_s(self) -> float:
        return self.seconds / self.steps


Timings = dict[tuple[int, str], list[Timing]]  # (batch size, variant) -> one Timing per repeat


class StepTimer(Callback):
    """Clocks optimizer steps ``warmup_steps + 1`` to ``max_steps`` of a fit and notes where the data lives.

    The clock reads are synchronised with the device (``torch.cuda.synchronize``) so queued GPU work
    is counted; between them nothing is synchronised, as in a normal run.

    Args:
        warmup_steps: Optimizer steps left out of the timing.

    Raises:
        ValueError: ``warmup_steps`` is negative, or (at setup) not below ``max_steps``.

    Example:
        >>> timer = '[{"class_path": "bench_framework.StepTimer", "init_args": {"warmup_steps": 5}}]'
        >>> cli_main(["fit", "--trainer.max_steps", "55", "--trainer.callbacks", timer])  # doctest: +SKIP
    """

    def __init__(self, warmup_steps: int = 0) -> None:
        if warmup_steps < 0:
            raise ValueError(f"Expected `warmup_steps` to be >= 0, but got {warmup_steps}.")
        self.warmup_steps = warmup_steps
        self.timing: Timing | None = None  # set at the end of the last step
        self.dataset_device = "unknown"  # where the training loader's tensors live
        self.batch_device = "unknown"  # where the first batch is when training_step gets it
        self._start: float | None = None
        self._images = 0

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not 0 <= self.warmup_steps < trainer.max_steps:
            raise ValueError(f"Expected `warmup_steps` to be below `max_steps` ({trainer.max_steps}), "
                             f"but got {self.warmup_steps}.")

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        images = getattr(trainer.train_dataloader, "images", None)  # TensorBatchLoader's dataset tensor
        self.dataset_device = str(images.device) if isinstance(images, torch.Tensor) else "not a TensorBatchLoader"
        if self.warmup_steps == 0:
            self._start = device_clock(pl_module.device)

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.batch_device == "unknown":  # after on_after_batch_transfer: what training_step sees
            self.batch_device = str(batch[0].device)

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step  # optimizer steps done, this one included
        if step == self.warmup_steps and self._start is None:
            self._start = device_clock(pl_module.device)
            return
        if self._start is None:
            return
        self._images += len(batch[1])  # an epoch's last batch can be short
        if step == trainer.max_steps:
            seconds = device_clock(pl_module.device) - self._start
            self.timing = Timing(steps=step - self.warmup_steps, images=self._images, seconds=seconds)


def device_clock(device: torch.device) -> float:
    """``time.perf_counter()`` once ``device`` has finished the work queued on it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def endless(loader: TensorBatchLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches, epoch after epoch, reshuffled each epoch as the trainer does."""
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def plain_loop(datamodule: LeNetDataModule, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
               warmup: int, steps: int, precision: str = "32-true", seed: int = 42) -> Timing:
    """Times ``steps`` plain PyTorch training steps after ``warmup`` untimed ones.

    ``images`` (uint8, (N, 1, 28, 28)) and ``labels`` (N,) are sliced where they are, so pass them on
    the device to train on; ``precision="bf16-mixed"`` autocasts forward and loss, as Lightning does.
    """
    device = images.device
    torch.manual_seed(seed)
    model = LeNet().to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=True)  # as LeNetClassifier configures it
    sampler = EpochShuffle(len(labels), shuffle=True, seed=seed, pad=True)
    batches = endless(TensorBatchLoader(images, labels, batch_size, sampler))
    bf16 = precision == "bf16-mixed"
    start = device_clock(device) if warmup == 0 else 0.0
    timed_images = 0
    for step in range(1, warmup + steps + 1):
        batch_images, batch_labels = next(batches)
        inputs = normalize_images(batch_images, datamodule.mean, datamodule.std)  # (B, 1, 28, 28) float
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(inputs), batch_labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step == warmup:
            start = device_clock(device)
        elif step > warmup:
            timed_images += len(batch_labels)
    return Timing(steps=steps, images=timed_images, seconds=device_clock(device) - start)


def cli_args(*, dataset: str, data_dir: str, batch_size: int, warmup: int, steps: int, root_dir: str,
             progress_bar: bool, accelerator: str = "cpu", precision: str = "32-true") -> list[str]:
    """The ``cli.py fit`` command line of one timed run, with :class:`StepTimer` added as a callback."""
    timer = {"class_path": f"{StepTimer.__module__}.{StepTimer.__qualname__}",  # __main__.StepTimer as a script
             "init_args": {"warmup_steps": warmup}}
    return [
        "fit",
        "--data.dataset", dataset,
        "--data.data_dir", data_dir,
        "--data.download", "false",
        "--data.batch_size", str(batch_size),
        "--model.lr", str(LR),
        "--embeddings.enabled", "false",
        "--trainer.accelerator", accelerator,
        "--trainer.devices", "1",
        "--trainer.precision", precision,
        "--trainer.max_steps", str(warmup + steps),
        "--trainer.limit_val_batches", "0",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_checkpointing", "false",
        "--trainer.enable_progress_bar", str(progress_bar).lower(),
        "--trainer.default_root_dir", root_dir,
        "--trainer.callbacks", json.dumps([timer]),
    ]


def cli_fit(args: list[str]) -> tuple[Timing, StepTimer]:
    """Runs ``cli_main(args)`` in this process; returns the timing and the :class:`StepTimer` that took it."""
    with mock.patch.object(sys, "argv", sys.argv[:1]):  # this script's own options are not the CLI's
        cli = cli_main(args)
    timer = next(callback for callback in cli.trainer.callbacks if isinstance(callback, StepTimer))
    if timer.timing is None:
        raise RuntimeError(f"The fit ended before its last step was timed: {args}")
    return timer.timing, timer


def quiet_lightning(verbose: bool) -> None:
    """Hides Lightning's per-fit info lines (seed, devices, model summary) unless ``verbose``."""
    level = logging.INFO if verbose else logging.WARNING
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(level)
    # Lightning 2.6 on torch >= 2.10 calls a deprecated pytree API once per fit (as in pyproject.toml).
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def machine_summary(device: torch.device) -> str:
    """One line: CPUs, torch threads, library versions, device and load average."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"{cpus} CPUs, torch {torch.__version__} with {torch.get_num_threads()} intra-op threads, "
            f"lightning {lightning.__version__}, python {platform.python_version()}, device {device} ({name}), "
            f"load average {load}")


def print_table(timings: Timings, batch_sizes: list[int], variants: list[str], target: float | None = None) -> None:
    """Median images/s per (batch size, variant), ratio to the plain loop, and per-step overhead."""
    header = (f"{'batch':>5}  {'variant':<20} {'images/s':>9} {'x plain':>8} {'ms/step':>8} "
              f"{'overhead us/step':>16}  each repeat (images/s)")
    print(header)
    print("-" * len(header))
    for batch_size in batch_sizes:
        plain_rate = statistics.median(t.images_per_s for t in timings[batch_size, PLAIN])
        plain_step = statistics.median(t.step_s for t in timings[batch_size, PLAIN])
        for variant in variants:
            runs = timings[batch_size, variant]
            rate, step = statistics.median(t.images_per_s for t in runs), statistics.median(t.step_s for t in runs)
            ratio = rate / plain_rate
            overhead = "" if variant == PLAIN else f"{(step - plain_step) * 1e6:+16.0f}"
            verdict = "" if target is None or variant == PLAIN else ("  meets" if ratio >= target else "  misses")
            print(f"{batch_size:>5}  {variant:<20} {rate:>9.0f} {ratio:>7.3f}x {step * 1e3:>8.2f} "
                  f"{overhead:>16}  {' '.join(f'{t.images_per_s:.0f}' for t in runs)}{verdict}")


def run_interleaved(datamodule: LeNetDataModule, images: torch.Tensor, labels: torch.Tensor,
                    args: argparse.Namespace, variants: list[str], accelerator: str) -> tuple[Timings, list[StepTimer]]:
    """Every variant at every batch size, ``args.repeats`` times, the order reversed on odd repeats."""
    timings: Timings = {(bs, variant): [] for bs in args.batch_sizes for variant in variants}
    timers: list[StepTimer] = []
    with tempfile.TemporaryDirectory(prefix="bench_framework_") as tmp:
        for repeat in range(args.repeats):
            for batch_size in args.batch_sizes:
                for variant in variants if repeat % 2 == 0 else variants[::-1]:
                    if variant == PLAIN:
                        timing = plain_loop(datamodule, images, labels, batch_size, args.warmup, args.steps,
                                            args.precision)
                    else:
                        root_dir = os.path.join(tmp, f"run{len(timers)}")
                        timing, timer = cli_fit(cli_args(
                            dataset=args.dataset, data_dir=args.data_dir, batch_size=batch_size, warmup=args.warmup,
                            steps=args.steps, root_dir=root_dir, progress_bar=variant == CLI, accelerator=accelerator,
                            precision=args.precision))
                        timers.append(timer)
                    timings[batch_size, variant].append(timing)
                    print(f"[repeat {repeat + 1}/{args.repeats}] batch {batch_size:>4} {variant:<20} "
                          f"{timing.images_per_s:8.0f} images/s", flush=True)
    return timings, timers


def parse_batch_sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return sizes


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows the script's docstring as written, and every option's default."""


def build_parser(description: str, batch_sizes: str, warmup: int, steps: int, repeats: int) -> argparse.ArgumentParser:
    """The options every framework-cost script shares; ``bench_gpu.py`` adds its own."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    parser.add_argument("--batch-sizes", type=parse_batch_sizes, default=batch_sizes,
                        help="comma-separated training batch sizes")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed steps at the start of every run")
    parser.add_argument("--steps", type=int, default=steps, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=repeats, help="interleaved repeats (medians reported)")
    parser.add_argument("--bar", choices=("on", "off", "both"), default="both",
                        help="cli.py fit with the progress bar on (Lightning's default), off, or both")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads; None: torch's own choice. Under load 1 can beat 2")
    parser.add_argument("--dataset", default="fashion_mnist", choices=("auto", "fashion_mnist", "mnist", "digits"),
                        help="auto: fashion_mnist when --data-dir holds it, else scikit-learn's bundled digits")
    parser.add_argument("--data-dir", default=FASHION_DIR, help="folder with the dataset's idx files")
    parser.add_argument("--verbose", action="store_true", help="keep Lightning's per-fit info lines")
    parser.add_argument("--dry-run", action="store_true", help="1 repeat of 1 + 2 steps: checks the script runs")
    return parser


def chosen_variants(bar: str) -> list[str]:
    return [PLAIN] + {"on": [CLI], "off": [CLI_NO_BAR], "both": [CLI, CLI_NO_BAR]}[bar]


def settle_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Applies ``--dry-run``, resolves ``--dataset auto`` and checks the counts."""
    if args.dataset == "auto":
        try:
            LeNetDataModule("fashion_mnist", data_dir=args.data_dir, download=False)
            args.dataset = "fashion_mnist"
        except FileNotFoundError:
            args.dataset = "digits"
    if args.dry_run:
        args.warmup, args.steps, args.repeats = 1, 2, 1
    for name, minimum in (("warmup", 0), ("steps", 1), ("repeats", 1), ("threads", 1)):
        value = getattr(args, name)
        if value is not None and value < minimum:
            parser.error(f"expected --{name} to be at least {minimum}, but got {value}")


def main(argv: list[str] | None = None) -> None:
    parser = build_parser(__doc__, batch_sizes="50,128", warmup=5, steps=50, repeats=3)
    args = parser.parse_args(argv)
    args.precision = "32-true"
    settle_args(parser, args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    quiet_lightning(args.verbose)
    device = torch.device("cpu")
    print(f"machine: {machine_summary(device)}")

    datamodule = LeNetDataModule(args.dataset, data_dir=args.data_dir, download=False)
    datamodule.setup("fit")
    images, labels = datamodule.split_tensors("train")  # what train_dataloader() slices on the CPU
    variants = chosen_variants(args.bar)
    started = time.perf_counter()
    timings, _ = run_interleaved(datamodule, images, labels, args, variants, accelerator="cpu")

    print()
    print(f"Framework cost, {args.dataset} ({len(labels)} training images), CPU: {args.steps} timed steps after "
          f"{args.warmup} warm-up steps per run, median of {args.repeats} interleaved repeats "
          f"({time.perf_counter() - started:.0f} s in all); target cli.py fit >= 0.95x plain.")
    print(f"machine: {machine_summary(device)}")
    print_table(timings, args.batch_sizes, variants, target=0.95)


if __name__ == "__main__":
    main()
