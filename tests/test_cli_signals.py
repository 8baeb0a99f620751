"""A run stopped by a signal exits with the status a shell expects, after Lightning's clean stop, so a
job script (SLURM sends SIGTERM) can tell it from a finished run."""

import signal
import subprocess
import sys
import time

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_cli_stopped_by_signal_exits_with_shell_status(tmp_path, signum, status):
    command = [sys.executable, str(REPO / "cli.py"), "fit", "--config", "quickstart", "--trainer.max_epochs", "200",
               "--trainer.enable_progress_bar", "false", "--embeddings.every_n_train_steps", "0"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        config = tmp_path / "lightning_logs" / "version_0" / "projector_config.pbtxt"  # the step-0 capture
        while not config.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(1)  # into the training loop
        proc.send_signal(signum)
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status, output[-3000:]
    assert "Traceback" not in output
    assert (tmp_path / "lightning_logs" / "version_0" / "config.yaml").is_file()  # a stopped run keeps its folder
