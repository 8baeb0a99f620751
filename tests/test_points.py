import csv
import itertools
import re
import statistics

import numpy as np
import pytest
from PIL import Image

from lenet_lightning import points
from lenet_lightning.atomic import TEMPORARY_NAME
from lenet_lightning.points import (
    NOT_LEARNED,
    POINT_COLUMNS,
    POINTS_CSV_COLUMNS,
    SEQUENCE_COLUMN,
    data_map_regions,
    hardest,
    history_from_metadata,
    next_point_columns,
    point_columns_from_history,
    point_columns_from_metadata,
    point_summary,
    sprite_thumbnails,
    trajectory_captures,
    trajectory_points,
    true_class_probability,
    write_layouts,
    write_points_csv,
)
from lenet_lightning.projector import write_sprite

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five"]

# Four points, all of class 0, over five captures, with their stories worked out by hand.
STEPS = np.array([0, 10, 20, 30, 40])
LABELS = np.array([0, 0, 0, 0])
PREDICTED = np.array([
    # never learned, learned-forgotten-relearned, always right, learned then forgotten at the end
    [1, 1, 0, 0],
    [2, 0, 0, 0],
    [1, 0, 0, 0],
    [1, 2, 0, 0],
    [3, 0, 0, 5],
])  # fmt: skip
EXPECTED_CORRECT_SINCE = [
    [-1, -1, 0, 0],
    [-1, 10, 0, 0],
    [-1, 10, 0, 0],
    [-1, -1, 0, 0],
    [-1, 40, 0, -1],
]
EXPECTED_FORGOTTEN = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 1]]
EXPECTED_FLIPS = [[0, 0, 0, 0], [1, 1, 0, 0], [2, 1, 0, 0], [2, 2, 0, 0], [3, 3, 0, 1]]
EXPECTED_LEARNED_STEP = [-1, 40, 0, -1]
P_TRUE = np.linspace(0.05, 0.95, 20).reshape(5, 4)


def random_history(num_captures=12, n=300, seed=0):
    num_classes = len(CLASS_NAMES)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    skill = rng.random(n)  # how often each point is right
    right = rng.random((num_captures, n)) < skill
    predicted = np.where(right, labels, (labels + rng.integers(1, num_classes, (num_captures, n))) % num_classes)
    p_true = np.where(right, 0.5 + 0.5 * rng.random((num_captures, n)), 0.5 * rng.random((num_captures, n)))
    steps = np.cumsum(rng.integers(1, 50, num_captures))
    return steps, predicted, p_true, labels


def metadata_of(state, predicted, labels):
    """A capture's metadata as read back from its TSV: every cell a string."""
    return {"label": [CLASS_NAMES[i] for i in labels], "predicted": [CLASS_NAMES[i] for i in predicted],
            **state.to_metadata()}


def reference_story(steps, predicted, p_true, labels):
    """A direct, per-point loop: the summary as the definitions say."""
    rows = []
    for i in range(len(labels)):
        correct = [int(p) == int(labels[i]) for p in predicted[:, i]]
        learned = NOT_LEARNED
        for c in range(len(steps) - 1, -1, -1):
            if not correct[c]:
                break
            learned = int(steps[c])
        values = [float(v) for v in p_true[:, i] if np.isfinite(v)]
        rows.append({
            "learned_step": learned,
            "forgotten": sum(1 for a, b in itertools.pairwise(correct) if a and not b),
            "flips": sum(1 for a, b in itertools.pairwise(predicted[:, i].tolist()) if a != b),
            "p_true_mean": statistics.fmean(values) if values else np.nan,
            "p_true_std": statistics.pstdev(values) if values else np.nan,
            "fraction_correct": sum(correct) / len(correct),
        })
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}


# A JavaScript Number() literal (what vz_projector's isNaN accepts), decimal forms only.
JS_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*|\s*[+-]?Infinity\s*")


def projector_reads_as_numeric(cells):
    """vz_projector's analyzeMetadata: empty cells are missing values; the others must all be numbers."""
    return all(JS_NUMBER.fullmatch(cell) for cell in cells if cell != "")


def test_next_point_columns_follow_hand_worked_stories():
    state = None
    for capture, step in enumerate(STEPS.tolist()):
        state = next_point_columns(state, step, PREDICTED[capture], P_TRUE[capture], LABELS)
        assert state.correct_since.tolist() == EXPECTED_CORRECT_SINCE[capture], capture
        assert state.forgotten.tolist() == EXPECTED_FORGOTTEN[capture], capture
        assert state.flips.tolist() == EXPECTED_FLIPS[capture], capture
        assert state.p_true.tolist() == P_TRUE[capture].tolist()


def test_point_summary_follows_hand_worked_stories():
    summary = point_summary(STEPS, PREDICTED, P_TRUE, LABELS)
    assert summary["learned_step"].tolist() == EXPECTED_LEARNED_STEP
    assert summary["forgotten"].tolist() == EXPECTED_FORGOTTEN[-1]
    assert summary["flips"].tolist() == EXPECTED_FLIPS[-1]
    assert summary["fraction_correct"].tolist() == [0.0, 0.6, 1.0, 0.8]
    assert summary["last_predicted"].tolist() == PREDICTED[-1].tolist()
    np.testing.assert_allclose(summary["p_true_mean"], P_TRUE.mean(axis=0))
    np.testing.assert_allclose(summary["p_true_std"], P_TRUE.std(axis=0))


def test_point_columns_to_metadata_writes_cells_the_projector_reads_as_numbers():
    state = next_point_columns(None, 7, np.array([0, 1, 0]), np.array([1e-9, 0.5, np.nan]), np.array([0, 0, 0]))
    metadata = state.to_metadata()
    assert list(metadata) == list(POINT_COLUMNS)
    assert metadata["correct_since"] == ["7", "", "7"]  # empty where wrong now: a missing value, still numeric
    assert metadata["p_true"] == ["1e-09", "0.5", ""]  # never "nan", which would make the column text
    for name in POINT_COLUMNS:
        assert projector_reads_as_numeric(metadata[name]), name
    assert not projector_reads_as_numeric(["nan"]) and not projector_reads_as_numeric(["yes"])  # the check can fail


def test_point_columns_continued_from_metadata_match_the_uninterrupted_run():
    steps, predicted, p_true, labels = random_history()
    uninterrupted = point_columns_from_history(steps, predicted, p_true, labels)
    state = None
    for capture, step in enumerate(steps.tolist()):
        state = next_point_columns(state, step, predicted[capture], p_true[capture], labels)
        # As a resumed run does: the state only from the last entry's metadata on disk.
        state = point_columns_from_metadata(metadata_of(state, predicted[capture], labels), CLASS_NAMES)
    reference = reference_story(steps, predicted, p_true, labels)
    for name in ("correct_since", "forgotten", "flips", "predicted", "correct"):
        np.testing.assert_array_equal(getattr(state, name), getattr(uninterrupted, name), err_msg=name)
    np.testing.assert_array_equal(state.correct_since, reference["learned_step"])
    np.testing.assert_array_equal(state.forgotten, reference["forgotten"])
    np.testing.assert_array_equal(state.flips, reference["flips"])
    np.testing.assert_allclose(state.p_true, p_true[-1], rtol=1e-5)  # 6 significant digits


def test_point_columns_from_metadata_is_none_without_the_point_columns():
    columns = {"label": ["zero"], "predicted": ["one"], "correct": ["no"], "confidence": ["0.9"], "index": ["3"]}
    assert point_columns_from_metadata(columns, CLASS_NAMES) is None
    assert point_columns_from_metadata({"label": ["zero"], "index": ["3"]}, CLASS_NAMES) is None


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"predicted": ["seven"]}, "class names"),
        ({"forgotten": ["1.5"]}, "integers"),
        ({"p_true": ["high"]}, "numbers"),
        ({"flips": ["0", "0"]}, "one cell per point"),
    ],
)
def test_point_columns_from_metadata_rejects_unreadable_cells(change, match):
    state = next_point_columns(None, 1, np.array([0]), np.array([0.9]), np.array([0]))
    columns = {**metadata_of(state, [0], [0]), **change}
    with pytest.raises(ValueError, match=match):
        point_columns_from_metadata(columns, CLASS_NAMES)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"step": -1}, "non-negative int"),
        ({"step": 2.0}, "non-negative int"),
        ({"step": 10}, "after the previous"),
        ({"predicted": np.array([0, 1, 2])}, "shape"),
        ({"predicted": np.array([0.0, 1.0])}, "integers"),
        ({"p_true": np.array([0.5, 1.5])}, r"\[0, 1\]"),
        ({"labels": np.array([0, 1, 0])}, "previous capture"),
    ],
)
def test_next_point_columns_rejects_bad_inputs(kwargs, match):
    previous = next_point_columns(None, 10, np.array([0, 1]), np.array([0.5, 0.5]), np.array([0, 1]))
    arguments = {"step": 20, "predicted": np.array([0, 1]), "p_true": np.array([0.5, 0.5]), "labels": np.array([0, 1]),
                 **kwargs}
    if "labels" in kwargs:
        arguments["predicted"] = np.array([0, 1, 0])
        arguments["p_true"] = np.array([0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=match):
        next_point_columns(previous, **arguments)


def test_true_class_probability_is_the_softmax_of_the_true_class():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 6)) * 10
    labels = rng.integers(0, 6, 50)
    expected = [np.exp(row[label]) / np.exp(row).sum() for row, label in zip(logits, labels, strict=True)]
    np.testing.assert_allclose(true_class_probability(logits, labels), expected, rtol=1e-12)
    assert true_class_probability(np.array([[1000.0, 0.0]]), np.array([1]))[0] == 0.0  # no overflow


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_point_summary_matches_a_direct_per_point_loop(seed):
    steps, predicted, p_true, labels = random_history(seed=seed)
    p_true[0, :10] = np.nan  # logits that were not finite at one capture
    p_true[:, 10] = np.nan  # ... and at all of them
    summary = point_summary(steps, predicted, p_true, labels)
    reference = reference_story(steps, predicted, p_true, labels)
    for name in ("learned_step", "forgotten", "flips"):
        np.testing.assert_array_equal(summary[name], reference[name], err_msg=name)
    for name in ("p_true_mean", "p_true_std", "fraction_correct"):
        np.testing.assert_allclose(summary[name], reference[name], rtol=1e-12, atol=1e-15, err_msg=name)
    assert np.isnan(summary["p_true_mean"][10]) and summary["region"][10] == ""
    assert {"never learned", "learned for good"} <= {
        "never learned" if s == NOT_LEARNED else "learned for good" for s in summary["learned_step"].tolist()}


def test_point_summary_of_one_capture():
    summary = point_summary(np.array([5]), np.array([[0, 1]]), np.array([[0.7, 0.2]]), np.array([0, 0]))
    assert summary["learned_step"].tolist() == [5, -1]
    assert summary["forgotten"].tolist() == summary["flips"].tolist() == [0, 0]
    assert summary["p_true_std"].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("steps", "predicted", "match"),
    [
        (np.array([1, 1]), np.zeros((2, 3), int), "strictly increasing"),
        (np.array([1.0, 2.0]), np.zeros((2, 3), int), "int array"),
        (np.array([1, 2]), np.zeros((3, 3), int), "shape"),
        (np.array([], int), np.zeros((0, 3), int), "non-empty"),
    ],
)
def test_point_summary_rejects_bad_histories(steps, predicted, match):
    with pytest.raises(ValueError, match=match):
        point_summary(steps, predicted, np.zeros(predicted.shape), np.zeros(3, int))


def test_summary_from_metadata_on_disk_matches_the_summary_in_memory():
    steps, predicted, p_true, labels = random_history(num_captures=6, n=100)
    captures, state = [], None
    for capture, step in enumerate(steps.tolist()):
        state = next_point_columns(state, step, predicted[capture], p_true[capture], labels)
        captures.append(metadata_of(state, predicted[capture], labels))
    read_predicted, read_p_true, read_labels = history_from_metadata(captures, CLASS_NAMES)
    np.testing.assert_array_equal(read_predicted, predicted)
    np.testing.assert_array_equal(read_labels, labels)
    np.testing.assert_allclose(read_p_true, p_true, rtol=5e-6)
    from_disk = point_summary(steps, read_predicted, read_p_true, read_labels)
    in_memory = point_summary(steps, predicted, p_true, labels)
    for name in ("learned_step", "forgotten", "flips", "fraction_correct"):
        np.testing.assert_array_equal(from_disk[name], in_memory[name], err_msg=name)
    np.testing.assert_allclose(from_disk["p_true_mean"], in_memory["p_true_mean"], rtol=1e-5)
    # The running columns of the last capture agree with the summary.
    np.testing.assert_array_equal(state.correct_since, from_disk["learned_step"])
    np.testing.assert_array_equal(state.forgotten, from_disk["forgotten"])


def test_history_from_metadata_refuses_captures_of_other_points():
    first = {"label": ["zero", "one"], "predicted": ["zero", "one"], "p_true": ["0.9", "0.8"]}
    other = {**first, "label": ["one", "zero"]}
    with pytest.raises(ValueError, match="same probe points"):
        history_from_metadata([first, other], CLASS_NAMES)
    with pytest.raises(ValueError, match="lacks p_true"):
        history_from_metadata([{"label": ["zero"], "predicted": ["zero"]}], CLASS_NAMES)


def test_hardest_is_lowest_mean_then_most_forgotten_then_first():
    summary = {
        "p_true_mean": np.array([0.5, 0.1, np.nan, 0.1, 0.05, 0.1, 0.9]),
        "forgotten": np.array([9, 1, 0, 4, 0, 1, 0]),
    }
    assert hardest(summary, n=4).tolist() == [4, 3, 1, 5]
    assert hardest(summary, n=100).tolist() == [4, 3, 1, 5, 0, 6, 2]  # NaN last
    assert hardest(summary, n=0).tolist() == []


def test_hardest_of_a_summary_has_lower_mean_p_true_than_the_rest():
    steps, predicted, p_true, labels = random_history(n=500)
    summary = point_summary(steps, predicted, p_true, labels)
    picked = hardest(summary)
    assert len(picked) == 30 and len(set(picked.tolist())) == 30
    rest = np.delete(summary["p_true_mean"], picked)
    assert summary["p_true_mean"][picked].max() <= rest.min()


@pytest.mark.parametrize(
    ("mean", "std", "region"),
    [
        (0.99, 0.01, "easy-to-learn"),
        (0.5, 0.19, "easy-to-learn"),
        (0.49, 0.19, "hard-to-learn"),
        (0.01, 0.0, "hard-to-learn"),
        (0.5, 0.2, "ambiguous"),
        (0.9, 0.3, "ambiguous"),
        (np.nan, 0.1, ""),
    ],
)
def test_data_map_regions_split_at_the_documented_thresholds(mean, std, region):
    assert points.AMBIGUOUS_STD == 0.2 and points.EASY_MEAN == 0.5
    assert data_map_regions(np.array([mean]), np.array([std])).tolist() == [region]


def test_write_points_csv_has_one_row_per_probe_point(tmp_path):
    summary = point_summary(STEPS, PREDICTED, P_TRUE, LABELS)
    path = tmp_path / "points.csv"
    path.write_text("old")
    dataset_index = np.array([40, 11, 7, 3])
    write_points_csv(path, summary, np.arange(4), dataset_index, LABELS, CLASS_NAMES)
    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        rows = list(reader)
    assert tuple(reader.fieldnames) == POINTS_CSV_COLUMNS
    assert [row["probe_index"] for row in rows] == ["0", "1", "2", "3"]
    assert [row["dataset_index"] for row in rows] == ["40", "11", "7", "3"]
    assert [row["label"] for row in rows] == ["zero"] * 4
    assert [row["learned_step"] for row in rows] == ["", "40", "0", ""]
    assert [row["forgotten"] for row in rows] == ["0", "1", "0", "1"]
    assert [row["flips"] for row in rows] == ["3", "3", "0", "1"]
    assert [row["predicted"] for row in rows] == ["three", "zero", "zero", "five"]
    np.testing.assert_allclose([float(row["p_true_mean"]) for row in rows], P_TRUE.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose([float(row["p_true_std"]) for row in rows], P_TRUE.std(axis=0), rtol=1e-5)
    assert [float(row["fraction_correct"]) for row in rows] == [0.0, 0.6, 1.0, 0.8]
    assert [row["region"] for row in rows] == data_map_regions(summary["p_true_mean"], summary["p_true_std"]).tolist()
    assert not [p for p in tmp_path.iterdir() if TEMPORARY_NAME.fullmatch(p.name)]


def test_write_points_csv_rejects_mismatched_arrays(tmp_path):
    summary = point_summary(STEPS, PREDICTED, P_TRUE, LABELS)
    with pytest.raises(ValueError, match="dataset_index"):
        write_points_csv(tmp_path / "points.csv", summary, np.arange(4), np.arange(3), LABELS, CLASS_NAMES)
    with pytest.raises(ValueError, match="class indices below 2"):
        write_points_csv(tmp_path / "points.csv", summary, np.arange(4), np.arange(4), LABELS, CLASS_NAMES[:2])
    assert not (tmp_path / "points.csv").exists()


@pytest.mark.parametrize(("num_captures", "n", "max_points"),
                         [(10, 100, 1000), (10, 100, 999), (7, 5, 20), (100, 1000, 100_000), (3, 10, 20), (1, 5, 5)])
def test_trajectory_captures_spread_evenly_and_keep_first_and_last(num_captures, n, max_points):
    kept = trajectory_captures(num_captures, n, max_points)
    assert len(kept) == min(num_captures, max_points // n)
    assert len(kept) * n <= max_points
    assert kept[0] == 0 and kept[-1] == num_captures - 1
    gaps = np.diff(kept)
    assert (gaps >= 1).all() and (gaps.size == 0 or gaps.max() - gaps.min() <= 1)  # increasing, evenly spread


def test_trajectory_captures_are_distinct_for_every_small_case():
    for num_captures in range(1, 40):
        for keep in range(2, 45):
            kept = trajectory_captures(num_captures, 10, keep * 10)
            assert len(set(kept.tolist())) == len(kept) == min(num_captures, keep), (num_captures, keep)


def test_trajectory_captures_refuses_a_probe_set_too_big_for_two_captures():
    with pytest.raises(ValueError, match="two captures"):
        trajectory_captures(5, 60_000)


def vz_projector_sequences(next_cells):
    """A port of vz_projector's DataSet.computeSequences (data.ts) over the parsed __seq_next__ cells."""
    nexts = [None if cell == "" else int(cell) for cell in next_cells]
    seen = [False] * len(nexts)
    index_to_sequence, sequences = {}, []
    for i in range(len(nexts)):
        if seen[i]:
            continue
        seen[i] = True
        if nexts[i] is None:
            continue
        if nexts[i] in index_to_sequence:
            index_to_sequence[nexts[i]].insert(0, i)
            index_to_sequence[i] = index_to_sequence[nexts[i]]
            continue
        sequence = []
        index_to_sequence[i] = sequence
        sequences.append(sequence)
        current = i
        while 0 <= current < len(nexts):
            sequence.append(current)
            if nexts[current] is not None:
                seen[nexts[current]] = True
                current = nexts[current]
            else:
                current = -1
    return sequences


def test_trajectory_points_link_each_row_to_the_same_point_at_the_next_kept_capture():
    num_captures, n = 7, 5
    steps = np.arange(1, num_captures + 1) * 100
    rng = np.random.default_rng(0)
    layouts = rng.normal(size=(num_captures, n, 2))
    dataset_index = np.array([42, 7, 19, 3, 88])
    columns = [{"index": [str(i) for i in dataset_index], "p_true": [f"{c / 10:.6g}"] * n, "label": ["x"] * n}
               for c in range(num_captures)]
    labels = ["zero", "one", "two", "one", "zero"]
    pts, metadata, note = trajectory_points(steps, layouts, columns, labels, max_points=20)
    kept = [0, 2, 4, 6]
    assert pts.shape == (len(kept) * n, 3) and pts.dtype == np.float32
    np.testing.assert_array_equal(pts[:, 2], 0.0)
    np.testing.assert_array_equal(pts[:, :2].reshape(len(kept), n, 2), layouts[kept].astype(np.float32))
    assert list(metadata) == ["label", "step", "index", "p_true", SEQUENCE_COLUMN]
    assert all(len(cells) == len(pts) for cells in metadata.values())
    assert metadata["label"] == labels * len(kept)  # the class names, not the captures' own label column
    assert "4 of 7 captures" in note and "20" in note
    next_cells = metadata[SEQUENCE_COLUMN]
    for row, cell in enumerate(next_cells):
        if metadata["step"][row] == str(steps[-1]):
            assert cell == ""  # the last capture links to nothing
            continue
        following = int(cell)
        assert metadata["index"][following] == metadata["index"][row]
        capture, next_capture = (int(metadata["step"][r]) // 100 - 1 for r in (row, following))
        assert kept[kept.index(capture) + 1] == next_capture
    sequences = vz_projector_sequences(next_cells)
    assert len(sequences) == n
    for sequence in sequences:
        assert [metadata["step"][row] for row in sequence] == [str(steps[c]) for c in kept]
        assert len({metadata["index"][row] for row in sequence}) == 1


def test_trajectory_points_keep_every_capture_that_fits_and_fill_missing_columns():
    steps = np.array([5, 9])
    columns = [{"predicted": ["a", "b"]}, {"predicted": ["b", "b"], "p_true": ["0.5", "0.25"]}]
    _, metadata, note = trajectory_points(steps, np.ones((2, 2, 2)), columns, ["a", "b"])
    assert note is None
    assert metadata["p_true"] == ["", "", "0.5", "0.25"]  # missing where an older entry had no such column
    assert metadata["step"] == ["5", "5", "9", "9"]
    assert metadata[SEQUENCE_COLUMN] == ["2", "3", "", ""]
    assert projector_reads_as_numeric(metadata["p_true"]) and projector_reads_as_numeric(metadata[SEQUENCE_COLUMN])


@pytest.mark.parametrize(
    ("layouts", "columns", "match"),
    [
        (np.zeros((2, 3, 2)), [{}] * 2, r"shape \(2, 2\)"),
        (np.full((2, 2, 2), np.nan), [{}] * 2, "finite"),
        (np.zeros((2, 2, 2)), [{}], "one per step"),
        (np.zeros((2, 2, 2)), [{"x": ["1"]}] * 2, "2 cells"),
    ],
)
def test_trajectory_points_rejects_bad_inputs(layouts, columns, match):
    with pytest.raises(ValueError, match=match):
        trajectory_points(np.array([1, 2]), layouts, columns, ["a", "b"])


def test_write_layouts_loads_with_plain_numpy(tmp_path):
    steps = np.array([100, 200, 300])
    layouts = np.random.default_rng(0).normal(size=(3, 4, 2))
    write_layouts(tmp_path / "layouts.npz", steps, layouts, np.array([9, 8, 7, 6]))
    with np.load(tmp_path / "layouts.npz", allow_pickle=False) as f:  # no pickle: plain arrays only
        assert sorted(f.files) == ["index", "layouts", "steps"]
        assert f["steps"].tolist() == [100, 200, 300]
        assert f["index"].tolist() == [9, 8, 7, 6]
        assert f["layouts"].dtype == np.float32
        np.testing.assert_array_equal(f["layouts"], layouts.astype(np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["layouts.npz"]


def test_write_layouts_rejects_layouts_that_do_not_match_the_steps(tmp_path):
    with pytest.raises(ValueError, match=r"\(2, 4, 2\)"):
        write_layouts(tmp_path / "layouts.npz", np.array([1, 2]), np.zeros((3, 4, 2)), np.arange(4))


@pytest.mark.parametrize("shape", [(10, 6, 5), (7, 4, 3, 3)])
def test_sprite_thumbnails_are_the_images_write_sprite_wrote(tmp_path, shape):
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    thumb_size = write_sprite(images, tmp_path / "sprite.png")
    picked = [9 % len(images), 0, 3, 3]
    thumbnails = sprite_thumbnails(tmp_path / "sprite.png", thumb_size, picked)
    np.testing.assert_array_equal(thumbnails, images[picked])


def test_sprite_thumbnails_of_a_shrunk_sprite(tmp_path):
    images = np.arange(10, dtype=np.uint8)[:, None, None] * 20 * np.ones((10, 28, 28), np.uint8)
    thumb_size = write_sprite(images, tmp_path / "sprite.png", max_size=40)  # 4 cells a row: 10 px each
    assert thumb_size == (10, 10)
    thumbnails = sprite_thumbnails(tmp_path / "sprite.png", thumb_size, np.arange(10))
    assert thumbnails.shape == (10, 10, 10)
    np.testing.assert_array_equal(thumbnails[:, 5, 5], np.arange(10) * 20)
    assert Image.open(tmp_path / "sprite.png").size == (40, 30)
    with pytest.raises(ValueError, match=r"\[0, 12\)"):
        sprite_thumbnails(tmp_path / "sprite.png", thumb_size, [12])
    with pytest.raises(ValueError, match="whole cells"):
        sprite_thumbnails(tmp_path / "sprite.png", (7, 10), [0])
