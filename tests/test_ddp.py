"""Multi-process DDP on CPU, for real: ``python cli.py fit --trainer.strategy ddp`` as a subprocess
(the DDP launcher re-runs the command it was started with, so it cannot run inside pytest)."""

import json
import subprocess
import sys

import pytest
from helpers import REPO, read_csv, read_projector, read_scalars, run_dirs

pytestmark = pytest.mark.slow


def fit(root, *overrides):
    command = [sys.executable, "cli.py", "fit", "--config", "quickstart",
               "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
               "--trainer.max_epochs", "3", "--embeddings.every_n_train_steps", "20", *overrides]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_ddp_two_processes_match_one_process_probe_and_write_once(tmp_path):
    single_run = fit(tmp_path / "single", "--trainer.accelerator", "cpu", "--trainer.devices", "1")
    ddp_run = fit(tmp_path / "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
                  "--trainer.strategy", "ddp")

    (single_dir,) = run_dirs(tmp_path / "single")
    (ddp_dir,) = run_dirs(tmp_path / "ddp")  # one run folder: only rank 0 writes
    single, ddp = read_projector(single_dir), read_projector(ddp_dir)
    # The probe set, its order and its labels do not depend on the world size.
    single_rows, ddp_rows = single["fc2_step0000000"][1], ddp["fc2_step0000000"][1]
    assert [row[0] for row in ddp_rows] == [row[0] for row in single_rows]
    assert [row[4] for row in ddp_rows] == [row[4] for row in single_rows]
    # One writer: each capture listed once, one events file, one sprite, one config.
    train_tags = [tag for tag in ddp if tag.startswith("fc2_step")]
    assert train_tags == ["fc2_step0000000", "fc2_step0000020", "fc2_step0000040", "fc2_step0000060"]
    assert len(list(ddp_dir.glob("events.out.tfevents.*"))) == 1
    assert len(list(ddp_dir.glob("config*.yaml"))) == 1
    assert sorted(p.name for p in (ddp_dir / "embeddings").glob("tsne_fc2_step*.png")) == [
        f"tsne_{tag}.png" for tag in train_tags
    ]
    # Each rank trained on its half: 20 steps an epoch, and validation agrees on a sensible accuracy.
    val_acc = read_scalars(ddp_dir, "val/acc")
    assert [step for step, _ in val_acc] == [19, 39, 59]
    assert val_acc[-1][1] > 0.85

    # The dynamics and per-point results: computed and written once, by rank 0, one value per capture.
    assert_dynamics_written_once(ddp_dir, ddp_run, train_tags, n_points=len(ddp_rows) - 1)
    single_tags = [tag for tag in single if tag.startswith("fc2_step")]
    assert_dynamics_written_once(single_dir, single_run, single_tags, n_points=len(single_rows) - 1)
    # A real quickstart fit settles, and its change between captures shrinks as it learns.
    summary = json.loads((single_dir / "embeddings" / "dynamics.json").read_text())
    assert summary["settled_step"] is not None and summary["settled_step"] in summary["steps"]
    cka_prev = [float(row["cka_prev"]) for row in read_csv(single_dir / "embeddings" / "separation.csv")[1:]]
    assert cka_prev[-1] > cka_prev[0] and cka_prev[-1] > 0.9, cka_prev


def assert_dynamics_written_once(run_dir, result, tags, n_points):
    rows = read_csv(run_dir / "embeddings" / "separation.csv")
    assert [row["tag"] for row in rows] == tags
    for column in ("cka_prev", "cka_first", "knn_overlap_prev"):
        assert rows[0][column] == "" and all(row[column] for row in rows[1:]), column
    for column in ("cka_final", "nc1", "settled"):
        assert all(row[column] for row in rows), column
    steps = [int(row["step"]) for row in rows]
    for name in ("cka_prev", "knn_overlap_prev", "nc1", "cka_final"):
        assert [step for step, _ in read_scalars(run_dir, f"embeddings/{name}")] == (
            steps if name in ("nc1", "cka_final") else steps[1:]), name  # each step once: one writer
    assert len(read_csv(run_dir / "embeddings" / "points.csv")) == n_points
    assert "fc2_trajectories" in read_projector(run_dir)
    output = result.stdout + result.stderr
    assert output.count("EmbeddingProjector: fc2 settled at step") + output.count("fc2 did not settle") == 1
