"""One projector's series of captures as data: which were taken, their scores and 2-D layouts, the
captures still waiting for analysis, and their form in a checkpoint and in ``separation.csv``.

Captures are keyed by ``(step, stage)``, never by parsing tag strings. No Lightning here.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lenet_lightning.analysis import Analysis, Capture, CaptureKey
from lenet_lightning.atomic import write_atomically
from lenet_lightning.capture import ProbeSet

SCORE_COLUMNS = ("tag", "step", "stage", "probe_acc", "silhouette", "knn_acc_2d", "trustworthiness")
FEATURE_SCORES = ("probe_acc", "silhouette")  # known without a 2-D map: a gap has them at once
STATE_VERSION = 2


@dataclass
class Series:
    """The captures of one layer on one probe set.

    Example:
        >>> series = Series()
        >>> series.captured.add((0, "fit"))
        >>> sorted(Series.from_state(series.to_state("fc2", "val", None, []), "fc2", "val", None)[0].captured)
        [(0, 'fit')]
    """

    captured: set[CaptureKey] = field(default_factory=set)
    rows: dict[CaptureKey, dict[str, Any]] = field(default_factory=dict)
    layouts: dict[CaptureKey, np.ndarray] = field(default_factory=dict)

    def add(self, analysis: Analysis, tag: str) -> dict[str, Any]:
        """Keeps a finished analysis (its row, and its layout when it has one); returns what is new in
        the row, so that nothing is logged twice: all of it the first time, and the 2-D scores when a
        capture that came back with its silhouette only (a gap) comes back analysed.

        Example:
            >>> series, capture = Series(), Capture(5, "fit", np.zeros((4, 3)), np.zeros(4), None)
            >>> tag = "fc2_step0000005"
            >>> sorted(series.add(Analysis(capture, {"silhouette": 0.2}), tag))
            ['probe_acc', 'silhouette', 'stage', 'step', 'tag']
            >>> series.add(Analysis(capture, {"silhouette": 0.2, "knn_acc_2d": 0.9}, np.zeros((4, 2))), tag)
            {'knn_acc_2d': 0.9}
            >>> len(series.rows), series.rows[(5, "fit")]["knn_acc_2d"]
            (1, 0.9)
        """
        record = analysis.capture
        before = self.rows.get(record.key, {})
        row = {**before, "tag": tag, "step": record.step, "stage": record.stage, "probe_acc": record.probe_acc,
               **analysis.scores}
        self.rows[record.key] = row
        if analysis.layout is not None:
            self.layouts[record.key] = analysis.layout
        return {name: value for name, value in row.items() if name not in before}

    def fit_layouts(self) -> list[tuple[CaptureKey, np.ndarray]]:
        """The training captures' layouts, in step order."""
        return sorted((key, layout) for key, layout in self.layouts.items() if key[1] == "fit")

    def to_state(self, layer: str, split: str, probe: ProbeSet | None, pending: list[Capture]) -> dict[str, Any]:
        """The checkpoint form: tensors and plain types only (loadable with ``weights_only=True``)."""
        return {
            "version": STATE_VERSION,
            "layer": layer,
            "split": split,
            "split_size": None if probe is None else probe.split_size,
            "probe_index": None if probe is None else torch.from_numpy(np.asarray(probe.index, dtype=np.int64)),
            "captured": [list(key) for key in sorted(self.captured)],
            "rows": [dict(row) for _, row in sorted(self.rows.items())],
            "layouts": [[step, stage, torch.from_numpy(layout)]
                        for (step, stage), layout in sorted(self.layouts.items())],
            "pending": [{"step": p.step, "stage": p.stage, "probe_acc": p.probe_acc,
                         "features": torch.from_numpy(p.features)} for p in pending],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], layer: str, split: str, probe: ProbeSet | None
                   ) -> tuple[Series, list[Capture]] | str:
        """The series and its still-pending captures, or why they do not continue here: another
        version, layer, split, or probe set (``probe=None`` skips the probe check)."""
        if state.get("version") != STATE_VERSION:
            return "it is from an older version of the callback"
        saved = None if state["probe_index"] is None else torch.as_tensor(state["probe_index"]).numpy()
        if (state["layer"], state["split"]) != (layer, split) or (probe is not None and saved is not None and (
                state["split_size"] != probe.split_size or not np.array_equal(saved, probe.index))):
            size = "no" if saved is None else len(saved)
            return (f"its probe set ({size} of {state['split_size']} {state['split']} inputs, layer "
                    f"{state['layer']!r}) is not this one")
        series = cls(
            captured={(int(step), str(stage)) for step, stage in state["captured"]},
            rows={(int(row["step"]), str(row["stage"])): dict(row) for row in state["rows"]},
            layouts={(int(step), str(stage)): torch.as_tensor(layout).numpy()
                     for step, stage, layout in state["layouts"]},
        )
        labels = np.zeros(0, np.int64) if probe is None else probe.labels
        pending = [Capture(int(p["step"]), str(p["stage"]), torch.as_tensor(p["features"]).numpy(), labels,
                           p["probe_acc"]) for p in state["pending"]]
        return series, pending


def write_scores_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Writes ``rows`` to the CSV at ``path``, merged by ``tag`` with the rows already there (a resumed
    run keeps the earlier ones), sorted by step; atomically.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     write_scores_csv(Path(folder) / "s.csv", [{"tag": "fc2_step0000005", "step": 5, "probe_acc": 0.5}])
        ...     write_scores_csv(Path(folder) / "s.csv", [{"tag": "fc2_step0000000", "step": 0, "probe_acc": None}])
        ...     print((Path(folder) / "s.csv").read_text())
        tag,step,stage,probe_acc,silhouette,knn_acc_2d,trustworthiness
        fc2_step0000000,0,,,,,
        fc2_step0000005,5,,0.5,,,
        <BLANKLINE>
    """
    merged: dict[str, dict[str, Any]] = {}
    if path.is_file():
        with path.open(newline="") as stream:
            merged = {row["tag"]: row for row in csv.DictReader(stream)}
    merged.update({row["tag"]: row for row in rows})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SCORE_COLUMNS, extrasaction="ignore", restval="")
    writer.writeheader()
    for row in sorted(merged.values(), key=lambda r: (int(r["step"]), r["tag"])):
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    write_atomically(path, lambda stream: stream.write(text.getvalue().encode()))
