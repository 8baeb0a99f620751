"""A real fit, then a real TensorBoard server answering the Projector's own HTTP endpoints."""

import json
import sys
import urllib.parse
import urllib.request

import pytest
from helpers import CAPTURE_COLUMNS, read_projector, run_dirs

from lenet_lightning.cli import cli_main

pytestmark = pytest.mark.slow
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url, path, **params):
    with NO_PROXY.open(f"{url}/data/plugin/projector/{path}?{urllib.parse.urlencode(params)}", timeout=30) as reply:
        return reply.read()


def fit(root, *overrides):
    cli_main(["fit", "--config", "quickstart", "--trainer.default_root_dir", str(root),
              "--trainer.enable_progress_bar", "false", "--embeddings.every_n_train_steps", "25", *overrides])


def wait_for_runs(url):
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = json.loads(get(url, "runs"))
        if runs:
            return runs
        time.sleep(0.2)
    raise AssertionError("TensorBoard listed no projector runs within 30 s")


def check_served(url, run, run_dir):
    """Every entry on disk is listed by /info and served by /tensor, /metadata and /sprite_image."""
    on_disk = read_projector(run_dir)
    info = json.loads(get(url, "info", run=run))
    listed = [embedding["tensorName"] for embedding in info["embeddings"]]
    assert listed == list(on_disk)
    for name, (tensor, rows) in on_disk.items():
        served = get(url, "tensor", run=run, name=name)
        assert len(served) == tensor.size * 4  # float32
        metadata = get(url, "metadata", run=run, name=name).decode().splitlines()
        assert len(metadata) == len(rows) == tensor.shape[0] + (1 if name.startswith(("fc2_step", "fc2_traj")) else 0)
        if name.startswith("fc2_step"):
            assert metadata[0].split("\t") == CAPTURE_COLUMNS
            sprite = get(url, "sprite_image", run=run, name=name)
            assert sprite.startswith(b"\x89PNG")
    return listed


def test_tensorboard_serves_every_capture_and_keeps_them_after_resume(tmp_path, tensorboard_server, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    fit(tmp_path, "--trainer.max_epochs", "1")
    (run_dir,) = run_dirs(tmp_path)
    url = tensorboard_server(tmp_path / "lightning_logs")
    assert wait_for_runs(url) == ["version_0"]
    first = check_served(url, "version_0", run_dir)
    assert [n for n in first if n.startswith("fc2_step")] == ["fc2_step0000000", "fc2_step0000025", "fc2_step0000039"]

    fit(tmp_path, "--trainer.max_epochs", "2", "--trainer.logger.version", "0",
        "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"))
    # A new server over the resumed run shows what it added: everything from before, then the new
    # captures, once each (tests/test_browser.py checks that a server started before a fit follows it).
    url = tensorboard_server(tmp_path / "lightning_logs")
    assert wait_for_runs(url) == ["version_0"]
    second = check_served(url, "version_0", run_dir)
    assert second[: len(first)] == first and len(second) == len(set(second))
    assert [n for n in second if n.startswith("fc2_step")][3:] == ["fc2_step0000050", "fc2_step0000075",
                                                                    "fc2_step0000078"]
