"""The series as data: its checkpoint form, what continues where, and its CSV."""

import numpy as np
import pytest
import torch
from helpers import read_csv

from lenet_lightning.analysis import Analysis, Capture
from lenet_lightning.capture import ProbeSet
from lenet_lightning.series import Series, write_scores_csv

PROBE = ProbeSet(torch.zeros(4, 2), np.array([0, 1, 0, 1]), ("a", "b"), np.array([1, 3, 5, 7]), 10)


def a_series():
    series = Series()
    for step in (0, 5):
        series.captured.add((step, "fit"))
        capture = Capture(step, "fit", np.full((4, 3), step, np.float32), PROBE.labels, 0.5)
        series.add(Analysis(capture, {"silhouette": 0.1}, np.full((4, 2), step, np.float32)), f"fc2_step{step:07d}")
    return series


def test_series_round_trips_through_its_checkpoint_form_with_pending_captures():
    pending = [Capture(10, "fit", np.ones((4, 3), np.float32), PROBE.labels, None)]
    state = a_series().to_state("fc2", "val", PROBE, pending)
    state = torch.serialization.pickle.loads(torch.serialization.pickle.dumps(state))
    series, requeue = Series.from_state(state, "fc2", "val", PROBE)
    assert series.captured == {(0, "fit"), (5, "fit")} and sorted(series.rows) == [(0, "fit"), (5, "fit")]
    np.testing.assert_array_equal(series.fit_layouts()[-1][1], np.full((4, 2), 5))
    assert [(c.key, c.features.shape, c.probe_acc) for c in requeue] == [((10, "fit"), (4, 3), None)]
    np.testing.assert_array_equal(requeue[0].labels, PROBE.labels)


@pytest.mark.parametrize(
    ("layer", "split", "probe", "reason"),
    [
        ("fc1", "val", PROBE, "layer 'fc2'"),
        ("fc2", "test", PROBE, "4 of 10 val inputs"),
        ("fc2", "val", ProbeSet(PROBE.inputs, PROBE.labels, ("a", "b"), np.array([0, 2, 4, 6]), 10), "is not this one"),
        ("fc2", "val", ProbeSet(PROBE.inputs, PROBE.labels, ("a", "b"), PROBE.index, 12), "is not this one"),
    ],
)
def test_series_from_another_layer_split_or_probe_does_not_continue(layer, split, probe, reason):
    state = a_series().to_state("fc2", "val", PROBE, [])
    assert reason in Series.from_state(state, layer, split, probe)


def test_series_from_an_older_checkpoint_does_not_continue():
    old = {"probe_index": torch.arange(4), "scores": {}, "layouts": {}, "captured_steps": [0]}
    assert "older version" in Series.from_state(old, "fc2", "val", PROBE)


def test_write_scores_csv_merges_with_rows_on_disk_by_tag(tmp_path):
    path = tmp_path / "separation.csv"
    write_scores_csv(path, [{"tag": "fc2_step0000010", "step": 10, "stage": "fit", "silhouette": 0.3}])
    write_scores_csv(path, list(a_series().rows.values()))
    rows = read_csv(path)
    assert [(row["tag"], row["stage"]) for row in rows] == [
        ("fc2_step0000000", "fit"), ("fc2_step0000005", "fit"), ("fc2_step0000010", "fit")]
    assert rows[2]["silhouette"] == "0.3" and rows[0]["knn_acc_2d"] == ""
