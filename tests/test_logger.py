"""``ClaimingTensorBoardLogger``: fits started at once in one root never share a version folder."""

import os
import subprocess
import sys
import time

import pytest
import yaml
from helpers import REPO, read_scalars, run_dirs
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from lenet_lightning.cli import cli_main
from lenet_lightning.logger import ClaimingTensorBoardLogger, claim_version

QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


def test_claim_version_takes_the_next_number_that_is_free(tmp_path):
    (tmp_path / "version_0").mkdir()
    (tmp_path / "version_3").mkdir()
    assert claim_version(tmp_path) == 1
    assert claim_version(tmp_path, first=3) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["version_0", "version_1", "version_3", "version_4"]
    assert claim_version(tmp_path / "new" / "root") == 0  # the root is created


@pytest.mark.parametrize("first", [-1, 1.0, "1", True, None])
def test_claim_version_rejects_a_bad_first(tmp_path, first):
    with pytest.raises(ValueError, match="Expected `first` to be a non-negative int"):
        claim_version(tmp_path, first=first)


def test_claiming_logger_two_loggers_in_one_root_get_their_own_folder(tmp_path):
    # Both pick a version before either writes anything: the moment two fits started together share.
    # Lightning's own logger gives both version 0 here.
    assert (TensorBoardLogger(tmp_path).version, TensorBoardLogger(tmp_path).version) == (0, 0)
    first, second = ClaimingTensorBoardLogger(tmp_path / "ours"), ClaimingTensorBoardLogger(tmp_path / "ours")
    assert (first.version, second.version) == (0, 1)
    assert first.log_dir != second.log_dir
    assert sorted(p.name for p in (tmp_path / "ours" / "lightning_logs").iterdir()) == ["version_0", "version_1"]
    # The claimed folder is where the events go.
    first.log_metrics({"a": 1.0}, step=0)
    first.finalize("success")
    assert read_scalars(first.log_dir, "a") == [(0, 1.0)]
    assert list(os.scandir(second.log_dir)) == []


def test_claiming_logger_continues_after_the_highest_version(tmp_path):
    for version in (0, 1, 5):
        (tmp_path / "lightning_logs" / f"version_{version}").mkdir(parents=True)
    assert ClaimingTensorBoardLogger(tmp_path).version == 6  # as Lightning's: gaps are not refilled


@pytest.mark.parametrize("version", [0, "resumed"])
def test_claiming_logger_uses_a_given_version_as_is(tmp_path, version):
    name = version if isinstance(version, str) else f"version_{version}"
    (tmp_path / "lightning_logs" / name).mkdir(parents=True)
    (tmp_path / "lightning_logs" / name / "keep.txt").write_text("earlier")
    logger = ClaimingTensorBoardLogger(tmp_path, version=version)
    assert logger.version == version and logger.log_dir == str(tmp_path / "lightning_logs" / name)
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == [name]


def test_claiming_logger_claims_nothing_on_other_ranks(tmp_path, monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert ClaimingTensorBoardLogger(tmp_path).version == 0
    assert not (tmp_path / "lightning_logs").exists()  # only rank 0 creates folders


def test_claiming_logger_claims_where_log_dir_points_with_a_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RUNS", "runs")
    logger = ClaimingTensorBoardLogger("~/$RUNS")
    assert logger.version == 0
    assert logger.log_dir == str(tmp_path / "home" / "runs" / "lightning_logs" / "version_0")
    assert os.path.isdir(logger.log_dir)


def test_cli_default_logger_claims_and_resumes_in_place(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    args = ["fit", "--config", QUICKSTART, "--trainer.default_root_dir", str(tmp_path),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
            "--embeddings.enabled", "false"]
    cli = cli_main(args)
    assert isinstance(cli.trainer.logger, ClaimingTensorBoardLogger)
    (run_dir,) = run_dirs(tmp_path)
    assert run_dir.name == "version_0"
    resumed = cli_main([*args, "--trainer.max_epochs", "2", "--trainer.logger.version", "0",
                        "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")])
    assert resumed.trainer.log_dir == str(run_dir) and run_dirs(tmp_path) == [run_dir]
    assert [step for step, _ in read_scalars(run_dir, "val/acc")] == [1, 3]


@pytest.mark.slow
def test_cli_two_fits_started_together_in_one_root_each_get_a_folder(tmp_path):
    # Each process imports everything first, then waits for the same go file, so both reach the
    # choice of a version folder as close together as two processes can.
    launcher = ("import os, sys, time\n"
                "from lenet_lightning.cli import cli_main\n"
                "open(sys.argv[1], 'w').close()\n"
                "while not os.path.exists(sys.argv[2]):\n"
                "    time.sleep(0.001)\n"
                "sys.argv = ['cli.py', *sys.argv[3:]]\n"
                "cli_main()\n")
    go = tmp_path / "go"
    args = ["fit", "--config", QUICKSTART, "--trainer.default_root_dir", "runs", "--trainer.enable_progress_bar",
            "false", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--embeddings.enabled", "false"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = []
    try:
        for index in range(2):
            ready = tmp_path / f"ready{index}"
            log = open(tmp_path / f"fit{index}.log", "w")  # noqa: SIM115 - closed below
            procs.append((subprocess.Popen([sys.executable, "-c", launcher, str(ready), str(go), *args],
                                           cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT), log, ready))
        deadline = time.monotonic() + 300
        while not all(ready.exists() for _, _, ready in procs):
            assert all(proc.poll() is None for proc, _, _ in procs), "a fit exited before it was ready"
            assert time.monotonic() < deadline, "the fits did not start"
            time.sleep(0.05)
        go.touch()
        codes = [proc.wait(timeout=300) for proc, _, _ in procs]
    finally:
        for proc, log, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    logs = [(tmp_path / f"fit{index}.log").read_text() for index in range(2)]
    assert codes == [0, 0], logs

    folders = run_dirs(tmp_path / "runs")
    assert [folder.name for folder in folders] == ["version_0", "version_1"]
    for folder in folders:
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1
        assert [p.name for p in folder.glob("config*.yaml")] == ["config.yaml"]
        assert yaml.safe_load((folder / "config.yaml").read_text())["trainer"]["max_steps"] == 2
        assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["last.ckpt"]
