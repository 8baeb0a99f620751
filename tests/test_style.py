"""The house rules that tools check, run with the tests: ruff over the whole repository."""

import os
import shutil
import subprocess
import sys

import pytest
from helpers import REPO

RUFF = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff not installed (pip install -e '.[test]')")
def test_ruff_check_is_clean():
    result = subprocess.run([RUFF, "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]
