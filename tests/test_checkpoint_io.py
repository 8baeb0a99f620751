"""``AtomicCheckpointIO``: a checkpoint is replaced in one step in its own folder, or not at all."""

import errno
import sys
import tempfile

import pytest
import torch
from helpers import REPO, run_dirs
from lightning.pytorch.plugins.environments import LightningEnvironment
from lightning.pytorch.plugins.io import TorchCheckpointIO
from tmpfs import small_tmpfs

from lenet_lightning.checkpoint_io import AtomicCheckpointIO
from lenet_lightning.cli import cli_main

QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


def checkpoint(megabytes, value):
    return {"state_dict": {"w": torch.full((megabytes * 262_144,), float(value))}}  # float32: 4 bytes each


def test_atomic_checkpoint_io_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    # The run folder on a small tmpfs, the system's temp folder on another filesystem: Lightning's own
    # TorchCheckpointIO copies its temporary file over the checkpoint there, and a full disk leaves it
    # truncated (it no longer loads).
    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        folder = disk / "version_0" / "checkpoints"
        path = folder / "best.ckpt"
        checkpoint_io = AtomicCheckpointIO()
        checkpoint_io.save_checkpoint(checkpoint(1, 1), path)
        with pytest.raises(OSError) as error:
            checkpoint_io.save_checkpoint(checkpoint(5, 2), path)  # more than the disk holds
        assert error.value.errno == errno.ENOSPC
        assert error.value.filename == str(path) and str(folder) in str(error.value)
        assert [p.name for p in folder.iterdir()] == ["best.ckpt"]  # no temporary file
        assert torch.equal(checkpoint_io.load_checkpoint(path)["state_dict"]["w"], checkpoint(1, 1)["state_dict"]["w"])
        # A checkpoint that fits replaces it.
        checkpoint_io.save_checkpoint(checkpoint(2, 3), path)
        assert checkpoint_io.load_checkpoint(path)["state_dict"]["w"][0] == 3
    assert list(system_tmp.iterdir()) == []


def test_atomic_checkpoint_io_writes_nothing_beside_the_checkpoint_but_it(tmp_path, monkeypatch):
    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    checkpoint_io = AtomicCheckpointIO()
    for value in (1, 2):
        checkpoint_io.save_checkpoint(checkpoint(1, value), tmp_path / "new" / "last.ckpt")
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["last.ckpt"]
    assert checkpoint_io.load_checkpoint(tmp_path / "new" / "last.ckpt")["state_dict"]["w"][0] == 2
    assert list(system_tmp.iterdir()) == []
    checkpoint_io.remove_checkpoint(tmp_path / "new" / "last.ckpt")
    assert list((tmp_path / "new").iterdir()) == []


@pytest.mark.parametrize("prefix", ["file://", ""])
def test_atomic_checkpoint_io_accepts_file_urls_and_str_paths(tmp_path, prefix):
    path = f"{prefix}{tmp_path}/a/b.ckpt"
    AtomicCheckpointIO().save_checkpoint(checkpoint(1, 7), path)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.ckpt"]
    assert torch.load(tmp_path / "a" / "b.ckpt")["state_dict"]["w"][0] == 7


def test_atomic_checkpoint_io_remote_paths_go_through_fsspec():
    path = "memory://lenet-test/checkpoints/last.ckpt"
    checkpoint_io = AtomicCheckpointIO()
    checkpoint_io.save_checkpoint(checkpoint(1, 4), path)
    assert checkpoint_io.load_checkpoint(path)["state_dict"]["w"][0] == 4
    checkpoint_io.remove_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        checkpoint_io.load_checkpoint(path)


def test_atomic_checkpoint_io_rejects_storage_options_as_lightning_does(tmp_path):
    with pytest.raises(TypeError, match="storage_options"):
        AtomicCheckpointIO().save_checkpoint(checkpoint(1, 1), tmp_path / "x.ckpt", storage_options={"a": 1})
    assert not (tmp_path / "x.ckpt").exists()


@pytest.mark.parametrize(
    ("plugins", "expected"),
    [
        ([], [AtomicCheckpointIO]),
        (["--trainer.plugins", "lightning.pytorch.plugins.io.TorchCheckpointIO"], [TorchCheckpointIO]),
        (["--trainer.plugins+=lightning.pytorch.plugins.environments.LightningEnvironment"],
         [AtomicCheckpointIO, LightningEnvironment]),
    ],
    ids=["default", "users-own", "added"],
)
def test_cli_saves_checkpoints_through_atomic_checkpoint_io_unless_told_otherwise(tmp_path, monkeypatch, plugins,
                                                                                  expected):
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    cli = cli_main(["fit", "--config", QUICKSTART, "--trainer.default_root_dir", str(tmp_path),
                    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                    "--trainer.limit_val_batches", "1", "--embeddings.enabled", "false", *plugins])
    checkpoint_io = cli.trainer.strategy.checkpoint_io
    assert type(checkpoint_io) is expected[0]
    if len(expected) > 1:
        assert isinstance(cli.trainer._accelerator_connector.cluster_environment, expected[1])
    (run_dir,) = run_dirs(tmp_path)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
