"""What watching fc2 costs: per capture, and for a whole fit.

Two measurements, each side by side in one invocation (the machine is shared and noisy):

* ``capture``: a real fit with the EmbeddingProjector on, its pipeline stages wrapped in timers of
  the process's CPU time (all threads, OpenMP's included): the probe forward pass, the projector
  write (sprite apart, written once), t-SNE, the separation scores, and the plot. The background
  analysis runs inline here, so that no training step's CPU time is counted in a capture's.
  Printed per capture: cold (the first, t-SNE from PCA) apart from warm (from the previous layout).
* ``fit``: the same ``python cli.py fit`` run with ``--embeddings.enabled true`` and ``false``,
  interleaved as subprocesses, wall time of each and the ratio on/off.

    python bench/bench_embeddings.py                      # both, Fashion-MNIST, 1 epoch at batch 50
    python bench/bench_embeddings.py --part capture --steps 600
    python bench/bench_embeddings.py --part fit --repeats 2 --schedule doubling
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def data_args(dataset: str) -> list[str]:
    if dataset == "fashion_mnist":
        return ["--data.dataset", "fashion_mnist", "--data.data_dir", FASHION_DIR, "--data.download", "false"]
    return ["--data.dataset", "digits"]


class InlineExecutor:
    """Runs each submitted job at once, in the caller's thread, and hands back its finished Future."""

    def __init__(self, **_: object) -> None:
        pass

    def submit(self, function, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(function(*args, **kwargs))
        return future

    def shutdown(self, **_: object) -> None:
        pass


def bench_capture(args: argparse.Namespace) -> None:
    import lightning.pytorch as pl
    import torch

    from lenet_lightning import embeddings
    from lenet_lightning.data import LeNetDataModule
    from lenet_lightning.embeddings import EmbeddingProjector
    from lenet_lightning.model import LeNetClassifier

    cpu: dict[str, list[float]] = collections.defaultdict(list)

    def timed(name, function):
        @functools.wraps(function)
        def wrapper(*a, **k):
            start = time.process_time()
            try:
                return function(*a, **k)
            finally:
                cpu[name].append(time.process_time() - start)
        return wrapper

    # Wrap what the callback runs, so what is timed is exactly what runs in a fit. `_capture` is the
    # main thread's share (forward + projector write), `_analyse` the background thread's.
    embeddings.ThreadPoolExecutor = InlineExecutor
    EmbeddingProjector._capture = timed("capture", EmbeddingProjector._capture)
    EmbeddingProjector._forward = timed("forward", EmbeddingProjector._forward)
    EmbeddingProjector._analyse = timed("analyse", EmbeddingProjector._analyse)
    embeddings.tsne.embed_2d = timed("t-SNE", embeddings.tsne.embed_2d)
    embeddings.tsne.separation_scores = timed("scores", embeddings.tsne.separation_scores)
    embeddings.projector.write_sprite = timed("sprite", embeddings.projector.write_sprite)

    pl.seed_everything(0)
    dataset = "fashion_mnist" if os.path.isdir(FASHION_DIR) and args.dataset == "fashion_mnist" else "digits"
    dm = LeNetDataModule(dataset, data_dir=FASHION_DIR, download=False, batch_size=args.batch_size)
    callback = EmbeddingProjector(every_n_train_steps=args.every, num_samples=args.num_samples, split="val")
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(max_steps=args.steps, accelerator="cpu", default_root_dir=root, callbacks=[callback],
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                             enable_checkpointing=False)
        trainer.fit(LeNetClassifier(lr=1e-3), dm)
    captures = len(cpu["t-SNE"])
    stages = {
        "forward": cpu["forward"],
        "projector write": [c - f - a for c, f, a in zip(cpu["capture"], cpu["forward"], cpu["analyse"], strict=True)],
        "t-SNE": cpu["t-SNE"],
        "scores": cpu["scores"],
        "plot": [a - t - s for a, t, s in zip(cpu["analyse"], cpu["t-SNE"], cpu["scores"], strict=True)],
    }
    stages["projector write"][0] -= cpu["sprite"][0]  # the sprite is written once: shown on its own
    print(f"\ncapture pipeline, {dataset}, {captures} captures of {args.num_samples} points at most "
          f"(torch {torch.__version__}, {os.cpu_count()} cpus, {torch.get_num_threads()} torch threads)")
    print(f"{'stage':<16}{'cold CPU s':>12}{'warm CPU s (mean)':>20}")
    for name, values in stages.items():
        print(f"{name:<16}{values[0]:>12.3f}{statistics.mean(values[1:]):>20.3f}")
    cold = sum(values[0] for values in stages.values())
    warm = sum(statistics.mean(values[1:]) for values in stages.values())
    print(f"{'sprite (once)':<16}{cpu['sprite'][0]:>12.3f}")
    print(f"{'total':<16}{cold:>12.3f}{warm:>20.3f}   (target: warm <= 2.5 s CPU at 2,000 points)")


def bench_fit(args: argparse.Namespace) -> None:
    common = [
        sys.executable, "cli.py", "fit", *data_args(args.dataset), "--data.batch_size", str(args.batch_size),
        "--model.lr", "0.001", "--trainer.max_epochs", str(args.epochs), "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--embeddings.every_n_train_steps", str(args.every),
        "--embeddings.num_samples", str(args.num_samples), "--embeddings.schedule", args.schedule,
    ]
    walls: dict[str, list[float]] = {"off": [], "on": []}
    captures = 0
    for repeat in range(args.repeats):
        for mode in ("off", "on"):
            with tempfile.TemporaryDirectory() as root:
                command = [*common, "--trainer.default_root_dir", root, "--embeddings.enabled", str(mode == "on")]
                start = time.perf_counter()
                subprocess.run(command, cwd=REPO, check=True, capture_output=True)
                walls[mode].append(time.perf_counter() - start)
                if mode == "on":
                    csv_path = next(Path(root).glob("lightning_logs/version_0/embeddings/separation.csv"))
                    captures = len(csv_path.read_text().splitlines()) - 1
            print(f"repeat {repeat}: {mode:>3} {walls[mode][-1]:7.1f} s", flush=True)
    off, on = statistics.median(walls["off"]), statistics.median(walls["on"])
    print(f"\nfit, {args.dataset}, {args.epochs} epoch(s) at batch {args.batch_size}, {captures} captures "
          f"({args.schedule}, every {args.every} steps) of {args.num_samples} points, plots on")
    print(f"callback off: {off:.1f} s   on: {on:.1f} s   on/off: {on / off:.2f}x   (target <= 1.5x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("capture", "fit", "both"), default="both")
    parser.add_argument("--dataset", choices=("fashion_mnist", "digits"), default="fashion_mnist")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--every", type=int, default=100, help="capture every N training steps")
    parser.add_argument("--schedule", choices=("fixed", "doubling"), default="fixed")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=500, help="training steps of the capture benchmark")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each fit in the fit benchmark")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved off/on pairs in the fit benchmark")
    args = parser.parse_args()
    if args.part in ("capture", "both"):
        bench_capture(args)
    if args.part in ("fit", "both"):
        bench_fit(args)


if __name__ == "__main__":
    main()
