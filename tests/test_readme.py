"""The README's commands, run as a new user runs them: read from README.md itself, in a subprocess,
from a fresh copy of the repository in a folder whose name has a space and a non-ASCII letter, with
default (relative) paths and nothing else set. Only `--trainer.max_epochs` is appended, to keep them
short; `.venv/bin/` becomes the bin folder of the interpreter running the tests.

`.ci/run` runs the first command whole (venv, install, full quickstart) in CI's clean clone.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import REPO, read_csv, read_projector
from readme import readme_command

pytestmark = pytest.mark.slow

BIN = str(Path(sys.executable).parent)
IGNORED = shutil.ignore_patterns(".venv", ".git", "lightning_logs", "data", "build", "dist", "__pycache__",
                                 "*.egg-info", ".pytest_cache", ".ruff_cache")


def fresh_copy(destination: Path) -> Path:
    """The repository as a clone (or an unpacked sdist) has it: tracked and new files, nothing ignored."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, check=True,
                                capture_output=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: an unpacked sdist
        shutil.copytree(REPO, destination, symlinks=True, ignore=IGNORED)
        return destination
    for name in filter(None, listed):
        source, target = REPO / name, destination / name
        if not source.is_symlink() and not source.exists():
            continue  # deleted in the working tree, not yet committed
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return destination


def run(command: str, cwd: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``command`` from the README through bash, as typed, with ``extra`` arguments appended."""
    command = command.replace(".venv/bin/", BIN + "/")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "PYTEST"))}
    return subprocess.run(["bash", "-c", " ".join([command, *extra])], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**env, "COLUMNS": "120"})


def training_part(command: str) -> str:
    """The first command is `make a venv && install && train`; the tests' interpreter is installed."""
    return command.split("&&")[-1].strip()


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A fresh copy of the repository in which the README's first command has run (2 epochs)."""
    folder = fresh_copy(tmp_path_factory.mktemp("readme") / "my clone ü")
    result = run(training_part(readme_command("cli.py fit", "quickstart")), folder, "--trainer.max_epochs", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    return folder, result


def test_readme_first_command_writes_entries_plots_and_checkpoints_under_lightning_logs(clone):
    folder, _ = clone
    run_dir = folder / "lightning_logs" / "version_0"
    assert sorted(p.name for p in folder.iterdir() if p.name not in os.listdir(REPO)) == ["lightning_logs"]
    entries = read_projector(run_dir)
    assert [tag for tag in entries if tag.startswith("fc2_step")] == ["fc2_step0000000", "fc2_step0000078"]
    config = (run_dir / "projector_config.pbtxt").read_text()
    assert 'image_path: "projector/sprite.png"' in config and (run_dir / "projector" / "sprite.png").is_file()
    for name in ("tsne_fc2_step0000000.png", "tsne_fc2_step0000078.png", "tsne_evolution.png", "class_vectors.png"):
        assert (run_dir / "embeddings" / name).stat().st_size > 1000, name
    first, last = read_csv(run_dir / "embeddings" / "separation.csv")
    assert (first["step"], last["step"]) == ("0", "78")
    assert float(last["knn_acc_2d"]) > float(first["knn_acc_2d"])  # the classes separate as it learns
    assert float(last["probe_acc"]) > 0.7
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    assert not list(folder.glob("**/lightning_logs/**/lightning_logs"))  # no folder nested in itself


def test_readme_first_command_console_is_clean(clone):
    _, result = clone
    console = result.stdout + result.stderr
    assert "Traceback" not in console
    assert "Tip:" not in console and "litlogger" not in console  # upstream's advertisement
    assert "LeafSpec" not in console  # upstream's deprecation warning
    # On its own line: what precedes it, less the progress bar's cursor moves, ends a line.
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", console)
    for match in re.finditer("EmbeddingProjector: waiting", plain):
        assert plain[match.start() - 1] in "\r\n", plain[match.start() - 200: match.end()]


def test_readme_ls_command_lists_the_plots(clone):
    folder, _ = clone
    result = run(readme_command("ls lightning_logs"), folder)
    assert result.returncode == 0, result.stderr
    assert {"tsne_evolution.png", "class_vectors.png", "separation.csv"} <= set(result.stdout.split())


def test_readme_report_command_remakes_the_offline_results_from_the_run_folder(clone):
    folder, _ = clone
    plots = folder / "lightning_logs" / "version_0" / "embeddings"
    made = {"report.html", "tsne_evolution.gif", "tsne_evolution.png", "dynamics.json", "points.csv"}
    assert made <= {p.name for p in plots.iterdir()}  # the run's own end of fit made them
    before = {name: (plots / name).read_bytes() for name in made}
    for name in made:
        (plots / name).unlink()
    result = run(readme_command("cli.py report"), folder)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "fc2 settled at step" in result.stdout or "fc2 did not settle" in result.stdout
    for name in ("tsne_evolution.png", "dynamics.json", "points.csv"):
        assert (plots / name).read_bytes() == before[name], name  # the same files, from the folder alone
    html = (plots / "report.html").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert (plots / "tsne_evolution.gif").read_bytes()[:6] == b"GIF89a"


@pytest.mark.parametrize(("subcommand", "version", "metric"), [("test", 1, "test/acc"), ("validate", 2, "val/acc")])
def test_readme_test_and_validate_commands_score_the_best_checkpoint(clone, subcommand, version, metric):
    folder, _ = clone
    result = run(readme_command(f"cli.py {subcommand}", "quickstart"), folder)
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if metric in line)
    assert float(line.split()[-1]) > 0.5
    run_dir = folder / "lightning_logs" / f"version_{version}"
    assert [tag for tag in read_projector(run_dir) if tag.startswith("fc2_")] == [f"fc2_{subcommand}_step0000078"]


def test_readme_resume_command_continues_the_series_in_place(clone):
    folder, _ = clone
    result = run(readme_command("--ckpt_path", "last.ckpt", "--trainer.logger.version 0"), folder,
                 "--trainer.max_epochs", "3")
    assert result.returncode == 0, result.stderr[-4000:]
    run_dir = folder / "lightning_logs" / "version_0"
    assert [tag for tag in read_projector(run_dir) if tag.startswith("fc2_step")] == [
        "fc2_step0000000", "fc2_step0000078", "fc2_step0000100", "fc2_step0000117"]
    assert [row["step"] for row in read_csv(run_dir / "embeddings" / "separation.csv")] == ["0", "78", "100", "117"]
    assert (run_dir / "config_1.yaml").is_file()


def test_readme_tensorboard_command_serves_the_run_and_its_projector(clone):
    folder, _ = clone
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = readme_command("tensorboard --logdir").replace(".venv/bin/", BIN + "/")
    server = subprocess.Popen(["bash", "-c", f"exec {command} --host 127.0.0.1 --port {port} --load_fast=false"],
                              cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        deadline, runs = time.monotonic() + 60, ""
        while time.monotonic() < deadline and "version_0" not in runs:
            try:
                with opener.open(f"http://127.0.0.1:{port}/data/plugin/projector/runs", timeout=5) as response:
                    runs = response.read().decode()
            except OSError:
                time.sleep(0.2)
        assert "version_0" in runs
        with opener.open(f"http://127.0.0.1:{port}/data/plugin/projector/info?run=version_0", timeout=30) as response:
            assert "fc2_step0000000" in response.read().decode()
    finally:
        server.terminate()
        server.wait(timeout=30)
