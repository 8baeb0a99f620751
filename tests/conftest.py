import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tensorboard_server(tmp_path_factory):
    """Factory: ``start(logdir, *extra_flags, timeout=60.0)`` runs a real TensorBoard on 127.0.0.1
    and returns its base URL once HTTP answers; every server started is stopped at module end.

    ``--load_fast=false`` keeps it on the pure-Python loader (no Rust data server, no network).
    Without TensorFlow, stock TensorBoard's projector reads a run's config only when the list of
    runs changes; with this package installed, its ``tensorboard_plugins`` entry point
    (``lenet_lightning/tensorboard_live.py``) makes it re-read a config that changed.
    """
    procs = []
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def start(logdir, *extra_flags, timeout=60.0):
        log = tmp_path_factory.mktemp("tensorboard") / "server.log"
        deadline = time.monotonic() + timeout
        for _ in range(3):  # a new port per try: another process may bind the free port first
            port = _free_port()
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tensorboard.main",
                        "--logdir",
                        os.fspath(logdir),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--load_fast=false",
                        *extra_flags,
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            procs.append(proc)
            url = f"http://127.0.0.1:{port}"
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    with no_proxy.open(f"{url}/data/environment", timeout=5):
                        return url
                except (urllib.error.URLError, ConnectionError):
                    time.sleep(0.1)
            if proc.poll() is None:
                pytest.fail(f"TensorBoard did not answer on {url} within {timeout} s:\n{log.read_text()}")
        pytest.fail(f"TensorBoard exited with {proc.returncode}:\n{log.read_text()}")

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
