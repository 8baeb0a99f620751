"""A small tmpfs for full-disk and other-filesystem tests, where this machine lets a test mount one."""

import contextlib
import shutil
import subprocess

import pytest


@contextlib.contextmanager
def small_tmpfs(path, size):
    """Mounts a tmpfs of ``size`` (``mount``'s syntax: ``"4m"``) at ``path`` for the ``with`` block, and
    unmounts it after; skips the test, saying why, where mounting is not permitted (it needs root or
    CAP_SYS_ADMIN). Stop every process using it before the block ends."""
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command to make a small tmpfs with")
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True, capture_output=True)
