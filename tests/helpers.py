"""Readers shared by the tests: what a run left on disk, through TensorBoard's own formats."""

import csv
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

REPO = Path(__file__).resolve().parents[1]
# The metadata columns of a capture of a model that predicts classes, in order.
CAPTURE_COLUMNS = ["label", "predicted", "correct", "confidence", "index",
                   "correct_since", "forgotten", "flips", "p_true"]


def read_projector(run_dir):
    """``{tensor_name: (tensor (N, D), metadata rows incl. header or None)}`` in config order."""
    run_dir = Path(run_dir)
    config = text_format.Parse((run_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    entries = {}
    for embedding in config.embeddings:
        path = run_dir / embedding.tensor_path
        if path.suffix == ".bytes":
            tensor = np.fromfile(path, dtype="<f4").reshape(tuple(embedding.tensor_shape))
        else:
            tensor = np.loadtxt(path, delimiter="\t", ndmin=2, dtype=np.float32)
        rows = None
        if embedding.metadata_path:
            rows = [line.split("\t") for line in (run_dir / embedding.metadata_path).read_text().splitlines()]
        entries[embedding.tensor_name] = (tensor, rows)
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

