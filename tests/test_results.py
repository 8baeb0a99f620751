"""``write_series_results``: what a series ends with, made from its run folder alone.

The run folders are built without a Trainer, the way the ``EmbeddingProjector`` callback builds them:
a ``SeriesRecorder`` writes each capture (``write_capture``) and a ``BackgroundAnalysis`` wired to the
recorder's ``draw_map``, ``read_features`` and ``change`` maps it (``record``). The data is made so that
the answers are known: features go from noise to well separated blobs and settle at step 30; most
points are predicted wrongly until step 30, and a few points have a story of their own (always right,
never right, forgotten and relearned, learned at the last capture).
"""

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from helpers import blobs, read_csv
from PIL import Image

from lenet_lightning import capture, projector
from lenet_lightning.analysis import BackgroundAnalysis
from lenet_lightning.recorder import SeriesRecorder
from lenet_lightning.results import (
    SCORE_COLUMNS,
    TRAJECTORIES,
    SeriesInfo,
    series_tags,
    write_series_results,
)

LAYER = "fc1"  # a hidden layer, as with `--embeddings.layer fc1`; its class vectors are fc2's rows
NAME = SeriesInfo.default_name(LAYER)  # the plot folder's name and the scalars' prefix: embeddings_fc1
CLASS_NAMES = ("zebra", "ant", "moth", "bee")  # not sorted: so where an older run's names come from shows
NUM_CLASSES, PER_CLASS, DIM = 4, 30, 10
STEPS = (0, 10, 20, 30, 40, 50)
SETTLED = 30  # features are the final blobs (plus small noise) from here on: CKA to the final ~0.999
TEST_STEP = 50  # one `test` capture too: a row and a map, but not part of the fit's dynamics
LABELS = blobs(PER_CLASS, NUM_CLASSES, DIM)[1]
DATASET_INDEX = 1000 + 3 * np.arange(len(LABELS))  # where the probe points sit in their split
# Probe positions with a story of their own: (learned_step as in points.csv, forgotten, flips).
ALWAYS, NEVER, RELEARNED, LATE = 0, 1, 2, 3
KNOWN_POINTS = {ALWAYS: ("0", 0, 0), NEVER: ("", 0, 0), RELEARNED: ("30", 1, 3), LATE: ("50", 0, 1)}
OTHER_POINT = ("30", 0, 1)  # every other point: wrong until the settled step, right from there on
DYNAMICS = ("cka_prev", "cka_first", "knn_overlap_prev", "cka_final")

# The recorder and the results report what they lose (a map, a row, a figure) as a UserWarning: none here.
pytestmark = pytest.mark.filterwarnings("error::UserWarning")


def features(step):
    """``(N, D)`` float32 features of the capture at ``step``: noise at 0 and 10, mostly noise at 20,
    the final blobs with a little noise from step 30 on."""
    final = blobs(PER_CLASS, NUM_CLASSES, DIM)[0]
    noise = np.random.default_rng(step + 1).normal(size=final.shape)
    if step < 20:
        return noise.astype(np.float32)
    if step < SETTLED:
        return (noise + 0.1 * final).astype(np.float32)
    return (final + 0.3 * noise).astype(np.float32)


def predictions(step):
    """``(N,)`` what the model predicts at ``step``."""
    wrong = (LABELS + 1) % NUM_CLASSES
    predicted = np.where(step >= SETTLED, LABELS, wrong)
    predicted[ALWAYS] = LABELS[ALWAYS]
    predicted[NEVER] = wrong[NEVER]
    predicted[RELEARNED] = LABELS[RELEARNED] if step == 10 or step >= SETTLED else wrong[RELEARNED]
    predicted[LATE] = LABELS[LATE] if step == STEPS[-1] else (LABELS[LATE] + 2) % NUM_CLASSES
    return predicted


def logits(step):
    """``(N, C)`` outputs whose argmax is :func:`predictions`."""
    return torch.from_numpy(5.0 * np.eye(NUM_CLASSES, dtype=np.float32)[predictions(step)])


def probe_set():
    inputs = torch.from_numpy(np.random.default_rng(0).random((len(LABELS), 1, 8, 8), dtype=np.float32))
    return capture.ProbeSet(inputs, LABELS, CLASS_NAMES, DATASET_INDEX, 2000)


def series_info(run_dir):
    return SeriesInfo(LAYER, CLASS_NAMES, NAME, run_dir / NAME, perplexity=10)


def build_series(run_dir, *, analyse=True, layer=LAYER):
    """Writes the synthetic series into ``run_dir`` as the callback does, without its end: every capture's
    entry and class vectors, then (``analyse``) the background analysis' maps, rows and bookmarks. Without
    ``analyse`` the folder is a run killed before any analysis came back. Returns the recorder."""
    info = series_info(run_dir) if layer == LAYER else SeriesInfo(layer, CLASS_NAMES, SeriesInfo.default_name(layer),
                                                                  run_dir / SeriesInfo.default_name(layer))
    recorder = SeriesRecorder(run_dir, probe_set(), info)
    queue = BackgroundAnalysis(perplexity=10, seed=0, draw=recorder.draw_map, reload=recorder.read_features,
                               change=recorder.change) if analyse else None
    weight = np.random.default_rng(7).normal(size=(NUM_CLASSES, DIM)).astype(np.float32)  # (C, D): fc2's rows
    try:
        for step, stage in [*((step, "fit") for step in STEPS), (TEST_STEP, "test")]:
            layer_output = features(step) if layer == LAYER else logits(step).numpy()
            record = recorder.write_capture(step, stage, layer_output, logits(step), weight)
            assert record is not None
            if queue is not None:
                recorder.expect(record.key)
                queue.submit(record)
                for analysis in queue.poll():
                    recorder.record(analysis)
        if queue is not None:
            for analysis in queue.drain():
                recorder.record(analysis)
    finally:
        if queue is not None:
            queue.close()
    return recorder


def fit_tag(step):
    return f"{LAYER}_step{step:07d}"


TEST_TAG = f"{LAYER}_test_step{TEST_STEP:07d}"
TAGS = [*(fit_tag(step) for step in STEPS), TEST_TAG]


def copy_run(source, folder):
    target = Path(folder) / "version_0"
    shutil.copytree(source, target)
    return target


def tree(folder):
    """Everything under ``folder``: relative path -> (size, mtime) of files, mtime of folders."""
    found = {}
    for path in sorted(Path(folder).rglob("*")):
        stat = path.stat()
        found[path.relative_to(folder).as_posix()] = stat.st_mtime_ns if path.is_dir() else (stat.st_size,
                                                                                             stat.st_mtime_ns)
    return found


def rows_by_tag(run_dir):
    return {row["tag"]: row for row in read_csv(run_dir / NAME / "separation.csv")}


class RecordingWriter:
    """A ``Writer`` that keeps what it is given."""

    def __init__(self):
        self.scalars, self.images = [], []

    def add_scalars(self, values, step):
        self.scalars.append((dict(values), step))

    def add_image(self, tag, encoded, step):
        self.images.append((tag, encoded, step))


_BUILT = {}  # each series is built once per session: test_report.py finishes copies of the same ones


def analysed_series(tmp_path_factory):
    """A series analysed by the recorder but not finished: tests copy it, none writes into it."""
    if "analysed" not in _BUILT:
        run_dir = tmp_path_factory.mktemp("analysed") / "version_0"
        build_series(run_dir)
        _BUILT["analysed"] = run_dir
    return _BUILT["analysed"]


def finished_series(tmp_path_factory):
    """A copy of the analysed series, finished with a writer: ``(run_dir, SeriesResults, RecordingWriter,
    the analysed folder's tree before)``; tests copy its folder, none writes into it."""
    if "finished" not in _BUILT:
        original = analysed_series(tmp_path_factory)
        before = tree(original)
        run_dir = copy_run(original, tmp_path_factory.mktemp("finished"))
        writer = RecordingWriter()
        _BUILT["finished"] = (run_dir, write_series_results(run_dir, LAYER, writer=writer), writer, before)
    return _BUILT["finished"]


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    return analysed_series(tmp_path_factory)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return finished_series(tmp_path_factory)


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A series killed before any analysis came back (``write_capture`` only), then finished."""
    run_dir = tmp_path_factory.mktemp("killed") / "version_0"
    build_series(run_dir, analyse=False)
    assert not (run_dir / NAME / "separation.csv").exists()
    return run_dir, write_series_results(run_dir, LAYER)


def test_write_series_results_lists_the_files_it_wrote(finished):
    run_dir, results, _, _ = finished
    assert results.files and all(path.is_file() for path in results.files)
    assert {path.parent for path in results.files} == {run_dir / NAME}
    assert {"separation.csv", "dynamics.json", "points.csv", "layouts.npz", "tsne_evolution.png",
            "tsne_evolution.gif", "dynamics.png", "cka_matrix.png", "data_map.png", "hardest.png",
            "class_vectors.png", "report.html"} <= {path.name for path in results.files}
    assert results.summary is not None and f"settled at step {SETTLED}" in results.summary


def test_write_series_results_separation_csv_has_each_captures_dynamics(finished):
    run_dir, _, _, _ = finished
    rows = read_csv(run_dir / NAME / "separation.csv")
    assert [row["tag"] for row in rows] == TAGS
    assert {*SCORE_COLUMNS, *DYNAMICS, "nc1", "settled"} <= set(rows[0])
    fit = rows[:len(STEPS)]
    assert [int(row["step"]) for row in fit] == list(STEPS)
    assert [float(row["probe_acc"]) for row in fit] == pytest.approx(
        [np.mean(predictions(step) == LABELS) for step in STEPS])
    assert fit[0]["cka_prev"] == "" and fit[0]["knn_overlap_prev"] == ""
    assert all(0.0 <= float(row["cka_prev"]) <= 1.0 for row in fit[1:])
    assert float(fit[-1]["cka_final"]) == pytest.approx(1.0, abs=1e-9)
    assert all(float(row["cka_final"]) < 0.95 for row in fit if int(row["step"]) < SETTLED)
    assert [int(row["settled"]) for row in fit] == [int(step >= SETTLED) for step in STEPS]
    dynamics = json.loads((run_dir / NAME / "dynamics.json").read_text())
    assert dynamics["settled_step"] == SETTLED and dynamics["steps"] == list(STEPS)
    assert dynamics["cka_final"] == pytest.approx([float(row["cka_final"]) for row in fit], abs=1e-12)
    test_row = rows[-1]  # a test capture is scored and mapped, but is not one of the fit's dynamics
    assert test_row["stage"] == "test" and test_row["knn_acc_2d"] != ""
    assert test_row["cka_final"] == "" and test_row["settled"] == ""


def test_write_series_results_points_csv_tells_each_points_story(finished):
    run_dir, _, _, _ = finished
    rows = read_csv(run_dir / NAME / "points.csv")
    assert [int(row["probe_index"]) for row in rows] == list(range(len(LABELS)))
    assert [int(row["dataset_index"]) for row in rows] == DATASET_INDEX.tolist()
    assert [row["label"] for row in rows] == [CLASS_NAMES[label] for label in LABELS]
    assert [row["predicted"] for row in rows] == [CLASS_NAMES[p] for p in predictions(STEPS[-1])]
    for row in rows:
        story = (row["learned_step"], int(row["forgotten"]), int(row["flips"]))
        assert story == KNOWN_POINTS.get(int(row["probe_index"]), OTHER_POINT), row


def test_write_series_results_evolution_image_and_gif(finished):
    run_dir, _, _, _ = finished
    with Image.open(run_dir / NAME / "tsne_evolution.png") as image:
        assert image.format == "PNG"
    with Image.open(run_dir / NAME / "tsne_evolution.gif") as gif:
        assert gif.format == "GIF"
        assert gif.n_frames > len(STEPS)  # the points move from one map to the next


def test_write_series_results_layouts_npz_holds_the_bookmarked_maps(finished):
    run_dir, _, _, _ = finished
    with np.load(run_dir / NAME / "layouts.npz") as stored:  # numpy alone, no pickle
        assert sorted(stored.files) == ["index", "layouts", "steps"]
        steps, layouts, index = stored["steps"], stored["layouts"], stored["index"]
    assert steps.tolist() == list(STEPS) and index.tolist() == DATASET_INDEX.tolist()
    assert layouts.shape == (len(STEPS), len(LABELS), 2)
    bookmarked = [projector.read_embedding(run_dir, fit_tag(step), tensor=False).layouts[0] for step in STEPS]
    np.testing.assert_allclose(layouts, np.stack(bookmarked), rtol=1e-6, atol=1e-5)


def test_write_series_results_lists_the_trajectories_entry(finished):
    run_dir, _, _, _ = finished
    tag = TRAJECTORIES.format(layer=LAYER)
    assert tag in projector.listed_embeddings(run_dir)
    stored = projector.read_embedding(run_dir, tag)
    assert stored.tensor.shape == (len(STEPS) * len(LABELS), 3)  # every fit map, each point linked onwards
    assert stored.metadata["step"][:: len(LABELS)] == [str(step) for step in STEPS]


def test_write_series_results_gives_the_writer_each_end_of_series_image_once(finished):
    run_dir, _, writer, _ = finished
    counts = Counter(tag for tag, _, _ in writer.images)
    expected = {f"{NAME}/{name}" for name in ("tsne_evolution", "tsne_evolution_animated", "dynamics", "cka_matrix",
                                             "data_map", "hardest", "class_vectors")}
    assert expected <= set(counts) and set(counts.values()) == {1}, counts
    images = {tag: (encoded, step) for tag, encoded, step in writer.images}
    assert images[f"{NAME}/tsne_evolution_animated"][0].startswith(b"GIF8")
    assert images[f"{NAME}/tsne_evolution_animated"][0] == (run_dir / NAME / "tsne_evolution.gif").read_bytes()
    assert images[f"{NAME}/tsne_evolution"][0] == (run_dir / NAME / "tsne_evolution.png").read_bytes()  # one encode
    assert all(encoded.startswith(b"\x89PNG") for tag, (encoded, _) in images.items() if not tag.endswith("animated"))
    assert {step for _, step in images.values()} == {STEPS[-1]}
    cka = [(step, values[f"{NAME}/cka_final"]) for values, step in writer.scalars if f"{NAME}/cka_final" in values]
    assert [step for step, _ in cka] == list(STEPS)  # one per fit capture
    assert [value for _, value in cka] == pytest.approx(json.loads((run_dir / NAME / "dynamics.json").read_text())
                                                        ["cka_final"])


def test_write_series_results_twice_writes_the_same_bytes(finished, tmp_path):
    run_dir, _, _, _ = finished
    again = copy_run(run_dir, tmp_path)
    write_series_results(again, LAYER)
    for name in ("separation.csv", "points.csv", "dynamics.json"):
        assert (again / NAME / name).read_bytes() == (run_dir / NAME / name).read_bytes(), name
    with np.load(again / NAME / "layouts.npz") as second, np.load(run_dir / NAME / "layouts.npz") as first:
        for key in ("steps", "layouts", "index"):
            np.testing.assert_array_equal(second[key], first[key])


def test_write_series_results_maps_and_scores_a_killed_run(killed, finished):
    run_dir, results = killed
    for tag in TAGS:
        assert projector.read_embedding(run_dir, tag, tensor=False).layouts, f"{tag} has no map bookmark"
        assert (run_dir / NAME / f"tsne_{tag}.png").is_file()
    rows = rows_by_tag(run_dir)
    assert list(rows) == TAGS
    for row in rows.values():
        assert all(row[column] != "" for column in SCORE_COLUMNS), row
    assert all(rows[fit_tag(step)]["cka_prev"] != "" for step in STEPS[1:])
    assert results.summary is not None and f"settled at step {SETTLED}" in results.summary
    analysed_rows = rows_by_tag(finished[0])
    for tag in map(fit_tag, STEPS):
        for column in (*DYNAMICS, "probe_acc", "silhouette", "nc1"):
            ours, theirs = rows[tag][column], analysed_rows[tag][column]
            assert (ours == theirs == "") or float(ours) == pytest.approx(float(theirs), abs=1e-6), (tag, column)
        assert rows[tag]["settled"] == analysed_rows[tag]["settled"]
    dynamics = json.loads((run_dir / NAME / "dynamics.json").read_text())
    assert dynamics == json.loads((finished[0] / NAME / "dynamics.json").read_text())
    # Each point's story is in the entries' metadata, written at capture time: the same as the analysed run's.
    assert (run_dir / NAME / "points.csv").read_bytes() == (finished[0] / NAME / "points.csv").read_bytes()


def test_write_series_results_a_killed_run_ends_with_the_analysed_runs_columns(killed, finished):
    killed_rows, analysed_rows = rows_by_tag(killed[0]), rows_by_tag(finished[0])
    for tag in TAGS:
        present = {column for column, value in analysed_rows[tag].items() if value != ""}
        assert present <= {column for column, value in killed_rows[tag].items() if value != ""}, tag


def as_older_version(run_dir, *, class_vectors):
    """Makes ``run_dir`` look like a run of an older version: no ``series_<layer>.json``, no bookmarks, no
    trajectories entry, metadata of label/predicted/correct only, a CSV of the first score columns only;
    without ``class_vectors``, no class-vector entries either."""
    (run_dir / projector.ASSETS_DIRNAME / f"series_{LAYER}.json").unlink()
    config = projector.read_config(run_dir)
    kept = []
    for entry in config.embeddings:
        if entry.tensor_name == TRAJECTORIES.format(layer=LAYER) or (".weight_" in entry.tensor_name
                                                                     and not class_vectors):
            shutil.rmtree((run_dir / entry.tensor_path).parent)
            continue
        if entry.bookmarks_path:
            (run_dir / entry.bookmarks_path).unlink()
            entry.ClearField("bookmarks_path")
        if entry.tensor_name.startswith(f"{LAYER}_"):
            path = run_dir / entry.metadata_path
            header, *rows = [line.split("\t") for line in path.read_text().splitlines()]
            columns = [header.index(name) for name in ("label", "predicted", "correct")]
            path.write_text("".join("\t".join(row[i] for i in columns) + "\n" for row in [header, *rows]))
        kept.append(entry)
    del config.embeddings[:]
    config.embeddings.extend(kept)
    (run_dir / projector.CONFIG_FILENAME).write_text(text_format.MessageToString(config))
    csv_path = run_dir / NAME / "separation.csv"
    rows = read_csv(csv_path)
    for path in (run_dir / NAME).iterdir():
        path.unlink()
    with csv_path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, SCORE_COLUMNS[:5], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def test_write_series_results_finishes_a_run_of_an_older_version(analysed, tmp_path):
    run_dir = copy_run(analysed, tmp_path)
    as_older_version(run_dir, class_vectors=True)
    assert SeriesInfo.read(run_dir, LAYER).class_names == CLASS_NAMES  # the class vectors' labels, in order
    results = write_series_results(run_dir, LAYER)
    names = {path.name for path in results.files}
    assert "points.csv" not in names and not (run_dir / NAME / "points.csv").exists()  # no p_true: no stories
    assert "data_map.png" not in names
    assert {"separation.csv", "dynamics.json", "tsne_evolution.gif", "layouts.npz", "report.html",
            "class_vectors.png"} <= names
    rows = rows_by_tag(run_dir)
    assert list(rows) == TAGS and all(rows[tag]["knn_acc_2d"] != "" for tag in TAGS)
    assert json.loads((run_dir / NAME / "dynamics.json").read_text())["settled_step"] == SETTLED
    for tag in TAGS:
        assert projector.read_embedding(run_dir, tag, tensor=False).layouts, f"{tag} has no map bookmark"
    with np.load(run_dir / NAME / "layouts.npz") as stored:
        assert stored["index"].tolist() == list(range(len(LABELS)))  # no index column: probe positions
    assert TRAJECTORIES.format(layer=LAYER) in projector.listed_embeddings(run_dir)


def test_series_info_of_an_older_run_without_class_vectors_sorts_the_labels(analysed, tmp_path):
    run_dir = copy_run(analysed, tmp_path)
    as_older_version(run_dir, class_vectors=False)
    info = SeriesInfo.read(run_dir, LAYER)
    assert info.class_names == tuple(sorted(CLASS_NAMES))
    assert (info.name, info.plot_dir) == (NAME, run_dir / NAME)


def test_write_series_results_writes_into_a_copied_folders_own_plot_folder(analysed, finished):
    run_dir, results, _, before = finished  # `finished` is a copy of `analysed`, finished where it lies
    assert tree(analysed) == before  # nothing written into, or beside, the original
    assert {path.parent for path in results.files} == {run_dir / NAME}
    assert (run_dir / NAME / "dynamics.json").is_file() and (run_dir / NAME / "points.csv").is_file()
    assert not (analysed / NAME / "dynamics.json").exists()
    assert [tag for tag, _ in series_tags(run_dir, LAYER)] == TAGS


def test_series_info_of_a_copied_folder_of_0x_finds_the_copys_plot_folder(analysed, tmp_path):
    original = copy_run(analysed, tmp_path / "original")
    path = original / projector.ASSETS_DIRNAME / f"series_{LAYER}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "plot_dir": str(original / NAME)}))  # as 0.x wrote it
    copy = copy_run(original, tmp_path / "copy")
    assert SeriesInfo.read(copy, LAYER).plot_dir == copy / NAME
    assert SeriesInfo.read(original, LAYER).plot_dir == original / NAME


def test_write_series_results_refuses_a_folder_without_the_layers_captures(analysed, tmp_path):
    run_dir = copy_run(analysed, tmp_path)
    before = tree(run_dir)
    with pytest.raises(ValueError, match=r"holds none; give the folder of a run"):
        write_series_results(run_dir, "conv1")
    assert tree(run_dir) == before
