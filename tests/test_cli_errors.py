"""Bad input, tried as a new user would: `python cli.py fit --config quickstart ...` as a subprocess in
an empty folder ends in one `error:` line that names the value, exit status 2, and nothing written."""

import contextlib
import os
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from helpers import REPO
from lightning.pytorch.callbacks import Callback

from lenet_lightning import cli, preflight
from lenet_lightning.model import LeNet


def run_cli(cwd, *args):
    return subprocess.run([sys.executable, str(REPO / "cli.py"), "fit", "--config", "quickstart", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def assert_one_error_line(result, *fragments):
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0]


@pytest.fixture
def workdir(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    yield folder
    assert list(folder.iterdir()) == []  # the failed start wrote nothing


def checkpoint_file(folder):
    path = folder / "real.ckpt"
    torch.save({"state_dict": LeNet().state_dict(), "global_step": 0}, path)
    return path


def truncated(folder):
    path = checkpoint_file(folder)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def corrupted(folder):  # whole length, one stored byte flipped in the middle of the weights
    path = checkpoint_file(folder)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda item: item.file_size)
    data[info.header_offset + 200] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def missing(folder):
    return folder / "missing.ckpt"


def empty(folder):
    path = folder / "empty.ckpt"
    path.write_bytes(b"")
    return path


def random_bytes(folder):
    path = folder / "noise.ckpt"
    path.write_bytes(os.urandom(4096))
    return path


BAD_CHECKPOINTS = {"missing": (missing, ["does not exist"]), "empty": (empty, ["empty"]),
                   "truncated": (truncated, ["truncated or corrupted"]),
                   "random-bytes": (random_bytes, ["truncated or corrupted"])}
BAD_LAYERS = ["nope", "fc2/../x y"]


@pytest.fixture(scope="module")
def bad_starts(tmp_path_factory):
    """Each bad `--ckpt_path` and `--embeddings.layer` above, tried in its own empty folder, two
    subprocesses at a time (each is mostly one core importing torch and Lightning):
    ``{case: (completed process, its work folder, the bad checkpoint's path, what its folder held)}``."""
    cases = {}
    for name, (make, _) in BAD_CHECKPOINTS.items():
        inputs = tmp_path_factory.mktemp("inputs")
        path = make(inputs)
        cases[f"ckpt-{name}"] = (["--ckpt_path", str(path)], path)
    for layer in BAD_LAYERS:
        cases[f"layer-{layer}"] = (["--embeddings.layer", layer], None)
    cases["probe-too-small"] = (["--embeddings.num_samples", "5"], None)

    def run(case):
        args, path = cases[case]
        before = sorted(path.parent.iterdir()) if path is not None else None
        workdir = tmp_path_factory.mktemp("work")
        return case, (run_cli(workdir, *args), workdir, path, before)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, cases))


@pytest.mark.parametrize("name", list(BAD_CHECKPOINTS))
def test_cli_bad_ckpt_path_is_one_line_and_writes_nothing(bad_starts, name):
    result, workdir, path, before = bad_starts[f"ckpt-{name}"]
    assert_one_error_line(result, str(path), *BAD_CHECKPOINTS[name][1])
    assert sorted(path.parent.iterdir()) == before  # the bad checkpoint is left as it was
    assert list(workdir.iterdir()) == []  # the failed start wrote nothing


@pytest.mark.parametrize("layer", BAD_LAYERS)
def test_cli_bad_layer_is_one_line_and_writes_nothing(bad_starts, layer):
    result, workdir, _, _ = bad_starts[f"layer-{layer}"]
    assert_one_error_line(result, repr(layer), "choose one of: conv1, conv2, fc1, dropout, fc2")
    assert list(workdir.iterdir()) == []  # the failed start wrote nothing


def test_cli_probe_set_smaller_than_the_classes_is_one_line_at_setup(bad_starts):
    result, workdir, _, _ = bad_starts["probe-too-small"]
    assert_one_error_line(result, "at least the 10 classes", "but got 5;", "--embeddings.num_samples 10")
    assert list(workdir.iterdir()) == []  # it fails in setup, before training wrote anything


@contextlib.contextmanager
def read_only_folder(tmp_path):
    """A folder nobody can write to: a read-only tmpfs where mounting is permitted (root ignores
    permission bits), else permission bits."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("running as root without permission to mount a read-only tmpfs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_cli_default_root_dir_that_cannot_be_written_is_one_line(workdir, tmp_path):
    with read_only_folder(tmp_path) as folder:
        result = run_cli(workdir, "--trainer.default_root_dir", str(folder / "runs"))
        assert_one_error_line(result, str(folder / "runs"), "cannot write in")
        assert list(folder.iterdir()) == []


class FailAtTrainStart(Callback):
    """Stands for any failure after the run folder exists but before the first step."""

    def on_train_start(self, trainer, pl_module):
        raise RuntimeError("boom at start")


def test_cli_failed_start_leaves_no_run_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    monkeypatch.setattr(cli, "TRAINER_DEFAULTS", {**cli.TRAINER_DEFAULTS, "callbacks": [FailAtTrainStart()]})
    with pytest.raises(RuntimeError, match="boom at start"):
        cli.cli_main(["fit", "--config", "quickstart", "--trainer.default_root_dir", str(tmp_path),
                      "--trainer.enable_progress_bar", "false", "--embeddings.enabled", "false"])
    assert list((tmp_path / "lightning_logs").iterdir()) == []


def test_cli_failure_after_training_started_keeps_the_run_folder(tmp_path, monkeypatch):
    class FailAfterTwoSteps(Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 2:
                raise RuntimeError("boom later")

    monkeypatch.setattr(sys, "argv", ["cli.py"])
    monkeypatch.setattr(cli, "TRAINER_DEFAULTS", {**cli.TRAINER_DEFAULTS, "callbacks": [FailAfterTwoSteps()]})
    with pytest.raises(RuntimeError, match="boom later"):
        cli.cli_main(["fit", "--config", "quickstart", "--trainer.default_root_dir", str(tmp_path),
                      "--trainer.enable_progress_bar", "false", "--embeddings.enabled", "false"])
    (run_dir,) = (tmp_path / "lightning_logs").iterdir()
    assert (run_dir / "config.yaml").is_file()


# The same checks in-process, for the cases the subprocesses above do not repeat.
@pytest.mark.parametrize(("make", "fragment"), [(corrupted, "truncated or corrupted"), (lambda f: f, "not a file"),
                                                (checkpoint_file, None)], ids=["corrupted", "a-folder", "whole"])
def test_check_checkpoint_names_what_is_wrong(tmp_path, make, fragment):
    path = str(make(tmp_path))
    if fragment is None:
        preflight.check_checkpoint(path)  # a whole checkpoint passes
        return
    with pytest.raises(ValueError, match=fragment) as info:
        preflight.check_checkpoint(path)
    assert path in str(info.value) and len(str(info.value).splitlines()) == 1


def test_check_writable_folder_under_a_file(tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"is not a folder\); choose another folder"):
        preflight.check_writable_folder(str(blocker / "runs"), "--trainer.default_root_dir")
    preflight.check_writable_folder(str(tmp_path / "new" / "runs"), "--trainer.default_root_dir")  # creatable: fine
    assert sorted(tmp_path.iterdir()) == [blocker]  # checked, not created

