"""Every bench/ script's smoke mode runs: a refactor cannot silently break the benchmarks."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import REPO

SMOKE_ARGS = {
    "bench_data.py": ["--dry-run"],
    "bench_dynamics.py": ["--dry-run"],
    "bench_embeddings.py": ["--dry-run"],
    "bench_framework.py": ["--dry-run"],
    "bench_gpu.py": ["--device", "cpu", "--dry-run"],
    "bench_tsne.py": ["--dry-run"],
}


def test_bench_every_script_has_a_smoke_mode_listed_here():
    assert sorted(p.name for p in (REPO / "bench").glob("*.py")) == sorted(SMOKE_ARGS)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Every script's smoke mode, two at a time (each is mostly one core importing torch and
    Lightning), one thread each: ``{script: (completed process, its empty working folder)}``."""
    def run(script):
        folder = tmp_path_factory.mktemp(script.removesuffix(".py"))
        env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
        result = subprocess.run([sys.executable, str(REPO / "bench" / script), *SMOKE_ARGS[script]], cwd=folder,
                                capture_output=True, text=True, timeout=600, env=env)
        return script, (result, folder)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, sorted(SMOKE_ARGS)))


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE_ARGS))
def test_bench_smoke_mode_runs(script, smoke_runs):
    result, folder = smoke_runs[script]
    assert result.returncode == 0, f"{script}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr
    assert list(folder.iterdir()) == []  # benchmarks clean up after themselves
