"""Readers shared by the tests: what a run left on disk, through TensorBoard's own formats."""

import csv
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lenet_lightning import projector

REPO = Path(__file__).resolve().parents[1]
# The metadata columns of a capture of a model that predicts classes, in order.
CAPTURE_COLUMNS = ["label", "predicted", "correct", "confidence", "index",
                   "correct_since", "forgotten", "flips", "p_true"]


def read_projector(run_dir):
    """``{tensor_name: (tensor (N, D), metadata rows incl. header or None)}`` in config order, through
    the package's own reader of its entries."""
    entries = {}
    for info in projector.read_config(run_dir).embeddings:
        stored = projector.read_embedding(run_dir, info.tensor_name)
        rows = None
        if info.metadata_path:
            rows = [line.split("\t") for line in (Path(run_dir) / info.metadata_path).read_text().splitlines()]
        entries[info.tensor_name] = (stored.tensor, rows)
    return entries


def read_scalars(run_dir, tag):
    """``[(step, value), ...]`` of a scalar, read with TensorBoard's own event reader."""
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    if tag not in accumulator.Tags()["scalars"]:
        return []
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def read_csv(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def run_dirs(root):
    """Every ``lightning_logs/version_*`` folder under ``root``."""
    return sorted(Path(root).glob("lightning_logs/version_*"))


def blobs(n_per_class=50, n_classes=4, dim=10, spread=0.5, seed=0):
    """Well-separated Gaussian blobs: (N, dim) features and (N,) labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    features = centres[labels] + rng.normal(scale=spread, size=(len(labels), dim))
    return features.astype(np.float32), labels
