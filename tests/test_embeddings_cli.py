"""EmbeddingProjector in LightningCLI the Lightning way: `trainer.callbacks` entries beside the group."""

import sys

import pytest
import torch
import yaml
from helpers import REPO, read_csv, read_projector, read_scalars, run_dirs

from lenet_lightning.cli import cli_main

QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
SHORT = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.max_steps", "3", "--trainer.limit_val_batches", "1", "--embeddings.num_samples", "40",
         "--embeddings.perplexity", "5", "--embeddings.every_n_train_steps", "0"]


@pytest.fixture(autouse=True)
def cli_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["cli.py"])


def test_cli_yaml_callbacks_entry_beside_the_group_gives_two_series(tmp_path):
    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
        {"class_path": "lenet_lightning.embeddings.EmbeddingProjector",
         "init_args": {"layer": "fc1", "every_n_train_steps": 0, "num_samples": 40, "perplexity": 5,
                       "class_vectors": False}},
    ]}}))
    cli_main(["fit", "--config", QUICKSTART, "--config", str(config), "--trainer.default_root_dir", str(tmp_path),
              *SHORT])
    (run_dir,) = run_dirs(tmp_path)
    entries = read_projector(run_dir)
    assert entries["fc1_step0000003"][0].shape == (40, 1024) and entries["fc2_step0000003"][0].shape == (40, 10)
    # Each series keeps its own rows, plots and scalars.
    fc1_rows = read_csv(run_dir / "embeddings_fc1" / "separation.csv")
    fc2_rows = read_csv(run_dir / "embeddings" / "separation.csv")
    assert [row["tag"] for row in fc1_rows] == ["fc1_step0000000", "fc1_step0000003"]
    assert [row["tag"] for row in fc2_rows] == ["fc2_step0000000", "fc2_step0000003"]
    assert (run_dir / "embeddings_fc1" / "tsne_evolution.png").is_file()
    assert [s for s, _ in read_scalars(run_dir, "embeddings_fc1/knn_acc_2d")] == [0, 3]
    assert [s for s, _ in read_scalars(run_dir, "embeddings/knn_acc_2d")] == [0, 3]
    callbacks = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    assert {"EmbeddingProjector{'layer': 'fc1'}", "EmbeddingProjector{'layer': 'fc2'}"} <= set(callbacks)


@pytest.mark.parametrize("group", [[], ["--embeddings.enabled", "false"]])
def test_cli_callbacks_append_works_with_the_group_on_or_off(tmp_path, group):
    cli = cli_main(["fit", "--config", QUICKSTART, "--trainer.default_root_dir", str(tmp_path), *SHORT, *group,
                    "--trainer.callbacks+=lenet_lightning.embeddings.EmbeddingProjector",
                    "--trainer.callbacks.num_samples=30", "--trainer.callbacks.every_n_train_steps=0",
                    "--trainer.callbacks.perplexity=5"])
    projectors = [c for c in cli.trainer.callbacks if type(c).__name__ == "EmbeddingProjector"]
    assert len(projectors) == 1 and projectors[0].num_samples == 30  # the listed one; the group stepped aside
    (run_dir,) = run_dirs(tmp_path)
    assert read_projector(run_dir)["fc2_step0000003"][0].shape == (30, 10)


def test_cli_disabled_group_adds_no_callback(tmp_path):
    cli = cli_main(["fit", "--config", QUICKSTART, "--trainer.default_root_dir", str(tmp_path), *SHORT,
                    "--embeddings.enabled", "false"])
    assert not [c for c in cli.trainer.callbacks if type(c).__name__ == "EmbeddingProjector"]
    (run_dir,) = run_dirs(tmp_path)
    assert not (run_dir / "projector_config.pbtxt").exists()


def test_cli_two_listed_projectors_of_one_layer_are_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", QUICKSTART, "--trainer.default_root_dir", str(tmp_path), *SHORT,
                  "--trainer.callbacks+=lenet_lightning.embeddings.EmbeddingProjector",
                  "--trainer.callbacks+=lenet_lightning.embeddings.EmbeddingProjector"])
    assert exit_info.value.code == 2
    assert "Expected each EmbeddingProjector in `trainer.callbacks` to capture its own layer" in capsys.readouterr().err
    assert not (tmp_path / "lightning_logs").exists()
