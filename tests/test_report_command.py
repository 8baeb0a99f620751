"""``lenet-lightning report RUN_DIR`` on run folders written without a Trainer: by the series
recorder alone, as a run killed before its maps left it, and as an older version of the package
left it (no series file, no bookmarks, fewer metadata columns)."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, read_csv

from lenet_lightning import capture, projector, report
from lenet_lightning.analysis import Analysis
from lenet_lightning.recorder import SeriesRecorder
from lenet_lightning.results import SeriesInfo
from lenet_lightning.scores import separation_scores

STEPS = (0, 10, 20, 30)
N_PER_CLASS, CLASSES = 25, ("a", "b", "c", "d")


def write_run(run_dir, analysed=True):
    """A 4-capture series of 4 classes that go from noise to well-separated blobs, written by the
    recorder; its analyses (scores, no maps) recorded unless ``analysed`` is false."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(CLASSES)), N_PER_CLASS)
    n = len(labels)
    probe = capture.ProbeSet(torch.rand(n, 1, 8, 8), labels, CLASSES, np.arange(n), n)
    info = SeriesInfo("fc2", CLASSES, "embeddings", run_dir / "embeddings", perplexity=10.0)
    recorder = SeriesRecorder(run_dir, probe, info)
    centres = rng.normal(scale=5.0, size=(len(CLASSES), 10))
    noise = rng.normal(size=(n, 10))
    for i, step in enumerate(STEPS):
        features = (i / 3 * centres[labels] + noise).astype(np.float32)
        logits = torch.from_numpy(features[:, :4] + 4.0 * i * np.eye(4)[labels]).float()
        record = recorder.write_capture(step, "fit", features, logits)
        if analysed:
            scores = separation_scores(features, None, labels)
            recorder.record(Analysis(record, {**scores, **recorder.change(record)}))
    return run_dir


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A run folder completed once by the report command, and what it wrote."""
    run_dir = write_run(tmp_path_factory.mktemp("finished") / "version_0")
    assert report.main([str(run_dir)]) == 0
    return run_dir


def tree(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in Path(folder).rglob("*"))


def test_report_completes_a_run_whose_captures_were_never_mapped(finished):
    plots = finished / "embeddings"
    for name in ("report.html", "tsne_evolution.gif", "tsne_evolution.png", "dynamics.json", "points.csv",
                 "data_map.png", "layouts.npz", *(f"tsne_fc2_step{s:07d}.png" for s in STEPS)):
        assert (plots / name).stat().st_size > 0, name
    rows = read_csv(plots / "separation.csv")
    assert [int(row["step"]) for row in rows] == list(STEPS)
    assert all(row["knn_acc_2d"] and row["trustworthiness"] for row in rows)  # the maps' scores, made now
    assert float(rows[-1]["cka_final"]) == pytest.approx(1.0)
    for step in STEPS:  # every capture got its map as a bookmark
        assert projector.read_embedding(finished, f"fc2_step{step:07d}", tensor=False).layouts
    layouts = np.load(plots / "layouts.npz")
    assert list(layouts["steps"]) == list(STEPS) and layouts["layouts"].shape == (4, 100, 2)
    html = (plots / "report.html").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html


def test_report_of_a_killed_run_gives_the_finished_runs_numbers(finished, tmp_path):
    killed = write_run(tmp_path / "version_0", analysed=False)  # entries only: no CSV, no maps
    assert report.main([str(killed)]) == 0
    columns = ("cka_prev", "cka_first", "knn_overlap_prev", "cka_final", "nc1", "settled", "silhouette", "probe_acc")
    got, want = read_csv(killed / "embeddings" / "separation.csv"), read_csv(finished / "embeddings" / "separation.csv")
    for row, expected in zip(got, want, strict=True):
        for column in columns:
            assert (row[column] == "") == (expected[column] == ""), column
            if row[column]:
                assert float(row[column]) == pytest.approx(float(expected[column]), abs=1e-6), column
    assert (killed / "embeddings" / "points.csv").read_bytes() == (finished / "embeddings" / "points.csv").read_bytes()


def test_report_of_an_older_versions_run_infers_what_it_lacks(finished, tmp_path):
    old = tmp_path / "version_0"
    shutil.copytree(finished, old)
    shutil.rmtree(old / "embeddings")
    (old / "projector" / "series_fc2.json").unlink()
    for step in STEPS:  # no bookmarks, and only the first three metadata columns
        entry = old / "projector" / f"fc2_step{step:07d}"
        (entry / "bookmarks.json").unlink()
        lines = (entry / "metadata.tsv").read_text().splitlines()
        (entry / "metadata.tsv").write_text("".join("\t".join(line.split("\t")[:3]) + "\n" for line in lines))
    config = projector.read_config(old)
    for info in config.embeddings:
        info.ClearField("bookmarks_path")
    (old / projector.CONFIG_FILENAME).write_text(str(config))
    assert report.main([str(old)]) == 0
    plots = old / "embeddings"
    assert {"tsne_evolution.gif", "report.html", "dynamics.json", "separation.csv"} <= {p.name for p in plots.iterdir()}
    assert not (plots / "points.csv").exists()  # no p_true: no per-point story, and no error


def test_report_of_a_copied_run_writes_into_the_copy_only(finished, tmp_path):
    copy = tmp_path / "elsewhere" / "version_0"
    shutil.copytree(finished, copy)
    for path in (copy / "embeddings").glob("*.png"):
        path.unlink()
    before = tree(finished)
    assert report.main([str(copy)]) == 0
    assert tree(finished) == before
    assert (copy / "embeddings" / "tsne_evolution.png").is_file()


@pytest.mark.parametrize("case", ["missing", "empty", "no-captures", "lightning_logs", "layer"])
def test_report_of_a_folder_that_is_not_a_run_is_one_error_line_and_writes_nothing(finished, tmp_path, capsys,
                                                                                     case):
    folder, args = tmp_path / case, []
    if case == "empty":
        folder.mkdir()
    elif case == "no-captures":
        projector.update_projector_config(folder, [])
    elif case == "lightning_logs":
        shutil.copytree(finished, folder / "version_0")
    elif case == "layer":
        shutil.copytree(finished, folder)
        args = ["--layer", "fc1"]
    before = tree(tmp_path)
    assert report.main([str(folder), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(folder) in err[0], err
    assert tree(tmp_path) == before
    if case == "lightning_logs":
        assert "version_0" in err[0]
    if case == "layer":
        assert "fc2" in err[0]


@pytest.mark.slow
def test_report_through_the_cli_as_users_start_it(finished, tmp_path):
    copy = tmp_path / "version_0"
    shutil.copytree(finished, copy)
    (copy / "embeddings" / "report.html").unlink()
    result = subprocess.run([sys.executable, str(REPO / "cli.py"), "report", str(copy)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fc2: wrote" in result.stdout and (copy / "embeddings" / "report.html").is_file()
    helped = subprocess.run([sys.executable, "-m", "lenet_lightning.report", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert helped.returncode == 0 and "run_dir" in helped.stdout and "report.html" in helped.stdout
