"""GPU readiness: ``cli.py fit`` on one CUDA device against a plain PyTorch loop there, side by side.

On a GPU, LeNet's step is a few hundred microseconds of kernels, so anything the framework does per
step on the host (hooks, ``self.log``, progress-bar refreshes, a host-device synchronisation, a
host-to-device copy of the batch) shows up in images/s. This script measures it, as
``bench_framework.py`` does on the CPU and with the same pieces, for batch sizes 128 and 512 by default:

  plain loop           ``LeNet`` on the device, fused Adam(lr=1e-3), ``F.cross_entropy``; the training split
                       moved to the device once and sliced there by the package's ``TensorBatchLoader``.
  cli.py fit           ``cli_main(["fit", ..., "--trainer.accelerator", "gpu", "--trainer.devices", "1"])``
                       with the projector callback off, no validation or checkpointing, progress bar and
                       TensorBoard logger on.
  cli.py fit, no bar   the same with ``--trainer.enable_progress_bar false`` (``--bar`` picks).

``--precision bf16-mixed`` goes to both (autocast around forward and loss in the plain loop). The clock
is read after ``torch.cuda.synchronize()`` at the end of step W and of step W+N, in both. It also
prints where the data is: the datamodule is meant to keep the training set on the device, so that no
host-to-device copy happens per step; :class:`bench_framework.StepTimer` records the device of the
training loader's dataset tensor and of the batch ``training_step`` receives.

Data: Fashion-MNIST from ``--data-dir`` when present, else scikit-learn's bundled digits (about 1,300
training images: at batch 512 an epoch is 3 steps, so epoch boundaries are part of what is timed).

Without a CUDA device it says so and exits 0; ``--device cpu`` runs the same comparison on the CPU as
a smoke check of the script (use ``bench_framework.py`` for CPU numbers).

Usage::

    python bench/bench_gpu.py                               # on a CUDA machine, 2-3 minutes
    python bench/bench_gpu.py --precision bf16-mixed --batch-sizes 128,512,2048
    python bench/bench_gpu.py --device cpu --dry-run        # smoke check anywhere
"""

from __future__ import annotations

import time

import torch
from bench_framework import (  # also puts the repo on sys.path
    PLAIN,
    StepTimer,
    build_parser,
    chosen_variants,
    machine_summary,
    print_table,
    quiet_lightning,
    run_interleaved,
    settle_args,
)

from lenet_lightning.data import LeNetDataModule


def report_data_placement(device: torch.device, plain_images: torch.Tensor, timers: list[StepTimer]) -> None:
    """Prints where the plain loop's and the fits' training data lived, and warns when it was not on ``device``."""
    datasets = sorted({timer.dataset_device for timer in timers})
    batches = sorted({timer.batch_device for timer in timers})
    print(f"data placement: {PLAIN} dataset on {plain_images.device}; cli.py fit: training loader's dataset "
          f"tensor on {', '.join(datasets)}, batch in training_step on {', '.join(batches)} ({len(timers)} fits)")
    if not all(is_on(name, device) for name in datasets):
        print(f"WARNING: the fit's training set is not on {device.type}: each step copies its batch to the device.")
    if not all(is_on(name, device) for name in batches):
        print(f"WARNING: training_step received batches that are not on {device.type}.")


def is_on(device_name: str, device: torch.device) -> bool:
    """Whether ``device_name`` (as :class:`StepTimer` wrote it) is a device of ``device``'s type."""
    try:
        return torch.device(device_name).type == device.type
    except RuntimeError:  # "unknown", "not a TensorBatchLoader"
        return False


def main(argv: list[str] | None = None) -> None:
    parser = build_parser(__doc__, batch_sizes="128,512", warmup=20, steps=300, repeats=5)
    parser.set_defaults(dataset="auto")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda: the GPU benchmark (exits 0 when there is none); cpu: a smoke check")
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true",
                        help="Lightning precision, mirrored by autocast in the plain loop")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("No CUDA device on this machine: nothing to measure. "
              "`--device cpu` runs the comparison on the CPU as a smoke check.")
        return
    settle_args(parser, args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    quiet_lightning(args.verbose)
    device = torch.device("cuda", torch.cuda.current_device()) if args.device == "cuda" else torch.device("cpu")
    print(f"machine: {machine_summary(device)}")

    datamodule = LeNetDataModule(args.dataset, data_dir=args.data_dir, download=False)
    datamodule.setup("fit")
    images, labels = (t.to(device) for t in datamodule.split_tensors("train"))  # on the device once, as the fit does
    variants = chosen_variants(args.bar)
    started = time.perf_counter()
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    timings, timers = run_interleaved(datamodule, images, labels, args, variants, accelerator=accelerator)

    print()
    print(f"GPU readiness, {args.dataset} ({len(labels)} training images), {device}, precision {args.precision}: "
          f"{args.steps} timed steps after {args.warmup} warm-up steps per run, median of {args.repeats} "
          f"interleaved repeats ({time.perf_counter() - started:.0f} s in all)")
    print(f"machine: {machine_summary(device)}")
    print_table(timings, args.batch_sizes, variants)
    report_data_placement(device, images, timers)


if __name__ == "__main__":
    main()
