"""Each probe point's story across captures: when it was learned, forgotten, how it moved, how hard it is.

The probe set is the same points in the same order at every capture, so each point has a history:
its prediction, the probability given to its true class (``p_true``) and its place in every aligned
t-SNE map. Pure numpy functions, no Lightning, no torch:

* :func:`next_point_columns` turns one capture's predictions into running per-point columns
  (:class:`PointColumns`: ``correct_since``, ``forgotten``, ``flips``, ``p_true``) for that capture's
  Projector metadata; :func:`point_columns_from_metadata` rebuilds the running state from the last
  entry's metadata on disk, so a resumed run continues where it stopped;
* :func:`history_from_metadata` reads every capture's metadata back into ``(C, N)`` arrays,
  :func:`point_summary` turns them into the end-of-series table, :func:`write_points_csv` writes it
  (``points.csv``), :func:`hardest` and :func:`data_map_regions` pick the hard and the ambiguous;
* :func:`trajectory_points` makes one Projector entry of all aligned maps, linked capture to capture
  through the Projector's own sequence column, and :func:`write_layouts` the maps as ``layouts.npz``;
* :func:`sprite_thumbnails` cuts probe images back out of the run's sprite.

What TensorBoard's Projector (``tensorboard/plugins/projector/vz_projector``, TensorBoard 2.21) does
with these columns, from its source:

* a metadata column is numeric when no non-empty cell is ``isNaN`` in JavaScript
  (``data-provider.ts``, ``analyzeMetadata``): ``"3"``, ``"0.25"``, ``"1e-05"`` are numbers, ``"nan"``
  and ``"yes"`` are not. Empty cells become ``null`` when the TSV is parsed (``parseMetadata``) and are
  skipped, so ``correct_since`` stays numeric with its empty cells, which are drawn in the "missing"
  colour. So a probability that is not finite is written as an empty cell, never as ``"nan"``;
* "Color by" offers a column when it is numeric or has at most 50 distinct values, and uses a
  gradient only for a numeric column with more than 50 distinct values; others get categorical
  colours (``vz-projector-data-panel.ts``, ``updateMetadataUI``). ``p_true`` gets a gradient; small
  counts (``forgotten``, ``flips``) and a few dozen steps get one colour per value;
* a row's ``__seq_next__`` cell (``__next__`` is the deprecated name) holds the row index of the next
  point of its sequence; an empty cell ends the sequence (``data.ts``, ``getSequenceNextPointIndex``,
  ``computeSequences``), and the sequences are drawn as polylines;
* the server and the browser load at most 100,000 rows (``data-provider-server.ts``,
  ``LIMIT_NUM_POINTS``);
* a tensor needs at least 2 dimensions, and the default view is a 3-D PCA of its top 10 components:
  with 2 dimensions the third component is ``NaN`` for every point and the plot stays empty, so
  trajectories get a third, zero column. Data with fewer than 50 dimensions is not normalised, and
  PCA is an orthogonal map of uncentred data, so the 2-D view is the maps rotated, distances kept.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lenet_lightning.atomic import write_atomically

POINT_COLUMNS = ("correct_since", "forgotten", "flips", "p_true")
"""The per-point metadata columns :meth:`PointColumns.to_metadata` adds to a capture's metadata."""

SEQUENCE_COLUMN = "__seq_next__"
"""The Projector's sequence column: a row's cell is the row index of the same point at the next capture."""

PROJECTOR_MAX_POINTS = 100_000
"""The most rows the Projector loads (``LIMIT_NUM_POINTS`` in ``data-provider-server.ts``)."""

NOT_LEARNED = -1
"""``learned_step`` and ``correct_since`` of a point that is wrong at the last (or current) capture."""

# Data-map regions (Swayamdipta et al. 2020, "Dataset Cartography", Fig. 1): the points of a data map
# lie on an arch, std of p_true against its mean. The paper names its left ends, low variability, with
# high or low confidence, "easy-to-learn" and "hard-to-learn", and its high-variability top
# "ambiguous"; its figures label those areas around variability 0.1-0.15 and 0.4 on an axis from 0 to
# 0.5. The boundaries here split the arch at its middle: variability 0.2 (std can reach 0.5 at most),
# and, below it, mean confidence 0.5 (the true class more likely than not, on average).
AMBIGUOUS_STD = 0.2
EASY_MEAN = 0.5
REGIONS = ("easy-to-learn", "ambiguous", "hard-to-learn")

POINTS_CSV_COLUMNS = (
    "probe_index", "dataset_index", "label", "learned_step", "forgotten", "flips",
    "p_true_mean", "p_true_std", "fraction_correct", "predicted", "region",
)  # fmt: skip
"""The header of :func:`write_points_csv`'s file."""


@dataclass(frozen=True, eq=False)
class PointColumns:
    """Every probe point's running state as of one capture.

    Args:
        predicted: ``(N,)`` predicted class indices at this capture.
        correct: ``(N,)`` whether ``predicted`` is the true class.
        correct_since: ``(N,)`` the step since which the point has been correct at every capture,
            :data:`NOT_LEARNED` (``-1``) when it is wrong now.
        forgotten: ``(N,)`` how many times it went from correct to wrong between consecutive captures.
        flips: ``(N,)`` how many times its prediction changed between consecutive captures.
        p_true: ``(N,)`` the probability given to its true class now (``NaN`` when not finite).
    """

    predicted: np.ndarray
    correct: np.ndarray
    correct_since: np.ndarray
    forgotten: np.ndarray
    flips: np.ndarray
    p_true: np.ndarray

    def to_metadata(self) -> dict[str, list[str]]:
        """The four :data:`POINT_COLUMNS` as strings for the capture's metadata TSV.

        ``correct_since`` is empty where the point is wrong now; ``p_true`` has 6 significant digits
        and is empty where it is not finite. The Projector reads all four as numbers.

        Example:
            >>> columns = next_point_columns(None, 100, np.array([0, 1]), np.array([0.9, 0.2]), np.array([0, 0]))
            >>> columns.to_metadata()
            {'correct_since': ['100', ''], 'forgotten': ['0', '0'], 'flips': ['0', '0'], 'p_true': ['0.9', '0.2']}
        """
        return {
            "correct_since": ["" if step < 0 else str(step) for step in self.correct_since.tolist()],
            "forgotten": [str(count) for count in self.forgotten.tolist()],
            "flips": [str(count) for count in self.flips.tolist()],
            "p_true": [_format_float(p) for p in self.p_true.tolist()],
        }


def true_class_probability(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The softmax probability of each row's true class, ``(N,)`` float64, from ``(N, K)`` logits.

    Example:
        >>> true_class_probability(np.array([[0.0, 0.0], [2.0, 0.0]]), np.array([1, 0])).round(3)
        array([0.5  , 0.881])
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = _check_labels(labels, None, "labels")
    if logits.ndim != 2 or logits.shape[0] != len(labels) or logits.shape[1] == 0:
        raise ValueError(f"Expected `logits` to have shape ({len(labels)}, K), but got {logits.shape}.")
    if len(labels) and labels.max() >= logits.shape[1]:
        raise ValueError(f"Expected `labels` to be below K = {logits.shape[1]}, but got {labels.max()}.")
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = logits - logits.max(axis=1, keepdims=True)  # (N, K), largest 0: exp cannot overflow
        log_norm = np.log(np.exp(shifted).sum(axis=1))  # (N,)
        return np.exp(shifted[np.arange(len(labels)), labels] - log_norm)


def next_point_columns(
    previous: PointColumns | None,
    step: int,
    predicted: np.ndarray,
    p_true: np.ndarray,
    labels: np.ndarray,
) -> PointColumns:
    """Every point's running state after the capture at ``step``, from the state after the one before.

    Args:
        previous: The state after the previous capture (from this function, or read back with
            :func:`point_columns_from_metadata`); ``None`` at the first capture.
        step: This capture's global step, greater than every step in ``previous.correct_since``.
        predicted: ``(N,)`` predicted class indices.
        p_true: ``(N,)`` the probability of each point's true class (see :func:`true_class_probability`),
            in [0, 1]; ``NaN`` is kept (the logits were not finite), written as an empty cell.
        labels: ``(N,)`` true class indices.

    Returns:
        The new state; ``to_metadata()`` gives its metadata columns.

    Raises:
        ValueError: If the shapes disagree with each other or with ``previous``, ``step`` is not a
            non-negative int after the previous ones, or ``p_true`` is outside [0, 1].

    Example:
        >>> labels = np.array([0, 0])
        >>> first = next_point_columns(None, 10, np.array([0, 1]), np.array([0.9, 0.1]), labels)
        >>> second = next_point_columns(first, 20, np.array([1, 0]), np.array([0.2, 0.8]), labels)
        >>> second.correct_since.tolist(), second.forgotten.tolist(), second.flips.tolist()
        ([-1, 20], [1, 0], [1, 1])
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"Expected `step` to be a non-negative int, but got {step!r}.")
    step = int(step)
    labels = _check_labels(labels, None, "labels")
    n = len(labels)
    predicted = _check_labels(predicted, n, "predicted")
    p_true = _check_probabilities(p_true, n)
    correct = predicted == labels
    if previous is None:
        correct_since = np.where(correct, step, NOT_LEARNED)
        forgotten = np.zeros(n, np.int64)
        flips = np.zeros(n, np.int64)
    else:
        if len(previous.predicted) != n:
            raise ValueError(f"Expected `predicted` to have {len(previous.predicted)} points, as the previous "
                             f"capture had, but got {n}.")
        if n and previous.correct_since.max() >= step:
            raise ValueError(f"Expected `step` to be after the previous captures' steps "
                             f"(up to {previous.correct_since.max()}), but got {step}.")
        correct_since = np.where(correct, np.where(previous.correct, previous.correct_since, step), NOT_LEARNED)
        forgotten = previous.forgotten + (previous.correct & ~correct)
        flips = previous.flips + (predicted != previous.predicted)
    return PointColumns(predicted, correct, correct_since.astype(np.int64), forgotten.astype(np.int64),
                        flips.astype(np.int64), p_true)


def point_columns_from_metadata(
    columns: Mapping[str, Sequence[str]], class_names: Sequence[str]
) -> PointColumns | None:
    """The running state as of a capture, read back from that capture's metadata columns.

    Args:
        columns: The capture's metadata as column name to cells, as written (``label`` and
            ``predicted`` hold class names, plus the four :data:`POINT_COLUMNS`).
        class_names: One name per class, in class-index order.

    Returns:
        The state, or ``None`` when a column is missing (an entry of a model without one logit per
        class, or of an older version): rebuild it with :func:`point_columns_from_history` then.

    Raises:
        ValueError: If a cell is not what the columns hold (an unknown class name, a count that is
            not an integer) or the columns differ in length.

    Example:
        >>> state = next_point_columns(None, 5, np.array([1, 1]), np.array([0.3, 0.7]), np.array([0, 1]))
        >>> columns = {"label": ["a", "b"], "predicted": ["b", "b"], **state.to_metadata()}
        >>> point_columns_from_metadata(columns, ["a", "b"]).correct_since.tolist()
        [-1, 5]
    """
    needed = ("label", "predicted", *POINT_COLUMNS)
    if any(name not in columns for name in needed):
        return None
    lengths = {name: len(columns[name]) for name in needed}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"Expected the metadata columns to have one cell per point each, but got lengths {lengths}.")
    index = _class_index(class_names)
    labels = _names_to_indices(columns["label"], index, "label")
    predicted = _names_to_indices(columns["predicted"], index, "predicted")
    return PointColumns(
        predicted=predicted,
        correct=predicted == labels,
        correct_since=np.array([NOT_LEARNED if cell == "" else _parse_int(cell, "correct_since")
                                for cell in columns["correct_since"]], np.int64),
        forgotten=np.array([_parse_int(cell, "forgotten") for cell in columns["forgotten"]], np.int64),
        flips=np.array([_parse_int(cell, "flips") for cell in columns["flips"]], np.int64),
        p_true=_parse_floats(columns["p_true"], "p_true"),
    )


def point_columns_from_history(
    steps: np.ndarray, predicted: np.ndarray, p_true: np.ndarray, labels: np.ndarray
) -> PointColumns:
    """The running state after the last of ``C`` captures, from their ``(C, N)`` histories.

    Example:
        >>> state = point_columns_from_history(np.array([1, 2, 3]), np.array([[0], [1], [0]]),
        ...                                    np.full((3, 1), 0.5), np.array([0]))
        >>> state.correct_since.tolist(), state.forgotten.tolist(), state.flips.tolist()
        ([3], [1], [2])
    """
    steps, predicted, p_true, labels = _check_history(steps, predicted, p_true, labels)
    state = None
    for capture, step in enumerate(steps.tolist()):
        state = next_point_columns(state, step, predicted[capture], p_true[capture], labels)
    assert state is not None  # _check_history demands a capture
    return state


def history_from_metadata(
    captures: Sequence[Mapping[str, Sequence[str]]], class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every capture's predictions and ``p_true``, read back from their metadata columns.

    Args:
        captures: One metadata mapping (column name to cells, as written) per capture, in step order;
            each needs ``label``, ``predicted`` and ``p_true``.
        class_names: One name per class, in class-index order.

    Returns:
        ``predicted`` ``(C, N)`` class indices, ``p_true`` ``(C, N)`` float64 (``NaN`` for empty
        cells) and ``labels`` ``(N,)``, for :func:`point_summary`.

    Raises:
        ValueError: If there is no capture, a column is missing, a cell cannot be read, the captures
            differ in length, or their labels differ (not the same probe set).

    Example:
        >>> captures = [{"label": ["a"], "predicted": ["b"], "p_true": ["0.25"]},
        ...             {"label": ["a"], "predicted": ["a"], "p_true": ["0.75"]}]
        >>> predicted, p_true, labels = history_from_metadata(captures, ["a", "b"])
        >>> predicted.tolist(), p_true.tolist(), labels.tolist()
        ([[1], [0]], [[0.25], [0.75]], [0])
    """
    if len(captures) == 0:
        raise ValueError("Expected `captures` to hold at least one capture's metadata, but got none.")
    index = _class_index(class_names)
    predicted_rows, p_true_rows, labels = [], [], None
    for position, columns in enumerate(captures):
        missing = [name for name in ("label", "predicted", "p_true") if name not in columns]
        if missing:
            raise ValueError(f"Expected capture {position}'s metadata to have columns label, predicted and "
                             f"p_true, but it lacks {', '.join(missing)}.")
        capture_labels = columns["label"]
        if labels is None:
            labels = list(capture_labels)
        elif list(capture_labels) != labels:
            raise ValueError(f"Expected every capture to show the same probe points, but capture {position}'s "
                             "labels differ from the first capture's.")
        if not len(columns["predicted"]) == len(columns["p_true"]) == len(labels):
            raise ValueError(f"Expected capture {position}'s columns to have {len(labels)} cells each, but got "
                             f"{len(columns['predicted'])} predicted and {len(columns['p_true'])} p_true.")
        predicted_rows.append(_names_to_indices(columns["predicted"], index, "predicted"))
        p_true_rows.append(_parse_floats(columns["p_true"], "p_true"))
    assert labels is not None
    return np.stack(predicted_rows), np.stack(p_true_rows), _names_to_indices(labels, index, "label")


def point_summary(
    steps: np.ndarray, predicted: np.ndarray, p_true: np.ndarray, labels: np.ndarray
) -> dict[str, np.ndarray]:
    """Every point's story over ``C`` captures, as ``(N,)`` arrays.

    Args:
        steps: ``(C,)`` strictly increasing steps of the captures.
        predicted: ``(C, N)`` predicted class indices.
        p_true: ``(C, N)`` probabilities of the true class; ``NaN`` entries are left out of the
            mean and std.
        labels: ``(N,)`` true class indices.

    Returns:
        ``learned_step`` (the step from which the point is correct at every capture to the last,
        :data:`NOT_LEARNED` when it is wrong at the last), ``forgotten`` (correct-to-wrong changes
        between consecutive captures, Toneva et al. 2019's forgetting events), ``flips`` (prediction
        changes), ``p_true_mean`` and ``p_true_std`` (the data map's confidence and variability,
        population std as in Swayamdipta et al. 2020; ``NaN`` without a finite value),
        ``fraction_correct``, ``last_predicted`` and ``region`` (see :func:`data_map_regions`).

    Raises:
        ValueError: If the shapes disagree or ``steps`` is not strictly increasing.

    Example:
        >>> summary = point_summary(np.array([1, 2, 3]), np.array([[0, 1], [1, 1], [0, 1]]),
        ...                         np.array([[0.8, 0.1], [0.4, 0.2], [0.9, 0.3]]), np.array([0, 0]))
        >>> summary["learned_step"].tolist(), summary["forgotten"].tolist(), summary["flips"].tolist()
        ([3, -1], [1, 0], [2, 0])
        >>> summary["p_true_mean"].round(2).tolist(), summary["fraction_correct"].round(2).tolist()
        ([0.7, 0.2], [0.67, 0.0])
    """
    steps, predicted, p_true, labels = _check_history(steps, predicted, p_true, labels)
    num_captures = len(steps)
    correct = predicted == labels  # (C, N)
    wrong = ~correct
    # The last wrong capture of each point; the point was learned for good at the one after it.
    last_wrong = np.where(wrong.any(axis=0), num_captures - 1 - wrong[::-1].argmax(axis=0), -1)  # (N,)
    learned = last_wrong + 1  # (N,), == C when wrong at the last capture
    learned_step = np.where(learned < num_captures, steps[np.minimum(learned, num_captures - 1)], NOT_LEARNED)
    finite = np.isfinite(p_true)  # (C, N)
    count = finite.sum(axis=0)  # (N,)
    values = np.where(finite, p_true, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = values.sum(axis=0) / count
        std = np.sqrt((np.where(finite, p_true - mean, 0.0) ** 2).sum(axis=0) / count)
    return {
        "learned_step": learned_step.astype(np.int64),
        "forgotten": (correct[:-1] & wrong[1:]).sum(axis=0).astype(np.int64),
        "flips": (predicted[1:] != predicted[:-1]).sum(axis=0).astype(np.int64),
        "p_true_mean": mean,
        "p_true_std": std,
        "fraction_correct": correct.mean(axis=0),
        "last_predicted": predicted[-1].copy(),
        "region": data_map_regions(mean, std),
    }


def data_map_regions(
    p_true_mean: np.ndarray,
    p_true_std: np.ndarray,
    *,
    ambiguous_std: float = AMBIGUOUS_STD,
    easy_mean: float = EASY_MEAN,
) -> np.ndarray:
    """Each point's data-map region (Swayamdipta et al. 2020): ``(N,)`` strings out of :data:`REGIONS`.

    ``"ambiguous"`` where ``p_true_std >= ambiguous_std``; below that ``"easy-to-learn"`` where
    ``p_true_mean >= easy_mean`` and ``"hard-to-learn"`` elsewhere; ``""`` where either is ``NaN``.
    Hard-to-learn points, confidently wrong throughout, are where mislabelled examples gather.

    Example:
        >>> data_map_regions(np.array([0.95, 0.5, 0.05]), np.array([0.05, 0.3, 0.02])).tolist()
        ['easy-to-learn', 'ambiguous', 'hard-to-learn']
    """
    mean = np.asarray(p_true_mean, dtype=np.float64)
    std = np.asarray(p_true_std, dtype=np.float64)
    if mean.ndim != 1 or std.shape != mean.shape:
        raise ValueError(f"Expected `p_true_mean` and `p_true_std` to have one shape (N,), but got {mean.shape} "
                         f"and {std.shape}.")
    easy, ambiguous, hard = REGIONS
    with np.errstate(invalid="ignore"):
        region = np.where(std >= ambiguous_std, ambiguous, np.where(mean >= easy_mean, easy, hard))
    return np.where(np.isnan(mean) | np.isnan(std), "", region)


def hardest(summary: Mapping[str, np.ndarray], n: int = 30) -> np.ndarray:
    """The probe positions of the ``n`` hardest points, hardest first.

    Hardest means lowest ``p_true_mean``; ties go to more ``forgotten`` events, then to the lower
    position. Points without a finite mean come last.

    Example:
        >>> summary = {"p_true_mean": np.array([0.9, 0.1, 0.1, 0.5]), "forgotten": np.array([0, 1, 3, 0])}
        >>> hardest(summary, n=3).tolist()
        [2, 1, 3]
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"Expected `n` to be a non-negative int, but got {n!r}.")
    mean = np.asarray(summary["p_true_mean"], dtype=np.float64)
    forgotten = np.asarray(summary["forgotten"])
    if mean.ndim != 1 or forgotten.shape != mean.shape:
        raise ValueError(f"Expected `p_true_mean` and `forgotten` to have one shape (N,), but got {mean.shape} "
                         f"and {forgotten.shape}.")
    order = np.lexsort((np.arange(len(mean)), -forgotten, np.where(np.isnan(mean), np.inf, mean)))
    return order[:n]


def write_points_csv(
    path: str | os.PathLike[str],
    summary: Mapping[str, np.ndarray],
    probe_index: np.ndarray,
    dataset_index: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
) -> None:
    """Writes :func:`point_summary`'s table as a CSV, one row per probe point, atomically.

    The columns are :data:`POINTS_CSV_COLUMNS`: ``probe_index`` (the row in every Projector entry and
    the cell in the sprite), ``dataset_index`` (the position in the split), ``label`` and
    ``predicted`` (the last prediction) as class names, ``learned_step`` (empty when not learned),
    the counts, the floats with 6 significant digits (empty when ``NaN``) and ``region``.

    Raises:
        ValueError: If the arrays do not all have one entry per point, or a label or prediction is
            not a class index.

    Example:
        >>> import tempfile
        >>> summary = point_summary(np.array([1, 2]), np.array([[1], [0]]), np.array([[0.1], [0.7]]), np.array([0]))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     write_points_csv(Path(tmp) / "points.csv", summary, np.arange(1), np.array([7]), np.array([0]), "ab")
        ...     print((Path(tmp) / "points.csv").read_text(), end="")
        probe_index,dataset_index,label,learned_step,forgotten,flips,p_true_mean,p_true_std,fraction_correct,predicted,region
        0,7,a,2,0,1,0.4,0.3,0.5,a,ambiguous
    """
    labels = _check_labels(labels, None, "labels")
    n = len(labels)
    probe_index = _check_labels(probe_index, n, "probe_index")
    dataset_index = _check_labels(dataset_index, n, "dataset_index")
    names = [str(name) for name in class_names]
    predicted = _check_labels(summary["last_predicted"], n, "summary['last_predicted']")
    for name, values in (("labels", labels), ("summary['last_predicted']", predicted)):
        if n and values.max() >= len(names):
            raise ValueError(f"Expected `{name}` to be class indices below {len(names)}, but got {values.max()}.")
    columns = {key: np.asarray(summary[key]) for key in
               ("learned_step", "forgotten", "flips", "p_true_mean", "p_true_std", "fraction_correct", "region")}
    for key, values in columns.items():
        if values.shape != (n,):
            raise ValueError(f"Expected `summary[{key!r}]` to have shape ({n},), but got {values.shape}.")
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(POINTS_CSV_COLUMNS)
    for row in zip(
        probe_index.tolist(),
        dataset_index.tolist(),
        (names[i] for i in labels.tolist()),
        ("" if step < 0 else step for step in columns["learned_step"].tolist()),
        columns["forgotten"].tolist(),
        columns["flips"].tolist(),
        (_format_float(v) for v in columns["p_true_mean"].tolist()),
        (_format_float(v) for v in columns["p_true_std"].tolist()),
        (_format_float(v) for v in columns["fraction_correct"].tolist()),
        (names[i] for i in predicted.tolist()),
        columns["region"].tolist(),
        strict=True,
    ):
        writer.writerow(row)
    data = stream.getvalue().encode("utf-8")
    write_atomically(path, lambda f: f.write(data))


def trajectory_captures(num_captures: int, num_points: int, max_points: int = PROJECTOR_MAX_POINTS) -> np.ndarray:
    """Which of ``num_captures`` captures of ``num_points`` points fit in ``max_points`` rows.

    All of them when they fit; else as many as fit, evenly spread, the first and the last kept.

    Raises:
        ValueError: If not even two captures fit (no trajectory), or an argument is not a positive int.

    Example:
        >>> trajectory_captures(10, 1000, max_points=4000).tolist()
        [0, 3, 6, 9]
    """
    for name, value in (("num_captures", num_captures), ("num_points", num_points), ("max_points", max_points)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"Expected `{name}` to be a positive int, but got {value!r}.")
    keep = min(num_captures, max_points // num_points)
    if keep < min(2, num_captures):
        raise ValueError(f"Expected `max_points` ({max_points}) to hold two captures of {num_points} points, "
                         "the least that makes a trajectory, but it does not.")
    if keep == 1:
        return np.zeros(1, np.int64)
    # The nearest captures to evenly spaced positions: distinct, since the spacing is at least 1.
    return np.round(np.linspace(0, num_captures - 1, keep)).astype(np.int64)


def trajectory_points(
    steps: np.ndarray,
    layouts: np.ndarray | Sequence[np.ndarray],
    columns: Sequence[Mapping[str, Sequence[str]]],
    labels: Sequence[str],
    max_points: int = PROJECTOR_MAX_POINTS,
) -> tuple[np.ndarray, dict[str, list[str]], str | None]:
    """One Projector entry of every capture's aligned map, each point linked to itself at the next one.

    Row ``k * N + i`` is point ``i`` at the ``k``-th kept capture; its :data:`SEQUENCE_COLUMN` cell is
    ``(k + 1) * N + i``, empty at the last kept capture, so the Projector draws each point's path
    through training. When ``C * N > max_points`` only :func:`trajectory_captures` are kept, and the
    note says so. Only the kept captures' ``layouts`` and ``columns`` are read.

    Args:
        steps: ``(C,)`` the captures' steps.
        layouts: ``(C, N, 2)`` aligned t-SNE maps, finite.
        columns: One metadata mapping (column name to ``N`` cells) per capture, e.g. its ``predicted``,
            ``correct``, ``confidence``, ``index`` and :data:`POINT_COLUMNS`; a column some captures
            lack is empty there. ``label``, ``step`` and :data:`SEQUENCE_COLUMN` are replaced.
        labels: ``(N,)`` every point's class name.
        max_points: The most rows, the Projector's limit by default.

    Returns:
        ``points`` ``(M, 3)`` float32: ``x, y, 0`` (the Projector's default 3-D PCA needs a third
        column; give :func:`~lenet_lightning.projector.layout_bookmark` ``points[:, :2]`` for the exact
        view); ``metadata``: ``label``, ``step``, the captures' columns, :data:`SEQUENCE_COLUMN`; and
        a note when captures were left out, else ``None``.

    Raises:
        ValueError: If the shapes disagree, a layout is not finite, or two captures do not fit.

    Example:
        >>> points, metadata, note = trajectory_points(np.array([10, 20, 30]), np.zeros((3, 2, 2)),
        ...                                            [{"p_true": ["0.5", "0.5"]}] * 3, ["a", "b"], max_points=4)
        >>> points.shape, metadata["step"], metadata["__seq_next__"]
        ((4, 3), ['10', '10', '30', '30'], ['2', '3', '', ''])
        >>> note
        'Trajectories show 2 of 3 captures (steps 10 to 30, evenly spread): the Projector loads at most 4 points.'
    """
    steps = np.asarray(steps)
    if steps.ndim != 1 or len(steps) == 0 or (steps.size and not np.issubdtype(steps.dtype, np.integer)):
        raise ValueError(f"Expected `steps` to be a non-empty 1-D int array, but got {steps.dtype} of shape "
                         f"{steps.shape}.")
    num_captures = len(steps)
    n = len(labels)
    if n == 0:
        raise ValueError("Expected `labels` to name at least one point, but got none.")
    if len(layouts) != num_captures or len(columns) != num_captures:
        raise ValueError(f"Expected `layouts` and `columns` to have {num_captures} entries, one per step, but got "
                         f"{len(layouts)} and {len(columns)}.")
    kept = trajectory_captures(num_captures, n, max_points)
    label_cells = [str(label) for label in labels]
    names: dict[str, None] = {}  # the captures' columns, in first-seen order
    for capture in kept.tolist():
        names.update(dict.fromkeys(name for name in columns[capture] if name not in ("label", "step", SEQUENCE_COLUMN)))
    metadata: dict[str, list[str]] = {"label": [], "step": [], **{name: [] for name in names}, SEQUENCE_COLUMN: []}
    points = np.zeros((len(kept) * n, 3), np.float32)  # (M, 3)
    for position, capture in enumerate(kept.tolist()):
        layout = np.asarray(layouts[capture])
        if layout.shape != (n, 2) or layout.dtype.kind not in "biuf":
            raise ValueError(f"Expected `layouts[{capture}]` to be real numbers of shape ({n}, 2), but got "
                             f"{layout.dtype} of shape {layout.shape}.")
        if not np.isfinite(layout).all():
            raise ValueError(f"Expected `layouts[{capture}]` to be finite, but got NaN or inf.")
        points[position * n : (position + 1) * n, :2] = layout
        metadata["label"].extend(label_cells)
        metadata["step"].extend([str(int(steps[capture]))] * n)
        for name in names:
            cells = columns[capture].get(name)
            if cells is None:
                metadata[name].extend([""] * n)
                continue
            if len(cells) != n:
                raise ValueError(f"Expected `columns[{capture}][{name!r}]` to have {n} cells, but got {len(cells)}.")
            metadata[name].extend(str(cell) for cell in cells)
        if position + 1 < len(kept):
            metadata[SEQUENCE_COLUMN].extend(str(row) for row in range((position + 1) * n, (position + 2) * n))
        else:
            metadata[SEQUENCE_COLUMN].extend([""] * n)
    note = None
    if len(kept) < num_captures:
        note = (f"Trajectories show {len(kept)} of {num_captures} captures (steps {int(steps[0])} to "
                f"{int(steps[-1])}, evenly spread): the Projector loads at most {max_points:,} points.")
    return points, metadata, note


def write_layouts(
    path: str | os.PathLike[str],
    steps: np.ndarray,
    layouts: np.ndarray | Sequence[np.ndarray],
    dataset_index: np.ndarray,
) -> None:
    """Writes every capture's aligned map to one ``.npz`` file that plain numpy reads, atomically.

    The file holds ``steps`` ``(C,)`` int64, ``layouts`` ``(C, N, 2)`` float32 (point ``i`` of capture
    ``c`` is ``layouts[c, i]``) and ``index`` ``(N,)`` int64 (each point's position in its split).
    Load it with::

        with np.load("layouts.npz") as f:
            steps, layouts, index = f["steps"], f["layouts"], f["index"]

    Raises:
        ValueError: If the shapes disagree or the steps are not integers.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     write_layouts(Path(tmp) / "layouts.npz", np.array([1, 2]), np.zeros((2, 3, 2)), np.arange(3))
        ...     with np.load(Path(tmp) / "layouts.npz") as f:
        ...         sorted(f.files), f["layouts"].shape
        (['index', 'layouts', 'steps'], (2, 3, 2))
    """
    steps = np.asarray(steps)
    stacked = np.asarray(layouts, dtype=np.float32)
    dataset_index = np.asarray(dataset_index)
    if steps.ndim != 1 or (steps.size and not np.issubdtype(steps.dtype, np.integer)):
        raise ValueError(f"Expected `steps` to be a 1-D int array, but got {steps.dtype} of shape {steps.shape}.")
    if stacked.shape != (len(steps), len(dataset_index), 2):
        raise ValueError(f"Expected `layouts` to have shape ({len(steps)}, {len(dataset_index)}, 2), one (N, 2) map "
                         f"per step, but got {stacked.shape}.")
    if dataset_index.ndim != 1 or (dataset_index.size and not np.issubdtype(dataset_index.dtype, np.integer)):
        raise ValueError(f"Expected `dataset_index` to be a 1-D int array, but got {dataset_index.dtype}.")
    arrays = {"steps": steps.astype(np.int64), "layouts": stacked, "index": dataset_index.astype(np.int64)}
    write_atomically(path, lambda f: np.savez(f, **arrays))


def sprite_thumbnails(sprite_path: str | os.PathLike[str], thumb_size: tuple[int, int],
                      indices: np.ndarray | Sequence[int]) -> np.ndarray:
    """The probe images at ``indices``, cut out of a sprite written by
    :func:`~lenet_lightning.projector.write_sprite` (row-major cells of ``thumb_size``).

    Args:
        sprite_path: The sprite PNG.
        thumb_size: ``(height, width)`` of one cell, as ``write_sprite`` returned it.
        indices: Probe positions (cell numbers).

    Returns:
        ``(n, h, w)`` ``uint8`` for a grey sprite, ``(n, h, w, 3)`` for a colour one.

    Raises:
        ValueError: If the sprite's size is not a whole number of cells, or an index has no cell.

    Example:
        >>> import tempfile
        >>> from lenet_lightning.projector import write_sprite
        >>> images = np.arange(5, dtype=np.uint8)[:, None, None] * np.ones((5, 4, 4), np.uint8)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     size = write_sprite(images, Path(tmp) / "sprite.png")
        ...     sprite_thumbnails(Path(tmp) / "sprite.png", size, [4, 1])[:, 0, 0].tolist()
        [4, 1]
    """
    sprite_path = Path(sprite_path)
    height, width = (int(side) for side in thumb_size)
    if height < 1 or width < 1:
        raise ValueError(f"Expected `thumb_size` to be a positive (height, width), but got {thumb_size!r}.")
    with Image.open(sprite_path) as image:
        sprite = np.asarray(image.convert("L" if image.mode in ("L", "1", "P", "I", "I;16") else "RGB"))
    if sprite.shape[0] % height or sprite.shape[1] % width:
        raise ValueError(f"Expected the sprite {str(sprite_path)!r} to be whole cells of {height}x{width}, "
                         f"but it is {sprite.shape[0]}x{sprite.shape[1]}.")
    rows, cols = sprite.shape[0] // height, sprite.shape[1] // width
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= rows * cols):
        raise ValueError(f"Expected `indices` to be in [0, {rows * cols}), the sprite's cells, but got values in "
                         f"[{indices.min()}, {indices.max()}].")
    # (rows, h, cols, w[, 3]) -> (rows * cols, h, w[, 3]): cell r * cols + c is row r, column c.
    cells = sprite.reshape(rows, height, cols, width, *sprite.shape[2:]).swapaxes(1, 2)
    return np.ascontiguousarray(cells.reshape(rows * cols, height, width, *sprite.shape[2:])[indices])


def _format_float(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else ""


def _parse_int(cell: str, name: str) -> int:
    try:
        return int(cell)
    except ValueError:
        raise ValueError(f"Expected the metadata column {name!r} to hold integers, but got {cell!r}.") from None


def _parse_floats(cells: Sequence[str], name: str) -> np.ndarray:
    try:
        return np.array([math.nan if cell == "" else float(cell) for cell in cells], np.float64)
    except ValueError as err:
        raise ValueError(f"Expected the metadata column {name!r} to hold numbers, but got {err}.") from None


def _class_index(class_names: Sequence[str]) -> dict[str, int]:
    names = [str(name) for name in class_names]
    if len(set(names)) != len(names):
        raise ValueError(f"Expected `class_names` to be distinct, but got {names}.")
    return {name: i for i, name in enumerate(names)}


def _names_to_indices(cells: Sequence[str], index: Mapping[str, int], name: str) -> np.ndarray:
    try:
        return np.array([index[cell] for cell in cells], np.int64)
    except KeyError as err:
        raise ValueError(f"Expected the metadata column {name!r} to hold class names ({', '.join(index)}), "
                         f"but got {err.args[0]!r}.") from None


def _check_labels(values: np.ndarray, n: int | None, name: str) -> np.ndarray:
    """``values`` as ``(n,)`` non-negative int64 (any length when ``n`` is ``None``), or raises."""
    array = np.asarray(values)
    if array.ndim != 1 or (n is not None and len(array) != n):
        raise ValueError(f"Expected `{name}` to have shape ({'N' if n is None else n},), but got {array.shape}.")
    if array.size and (not np.issubdtype(array.dtype, np.integer) or array.min() < 0):
        raise ValueError(f"Expected `{name}` to be non-negative integers, but got {array.dtype} values.")
    return array.astype(np.int64)


def _check_probabilities(values: np.ndarray, n: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n,):
        raise ValueError(f"Expected `p_true` to have shape ({n},), but got {array.shape}.")
    finite = array[np.isfinite(array)]
    # float32 softmax can overshoot 1 by a rounding step
    if finite.size and (finite.min() < -1e-6 or finite.max() > 1 + 1e-6):
        raise ValueError(f"Expected `p_true` to be probabilities in [0, 1], but got values in "
                         f"[{finite.min()}, {finite.max()}].")
    return np.where(np.isfinite(array), np.clip(array, 0.0, 1.0), np.nan)


def _check_history(
    steps: np.ndarray, predicted: np.ndarray, p_true: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    steps = np.asarray(steps)
    if steps.ndim != 1 or len(steps) == 0 or not np.issubdtype(steps.dtype, np.integer):
        raise ValueError(f"Expected `steps` to be a non-empty 1-D int array, but got {steps.dtype} of shape "
                         f"{steps.shape}.")
    if (np.diff(steps) <= 0).any():
        raise ValueError(f"Expected `steps` to be strictly increasing, but got {steps.tolist()}.")
    labels = _check_labels(labels, None, "labels")
    shape = (len(steps), len(labels))
    predicted = np.asarray(predicted)
    p_true = np.asarray(p_true, dtype=np.float64)
    if predicted.shape != shape or p_true.shape != shape:
        raise ValueError(f"Expected `predicted` and `p_true` to have shape {shape} (captures, points), but got "
                         f"{predicted.shape} and {p_true.shape}.")
    if predicted.size and (not np.issubdtype(predicted.dtype, np.integer) or predicted.min() < 0):
        raise ValueError(f"Expected `predicted` to be non-negative class indices, but got {predicted.dtype} values.")
    return steps.astype(np.int64), predicted.astype(np.int64), p_true, labels
