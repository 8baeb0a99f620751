"""What watching fc2 costs: per capture, and for a whole fit.

Two measurements, each side by side in one invocation (the machine is shared and noisy):

* ``capture``: a real fit of LeNet, paused every ``--every`` steps by this script's own callback,
  which runs the capture pipeline through the package's public functions, as ``EmbeddingProjector``
  does, each stage timed in the process's CPU time (all threads, OpenMP's included): the probe
  forward pass (:func:`capture.forward_layer`), the projector write (:func:`projector.write_embedding`;
  the sprite apart, written once), t-SNE (:func:`tsne.embed_2d`, warm-started from the previous
  layout), the separation scores, and the plot. Printed per capture: cold (the first, t-SNE from
  PCA) apart from warm (from the previous layout); then the last map's 5-NN accuracy and
  trustworthiness against scikit-learn's converged t-SNE of the same points.
* ``fit``: the same ``python cli.py fit`` run with ``--embeddings.enabled true`` and ``false``,
  interleaved as subprocesses: wall time and peak resident memory of each, the ratios on/off, and
  the last capture's map (as the run wrote it) against scikit-learn's converged t-SNE.

    python bench/bench_embeddings.py                      # both, Fashion-MNIST, 1 epoch at batch 50
    python bench/bench_embeddings.py --part capture --steps 600
    python bench/bench_embeddings.py --part capture --num-samples 10000 --split test --steps 300
    python bench/bench_embeddings.py --part fit --num-samples 10000 --split test --fit-steps 300
    python bench/bench_embeddings.py --part fit --repeats 2 --schedule doubling
    python bench/bench_embeddings.py --dry-run            # a smoke check: digits, a few steps
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def data_args(dataset: str) -> list[str]:
    if dataset == "fashion_mnist":
        return ["--data.dataset", "fashion_mnist", "--data.data_dir", FASHION_DIR, "--data.download", "false"]
    return ["--data.dataset", "digits"]


def bench_capture(args: argparse.Namespace) -> None:
    import lightning.pytorch as pl
    import torch
    from threadpoolctl import threadpool_limits

    from lenet_lightning import capture, plots, projector, tsne
    from lenet_lightning.data import LeNetDataModule
    from lenet_lightning.model import LeNetClassifier
    from lenet_lightning.scores import separation_scores

    cpu: dict[str, list[float]] = collections.defaultdict(list)
    wall: dict[str, list[float]] = collections.defaultdict(list)

    def plain_forward(module: torch.nn.Module, _layer: str, inputs: torch.Tensor, device: torch.device) -> None:
        """What plain PyTorch does: ``model(x)`` in eval and inference mode, batched as the callback batches."""
        module.eval()
        with torch.inference_mode():
            for batch in inputs.to(device).split(capture.FORWARD_CHUNK):
                module(batch)
        module.train()

    def timed(name: str, function: Callable[..., Any], *a: Any, **k: Any) -> Any:
        start = time.process_time()
        try:
            return function(*a, **k)
        finally:
            cpu[name].append(time.process_time() - start)

    class Pipeline(pl.Callback):
        """The capture pipeline, stage by stage, every ``args.every`` steps and at step 0."""

        def __init__(self, probe: capture.ProbeSet, run_dir: Path) -> None:
            self.probe, self.run_dir, self.layout, self.features = probe, run_dir, None, None
            self.thumb: tuple[int, int] | None = None
            self.perplexity = tsne.effective_perplexity(len(probe.labels), 30.0)

        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.capture(trainer, pl_module)

        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
            if trainer.global_step % args.every == 0:
                self.capture(trainer, pl_module)

        def capture(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            probe, tag = self.probe, f"fc2_step{trainer.global_step:07d}"
            # The callback's forward pass and plain PyTorch's on the same images and batches, in
            # alternating order, so neither always runs first (warm caches, the CPU's clock).
            runs = [("plain forward", plain_forward), ("forward", capture.forward_layer)]
            for name, function in runs if len(cpu["forward"]) % 2 else runs[::-1]:
                start = time.perf_counter()
                result = timed(name, function, pl_module, "fc2", probe.inputs, pl_module.device)
                wall[name].append(time.perf_counter() - start)
                if name == "forward":
                    features, logits = result
            self.features = features
            metadata, _ = capture.probe_metadata(probe, logits)
            if self.thumb is None:  # the probe never changes: one sprite
                self.thumb = timed("sprite", projector.write_sprite, capture.sprite_images(probe.inputs),
                                   self.run_dir / "projector" / "sprite.png")
            timed("projector write", projector.write_embedding, self.run_dir, tag, features, metadata,
                  sprite_path="projector/sprite.png", sprite_thumb_size=self.thumb)
            self.layout = timed("t-SNE", tsne.embed_2d, features, init=self.layout, perplexity=self.perplexity,
                                seed=0)
            with threadpool_limits(limits=1):  # as in the callback's analysis thread
                timed("scores", separation_scores, features, self.layout, probe.labels)
            figure = timed("plot", plots.plot_embedding, self.layout, probe.labels, probe.class_names, title=tag)
            timed("plot", plots.save_figure, figure, self.run_dir / f"tsne_{tag}.png")

    pl.seed_everything(0)
    dataset = "fashion_mnist" if os.path.isdir(FASHION_DIR) and args.dataset == "fashion_mnist" else "digits"
    dm = LeNetDataModule(dataset, data_dir=FASHION_DIR, download=False, batch_size=args.batch_size)
    dm.setup("fit")
    probe = capture.probe_from_tensors(*dm.split_tensors(args.split), dm.class_names, args.num_samples, seed=0)
    with tempfile.TemporaryDirectory() as root:
        pipeline = Pipeline(probe, Path(root))
        trainer = pl.Trainer(max_steps=args.steps, accelerator="cpu", default_root_dir=root, logger=False,
                             callbacks=[pipeline], enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=0, enable_checkpointing=False)
        trainer.fit(LeNetClassifier(lr=1e-3), dm)
    # Two plot timings a capture (draw, save): summed.
    cpu["plot"] = [a + b for a, b in zip(cpu["plot"][::2], cpu["plot"][1::2], strict=True)]
    stages = {name: cpu[name] for name in ("forward", "projector write", "t-SNE", "scores", "plot")}
    flops = forward_flops(LeNetClassifier(), probe.inputs[: capture.FORWARD_CHUNK]) * len(probe.labels) \
        / min(len(probe.labels), capture.FORWARD_CHUNK)
    print(f"\ncapture pipeline, {dataset}, {len(cpu['t-SNE'])} captures of {len(probe.labels)} points "
          f"(torch {torch.__version__}, {os.cpu_count()} cpus, {torch.get_num_threads()} torch threads)")
    print(f"{'stage':<16}{'cold CPU s':>12}{'warm CPU s (mean)':>20}")
    for name, values in stages.items():
        print(f"{name:<16}{values[0]:>12.3f}{statistics.mean(values[1:]):>20.3f}")
    after = [name for name in stages if name != "forward"]
    cold = sum(stages[name][0] for name in after)
    warm = sum(statistics.mean(stages[name][1:]) for name in after)
    print(f"{'sprite (once)':<16}{cpu['sprite'][0]:>12.3f}")
    print(f"{'after forward':<16}{cold:>12.3f}{warm:>20.3f}   (targets at 10,000 points: first <= 15 CPU s, "
          "warm <= 5 CPU s)")
    print(f"\nforward pass of {len(probe.labels)} images, median of {len(cpu['forward'])} captures, interleaved:")
    for name in ("forward", "plain forward"):
        seconds = statistics.median(wall[name])
        print(f"  {name:<14} {statistics.median(cpu[name]):7.3f} CPU s {seconds:7.3f} wall s "
              f"{flops / seconds / 1e9:7.1f} GFLOP/s")
    ratio = statistics.median(cpu["forward"]) / statistics.median(cpu["plain forward"])
    print(f"  callback / plain: {ratio:.2f}x CPU (target <= 1.1x); {flops / len(probe.labels) / 1e6:.1f} MFLOP an "
          f"image (torch's FlopCounterMode); this machine's fp32 peak: {cpu_peak()}")
    if not args.no_reference:
        scores = separation_scores(pipeline.features, pipeline.layout, probe.labels)
        print(f"last capture: {against_sklearn(pipeline.features, probe.labels, scores)}")


def forward_flops(module: Any, inputs: Any) -> float:
    """Floating-point operations of one forward pass, counted by torch (a multiply-add is two)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    module.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(inputs)
    return float(counter.get_total_flops())


def cpu_peak() -> str:
    """The CPU's fp32 peak: usable cores x clock x FLOP a cycle of its widest vector unit (two FMA
    units: AVX-512 64, AVX2 32, SSE 16), from /proc/cpuinfo; an estimate, said with its inputs."""
    import re

    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    flags = set(re.search(r"^flags\s*:(.*)$", info, re.M).group(1).split()) if "flags" in info else set()
    width, unit = (64, "AVX-512") if "avx512f" in flags else (32, "AVX2") if "avx2" in flags else (16, "SSE")
    named = re.search(r"@\s*([\d.]+)\s*GHz", info)
    ghz = float(named.group(1)) if named else float(re.search(r"cpu MHz\s*:\s*([\d.]+)", info).group(1)) / 1e3
    cores = len(os.sched_getaffinity(0))
    return f"{cores * ghz * width:.0f} GFLOP/s ({cores} cores x {ghz:.2f} GHz x {width} FLOP/cycle, {unit})"


def run_measured(command: list[str]) -> tuple[float, float]:
    """Runs ``command`` from the repository root; returns its wall seconds and its own peak resident
    memory in MB (``wait4``'s rusage is the child's alone, unlike ``RUSAGE_CHILDREN``)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr.decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024  # Linux: kilobytes


def last_map_against_sklearn(run_dir: Path, rows: list[dict[str, str]]) -> str:
    """The map the user sees for the last capture (its scores in separation.csv) against scikit-learn's
    converged t-SNE (its defaults: 1,000 iterations) of the same points, read from the projector entry."""
    from lenet_lightning import projector

    last = rows[-1]
    stored = projector.read_embedding(run_dir, last["tag"])  # the package's own reader of its entries
    features, labels = stored.tensor, np.array(stored.metadata["label"])
    knn, trust = float(last["knn_acc_2d"]), float(last["trustworthiness"])
    codes = np.unique(labels, return_inverse=True)[1]
    scores = {"knn_acc_2d": knn, "trustworthiness": trust}
    return f"last capture ({last['tag']}): {against_sklearn(features, codes, scores)}"


def against_sklearn(features: np.ndarray, labels: np.ndarray, scores: dict[str, float]) -> str:
    """A map's 2-D ``scores`` against scikit-learn's converged t-SNE (its defaults: 1,000 iterations) of
    the same points: the issue's "equal quality" is both within 0.01."""
    from sklearn.manifold import TSNE

    from lenet_lightning.scores import separation_scores


    start = time.process_time()
    reference = TSNE(random_state=0, n_jobs=1).fit_transform(features)
    cpu = time.process_time() - start
    expected = separation_scores(features, reference, labels)
    gaps = scores["knn_acc_2d"] - expected["knn_acc_2d"], scores["trustworthiness"] - expected["trustworthiness"]
    return (f"map knn_acc_2d {scores['knn_acc_2d']:.4f}, trustworthiness {scores['trustworthiness']:.4f}; "
            f"scikit-learn's converged t-SNE of the same points ({cpu:.0f} CPU s): {expected['knn_acc_2d']:.4f}, "
            f"{expected['trustworthiness']:.4f}; differences {gaps[0]:+.4f}, {gaps[1]:+.4f} "
            f"(equal quality, both within 0.01: {'yes' if min(gaps) >= -0.01 else 'NO'})")

def bench_fit(args: argparse.Namespace) -> None:
    common = [
        sys.executable, "cli.py", "fit", *data_args(args.dataset), "--data.batch_size", str(args.batch_size),
        "--model.lr", "0.001", "--trainer.max_epochs", str(args.epochs), "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--embeddings.every_n_train_steps", str(args.every),
        "--embeddings.num_samples", str(args.num_samples), "--embeddings.schedule", args.schedule,
        "--embeddings.split", args.split,
        *(["--trainer.max_steps", str(args.steps)] if args.dry_run else []),
        *(["--trainer.max_steps", str(args.fit_steps)] if args.fit_steps and not args.dry_run else []),
    ]
    walls: dict[str, list[float]] = {"off": [], "on": []}
    peaks: dict[str, list[float]] = {"off": [], "on": []}
    captures, quality = 0, ""
    for repeat in range(args.repeats):
        for mode in ("off", "on"):
            with tempfile.TemporaryDirectory() as root:
                command = [*common, "--trainer.default_root_dir", root, "--embeddings.enabled", str(mode == "on")]
                wall, peak = run_measured(command)
                walls[mode].append(wall)
                peaks[mode].append(peak)
                if mode == "on":
                    run_dir = Path(root) / "lightning_logs" / "version_0"
                    rows = list(csv.DictReader((run_dir / "embeddings" / "separation.csv").open()))
                    captures = len(rows)
                    if repeat == 0 and not args.no_reference:
                        quality = last_map_against_sklearn(run_dir, rows)
            print(f"repeat {repeat}: {mode:>3} {walls[mode][-1]:7.1f} s, peak RSS {peaks[mode][-1]:6.0f} MB",
                  flush=True)
    off, on = statistics.median(walls["off"]), statistics.median(walls["on"])
    length = f"{args.fit_steps} steps" if args.fit_steps else f"{args.epochs} epoch(s)"
    print(f"\nfit, {args.dataset}, {length} at batch {args.batch_size}, {captures} captures "
          f"({args.schedule}, every {args.every} steps) of {args.num_samples} points ({args.split} split), "
          "plots on")
    print(f"callback off: {off:.1f} s   on: {on:.1f} s   on/off: {on / off:.2f}x   (target <= 1.25x)")
    peak_off, peak_on = statistics.median(peaks["off"]), statistics.median(peaks["on"])
    print(f"peak resident memory: off {peak_off:.0f} MB, on {peak_on:.0f} MB, on - off: {peak_on - peak_off:+.0f} MB"
          "   (target <= 500 MB)")
    if quality:
        print(quality)


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
    parser.add_argument("--fit-steps", type=int, default=0,
                        help="stop each fit of the fit benchmark after this many steps (0: the whole epochs)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved off/on pairs in the fit benchmark")
    parser.add_argument("--split", choices=("train", "val", "test"), default="val",
                        help="probe split (`--num-samples 10000 --split test`: the notebook's whole test set)")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip scikit-learn's converged t-SNE of the last capture (the quality reference)")
    parser.add_argument("--dry-run", action="store_true",
                        help="digits, 4 steps, 60 points, 1 repeat: checks the script runs")
    args = parser.parse_args()
    if args.dry_run:
        args.dataset, args.steps, args.every, args.num_samples, args.repeats = "digits", 4, 2, 60, 1
    if args.part in ("capture", "both"):
        bench_capture(args)
    if args.part in ("fit", "both"):
        bench_fit(args)


if __name__ == "__main__":
    main()
