"""Every bench/ script's smoke mode runs: a refactor cannot silently break the benchmarks."""

import os
import subprocess
import sys

import pytest
from helpers import REPO

SMOKE_ARGS = {
    "bench_data.py": ["--dry-run"],
    "bench_embeddings.py": ["--dry-run"],
    "bench_framework.py": ["--dry-run"],
    "bench_gpu.py": ["--device", "cpu", "--dry-run"],
    "bench_tsne.py": ["--dry-run"],
}


def test_bench_every_script_has_a_smoke_mode_listed_here():
    assert sorted(p.name for p in (REPO / "bench").glob("*.py")) == sorted(SMOKE_ARGS)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE_ARGS))
def test_bench_smoke_mode_runs(script, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "bench" / script), *SMOKE_ARGS[script]], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600, env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, f"{script}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # benchmarks clean up after themselves
