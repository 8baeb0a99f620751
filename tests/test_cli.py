"""The CLI as users run it: ``cli_main`` in-process, and ``python cli.py`` as a real subprocess."""

import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import REPO, read_csv, read_projector, read_scalars, run_dirs

from lenet_lightning.cli import cli_main

QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
SMALL = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--embeddings.num_samples", "60", "--embeddings.perplexity", "10"]


@pytest.fixture(autouse=True)
def cli_argv(monkeypatch):
    """``cli_main(args)`` gets its arguments from the test, not from pytest's own command line."""
    monkeypatch.setattr(sys, "argv", ["cli.py"])


def quickstart(tmp_path, *overrides, command="fit"):
    return cli_main([command, "--config", QUICKSTART, "--trainer.default_root_dir", str(tmp_path), *SMALL, *overrides])


def run_script(*args, timeout=600, env=None):
    return subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_cli_every_shipped_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(REPO / "configs" / config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["embeddings"]["enabled"] is True
    assert printed["embeddings"]["layer"] == "fc2"
    assert printed["data"]["dataset"] in ("mnist", "fashion_mnist", "digits")


def test_cli_help_documents_the_embeddings_group(capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--help"])
    out = capsys.readouterr().out
    for option in ("--embeddings.every_n_train_steps", "--embeddings.num_samples", "--embeddings.split",
                   "--embeddings.perplexity", "--embeddings.enabled", "--data.dataset", "--model.lr"):
        assert option in out


def test_cli_help_is_plain_text_in_whole_sentences(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        cli_main(["fit", "--help"])
    out = capsys.readouterr().out
    for markup in ("``", ":class:", ":func:", ":meth:", ":mod:", ":paramref:"):
        assert markup not in out
    headings = [line for line in out.splitlines() if line[:1].isalpha() and line.endswith(":")]
    assert any(heading.startswith("Trains LeNet") for heading in headings)
    assert any("Projector" in heading for heading in headings)
    for heading in headings:
        assert not heading.endswith((",:", ";:")), heading  # a first line cut mid-sentence


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--data.dataset", "cifar10"], "cifar10"),
        (["--data.batch_size", "0"], "Expected `batch_size` to be a positive integer, but got 0"),
        (["--data.val_size", "5000"], "Expected `val_size` to leave training images"),
        (["--embeddings.perplexity", "-1"], "Expected `perplexity` to be a positive number, but got -1"),
        (["--embeddings.every_n_train_steps", "-5"], "`every_n_train_steps`"),
        (["--model.lr", "0"], "Expected `lr` to be a positive number, but got 0"),
    ],
)
def test_cli_bad_values_fail_before_training_with_the_value_named(tmp_path, capsys, override, message):
    with pytest.raises(SystemExit) as exit_info:
        quickstart(tmp_path, *override)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "lightning_logs").exists()  # nothing was written


def test_cli_fit_test_validate_predict_from_checkpoint(tmp_path):
    cli = quickstart(tmp_path, "--trainer.max_epochs", "2", "--embeddings.every_n_train_steps", "30")
    (run_dir,) = run_dirs(tmp_path)
    best = run_dir / "checkpoints" / "best.ckpt"
    assert best.is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "config.yaml").is_file()
    assert cli.trainer.callback_metrics["val/acc"] > 0.5
    assert [s for s, _ in read_scalars(run_dir, "val/acc")] == [38, 77]

    test = quickstart(tmp_path, "--ckpt_path", str(best), command="test")
    assert test.trainer.callback_metrics["test/acc"] > 0.5
    validate = quickstart(tmp_path, "--ckpt_path", str(best), command="validate")
    assert validate.trainer.callback_metrics["val/acc"] > 0.5
    predict = quickstart(tmp_path, "--ckpt_path", str(best), command="predict")
    assert predict.trainer.state.finished
    # validate and test each wrote a projector entry for that checkpoint, in their own run folders.
    step = torch.load(best, weights_only=False)["global_step"]
    test_dir, validate_dir = run_dirs(tmp_path)[1:3]
    assert [t for t in read_projector(test_dir) if t.startswith("fc2_")] == [f"fc2_test_step{step:07d}"]
    assert [t for t in read_projector(validate_dir) if t.startswith("fc2_")] == [f"fc2_validate_step{step:07d}"]


def test_cli_optimizer_and_lr_scheduler_overrides_still_work(tmp_path):
    cli = quickstart(tmp_path, "--trainer.max_steps", "3", "--trainer.limit_val_batches", "1",
                     "--embeddings.enabled", "false", "--optimizer", "SGD", "--optimizer.lr", "0.05",
                     "--optimizer.momentum", "0.9", "--lr_scheduler", "StepLR", "--lr_scheduler.step_size", "1")
    (optimizer,) = cli.trainer.optimizers
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    assert isinstance(cli.trainer.lr_scheduler_configs[0].scheduler, torch.optim.lr_scheduler.StepLR)


def test_cli_rerun_in_same_directory_keeps_earlier_config(tmp_path):
    args = ["--trainer.max_steps", "2", "--trainer.logger", "false", "--embeddings.enabled", "false",
            "--trainer.limit_val_batches", "1"]
    quickstart(tmp_path, *args)
    first = (tmp_path / "config.yaml").read_text()
    quickstart(tmp_path, *args, "--trainer.max_steps", "3")
    assert (tmp_path / "config.yaml").read_text() == first
    assert yaml.safe_load((tmp_path / "config_1.yaml").read_text())["trainer"]["max_steps"] == 3


def test_cli_default_root_dir_holds_everything_a_run_writes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "elsewhere"
    quickstart(root, "--trainer.max_steps", "3", "--trainer.limit_val_batches", "1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]
    (run_dir,) = run_dirs(root)
    assert (run_dir / "projector_config.pbtxt").is_file() and (run_dir / "embeddings" / "separation.csv").is_file()


def test_cli_resume_into_same_log_directory_continues_the_series(tmp_path):
    quickstart(tmp_path, "--trainer.max_epochs", "1", "--embeddings.every_n_train_steps", "20")
    (run_dir,) = run_dirs(tmp_path)
    before = list(read_projector(run_dir))
    assert [t for t in before if t.startswith("fc2_step")] == ["fc2_step0000000", "fc2_step0000020", "fc2_step0000039"]
    quickstart(tmp_path, "--trainer.max_epochs", "2", "--embeddings.every_n_train_steps", "20",
               "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"), "--trainer.logger.version", "0")
    assert run_dirs(tmp_path) == [run_dir]  # continued in place
    after = list(read_projector(run_dir))
    assert after[: len(before)] == before and len(after) == len(set(after))
    assert [t for t in after if t.startswith("fc2_step")] == [
        "fc2_step0000000", "fc2_step0000020", "fc2_step0000039", "fc2_step0000040", "fc2_step0000060",
        "fc2_step0000078",
    ]
    steps = [int(row["step"]) for row in read_csv(run_dir / "embeddings" / "separation.csv")]
    assert steps == [0, 20, 39, 40, 60, 78]
    assert (run_dir / "config.yaml").is_file() and (run_dir / "config_1.yaml").is_file()
    # The resumed run's last checkpoint (saved at step 78, after validation mapped what was queued,
    # before the end-of-fit capture) holds the newest map, which the next resume starts from; the
    # series itself is on disk, every capture with its bookmark.
    callbacks = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    state = callbacks["EmbeddingProjector{'layer': 'fc2'}"]
    assert state["layout_step"] == 60 and state["pending"] == []
    config = (run_dir / "projector_config.pbtxt").read_text()
    assert config.count('bookmarks_path: "projector/fc2_step') == 6
    assert (run_dir / "embeddings" / "tsne_evolution.png").is_file()


def test_cli_missing_mnist_files_fail_with_one_short_message(tmp_path):
    result = run_script("fit", "--data.dataset", "mnist", "--data.data_dir", str(tmp_path), "--data.download", "false")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error: mnist not found" in result.stderr and str(tmp_path) in result.stderr
    assert "--data.dataset digits" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3
    assert list(tmp_path.iterdir()) == []


CONSOLE_SCRIPT = shutil.which("lenet-lightning", path=os.path.dirname(sys.executable))


@pytest.mark.skipif(CONSOLE_SCRIPT is None, reason="package not installed (pip install -e .)")
def test_console_script_is_the_cli():
    result = subprocess.run([CONSOLE_SCRIPT, "fit", "--help"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0 and "--embeddings.every_n_train_steps" in result.stdout


# Relative paths and no --trainer.default_root_dir at all: the README's own commands, in tests/test_readme.py.
@pytest.mark.parametrize(("given", "real"), [
    ("~/runs", "home/runs"),               # the user's home
    ("link", "real folder"),               # a symlinked folder
    ("my runs ü/a", "my runs ü/a"),        # relative, with spaces and non-ASCII
])
def test_cli_default_root_dir_in_any_form_holds_the_whole_run(tmp_path, monkeypatch, given, real):
    work = tmp_path / "work"
    (work / "real folder").mkdir(parents=True)
    (work / "link").symlink_to("real folder")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(work / "home"))
    args = ["--trainer.default_root_dir", given] if given else []
    cli_main(["fit", "--config", "quickstart", *SMALL, *args, "--trainer.max_steps", "3",
              "--trainer.limit_val_batches", "1"])
    (run_dir,) = run_dirs(work / real)
    entries = read_projector(run_dir)
    assert [tag for tag in entries if tag.startswith("fc2_step")] == ["fc2_step0000000", "fc2_step0000003"]
    assert (run_dir / "projector" / "sprite.png").is_file()
    assert (run_dir / "embeddings" / "separation.csv").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list(work.glob("**/projector_config.pbtxt"))) == 1  # nothing written twice or elsewhere
