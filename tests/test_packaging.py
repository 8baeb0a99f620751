"""The package as it is shipped: the sdist and the wheel hold what they must, and the wheel, installed
(not editable) into a new environment, trains from an empty folder with a shipped config by name."""

import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
from helpers import REPO, read_projector

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """The sdist, and the wheel built from it (as `python -m build` does), offline."""
    if not (REPO / "pyproject.toml").is_file():
        pytest.skip("not a source tree")
    outdir = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(outdir), str(REPO)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,) = outdir.glob("*.tar.gz")
    (wheel,) = outdir.glob("*.whl")
    return sdist, wheel


def test_sdist_holds_tests_configs_license_and_the_cli(dist):
    sdist, _ = dist
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    tests = {f"tests/{path.name}" for path in (REPO / "tests").glob("*.py")}
    configs = {f"lenet_lightning/configs/{path.name}" for path in (REPO / "lenet_lightning" / "configs").glob("*.yaml")}
    assert {"tests/conftest.py", "tests/helpers.py"} <= tests
    assert tests | configs | {"LICENSE", "README.md", "CONTRIBUTING.md", "cli.py", "pyproject.toml", "bench/README.md",
                                 "docs/tsne_evolution.gif", "docs/live_projector.md"} <= names


def test_wheel_holds_the_package_its_configs_and_license_not_the_tests(dist):
    _, wheel = dist
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert {"lenet_lightning/cli.py", "lenet_lightning/configs/quickstart.yaml"} <= names
    assert any(re.fullmatch(r"lenet_lightning-[^/]+\.dist-info/licenses/LICENSE", name) for name in names)
    assert not any(name.startswith("tests/") for name in names)
    assert "lenet-lightning = lenet_lightning.cli:main" in entry_points


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory):
    """A new venv with the wheel installed (`pip install`, not editable); its dependencies are borrowed
    from the tests' environment through a .pth file, since nothing may be downloaded here."""
    _, wheel = dist
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # After the venv's own site-packages: the installed wheel wins over anything borrowed.
    Path(purelib, "zz_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--quiet", str(wheel)], check=True, timeout=300)
    return venv


def test_installed_wheel_is_what_runs(installed, tmp_path):
    code = "import lenet_lightning; print(lenet_lightning.__file__)"
    where = subprocess.run([str(installed / "bin" / "python"), "-c", code], cwd=tmp_path, check=True,
                           capture_output=True, text=True).stdout
    assert where.startswith(str(installed))


def test_installed_help_says_where_the_shipped_configs_are(installed, tmp_path):
    result = subprocess.run([str(installed / "bin" / "lenet-lightning"), "--help"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "COLUMNS": "300"})
    assert result.returncode == 0, result.stderr
    assert "quickstart" in result.stdout and str(installed) in result.stdout
    assert "lenet_lightning/configs" in result.stdout


def test_installed_console_script_trains_from_an_empty_folder(installed, tmp_path):
    empty = tmp_path / "empty folder"
    empty.mkdir()
    result = subprocess.run([str(installed / "bin" / "lenet-lightning"), "fit", "--config", "quickstart",
                             "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"],
                            cwd=empty, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert sorted(p.name for p in empty.iterdir()) == ["lightning_logs"]
    run_dir = empty / "lightning_logs" / "version_0"
    assert [tag for tag in read_projector(run_dir) if tag.startswith("fc2_step")] == ["fc2_step0000000",
                                                                                      "fc2_step0000039"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "embeddings" / "tsne_evolution.png").is_file()
