"""``report RUN_DIR`` as users run it: ``python cli.py report`` as a real subprocess; ``report.main``,
``cli_main`` and ``python -m lenet_lightning.report`` (through runpy) in-process for the rest. Run folders are
built without a Trainer (see ``test_results.build_series``); the finished one is test_results' own."""

import os
import runpy
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO
from PIL import Image
from test_results import LAYER, NAME, SETTLED, STEPS, build_series, copy_run, finished_series, tree

from lenet_lightning import projector, report

CSV_LIKE = ("separation.csv", "points.csv", "dynamics.json", "report.html")


def run_command(*args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"})


def one_error_line(err, *fragments):
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def killed_run(run_dir, layers=(LAYER,)):
    """A run killed before any analysis came back: captures' entries only (cheap: no t-SNE)."""
    for layer in layers:
        build_series(run_dir, analyse=False, layer=layer)
    return run_dir


def missing(tmp_path):
    return tmp_path / "nowhere"


def a_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a run\n")
    return path


def empty(tmp_path):
    path = tmp_path / "empty"
    path.mkdir()
    return path


def config_of_no_captures(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    (path / projector.CONFIG_FILENAME).touch()
    return path


def config_of_class_vectors_only(tmp_path):  # class vectors are not a series
    path = tmp_path / "run"
    projector.write_embedding(path, "fc2.weight_step0000000", np.eye(4, 10), ["a", "b", "c", "d"])
    return path


def unreadable_config(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    (path / projector.CONFIG_FILENAME).write_text("garbage {\n")
    return path


def lightning_logs(tmp_path):
    killed_run(tmp_path / "lightning_logs" / "version_0")
    return tmp_path / "lightning_logs"


@pytest.mark.parametrize(("make", "hint"), [
    (missing, "is not a folder"),
    (a_file, "is not a folder"),
    (empty, "has none; give the folder of a run"),
    (config_of_no_captures, "lists none"),
    (config_of_class_vectors_only, "lists none"),
    (unreadable_config, "ProjectorConfig text proto"),
    (lightning_logs, os.path.join("lightning_logs", "version_0")),  # points at the run inside
])
def test_report_refuses_a_folder_that_is_not_a_run_and_writes_nothing(tmp_path, capsys, make, hint):
    folder = make(tmp_path)
    before = tree(tmp_path)
    assert report.main([str(folder)]) == 2
    captured = capsys.readouterr()
    one_error_line(captured.err, str(folder), hint)
    assert captured.out == ""
    assert tree(tmp_path) == before


@pytest.mark.parametrize("layers", [["conv9"], [LAYER, "conv9"]])
def test_report_refuses_a_layer_the_run_lacks_and_lists_those_it_has(tmp_path, capsys, layers):
    run_dir = killed_run(tmp_path / "version_0", layers=(LAYER, "fc2"))
    before = tree(tmp_path)
    assert report.main([str(run_dir), *(arg for layer in layers for arg in ("--layer", layer))]) == 2
    captured = capsys.readouterr()
    one_error_line(captured.err, "'conv9'", "fc1, fc2")
    assert tree(tmp_path) == before  # not even the series it has


def test_report_layer_finishes_that_series_only(tmp_path, capsys):
    run_dir = killed_run(tmp_path / "version_0", layers=(LAYER, "fc2"))
    other = tree(run_dir / "embeddings")  # fc2's plot folder: the recorder made it, nothing in it yet
    assert report.main([str(run_dir), "--layer", LAYER]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.splitlines()[0].startswith(f"{LAYER}: wrote ") and str(run_dir / NAME) in captured.out
    assert f"settled at step {SETTLED}" in captured.out
    assert (run_dir / NAME / "report.html").is_file() and (run_dir / NAME / "points.csv").is_file()
    assert tree(run_dir / "embeddings") == other


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished synthetic run (test_results' own, built once per session): tests copy it."""
    return finished_series(tmp_path_factory)[0]


def test_report_rebuilds_what_was_deleted_from_a_finished_run(finished, tmp_path, capsys):
    run_dir = copy_run(finished, tmp_path / "lightning_logs")
    plots = run_dir / NAME
    written = {path.name: path.read_bytes() for path in plots.iterdir()}
    for name in written:
        if name != "separation.csv":
            (plots / name).unlink()
    assert report.main([str(run_dir)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert f"{LAYER}: wrote " in captured.out and f"settled at step {SETTLED}" in captured.out
    assert sorted(path.name for path in plots.iterdir()) == sorted(written)
    for name in CSV_LIKE:
        assert (plots / name).read_bytes() == written[name], name
    for name in written:
        if name.endswith((".png", ".gif")):
            with Image.open(plots / name) as image:
                image.verify()
    with np.load(plots / "layouts.npz") as stored:
        assert stored["layouts"].shape[0] == len(STEPS)


def test_cli_report_finishes_a_run_as_users_start_it(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path / "lightning_logs")
    before = {path.name: path.read_bytes() for path in (run_dir / NAME).iterdir()}
    result = run_command(str(REPO / "cli.py"), "report", str(run_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "warning:" not in result.stderr
    assert result.stdout.splitlines()[0].startswith(f"{LAYER}: wrote ") and str(run_dir / NAME) in result.stdout
    assert f"settled at step {SETTLED}" in result.stdout
    assert sorted(path.name for path in (run_dir / NAME).iterdir()) == sorted(before)  # a finished run: no new file
    for name in CSV_LIKE:
        assert (run_dir / NAME / name).read_bytes() == before[name], name
    assert sorted(path.name for path in tmp_path.iterdir()) == ["lightning_logs"]  # nothing in the working folder


def test_report_module_help_names_the_run_folder_and_what_it_writes(monkeypatch, capsys):
    # `python -m lenet_lightning.report --help`, in-process: runpy runs the module as `__main__`, as -m does
    monkeypatch.setattr(sys, "argv", ["lenet_lightning.report", "--help"])
    monkeypatch.delitem(sys.modules, "lenet_lightning.report", raising=False)  # as -m finds it: not imported yet
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("lenet_lightning.report", run_name="__main__")
    assert exit_info.value.code in (0, None)
    text = " ".join(capsys.readouterr().out.split())
    assert "RUN_DIR" in text and "report.html" in text and "--layer" in text


@pytest.mark.parametrize(("args", "fragments"), [
    (["report", "--help"], ("RUN_DIR", "report.html", "--layer")),
    (["--help"], ("report RUN_DIR", "report.html")),
])
def test_cli_help_mentions_the_report_command(monkeypatch, capsys, args, fragments):
    from lenet_lightning.cli import cli_main  # what `python cli.py ...` runs (cli.py holds nothing else)

    monkeypatch.setattr(sys, "argv", ["cli.py"])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args)
    assert exit_info.value.code in (0, None)
    text = " ".join(capsys.readouterr().out.split())
    for fragment in fragments:
        assert fragment in text
