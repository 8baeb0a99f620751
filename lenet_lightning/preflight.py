"""Checks a command's inputs before anything is written: a bad path fails in one line, not a traceback
after the run folder exists.

Pure functions, no Lightning: the CLI calls them between parsing and running, and ``absolute`` is
also how the callback and the datamodule make the paths they are given absolute.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

# `--ckpt_path` values that Lightning resolves itself; they name no file.
LIGHTNING_CKPT_NAMES = frozenset({"last", "best", "hpc", "registry"})


def absolute(path: str | os.PathLike[str]) -> str:
    """``path`` with ``~`` expanded, made absolute against the working folder. Links are kept, so the
    folder the user named is the one written to, whatever the working folder is later.

    Example:
        >>> absolute("~/runs") == os.path.join(os.path.expanduser("~"), "runs")
        True
    """
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def is_local(path: str) -> bool:
    """Whether ``path`` is on this machine (no ``s3://`` or other fsspec protocol).

    Example:
        >>> is_local("lightning_logs"), is_local("s3://bucket/runs"), is_local("file:///tmp")
        (True, False, True)
    """
    return "://" not in path or path.startswith("file://")


def check_writable_folder(path: str, option: str) -> None:
    """Raises unless ``path`` is a folder that can be created or written to (it is not created here).

    Raises:
        ValueError: ``path`` is a file, or its nearest existing folder cannot be written to.

    Example:
        >>> with tempfile.NamedTemporaryFile() as file:
        ...     check_writable_folder(os.path.join(file.name, "runs"), "--out")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected `--out` to be a folder you can write to, but got '...' (... is not a folder); ...
    """
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is not a folder"
    else:
        try:  # a real write, nameless and gone at once: permission bits say nothing for root
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as err:
            problem = f"cannot write in {existing}: {err.strerror or err}"
    if problem:
        raise ValueError(f"Expected `{option}` to be a folder you can write to, but got {path!r} ({problem}); "
                         "choose another folder.")


def check_checkpoint(path: str) -> None:
    """Raises unless ``path`` is a whole Lightning checkpoint (a ``torch.save`` zip file with a
    ``state_dict``). The zip's checksums are verified and its pickle is read with ``mmap``, so even a
    large checkpoint is checked in a fraction of the time it takes to load.

    Raises:
        FileNotFoundError: Nothing is at ``path``.
        ValueError: ``path`` is empty, truncated, corrupted, or not a Lightning checkpoint.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"--ckpt_path {path!r} does not exist; pass the path of a .ckpt file, "
                                "e.g. lightning_logs/version_0/checkpoints/last.ckpt.")
    fix = "pass another .ckpt file (a run's last.ckpt or best.ckpt)"
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise ValueError(f"Expected `--ckpt_path` to be a checkpoint file, but got {path!r}, which is "
                         f"{'empty' if os.path.isfile(path) else 'not a file'}; {fix}.")
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
        if broken is not None:
            raise zipfile.BadZipFile(f"bad checksum in {broken}")
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except (zipfile.BadZipFile, pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        raise ValueError(f"Expected `--ckpt_path` to be a whole checkpoint, but {path!r} is truncated or "
                         f"corrupted ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                         f"{fix}.") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"Expected `--ckpt_path` to be a Lightning checkpoint, but {path!r} holds no "
                         f"`state_dict`; {fix}.")
